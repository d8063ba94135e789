//! GUI protocol wire format: handshake words, the 12-byte `msg_hdr` and a typed body for every
//! type 124..149 with its exact size (qubes-gui-protocol.h \[QG\]; rules from the daemon \[QGD\]).

// Decoding is strict: a body must have exactly its type's size (variable bodies: their own
// rules), because from 1.6 the daemon exits on a mismatch. Fixed text fields are read up to
// their first NUL; encoders zero-pad them.

use core::fmt;

use crate::framing::{FrameError, Framing};

mod body;
mod message;
pub use body::{
    Button, Configure, Create, Crossing, Cursor, Focus, Keypress, MapInfo, Motion, Resize, ShmCmd,
    ShmImage, WindowDumpHdr, WindowFlags, WindowHints, XConf,
};
pub use message::{check_dump, dump_pages, EmitError, Message, WmClass, WmName, Words};

/// Size of `struct msg_hdr`.
pub const HEADER_LEN: usize = 12;
/// `MAX_WINDOW_WIDTH`: CREATE/CONFIGURE are clamped to it, a larger dump is fatal.
pub const MAX_WINDOW_WIDTH: u32 = 16384;
/// `MAX_WINDOW_HEIGHT`.
pub const MAX_WINDOW_HEIGHT: u32 = 6144;
/// `MAX_GRANT_REFS_COUNT` (= `MAX_MFN_COUNT`): pages of one dump.
pub const MAX_GRANT_REFS: u32 = 98304;
/// Page size of a dump's grants.
pub const PAGE_SIZE: u64 = 4096;
/// Clipboard limit below 1.8 (`MAX_CLIPBOARD_SIZE`).
pub const MAX_CLIPBOARD_OLD: usize = 65000;
/// Clipboard limit at 1.8 (`MAX_CLIPBOARD_BUFFER_SIZE` + 1, as the reference states).
pub const MAX_CLIPBOARD_1_8: usize = 256_001;
/// Size of `msg_wmname`.
pub const WMNAME_LEN: usize = 128;
/// Size of each `msg_wmclass` field.
pub const WMCLASS_FIELD_LEN: usize = 64;
/// Size of `msg_keymap_notify`.
pub const KEYMAP_LEN: usize = 32;
/// Size of `msg_execute` (obsolete).
pub const EXECUTE_LEN: usize = 255;
/// `WINDOW_DUMP_TYPE_GRANT_REFS`.
pub const WINDOW_DUMP_TYPE_GRANT_REFS: u32 = 0;
/// Largest body of a message type we do not know that we skip (daemon to agent only).
pub const MAX_UNKNOWN_BODY: usize = 4096;

/// A protocol version word, `(major << 16) | minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32);

impl Version {
    /// 1.1: mirage's version; the daemon sends only xconf.
    pub const V1_1: Version = Version::new(1, 1);
    /// 1.2: CLIPBOARD_DATA length in `untrusted_len`; WINDOW_DUMP.
    pub const V1_2: Version = Version::new(1, 2);
    /// 1.4: the daemon sends its version word.
    pub const V1_4: Version = Version::new(1, 4);
    /// 1.5: the daemon echoes DESTROY.
    pub const V1_5: Version = Version::new(1, 5);
    /// 1.6: strict lengths.
    pub const V1_6: Version = Version::new(1, 6);
    /// 1.7: WINDOW_DUMP_ACK.
    pub const V1_7: Version = Version::new(1, 7);
    /// 1.8: the larger clipboard; the highest version this crate implements.
    pub const V1_8: Version = Version::new(1, 8);

