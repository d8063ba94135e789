//! QubesDB wire format: the 72-byte `qdb_hdr` view, validated paths and typed messages
//! (`struct qdb_hdr`, `enum qdb_msg`, qubesdb.h \[QDB\]; validation as `db-cmds.c` `verify_hdr`).

use core::cmp::Ordering;
use core::fmt;

use crate::framing::{FrameError, Framing};

/// Size of `struct qdb_hdr`.
pub const HEADER_LEN: usize = 72;
/// Size of the path field; a path is shorter than this (`QDB_MAX_PATH`).
pub const PATH_FIELD_LEN: usize = 64;
/// `QDB_MAX_DATA`: `data_len` must be below this, so a value has at most 3071 bytes.
pub const MAX_DATA: usize = 3072;
/// Largest whole message (header plus the longest value).
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + MAX_DATA - 1;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const PATH: Range<usize> = 1..65;
    pub const PAD: Range<usize> = 65..68;
    pub const DATA_LEN: Range<usize> = 68..72;
}

/// `enum qdb_msg`. Unknown codes are kept as values so they print; they are refused by
/// [`Header::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// `QDB_CMD_READ` (local socket only).
    Read,
    /// `QDB_CMD_WRITE`.
    Write,
    /// `QDB_CMD_MULTIREAD`: the VM's full-sync request.
    Multiread,
    /// `QDB_CMD_LIST` (local socket only).
    List,
    /// `QDB_CMD_RM`; a path ending in `/` removes a prefix.
    Rm,
    /// `QDB_CMD_WATCH` (local socket only).
    Watch,
    /// `QDB_CMD_UNWATCH` (local socket only).
    Unwatch,
    /// `QDB_RESP_OK`.
    RespOk,
    /// `QDB_RESP_ERROR_NOENT` (local socket only).
    RespErrorNoent,
    /// `QDB_RESP_ERROR`.
    RespError,
    /// `QDB_RESP_READ` (local socket only).
    RespRead,
    /// `QDB_RESP_MULTIREAD`: one dump entry, or the end marker.
    RespMultiread,
    /// `QDB_RESP_LIST` (local socket only).
    RespList,
    /// `QDB_RESP_WATCH` (local socket only).
    RespWatch,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for MsgType {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Multiread,
            3 => Self::List,
            4 => Self::Rm,
            5 => Self::Watch,
            6 => Self::Unwatch,
            7 => Self::RespOk,
            8 => Self::RespErrorNoent,
            9 => Self::RespError,
            10 => Self::RespRead,
            11 => Self::RespMultiread,
            12 => Self::RespList,
            13 => Self::RespWatch,
            other => Self::Unknown(other),
        }
    }
}

impl From<MsgType> for u8 {
    fn from(t: MsgType) -> u8 {
        match t {
            MsgType::Read => 0,
            MsgType::Write => 1,
            MsgType::Multiread => 2,
            MsgType::List => 3,
            MsgType::Rm => 4,
            MsgType::Watch => 5,
            MsgType::Unwatch => 6,
            MsgType::RespOk => 7,
            MsgType::RespErrorNoent => 8,
            MsgType::RespError => 9,
            MsgType::RespRead => 10,
            MsgType::RespMultiread => 11,
            MsgType::RespList => 12,
            MsgType::RespWatch => 13,
            MsgType::Unknown(v) => v,
        }
    }
}

impl MsgType {
    /// Whether the type may appear on the dom0 <-> VM vchan at all (\[QDB\] `handle_vchan_data`).
    pub fn valid_on_vchan(self) -> bool {
        matches!(
            self,
            Self::Write
                | Self::Multiread
                | Self::Rm
                | Self::RespOk
                | Self::RespError
                | Self::RespMultiread
        )
    }

    /// Whether messages of this type carry a value; the others must declare `data_len` 0.
    pub fn carries_data(self) -> bool {
        matches!(self, Self::Write | Self::RespRead | Self::RespMultiread)
    }
}

/// Why bytes are not a QubesDB message. Each is fatal to a vchan connection, as in the C
/// daemon, except [`DataHasNul`](Self::DataHasNul), which is answered with `RESP_ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the header or the declared value need.
    Truncated {
        /// Bytes the message needs.
        needed: usize,
    },
    /// More bytes than the header declares.
    TrailingBytes,
    /// A type code outside `enum qdb_msg`.
    UnknownType(u8),
    /// The path field has no NUL, or a path to encode has 64 bytes or more.
    PathTooLong,
    /// A path byte outside `[A-Za-z0-9_/.:@-]`.
    PathChar(u8),
    /// A path starting with `-`.
    PathLeadingDash,
    /// `data_len` of 3072 or more.
    DataTooLong(u32),
    /// A value on a type that carries none.
    UnexpectedData(MsgType),
    /// A value containing a NUL byte.
    DataHasNul,
}

