//! vault-store: an encrypted, crash-safe store of named records on a block device, shared by
//! the password vault (passman) and the ssh-agent vault (ssh-agent-vm).
//!
//! **Layer**: lib (no_std + alloc, `forbid(unsafe_code)`), sans-IO over the [`BlockDevice`] trait;
//! entropy comes from the caller ([`platform_api::Entropy`]), never from the OS. A
//! [`platform_api::BlockDevice`] (blkfront, the hosted file) is used through [`PlatformDevice`];
//! [`MemDevice`] implements both traits.
//!
//! **Model**: the state is a set of [`Records`] (opaque byte values keyed by name: passman keeps one
//! record per entry plus its audit log, ssh-agent-vm one per key with its constraints). Each save
//! encrypts the whole record set with XChaCha20-Poly1305 under a random 32-byte data key; the
//! data key is wrapped (XChaCha20-Poly1305) under a key derived from the passphrase with argon2id
//! (default m = 64 MiB, t = 3, p = 1) or scrypt (N = 2^15, r = 8, p = 1), parameters in the header.
//!
//! **Crash safety**: the device is split into two slots, A = sectors `0..n/2`, B = `n/2..2*(n/2)`.
//! A save writes the whole new image into the slot *not* holding the newest good copy, flushes,
//! and only then treats it as current; open takes the slot with the highest sequence among those
//! whose checksum verifies. The only good copy is never overwritten; a save that does not fit a
//! slot fails with [`VaultError::Full`] before writing anything.
//!
//! **Telling failures apart** (in this order at open):
//! checksum (BLAKE2b-256 over header and body) fails on every slot → [`VaultError::Corrupt`]
//! (torn write, bit rot; a damaged newest slot silently falls back to the older copy, visible in
//! [`Vault::other_slot`]); the wrapped key's AEAD tag fails → [`VaultError::WrongPassphrase`]
//! (also what altered salt, KDF fields or wrapped key look like); the header MAC (keyed BLAKE2b
//! under a subkey of the data key) fails → `Tampered(Header)`; the body tag fails →
//! `Tampered(Body)`. An authentication failure in the newest slot is reported, not skipped.
//! Rollback (replaying an older, intact image) cannot be detected without outside state.
//!
//! **Secrets**: data key, derived keys, plaintext and record values live in `Zeroizing` buffers;
//! no `Debug` prints them; tags and MACs are compared in constant time (`subtle`). The caller
//! owns the passphrase buffer and should zeroize it.
//!
//! ## Format, version 1 (all integers little-endian)
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 8 | magic `QVAULTST` |
//! | 8 | 2 | format version = 1 |
//! | 10 | 1 | KDF: 1 = argon2id v1.3, 2 = scrypt |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | argon2id m (KiB) / scrypt log2 N |
//! | 16 | 4 | argon2id t / scrypt r |
//! | 20 | 4 | argon2id p / scrypt p |
//! | 24 | 32 | salt |
//! | 56 | 24 | key-wrap nonce |
//! | 80 | 32 | wrapped data key (AD = bytes 0..56) |
//! | 112 | 16 | key-wrap tag |
//! | 128 | 8 | sequence number (higher = newer) |
//! | 136 | 4 | body length (ciphertext bytes) |
//! | 140 | 4 | reserved, 0 |
//! | 144 | 24 | body nonce |
//! | 168 | 16 | body tag (AD = bytes 0..10) |
//! | 184 | 32 | header MAC: keyed BLAKE2b-256 over bytes 0..184 |
//! | 216 | 32 | checksum: BLAKE2b-256 over bytes 0..216 and the body |
//! | 248 | body length | body: encrypted [`Records`] encoding |
//!
//! The rest of the slot's last sector is zero. Body key and MAC key are separate BLAKE2b
//! derivations of the data key, so a passphrase change re-wraps the data key and copies the
//! body bytes unchanged.
//!
//! Crates (default-features = false): chacha20poly1305 0.10.1, argon2 0.5.3 (alloc, zeroize),
//! scrypt 0.11.0, blake2 0.10.6, zeroize 1, subtle 2. No getrandom, no libc.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod device;
mod error;
mod header;
mod kdf;
mod records;
mod vault;

#[cfg(test)]
mod tests;

pub use device::{BlockDevice, DeviceError, MemDevice, PlatformDevice};
pub use error::{Part, VaultError};
pub use header::{HEADER_LEN, MAGIC, VERSION};
pub use kdf::{KdfLimits, KdfParams, KEY_LEN};
pub use records::{Records, RecordsError, MAX_NAME_LEN, MAX_RECORDS};
pub use vault::{Slot, SlotStatus, Vault, MAX_BODY_LEN, MAX_SECTOR_SIZE};
