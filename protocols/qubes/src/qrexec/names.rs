//! Names on the qrexec wire: request ids (a checked newtype) and the daemon's rules for target
//! and service names (\[QX\] `qrexec-daemon.c`), shared by the agent, the daemon and `cmdline`.

use alloc::string::String;
use core::fmt;

use super::error::PeerError;
use super::wire::IDENT_LEN;
use super::MAX_SERVICE_LEN;

/// Longest request id text (the 32-byte field keeps room for its NUL).
pub const MAX_REQUEST_ID_LEN: usize = IDENT_LEN - 1;

/// Whether the daemon accepts this byte in a request id: letters, digits, `_ - .` and space.
pub fn is_request_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' ')
}

/// Whether this byte is in `RPCNAME_ALLOWED_CHARSET`: letters, digits, `+ - . _`.
pub fn is_rpc_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_')
}

/// A request id (`service_params.ident`): at most 31 bytes from the daemon's charset. Stored
/// inline so that tables of pending calls need no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    buf: [u8; MAX_REQUEST_ID_LEN],
    len: u8,
}

impl RequestId {
    /// A request id from its text; `None` if too long or a byte is outside the charset.
    pub fn new(text: &[u8]) -> Option<Self> {
        if text.len() > MAX_REQUEST_ID_LEN || !text.iter().all(|&b| is_request_id_byte(b)) {
            return None;
        }
        let mut buf = [0u8; MAX_REQUEST_ID_LEN];
        buf.get_mut(..text.len())?.copy_from_slice(text);
        Some(Self {
            buf,
            len: text.len() as u8,
        })
    }

    /// The daemon's rule for the raw 32-byte field: charset bytes, a NUL, and only NULs after it.
    pub fn from_field(raw: &[u8]) -> Result<Self, PeerError> {
        let nul = raw
            .iter()
            .position(|&b| b == 0)
            .ok_or(PeerError::BadRequestId)?;
        let (text, tail) = raw.split_at(nul);
        if tail.iter().any(|&b| b != 0) {
            return Err(PeerError::RequestIdTail);
        }
        Self::new(text).ok_or(PeerError::BadRequestId)
    }

    /// The id's bytes (no NUL).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The id as text (always ASCII).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:?})", self.as_str())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The daemon's `sanitize_name`: every byte other than letters, digits, `_ - .` and `extra`
/// becomes `_`.
fn sanitize(text: &[u8], extra: &[u8]) -> String {
    text.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') || extra.contains(&b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

/// A target domain as the daemon passes it to policy: extra allowed `@` and `:`.
pub fn sanitize_target(text: &[u8]) -> String {
    sanitize(text, b"@:")
}

/// A service name (with argument) as the daemon passes it to policy: extra allowed `+`.
pub fn sanitize_service(text: &[u8]) -> String {
    sanitize(text, b"+")
}

/// Why a `service[+argument]` string is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The service part is empty (also: the string starts with `+`).
    Empty,
    /// A byte outside `A-Za-z0-9+-._` (a NUL included).
    BadChar(u8),
    /// The service part is longer than 255 bytes.
    TooLong(usize),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty service name"),
            Self::BadChar(b) => write!(f, "byte {b:#04x} not allowed in a service name"),
            Self::TooLong(n) => write!(f, "service name of {n} bytes exceeds {MAX_SERVICE_LEN}"),
        }
    }
}

impl core::error::Error for NameError {}

/// Splits and checks `service[+argument]`: both from `RPCNAME_ALLOWED_CHARSET`, the service part
/// non-empty and at most 255 bytes. The argument is `None` when there is no `+` (dom0's form),
/// `Some("")` for a trailing `+` (the daemon's form); policy treats both alike.
pub fn split_service(text: &str) -> Result<(&str, Option<&str>), NameError> {
    if let Some(&b) = text.as_bytes().iter().find(|&&b| !is_rpc_name_byte(b)) {
        return Err(NameError::BadChar(b));
    }
    let (service, argument) = match text.split_once('+') {
        Some((s, a)) => (s, Some(a)),
        None => (text, None),
    };
    if service.is_empty() {
        return Err(NameError::Empty);
    }
    if service.len() > MAX_SERVICE_LEN {
        return Err(NameError::TooLong(service.len()));
    }
    Ok((service, argument))
}