impl WireError {
    /// A static reason, for [`FrameError::BadHeader`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::TrailingBytes => "trailing bytes",
            Self::UnknownType(_) => "unknown message type",
            Self::PathTooLong => "path not terminated within 64 bytes",
            Self::PathChar(_) => "invalid character in path",
            Self::PathLeadingDash => "path starts with '-'",
            Self::DataTooLong(_) => "data_len too large",
            Self::UnexpectedData(_) => "value on a message type without one",
            Self::DataHasNul => "value contains NUL",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed } => {
                write!(f, "qubesdb message truncated: {needed} bytes needed")
            }
            Self::UnknownType(t) => write!(f, "qubesdb: unknown message type {t}"),
            Self::PathChar(c) => write!(f, "qubesdb: invalid byte {c:#04x} in path"),
            Self::DataTooLong(n) => write!(f, "qubesdb: data_len {n} is not below {MAX_DATA}"),
            Self::UnexpectedData(t) => write!(f, "qubesdb: {t:?} must not carry a value"),
            other => write!(f, "qubesdb: {}", other.reason()),
        }
    }
}

impl core::error::Error for WireError {}

/// The output buffer is too small; `needed` bytes are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the message needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// A QubesDB path checked as the C daemon's `verify_path` does: shorter than 64 bytes, only
/// `[A-Za-z0-9_/.:@-]`, no leading `-`. The empty path is valid (full sync, end marker).
/// Stored inline so messages and keys need no allocation for it.
#[derive(Clone, Copy)]
pub struct QdbPath {
    buf: [u8; PATH_FIELD_LEN - 1],
    len: u8,
}

impl QdbPath {
    /// The empty path.
    pub const EMPTY: QdbPath = QdbPath {
        buf: [0; PATH_FIELD_LEN - 1],
        len: 0,
    };

    /// Validates `bytes` as a path.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() >= PATH_FIELD_LEN {
            return Err(WireError::PathTooLong);
        }
        if bytes.first() == Some(&b'-') {
            return Err(WireError::PathLeadingDash);
        }
        if let Some(&c) = bytes.iter().find(|&&c| !Self::allowed(c)) {
            return Err(WireError::PathChar(c));
        }
        let mut buf = [0; PATH_FIELD_LEN - 1];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(QdbPath {
            buf,
            len: bytes.len() as u8,
        })
    }

    /// Validates `s` as a path.
    pub fn new(s: &str) -> Result<Self, WireError> {
        Self::from_bytes(s.as_bytes())
    }

    fn allowed(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'/' | b'.' | b':' | b'@' | b'-')
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The path as text (always ASCII).
    pub fn as_str(&self) -> &str {
        // Only ASCII passes `allowed`, so this never takes the fallback.
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// Whether this is the empty path.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the path ends in `/`, which makes an RM a prefix delete.
    pub fn is_prefix(&self) -> bool {
        self.as_bytes().last() == Some(&b'/')
    }

    /// Whether `self` starts with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.as_bytes().starts_with(prefix)
    }
}

impl core::str::FromStr for QdbPath {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        Self::from_bytes(s.as_bytes())
    }
}

impl PartialEq for QdbPath {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for QdbPath {}
impl PartialOrd for QdbPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QdbPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}
// Eq, Ord and Hash all follow `as_bytes`, so maps keyed by paths can be searched by bytes.
impl core::borrow::Borrow<[u8]> for QdbPath {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl core::hash::Hash for QdbPath {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl fmt::Debug for QdbPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for QdbPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a value as `verify_data` does (no NUL byte), and that it fits `data_len` (below
/// [`MAX_DATA`]), which decoded values always do but values of local callers may not.
pub fn check_data(data: &[u8]) -> Result<(), WireError> {
    if data.len() >= MAX_DATA {
        Err(WireError::DataTooLong(
            u32::try_from(data.len()).unwrap_or(u32::MAX),
        ))
    } else if data.contains(&0) {
        Err(WireError::DataHasNul)
    } else {
        Ok(())
    }
}

/// A view of `struct qdb_hdr` over a buffer (\[QDB\] qubesdb.h).
///
/// Contract (smoltcp's): once [`Header::new_checked`] passes, no accessor can panic. Decoding
/// reads the path only up to its first NUL and never requires zero padding (the C daemon leaves
/// garbage there); encoding always writes zeros.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`check_len`](Self::check_len).
    pub fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps a buffer holding at least a header, and checks the header as `verify_hdr` does.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        h.check()?;
        Ok(h)
    }

