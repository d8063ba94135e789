//! ssh-agent-wire: the ssh-agent protocol (draft-miller-ssh-agent, OpenSSH PROTOCOL.agent) as a
//! sans-IO library for the split-SSH vault: wire codec, key handling and a per-connection machine.
//!
//! - Layer: protocol (no I/O, no clock: `now` is an argument; no globals).
//! - Trust: every byte from a session is hostile; admin sessions (the vault owner) may add,
//!   remove and lock keys, client sessions may only list and sign.
//! - Unsafe: none (`forbid`).
//! - Limits: messages ≤ [`wire::MAX_MESSAGE_LEN`] (checked before storing), key blobs
//!   ≤ [`key::MAX_KEY_BLOB_LEN`], ≤ 16 session bindings per connection, keyring bound by the
//!   [`agent::Keyring`] implementation, one pending confirmation per session.
//!
//! Decisions: RSA keys are served only with [`agent::Config::allow_rsa`] (RUSTSEC-2023-0071);
//! an RSA SIGN_REQUEST without a SHA-2 flag (`ssh-rsa`, SHA-1) is answered FAILURE, where
//! OpenSSH would sign; unknown extensions get EXTENSION_FAILURE, a failed `session-bind` gets
//! FAILURE (as OpenSSH), and `query` gets EXTENSION_RESPONSE listing `query` and `session-bind`.
//! In admin sessions, UNLOCK of an unlocked agent and unknown extensions go to the owner as
//! [`agent::Event::Owner`] (the vault uses them to open its store); the keyring may refuse a
//! change ([`agent::KeyringError`]) and the request is then answered FAILURE.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod agent;
pub mod key;
pub mod wire;

pub use agent::{
    Agent, Config, Event, Identity, Keyring, KeyringError, MemoryKeyring, OwnerKind, OwnerRequest,
    Session,
};
pub use key::{KeyBlob, PrivateKey};
pub use wire::{Request, Response, WireError};
