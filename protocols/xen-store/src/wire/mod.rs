//! The xenstore wire format: the 16-byte `xsd_sockmsg` header view, typed requests and
//! replies, paths and permissions (xs_wire.h, docs/misc/xenstore.txt \[X\]).
//!
//! Contract (smoltcp style): once [`MsgHeader::check_len`] has passed, no accessor can panic.
//! Input is checked, output is not: `emit` trusts values built through checked constructors.

use core::fmt;

mod path;
mod reply;
mod request;
#[cfg(test)]
mod tests;

pub use path::{parse_perm, PathError, XsPath, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
pub use reply::{Reply, ReplyMsg};
pub use request::{Request, RequestMsg};

/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload; xenstored drops a connection that sends more.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`.
pub const REL_PATH_MAX: usize = 2048;
/// The largest whole message.
pub const MSG_MAX: usize = HEADER_LEN + PAYLOAD_MAX;

macro_rules! msg_types {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, )*) => {
        /// `enum xsd_sockmsg_type` (xs_wire.h \[X\]); unknown numbers are kept as values.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MsgType {
            $( $(#[$doc])* $name, )*
            /// A number xs_wire.h does not define (20 or 27 and up, except 0xffff).
            Unknown(u32),
        }

        impl From<u32> for MsgType {
            fn from(v: u32) -> Self {
                match v {
                    $( $value => Self::$name, )*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<MsgType> for u32 {
            fn from(t: MsgType) -> u32 {
                match t {
                    $( MsgType::$name => $value, )*
                    MsgType::Unknown(other) => other,
                }
            }
        }

        impl MsgType {
            /// Every defined type, in numeric order.
            pub const ALL: &'static [MsgType] = &[$( MsgType::$name, )*];
        }
    };
}

msg_types! {
    /// `XS_CONTROL` (alias `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`.
    Directory = 1,
    /// `XS_READ`.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`.
    Introduce = 8,
    /// `XS_RELEASE`.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT` (xenstored to client only).
    WatchEvent = 15,
    /// `XS_ERROR` (xenstored to client only).
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
    /// `XS_GET_FEATURE`.
    GetFeature = 23,
    /// `XS_SET_FEATURE`.
    SetFeature = 24,
    /// `XS_GET_QUOTA`.
    GetQuota = 25,
    /// `XS_SET_QUOTA`.
    SetQuota = 26,
    /// `XS_INVALID`, reserved.
    Invalid = 0xffff,
}

/// Why bytes could not be decoded (or a message could not be encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the header or its `len` needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
    },
    /// `len` above `XENSTORE_PAYLOAD_MAX`; the connection must be dropped.
    PayloadTooLong {
        /// The declared or required length.
        len: usize,
    },
    /// A type this side does not decode in this direction.
    UnexpectedType(MsgType),
    /// A string field without its NUL terminator.
    MissingNul {
        /// The field.
        field: &'static str,
    },
    /// A text field that is not UTF-8.
    BadText {
        /// The field.
        field: &'static str,
    },
    /// A number field that is not strict decimal or out of range.
    BadNumber {
        /// The field.
        field: &'static str,
    },
    /// A `T`/`F` flag with another value.
    BadFlag {
        /// The field.
        field: &'static str,
    },
    /// An invalid path.
    BadPath {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        why: PathError,
    },
    /// A permission that is not `<r|w|b|n><domid>`.
    BadPerm,
    /// A list that must not be empty is (e.g. SET_PERMS without an owner).
    Empty {
        /// The field.
        field: &'static str,
    },
    /// Bytes after the last field.
    TrailingBytes,
    /// An acknowledgement that is not `OK\0`.
    NotOk,
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed } => write!(f, "message truncated: {needed} bytes needed"),
            Self::PayloadTooLong { len } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the {PAYLOAD_MAX}-byte maximum"
                )
            }
            Self::UnexpectedType(t) => write!(f, "unexpected message type {}", u32::from(*t)),
            Self::MissingNul { field } => write!(f, "field {field} lacks its NUL terminator"),
            Self::BadText { field } => write!(f, "field {field} is not UTF-8"),
            Self::BadNumber { field } => write!(f, "field {field} is not a valid decimal number"),
            Self::BadFlag { field } => write!(f, "field {field} is neither T nor F"),
            Self::BadPath { field, why } => write!(f, "field {field}: {why}"),
            Self::BadPerm => f.write_str("permission is not <r|w|b|n><domid>"),
            Self::Empty { field } => write!(f, "field {field} must not be empty"),
            Self::TrailingBytes => f.write_str("bytes after the last field"),
            Self::NotOk => f.write_str("acknowledgement is not OK"),
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
        }
    }
}

impl core::error::Error for WireError {}

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const REQ_ID: Range<usize> = 4..8;
    pub const TX_ID: Range<usize> = 8..12;
    pub const LEN: Range<usize> = 12..16;
    pub const PAYLOAD: usize = 16;
}

fn le32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[r]);
    u32::from_le_bytes(w)
}