    /// Ensures the buffer holds a whole header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated { needed: HEADER_LEN });
        }
        Ok(())
    }

    /// Checks type, path and declared length (not the value, which may not have arrived yet).
    pub fn check(&self) -> Result<(), WireError> {
        let ty = self.msg_type();
        if let MsgType::Unknown(t) = ty {
            return Err(WireError::UnknownType(t));
        }
        self.path()?;
        let len = self.data_len();
        if len as usize >= MAX_DATA {
            return Err(WireError::DataTooLong(len));
        }
        if len != 0 && !ty.carries_data() {
            return Err(WireError::UnexpectedData(ty));
        }
        Ok(())
    }

    /// The type code.
    pub fn msg_type(&self) -> MsgType {
        MsgType::from(self.buffer.as_ref()[field::TYPE])
    }

    /// The path up to its first NUL, validated. Bytes after the NUL are ignored.
    pub fn path(&self) -> Result<QdbPath, WireError> {
        let raw = &self.buffer.as_ref()[field::PATH];
        let end = raw
            .iter()
            .position(|&c| c == 0)
            .ok_or(WireError::PathTooLong)?;
        QdbPath::from_bytes(&raw[..end])
    }

    /// The declared value length (unchecked).
    pub fn data_len(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::DATA_LEN];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The whole buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the type code.
    pub fn set_msg_type(&mut self, t: MsgType) {
        self.buffer.as_mut()[field::TYPE] = u8::from(t);
    }

    /// Writes the path NUL-padded to 64 bytes and zeroes the padding.
    pub fn set_path(&mut self, p: &QdbPath) {
        let b = self.buffer.as_mut();
        let dst = &mut b[field::PATH];
        dst.fill(0);
        dst[..p.as_bytes().len()].copy_from_slice(p.as_bytes());
        b[field::PAD].fill(0);
    }

    /// Sets the declared value length.
    pub fn set_data_len(&mut self, len: u32) {
        self.buffer.as_mut()[field::DATA_LEN].copy_from_slice(&len.to_le_bytes());
    }
}

