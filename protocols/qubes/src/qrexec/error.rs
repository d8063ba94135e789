//! qrexec errors sorted by blame: undecodable bytes, forbidden but decodable messages, and our
//! own limits or misuse. Each maps to one disposition (see [`Error::is_fatal`]).

use core::fmt;

use super::wire::{MsgType, Stream};
use crate::framing::FrameError;

/// A message that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header or the length it declares.
    Truncated {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes there are.
        got: usize,
    },
    /// The body length is not one this message type can have.
    BadLength {
        /// The message type.
        msg: MsgType,
        /// The declared body length.
        len: u32,
    },
    /// A string field has no terminating NUL (or, for a trailing name, NUL is not the last byte).
    Unterminated {
        /// Which field.
        field: &'static str,
    },
    /// A type number this protocol does not define.
    UnknownType(u32),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, got } => {
                write!(f, "qrexec message truncated: {got} of {needed} bytes")
            }
            Self::BadLength { msg, len } => write!(f, "{msg:?} with invalid body length {len}"),
            Self::Unterminated { field } => write!(f, "field {field} is not NUL-terminated"),
            Self::UnknownType(t) => write!(f, "unknown qrexec message type {t:#x}"),
        }
    }
}

impl core::error::Error for WireError {}

/// We could not encode a message (our own input was wrong; never the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A string does not fit its fixed field (with its NUL), or a body exceeds `u32`.
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Longest text that fits.
        max: usize,
    },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: need {needed} bytes")
            }
            Self::FieldTooLong { field, max } => write!(f, "{field} longer than {max} bytes"),
        }
    }
}

impl core::error::Error for EmitError {}

/// A well-formed message the peer was not allowed to send; one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// The peer's HELLO announces a version below 2.
    VersionTooOld(u32),
    /// The first message was not HELLO.
    ExpectedHello(MsgType),
    /// A message that this side, role or state never receives.
    UnexpectedMessage(MsgType),
    /// A message type not allowed at the negotiated version (TRIGGER_SERVICE at v>=3,
    /// TRIGGER_SERVICE3 at v<3, TRIGGER_SERVICE4 at v<4).
    WrongVersion {
        /// The message type.
        msg: MsgType,
        /// The negotiated version.
        version: u32,
    },
    /// A request id with a character outside `A-Za-z0-9_-. ` or no NUL in its 32 bytes.
    BadRequestId,
    /// A request id with a non-NUL byte after its NUL.
    RequestIdTail,
    /// A request id we never issued (or already answered).
    UnknownRequestId,
    /// A domain id at or above `DOMID_FIRST_RESERVED`.
    BadDomId(u32),
    /// A data port outside 513..=768.
    BadPort(u32),
    /// A data chunk longer than the negotiated maximum.
    ChunkTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Data on a stream after its EOF.
    DataAfterEof(Stream),
    /// A message after EXIT_CODE ended the stream.
    AfterExit(MsgType),
    /// The data channel closed before EXIT_CODE arrived ("closed early").
    ClosedEarly,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionTooOld(v) => write!(f, "peer speaks qrexec version {v}, below 2"),
            Self::ExpectedHello(t) => write!(f, "expected HELLO, got {t:?}"),
            Self::UnexpectedMessage(t) => write!(f, "unexpected {t:?} here"),
            Self::WrongVersion { msg, version } => {
                write!(f, "{msg:?} not allowed at version {version}")
            }
            Self::BadRequestId => f.write_str("request id has a forbidden character or no NUL"),
            Self::RequestIdTail => f.write_str("request id has non-NUL bytes after its NUL"),
            Self::UnknownRequestId => f.write_str("reply for a request id we did not issue"),
            Self::BadDomId(d) => write!(f, "invalid domain id {d}"),
            Self::BadPort(p) => write!(f, "invalid data port {p}"),
            Self::ChunkTooLong { len, max } => write!(f, "data chunk of {len} bytes exceeds {max}"),
            Self::DataAfterEof(s) => write!(f, "{s:?} data after its EOF"),
            Self::AfterExit(t) => write!(f, "{t:?} after EXIT_CODE"),
            Self::ClosedEarly => f.write_str("data channel closed before EXIT_CODE"),
        }
    }
}

impl core::error::Error for PeerError {}

/// What a qrexec machine call failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The peer's bytes do not frame (declared length over the cap). Fatal, sticky.
    Frame(FrameError),
    /// The peer's message does not decode. Fatal, sticky.
    Wire(WireError),
    /// The peer broke a protocol rule. Fatal, sticky.
    Peer(PeerError),
    /// One of our bounds is reached; retry after draining (not sticky).
    Full {
        /// Which bound.
        what: &'static str,
    },
    /// Our own argument is invalid (not sticky).
    InvalidArgument(&'static str),
    /// The call needs the handshake to be complete first (not sticky).
    HandshakePending,
    /// The call is not allowed in this role or state (not sticky).
    NotAllowed(&'static str),
}

impl Error {
    /// Whether the channel is dead: the peer's fault, to be disconnected.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Frame(_) | Self::Wire(_) | Self::Peer(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::Wire(e) => e.fmt(f),
            Self::Peer(e) => e.fmt(f),
            Self::Full { what } => write!(f, "{what} full"),
            Self::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Self::HandshakePending => f.write_str("qrexec handshake not complete"),
            Self::NotAllowed(what) => write!(f, "not allowed: {what}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Self::Peer(e)
    }
}
