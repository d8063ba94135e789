//! What can go wrong opening or saving a vault, sorted by cause: device, format, passphrase,
//! tampering, capacity.

use core::fmt;

use crate::device::DeviceError;
use crate::records::RecordsError;

/// Which authenticated part failed its check under a correct passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The header MAC (sequence, lengths, nonces, tags) did not verify.
    Header,
    /// The body AEAD tag did not verify.
    Body,
}

/// A vault operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultError {
    /// The block device failed.
    Device(DeviceError),
    /// The device's sector size or count cannot hold two slots.
    BadGeometry,
    /// Neither slot holds a vault (no magic).
    NotFormatted,
    /// A slot holds a format version this code does not read, and no slot is readable.
    UnsupportedVersion(u16),
    /// Slots carry the magic but none passes its checksum: torn write or bit rot.
    Corrupt,
    /// The stored KDF parameters are invalid or beyond the caller's limits.
    KdfRefused,
    /// The wrapped data key did not open: wrong passphrase (or altered salt, KDF fields, wrapped key).
    WrongPassphrase,
    /// The passphrase is right and the checksum intact, yet an authenticated part fails: deliberate change.
    Tampered(Part),
    /// The decrypted records do not decode.
    BadRecords(RecordsError),
    /// The state needs `needed` bytes but a slot holds `capacity`; nothing was written.
    Full {
        /// Bytes the encrypted body needs.
        needed: usize,
        /// Bytes a slot can hold for the body.
        capacity: usize,
    },
    /// The 64-bit sequence number would wrap.
    SequenceExhausted,
}

impl From<DeviceError> for VaultError {
    fn from(e: DeviceError) -> Self {
        VaultError::Device(e)
    }
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::Device(e) => write!(f, "vault device: {e}"),
            VaultError::BadGeometry => {
                f.write_str("device too small or odd sector size for a vault")
            }
            VaultError::NotFormatted => f.write_str("no vault on the device"),
            VaultError::UnsupportedVersion(v) => write!(f, "unsupported vault format version {v}"),
            VaultError::Corrupt => f.write_str("vault corrupt: no slot passes its checksum"),
            VaultError::KdfRefused => f.write_str("vault KDF parameters refused"),
            VaultError::WrongPassphrase => f.write_str("wrong passphrase"),
            VaultError::Tampered(Part::Header) => f.write_str("vault header tampered with"),
            VaultError::Tampered(Part::Body) => f.write_str("vault body tampered with"),
            VaultError::BadRecords(e) => write!(f, "vault records: {e}"),
            VaultError::Full { needed, capacity } => {
                write!(f, "vault full: needs {needed} bytes, slot holds {capacity}")
            }
            VaultError::SequenceExhausted => f.write_str("vault sequence number exhausted"),
        }
    }
}