    /// Builds `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        Version(((major as u32) << 16) | minor as u32)
    }
    /// The major number (must be 1).
    pub fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The minor number.
    pub fn minor(self) -> u16 {
        self.0 as u16
    }
    /// The largest clipboard payload at this version.
    pub fn max_clipboard(self) -> usize {
        if self >= Self::V1_8 {
            MAX_CLIPBOARD_1_8
        } else {
            MAX_CLIPBOARD_OLD
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// A window id. 0 is the daemon's whole-screen window and never a window of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowId(pub u32);

macro_rules! msg_types {
    ($($(#[$m:meta])* $name:ident = $v:literal,)+) => {
        /// `MSG_*` type codes; unknown codes are kept as values.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MsgType {
            $($(#[$m])* $name,)+
            /// Any other code.
            Unknown(u32),
        }
        impl From<u32> for MsgType {
            fn from(v: u32) -> Self {
                match v { $($v => Self::$name,)+ other => Self::Unknown(other) }
            }
        }
        impl From<MsgType> for u32 {
            fn from(t: MsgType) -> u32 {
                match t { $(MsgType::$name => $v,)+ MsgType::Unknown(v) => v }
            }
        }
    };
}

msg_types! {
    /// 124, D→A.
    Keypress = 124,
    /// 125, D→A.
    Button = 125,
    /// 126, D→A.
    Motion = 126,
    /// 127, D→A.
    Crossing = 127,
    /// 128, D→A.
    Focus = 128,
    /// 129, obsolete.
    Resize = 129,
    /// 130, A→D.
    Create = 130,
    /// 131, A→D, and D→A as the ack (≥1.5).
    Destroy = 131,
    /// 132, A↔D.
    Map = 132,
    /// 133, A→D.
    Unmap = 133,
    /// 134, A↔D.
    Configure = 134,
    /// 135, A→D, deprecated.
    MfnDump = 135,
    /// 136, A→D.
    ShmImage = 136,
    /// 137, D→A.
    Close = 137,
    /// 138, obsolete.
    Execute = 138,
    /// 139, D→A.
    ClipboardReq = 139,
    /// 140, A↔D.
    ClipboardData = 140,
    /// 141, A→D.
    WmName = 141,
    /// 142, D→A.
    KeymapNotify = 142,
    /// 143, A→D.
    Dock = 143,
    /// 144, A→D.
    WindowHints = 144,
    /// 145, A↔D.
    WindowFlags = 145,
    /// 146, A→D.
    WmClass = 146,
    /// 147, A→D.
    WindowDump = 147,
    /// 148, A→D.
    Cursor = 148,
    /// 149, D→A (≥1.7).
    WindowDumpAck = 149,
}

impl MsgType {
    /// The exact body size of a fixed-size type; `None` for variable bodies and unknown types.
    pub fn fixed_len(self) -> Option<usize> {
        Some(match self {
            Self::Keypress => Keypress::LEN,
            Self::Button => Button::LEN,
            Self::Motion => Motion::LEN,
            Self::Crossing => Crossing::LEN,
            Self::Focus => Focus::LEN,
            Self::Resize => Resize::LEN,
            Self::Create => Create::LEN,
            Self::Map => MapInfo::LEN,
            Self::Configure => Configure::LEN,
            Self::ShmImage => ShmImage::LEN,
            Self::Execute => EXECUTE_LEN,
            Self::WmName => WMNAME_LEN,
            Self::KeymapNotify => KEYMAP_LEN,
            Self::WindowHints => WindowHints::LEN,
            Self::WindowFlags => WindowFlags::LEN,
            Self::WmClass => 2 * WMCLASS_FIELD_LEN,
            Self::Cursor => Cursor::LEN,
            Self::Destroy
            | Self::Unmap
            | Self::Close
            | Self::ClipboardReq
            | Self::Dock
            | Self::WindowDumpAck => 0,
            Self::MfnDump | Self::ClipboardData | Self::WindowDump | Self::Unknown(_) => {
                return None
            }
        })
    }
}

/// Why bytes are not a valid GUI message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than a header (or a handshake word) needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
    },
    /// `untrusted_len` differs from the bytes that follow the header.
    LengthMismatch {
        /// Declared.
        declared: u32,
        /// Present.
        got: u32,
    },
    /// A body of the wrong size for its type.
    BodyLength {
        /// The type's size.
        expected: u32,
        /// The size given.
        got: u32,
    },
    /// A type code outside 124..149.
    UnknownType(u32),
    /// A dump whose type is not `WINDOW_DUMP_TYPE_GRANT_REFS`.
    DumpType(u32),
    /// A dump larger than 16384×6144.
    DumpTooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A dump whose refs are not a whole number of u32, too many, or too few for its size.
    DumpRefs(u32),
    /// An MFNDUMP whose `num_mfn` does not match its body or exceeds the limit.
    MfnCount(u32),
    /// A clipboard payload over the version's limit.
    ClipboardTooLong(u32),
    /// A version word whose major is not 1.
    BadMajor(u16),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed } => write!(f, "gui message truncated: {needed} bytes needed"),
            Self::LengthMismatch { declared, got } => {
                write!(f, "gui: untrusted_len {declared} but {got} bytes")
            }
            Self::BodyLength { expected, got } => {
                write!(f, "gui: body of {got} bytes, expected {expected}")
            }
            Self::UnknownType(t) => write!(f, "gui: unknown message type {t}"),
            Self::DumpType(t) => write!(f, "gui: window dump type {t} is not grant refs"),
            Self::DumpTooLarge { width, height } => {
                write!(f, "gui: window dump {width}x{height} too large")
            }
            Self::DumpRefs(n) => write!(f, "gui: window dump with invalid refs ({n} bytes)"),
            Self::MfnCount(n) => write!(f, "gui: mfndump with invalid num_mfn {n}"),
            Self::ClipboardTooLong(n) => {
                write!(f, "gui: clipboard payload of {n} bytes over the limit")
            }
            Self::BadMajor(m) => write!(f, "gui: protocol major version {m}, expected 1"),
        }
    }
}

impl core::error::Error for WireError {}

impl WireError {
    /// A static reason, for [`FrameError::BadHeader`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::LengthMismatch { .. } => "untrusted_len mismatch",
            Self::BodyLength { .. } => "body size differs from the type's size",
            Self::UnknownType(_) => "unknown message type",
            Self::DumpType(_) => "window dump type is not grant refs",
            Self::DumpTooLarge { .. } => "window dump too large",
            Self::DumpRefs(_) => "window dump refs invalid",
            Self::MfnCount(_) => "mfndump num_mfn invalid",
            Self::ClipboardTooLong(_) => "clipboard payload too long",
            Self::BadMajor(_) => "protocol major is not 1",
        }
    }
}

