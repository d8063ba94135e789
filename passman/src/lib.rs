//! passman: the password vault unikernel's logic. Entries live in a `vault-store` vault on the
//! qube's private volume and are served one qrexec call at a time, the entry name being the
//! service argument so that dom0 policy decides which qube may read which entry.
//!
//! **Layer**: lib (no_std + alloc, `forbid(unsafe_code)`); [`engine::Passman`] is sans-IO (one call
//! with its whole stdin in, exit code and stdout out), [`app::PassmanApp`] drives it from
//! `runloop`. Time: the vault clock is the Unix time given at unlock (`time=` line, which `qpass`
//! sends) advanced by the monotonic clock; without it TOTP is refused and records carry the last
//! known vault time.
//!
//! ## Services (`passman.<Name>+<entry>`; exit codes in [`engine::exit`])
//! | service | argument | stdin | stdout | who (shipped policy) |
//! |---|---|---|---|---|
//! | `Get` | entry | - | password | per entry |
//! | `GetField` | entry | field name | field | per entry |
//! | `Show` | entry | - | text form, TOTP hidden | per entry |
//! | `Otp` | entry | - | TOTP code | per entry |
//! | `List` | - | - | names, one a line | own rule |
//! | `Put` | entry | text form | - | dom0 / admin |
//! | `Generate` | entry | `[LEN [CLASSES]]` (`luds`) | new password | dom0 / admin |
//! | `Delete` | entry | - | - | dom0 / admin |
//! | `Unlock` | - | passphrase line, `time=UNIX` | - | dom0 / admin |
//! | `Lock`, `Status`, `Audit` | - | - | state / audit lines | dom0 / admin |
//! | `Init` | - | passphrase, `kdf=`, `time=` | - | dom0 / admin |
//! | `Passwd` | - | new passphrase, `kdf=` | - | dom0 / admin |
//! | `Export` | - | backup passphrase | backup image | dom0 / admin |
//! | `Import` | - | `pass`/`kdbx`/`backup` line, passphrase line, data | count | dom0 / admin |
//!
//! Management services are refused by the vault itself too unless the caller is `dom0` or named
//! by `passman.admin=` on the kernel command line. Unlock failures back off 1, 2, 4 … 300 s;
//! the vault locks after `passman.idle=` seconds (default 300) without a call.
//!
//! ## Vault format, version 1 (inside the vault-store records, see `vault_store` for the
//! encrypted, A/B-slotted container)
//! | record name | value |
//! |---|---|
//! | `passman` | u8 format version = 1, u64 LE last vault time (Unix s) |
//! | `audit` | u8 version = 1, u32 LE count, per record: u64 time, u8 service code, u8 outcome, u8 + source, u8 + entry |
//! | `e/<name>` | one entry: u8 version = 1, u64 created, u64 modified, then username, password, URL, notes, TOTP (each u16 LE length + UTF-8), u8 tag count, per tag u8 length + UTF-8 |
//!
//! Bounds: names 1–128 bytes of `A-Z a-z 0-9 + - . _`; username and password 1 KiB, URL 2 KiB,
//! notes 16 KiB, TOTP 512 B, 32 tags of 64 B; [`engine::MAX_ENTRIES`] entries; the audit log keeps
//! the last 4096 records. A change is saved (one vault-store save: whole new image into the other
//! slot, flush, then switch) before it is acknowledged; read audit records are saved within
//! `passman.audit_delay=` ms (default 1000) and at lock/poweroff.
//!
//! ## Imports
//! `pass` directories are imported from files the user decrypted beforehand (`qpass import-pass
//! DIR` frames them; passman never sees GPG). KeePass KDBX 4 files (Argon2d/Argon2id/AES-KDF,
//! ChaCha20/AES-256, password only) are read by [`kdbx`]. `passman.Export` writes a backup that
//! is itself a vault-store image under its own passphrase; `Import` with `backup` reads it.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
pub mod audit;
pub mod engine;
pub mod entry;
pub mod generate;
pub mod import;
pub mod kdbx;
pub mod name;
pub mod request;
pub mod totp;

/// The passman vault format version (the `passman` record).
pub const FORMAT_VERSION: u8 = 1;

pub use crate::app::{parse_cmdline, PassmanApp};
pub use crate::engine::{Config, Passman, Reply};
pub use crate::entry::Entry;
pub use crate::name::EntryName;
pub use crate::request::{Request, RequestError, Service};

#[cfg(test)]
mod tests;