/// A QubesDB message, one variant per `enum qdb_msg` type. Values are borrowed from the buffer
/// that was parsed (or from the caller, for emitting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `QDB_CMD_READ`.
    Read(QdbPath),
    /// `QDB_CMD_WRITE`: set path = value.
    Write(QdbPath, &'a [u8]),
    /// `QDB_CMD_MULTIREAD`: dump every entry under the path ("" = all).
    Multiread(QdbPath),
    /// `QDB_CMD_LIST`.
    List(QdbPath),
    /// `QDB_CMD_RM`.
    Rm(QdbPath),
    /// `QDB_CMD_WATCH`.
    Watch(QdbPath),
    /// `QDB_CMD_UNWATCH`.
    Unwatch(QdbPath),
    /// `QDB_RESP_OK`: the acknowledged path.
    RespOk(QdbPath),
    /// `QDB_RESP_ERROR_NOENT`.
    RespErrorNoent(QdbPath),
    /// `QDB_RESP_ERROR`.
    RespError(QdbPath),
    /// `QDB_RESP_READ`.
    RespRead(QdbPath, &'a [u8]),
    /// `QDB_RESP_MULTIREAD`: one entry; path "" and no value is the end marker.
    RespMultiread(QdbPath, &'a [u8]),
    /// `QDB_RESP_LIST`.
    RespList(QdbPath),
    /// `QDB_RESP_WATCH`.
    RespWatch(QdbPath),
}

impl<'a> Message<'a> {
    /// The `RESP_MULTIREAD` end marker.
    pub const END_OF_DUMP: Message<'static> = Message::RespMultiread(QdbPath::EMPTY, &[]);

    /// Parses exactly one message (header and value, nothing after). The value may contain
    /// NUL here; the machines apply [`check_data`] where the C daemon does.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let h = Header::new_checked(buf)?;
        let needed = HEADER_LEN + h.data_len() as usize;
        let data = buf
            .get(HEADER_LEN..needed)
            .ok_or(WireError::Truncated { needed })?;
        if buf.len() > needed {
            return Err(WireError::TrailingBytes);
        }
        let p = h.path()?;
        Ok(match h.msg_type() {
            MsgType::Read => Self::Read(p),
            MsgType::Write => Self::Write(p, data),
            MsgType::Multiread => Self::Multiread(p),
            MsgType::List => Self::List(p),
            MsgType::Rm => Self::Rm(p),
            MsgType::Watch => Self::Watch(p),
            MsgType::Unwatch => Self::Unwatch(p),
            MsgType::RespOk => Self::RespOk(p),
            MsgType::RespErrorNoent => Self::RespErrorNoent(p),
            MsgType::RespError => Self::RespError(p),
            MsgType::RespRead => Self::RespRead(p, data),
            MsgType::RespMultiread => Self::RespMultiread(p, data),
            MsgType::RespList => Self::RespList(p),
            MsgType::RespWatch => Self::RespWatch(p),
            MsgType::Unknown(t) => return Err(WireError::UnknownType(t)),
        })
    }

    /// The type code.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Read(_) => MsgType::Read,
            Self::Write(..) => MsgType::Write,
            Self::Multiread(_) => MsgType::Multiread,
            Self::List(_) => MsgType::List,
            Self::Rm(_) => MsgType::Rm,
            Self::Watch(_) => MsgType::Watch,
            Self::Unwatch(_) => MsgType::Unwatch,
            Self::RespOk(_) => MsgType::RespOk,
            Self::RespErrorNoent(_) => MsgType::RespErrorNoent,
            Self::RespError(_) => MsgType::RespError,
            Self::RespRead(..) => MsgType::RespRead,
            Self::RespMultiread(..) => MsgType::RespMultiread,
            Self::RespList(_) => MsgType::RespList,
            Self::RespWatch(_) => MsgType::RespWatch,
        }
    }

    /// The path.
    pub fn path(&self) -> &QdbPath {
        match self {
            Self::Read(p)
            | Self::Write(p, _)
            | Self::Multiread(p)
            | Self::List(p)
            | Self::Rm(p)
            | Self::Watch(p)
            | Self::Unwatch(p)
            | Self::RespOk(p)
            | Self::RespErrorNoent(p)
            | Self::RespError(p)
            | Self::RespRead(p, _)
            | Self::RespMultiread(p, _)
            | Self::RespList(p)
            | Self::RespWatch(p) => p,
        }
    }

    /// The value (empty for types without one).
    pub fn data(&self) -> &'a [u8] {
        match self {
            Self::Write(_, d) | Self::RespRead(_, d) | Self::RespMultiread(_, d) => d,
            _ => &[],
        }
    }

    /// Whether this is the `RESP_MULTIREAD` end marker.
    pub fn is_end_of_dump(&self) -> bool {
        matches!(self, Self::RespMultiread(p, d) if p.is_empty() && d.is_empty())
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data().len()
    }

    /// Encodes into `out` with zero padding; returns the length. A value that is too long, or
    /// on a type without one, is refused so we never send what the C daemon would drop us for.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EmitError> {
        let data = self.data();
        if data.len() >= MAX_DATA {
            return Err(EmitError::Wire(WireError::DataTooLong(data.len() as u32)));
        }
        let n = self.buffer_len();
        let dst = out
            .get_mut(..n)
            .ok_or(EmitError::BufferTooSmall(BufferTooSmall { needed: n }))?;
        let mut h = Header::new_unchecked(&mut *dst);
        h.set_msg_type(self.msg_type());
        h.set_path(self.path());
        h.set_data_len(data.len() as u32);
        dst[HEADER_LEN..].copy_from_slice(data);
        Ok(n)
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Result<alloc::vec::Vec<u8>, WireError> {
        let mut v = alloc::vec![0; self.buffer_len()];
        match self.emit(&mut v) {
            Ok(_) => Ok(v),
            Err(EmitError::Wire(e)) => Err(e),
            // The vector is exactly buffer_len long.
            Err(EmitError::BufferTooSmall(_)) => Err(WireError::Truncated {
                needed: self.buffer_len(),
            }),
        }
    }
}

/// Why [`Message::emit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The message is not encodable.
    Wire(WireError),
    /// The output is too small.
    BufferTooSmall(BufferTooSmall),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => e.fmt(f),
            Self::BufferTooSmall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for EmitError {}

/// QubesDB framing for [`crate::framing::FrameReader`]: the whole header is checked as
/// `verify_hdr` does (type, path, `data_len < 3072`) before the body is allocated.
#[derive(Debug, Clone, Copy, Default)]
pub struct QdbFraming;

impl Framing for QdbFraming {
    const HEADER_LEN: usize = HEADER_LEN;

    fn body_len(&self, header: &[u8]) -> Result<usize, FrameError> {
        let h = Header::new_checked(header).map_err(|e| match e {
            WireError::DataTooLong(len) => FrameError::TooLong {
                len: len.into(),
                max: MAX_DATA - 1,
            },
            other => FrameError::BadHeader(other.reason()),
        })?;
        Ok(h.data_len() as usize)
    }
}

#[cfg(test)]
mod tests;