/// The output buffer is too small; `needed` bytes are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes needed.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// A view of `struct msg_hdr` (\[QG\]); the same in both directions.
#[derive(Debug, Clone, Copy)]
pub struct MsgHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MsgHeader<T> {
    /// Wraps a buffer without checking; accessors may panic until [`check_len`](Self::check_len).
    pub fn new_unchecked(buffer: T) -> Self {
        MsgHeader { buffer }
    }
    /// Wraps a buffer holding at least a header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }
    /// Ensures the buffer holds a header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated { needed: HEADER_LEN });
        }
        Ok(())
    }
    /// The type.
    pub fn msg_type(&self) -> MsgType {
        MsgType::from(u32::from_le_bytes(body::word(self.buffer.as_ref(), 0)))
    }
    /// The window.
    pub fn window(&self) -> WindowId {
        WindowId(u32::from_le_bytes(body::word(self.buffer.as_ref(), 1)))
    }
    /// The declared body length.
    pub fn untrusted_len(&self) -> u32 {
        u32::from_le_bytes(body::word(self.buffer.as_ref(), 2))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MsgHeader<T> {
    /// Writes all three fields.
    pub fn set(&mut self, ty: MsgType, window: WindowId, len: u32) {
        let b = self.buffer.as_mut();
        b[0..4].copy_from_slice(&u32::from(ty).to_le_bytes());
        b[4..8].copy_from_slice(&window.0.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
    }
}

/// Which peer's messages a [`GuiFraming`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Agent → daemon: read by the daemon side.
    Agent,
    /// Daemon → agent: read by the agent side.
    Daemon,
}

/// GUI framing for [`crate::framing::FrameReader`] at a negotiated version.
///
/// From the agent: an unknown type is fatal; at ≥1.6 `untrusted_len` must equal the type's
/// size (the daemon exits otherwise); below 1.6 the daemon reads the type's size whatever the
/// header says, and so does this. From the daemon: `untrusted_len` must equal a known type's
/// size; an unknown type is framed by `untrusted_len` (at most [`MAX_UNKNOWN_BODY`]) to be
/// skipped. Variable bodies are capped before allocation.
#[derive(Debug, Clone, Copy)]
pub struct GuiFraming {
    /// Whose messages.
    pub sender: Sender,
    /// The negotiated version.
    pub version: Version,
}

impl Framing for GuiFraming {
    const HEADER_LEN: usize = HEADER_LEN;

    fn body_len(&self, header: &[u8]) -> Result<usize, FrameError> {
        let h = MsgHeader::new_checked(header).map_err(|e| FrameError::BadHeader(e.reason()))?;
        let len = h.untrusted_len();
        let too_long = |max: usize| FrameError::TooLong {
            len: len.into(),
            max,
        };
        let strict = self.sender == Sender::Daemon || self.version >= Version::V1_6;
        let ty = h.msg_type();
        if let Some(n) = ty.fixed_len() {
            if strict && len as usize != n {
                return Err(FrameError::BadHeader(
                    WireError::LengthMismatch {
                        declared: len,
                        got: n as u32,
                    }
                    .reason(),
                ));
            }
            return Ok(n);
        }
        match ty {
            MsgType::ClipboardData => {
                // Before 1.2 the length travelled in the window field.
                let len = if self.version < Version::V1_2 {
                    h.window().0
                } else {
                    len
                };
                let max = self.version.max_clipboard();
                if len as usize > max {
                    return Err(FrameError::TooLong {
                        len: len.into(),
                        max,
                    });
                }
                Ok(len as usize)
            }
            MsgType::WindowDump => {
                let max = WindowDumpHdr::LEN + 4 * MAX_GRANT_REFS as usize;
                if len as usize > max {
                    return Err(too_long(max));
                }
                Ok(len as usize)
            }
            MsgType::MfnDump => {
                let max = ShmCmd::LEN + 4 * MAX_GRANT_REFS as usize;
                if len as usize > max {
                    return Err(too_long(max));
                }
                Ok(len as usize)
            }
            _ if self.sender == Sender::Daemon => {
                if len as usize > MAX_UNKNOWN_BODY {
                    return Err(too_long(MAX_UNKNOWN_BODY));
                }
                Ok(len as usize)
            }
            _ => Err(FrameError::BadHeader(
                WireError::UnknownType(u32::from(ty)).reason(),
            )),
        }
    }
}

/// Reads a raw handshake word (version) from 4 bytes.
pub fn parse_version(b: &[u8]) -> Result<Version, WireError> {
    let w = b.get(..4).ok_or(WireError::Truncated { needed: 4 })?;
    let v = Version(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    if v.major() != 1 {
        return Err(WireError::BadMajor(v.major()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
