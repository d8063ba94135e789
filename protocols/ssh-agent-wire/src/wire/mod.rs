//! Bytes <-> values for the agent protocol (draft-miller-ssh-agent, OpenSSH PROTOCOL.agent),
//! no state. Contract: every reader is bounds-checked; a parse either returns a value or a `WireError`.

pub mod codec;
pub mod constraint;
pub mod frame;
pub mod message;

use core::fmt;

pub use constraint::{Constraint, DestConstraint, Hop, KeySpec};
pub use frame::{Frame, FrameReader, MAX_MESSAGE_LEN};
pub use message::{Extension, IdentityEntry, Passphrase, Request, Response, SessionBind};

/// Message numbers (authfd.h, draft-miller-ssh-agent §6.1).
pub mod msg {
    /// Generic failure.
    pub const FAILURE: u8 = 5;
    /// Generic success.
    pub const SUCCESS: u8 = 6;
    /// List the keys.
    pub const REQUEST_IDENTITIES: u8 = 11;
    /// The key list.
    pub const IDENTITIES_ANSWER: u8 = 12;
    /// Sign with a key.
    pub const SIGN_REQUEST: u8 = 13;
    /// A signature.
    pub const SIGN_RESPONSE: u8 = 14;
    /// Add a key.
    pub const ADD_IDENTITY: u8 = 17;
    /// Remove a key.
    pub const REMOVE_IDENTITY: u8 = 18;
    /// Remove every key.
    pub const REMOVE_ALL_IDENTITIES: u8 = 19;
    /// Add PKCS#11 keys (refused here).
    pub const ADD_SMARTCARD_KEY: u8 = 20;
    /// Remove PKCS#11 keys (refused here).
    pub const REMOVE_SMARTCARD_KEY: u8 = 21;
    /// Lock with a passphrase.
    pub const LOCK: u8 = 22;
    /// Unlock with the passphrase.
    pub const UNLOCK: u8 = 23;
    /// Add a key with constraints.
    pub const ADD_ID_CONSTRAINED: u8 = 25;
    /// Add PKCS#11 keys with constraints (refused here).
    pub const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
    /// A named extension request.
    pub const EXTENSION: u8 = 27;
    /// An extension failed.
    pub const EXTENSION_FAILURE: u8 = 28;
    /// An extension's answer (draft-ietf-sshm-ssh-agent; used for `query`).
    pub const EXTENSION_RESPONSE: u8 = 29;
}

/// Key constraint numbers (authfd.h).
pub mod constrain {
    /// `uint32 seconds`.
    pub const LIFETIME: u8 = 1;
    /// Ask the owner before each signature.
    pub const CONFIRM: u8 = 2;
    /// XMSS signature budget (not supported: refused).
    pub const MAXSIGN: u8 = 3;
    /// `string name || extension-specific`.
    pub const EXTENSION: u8 = 255;
}

/// SIGN_REQUEST flags (authfd.h `SSH_AGENT_RSA_SHA2_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignFlags(pub u32);

impl SignFlags {
    /// rsa-sha2-256.
    pub const RSA_SHA2_256: u32 = 2;
    /// rsa-sha2-512.
    pub const RSA_SHA2_512: u32 = 4;

    /// Whether `bit` is set.
    pub fn contains(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// Why a message could not be decoded. The agent answers FAILURE and reads the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The message has no type byte.
    Empty,
    /// A field runs past the end of its message or nested string.
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// Bytes remain after the last field.
    TrailingBytes {
        /// What was being read.
        what: &'static str,
        /// How many bytes remain.
        extra: usize,
    },
    /// A field is longer than this implementation accepts.
    TooLong {
        /// The field.
        field: &'static str,
        /// The maximum.
        max: usize,
    },
    /// Too many entries in a list.
    TooMany {
        /// The list.
        what: &'static str,
        /// The maximum.
        max: usize,
    },
    /// A text field is not UTF-8.
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// An mpint is negative or not minimally encoded.
    BadMpint {
        /// The field.
        field: &'static str,
    },
    /// A key blob's type name is empty, too long or not printable ASCII.
    BadKeyType,
    /// A key or certificate does not decode.
    BadKey,
    /// A private key type this agent cannot read.
    UnsupportedKeyType,
    /// A certificate's key differs from the private key sent with it.
    KeyMismatch,
    /// An unknown key constraint: its length is implicit, so the message cannot be read.
    UnknownConstraint {
        /// The constraint type byte.
        kind: u8,
    },
    /// An unknown constraint extension (`SSH_AGENT_CONSTRAIN_EXTENSION`).
    UnknownConstraintExtension,
    /// A constraint given twice.
    DuplicateConstraint,
    /// A destination constraint breaks PROTOCOL.agent's rules (from-user set, to-host missing...).
    BadDestConstraint,
    /// A reserved field that must be empty is not.
    ReservedNotEmpty,
    /// A response type a client does not know.
    UnknownResponse {
        /// The message type.
        kind: u8,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty message"),
            Self::Truncated { field } => write!(f, "truncated {field}"),
            Self::TrailingBytes { what, extra } => write!(f, "{extra} bytes after {what}"),
            Self::TooLong { field, max } => write!(f, "{field} longer than {max} bytes"),
            Self::TooMany { what, max } => write!(f, "more than {max} {what}"),
            Self::NotUtf8 { field } => write!(f, "{field} is not UTF-8"),
            Self::BadMpint { field } => write!(f, "{field} is not a canonical non-negative mpint"),
            Self::BadKeyType => f.write_str("bad key type name"),
            Self::BadKey => f.write_str("key does not decode"),
            Self::UnsupportedKeyType => f.write_str("unsupported private key type"),
            Self::KeyMismatch => f.write_str("certificate does not match the private key"),
            Self::UnknownConstraint { kind } => write!(f, "unknown key constraint {kind}"),
            Self::UnknownConstraintExtension => f.write_str("unknown key constraint extension"),
            Self::DuplicateConstraint => f.write_str("key constraint given twice"),
            Self::BadDestConstraint => f.write_str("inconsistent destination constraint"),
            Self::ReservedNotEmpty => f.write_str("reserved field not empty"),
            Self::UnknownResponse { kind } => write!(f, "unknown response type {kind}"),
        }
    }
}

impl core::error::Error for WireError {}

#[cfg(test)]
pub(crate) mod tests;
