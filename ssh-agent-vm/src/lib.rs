//! ssh-agent-vm: the split-SSH vault. Qubes' qrexec calls `qubes.SshAgent+KEYRING` (list, sign)
//! and `qubes.SshAgentAdmin+KEYRING` (the owner) become ssh-agent sessions over keyrings whose keys
//! live encrypted on the vault's block device.
//!
//! - Layer: app logic, sans-IO ([`engine::Engine`] over the [`engine::Io`] trait; [`app`]
//!   adapts it to `runloop`). No unsafe.
//! - Trust: callers are hostile except the admin service's caller (dom0 by the shipped policy);
//!   dom0's confirmation service is trusted to answer, the text sent to it is sanitized.
//! - Persistence: `vault-store` (XChaCha20-Poly1305, argon2id/scrypt, A/B slots); a change is
//!   acknowledged only after it is durable; keys with a lifetime are never stored.
//! - Limits: [`config::VaultConfig::max_sessions`] sessions, [`engine::MAX_BACKLOG`] held input
//!   per session, [`ring::MAX_KEYS`] keys per keyring, [`config::MAX_KEYRINGS`] keyrings.
//! - RSA: served only by keyrings listed in `rsa=` (RUSTSEC-2023-0071: the `rsa` crate's
//!   private-key operations are not constant-time).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(test)]
extern crate std;

pub mod app;
pub mod config;
pub mod engine;
pub mod ring;
pub mod store;

#[cfg(test)]
mod tests;

pub use config::VaultConfig;
pub use engine::{Engine, Io};