/// A view of one `struct xsd_sockmsg` plus its payload (xs_wire.h \[X\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MsgHeader<T> {
    /// A view without checks; accessors may panic until [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose header and declared payload are present and within `PAYLOAD_MAX`.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the header is whole, `len <= PAYLOAD_MAX`, and the payload is present.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { needed: HEADER_LEN });
        }
        let len = le32(b, field::LEN) as usize;
        if len > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong { len });
        }
        if b.len() < HEADER_LEN + len {
            return Err(WireError::Truncated {
                needed: HEADER_LEN + len,
            });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The `type` field.
    pub fn msg_type(&self) -> MsgType {
        MsgType::from(le32(self.buffer.as_ref(), field::TYPE))
    }

    /// The `req_id` field.
    pub fn req_id(&self) -> u32 {
        le32(self.buffer.as_ref(), field::REQ_ID)
    }

    /// The `tx_id` field.
    pub fn tx_id(&self) -> u32 {
        le32(self.buffer.as_ref(), field::TX_ID)
    }

    /// The `len` field.
    pub fn len(&self) -> u32 {
        le32(self.buffer.as_ref(), field::LEN)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.len() as usize
    }

    /// The payload (`len` bytes after the header).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MsgHeader<T> {
    fn set32(&mut self, r: core::ops::Range<usize>, v: u32) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets `type`.
    pub fn set_msg_type(&mut self, t: MsgType) {
        self.set32(field::TYPE, t.into());
    }
    /// Sets `req_id`.
    pub fn set_req_id(&mut self, v: u32) {
        self.set32(field::REQ_ID, v);
    }
    /// Sets `tx_id`.
    pub fn set_tx_id(&mut self, v: u32) {
        self.set32(field::TX_ID, v);
    }
    /// Sets `len`.
    pub fn set_len(&mut self, v: u32) {
        self.set32(field::LEN, v);
    }
    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// The decoded header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `type`.
    pub msg_type: MsgType,
    /// `req_id`.
    pub req_id: u32,
    /// `tx_id`.
    pub tx_id: u32,
    /// `len`.
    pub len: u32,
}

impl Header {
    /// Decodes a header from the first 16 bytes, refusing `len > PAYLOAD_MAX` (the payload
    /// need not be present yet: this is what a stream reader uses to size a frame).
    pub fn parse_prefix(bytes: &[u8]) -> Result<Header, WireError> {
        let head = bytes
            .get(..HEADER_LEN)
            .ok_or(WireError::Truncated { needed: HEADER_LEN })?;
        let v = MsgHeader::new_unchecked(head);
        let len = v.len();
        if len as usize > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong { len: len as usize });
        }
        Ok(Header {
            msg_type: v.msg_type(),
            req_id: v.req_id(),
            tx_id: v.tx_id(),
            len,
        })
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Writes a header and `payload` into `buf`, returning the bytes written.
pub(crate) fn emit_msg(
    buf: &mut [u8],
    msg_type: MsgType,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
) -> Result<usize, WireError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong { len: payload.len() });
    }
    let total = HEADER_LEN + payload.len();
    let out = buf
        .get_mut(..total)
        .ok_or(WireError::BufferTooSmall { needed: total })?;
    let mut v = MsgHeader::new_unchecked(out);
    v.set_msg_type(msg_type);
    v.set_req_id(req_id);
    v.set_tx_id(tx_id);
    v.set_len(payload.len() as u32);
    v.payload_mut().copy_from_slice(payload);
    Ok(total)
}

/// A cursor over NUL-separated payload fields that cannot overrun (rustls `Reader`).
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Raw bytes up to the next NUL, which is consumed.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::MissingNul { field })?;
        let (s, rest) = self.rest.split_at(nul);
        self.rest = rest.get(1..).unwrap_or(&[]);
        Ok(s)
    }

    pub(crate) fn text(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.bytes(field)?).map_err(|_| WireError::BadText { field })
    }

    pub(crate) fn number(&mut self, field: &'static str) -> Result<u64, WireError> {
        parse_decimal(self.bytes(field)?).ok_or(WireError::BadNumber { field })
    }

    pub(crate) fn domid(&mut self, field: &'static str) -> Result<platform_api::DomId, WireError> {
        let n = self.number(field)?;
        u32::try_from(n)
            .ok()
            .and_then(|n| platform_api::DomId::new(n).ok())
            .ok_or(WireError::BadNumber { field })
    }

    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.bytes(field)? {
            b"T" => Ok(true),
            b"F" => Ok(false),
            _ => Err(WireError::BadFlag { field }),
        }
    }

    /// Everything left, unterminated (a WRITE value).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Strict unsigned decimal: digits only, at most 20 of them, fits in u64.
pub(crate) fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Appends `s` and a NUL.
pub(crate) fn put_str(out: &mut alloc::vec::Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// Appends a decimal number and a NUL.
pub(crate) fn put_num(out: &mut alloc::vec::Vec<u8>, v: impl fmt::Display) {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    let _ = write!(s, "{v}");
    put_str(out, s.as_bytes());
}
