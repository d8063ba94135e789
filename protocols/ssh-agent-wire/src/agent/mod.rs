//! The agent: a keyring shared by every connection, lock state and policy; [`Session`] is one
//! connection's sans-IO machine (bytes in, responses and events out).

mod dest;
mod session;
#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform_api::Instant;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::key::{KeyBlob, PrivateKey};
use crate::wire::{DestConstraint, Passphrase};

pub use session::{
    ConfirmId, ConfirmRequest, Event, OwnerKind, OwnerRequest, Session, MAX_SESSION_BINDS,
    MAX_SESSION_ID_LEN,
};

/// Policy and bounds, fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Serve RSA keys (add, list, sign). Off by default: the `rsa` crate's private-key operations
    /// are not constant-time (RUSTSEC-2023-0071).
    pub allow_rsa: bool,
    /// Every signature needs the owner's confirmation, whatever the key's own constraints.
    pub confirm_all: bool,
}

impl Config {
    /// RSA off, confirmation per key.
    pub const DEFAULT: Self = Self {
        allow_rsa: false,
        confirm_all: false,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A key held by the agent with its constraints.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The key (its public blob is what clients list and name).
    pub key: PrivateKey,
    /// The comment given when it was added.
    pub comment: String,
    /// When it is removed (lifetime constraint).
    pub expires: Option<Instant>,
    /// Whether each signature needs the owner's confirmation.
    pub confirm: bool,
    /// `restrict-destination-v00@openssh.com` hops; empty = unrestricted.
    pub destinations: Vec<DestConstraint>,
}

impl Identity {
    /// The public key or certificate blob.
    pub fn public(&self) -> &KeyBlob {
        self.key.public_blob()
    }

    /// Whether its lifetime ended at or before `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// The keyring refused a change; the request is answered FAILURE and nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringError {
    /// It holds its maximum number of keys.
    Full,
    /// The change could not be made durable (the store behind the keyring failed).
    Storage,
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "keyring full",
            Self::Storage => "keyring store failed",
        })
    }
}

impl core::error::Error for KeyringError {}

/// Where keys live; the vault implements it to persist them.
pub trait Keyring {
    /// Number of keys.
    fn len(&self) -> usize;
    /// Whether there are no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The key at `index` (order is the listing order).
    fn get(&self, index: usize) -> Option<&Identity>;
    /// Adds a key, replacing one with the same public blob; refuses past the store's bound.
    /// On error the keyring is unchanged.
    fn insert(&mut self, identity: Identity) -> Result<(), KeyringError>;
    /// Removes and returns the key at `index` (`Ok(None)`: no such index); on error it stays.
    fn remove(&mut self, index: usize) -> Result<Option<Identity>, KeyringError>;
    /// Removes every key; on error none is removed.
    fn clear(&mut self) -> Result<(), KeyringError>;
    /// Index of the key whose public blob is exactly `key`.
    fn position(&self, key: &KeyBlob) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i).is_some_and(|id| id.public() == key))
    }
}

/// An in-memory keyring bounded to `max` keys.
#[derive(Debug, Clone)]
pub struct MemoryKeyring {
    ids: Vec<Identity>,
    max: usize,
}

impl MemoryKeyring {
    /// Default bound on keys.
    pub const DEFAULT_MAX: usize = 64;

    /// An empty keyring holding at most `max` keys.
    pub fn new(max: usize) -> Self {
        Self {
            ids: Vec::new(),
            max,
        }
    }
}

impl Keyring for MemoryKeyring {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn get(&self, index: usize) -> Option<&Identity> {
        self.ids.get(index)
    }
    fn insert(&mut self, identity: Identity) -> Result<(), KeyringError> {
        if let Some(i) = self.position(identity.public()) {
            if let Some(slot) = self.ids.get_mut(i) {
                *slot = identity;
            }
            return Ok(());
        }
        if self.ids.len() >= self.max {
            return Err(KeyringError::Full);
        }
        self.ids.push(identity);
        Ok(())
    }
    fn remove(&mut self, index: usize) -> Result<Option<Identity>, KeyringError> {
        Ok((index < self.ids.len()).then(|| self.ids.remove(index)))
    }
    fn clear(&mut self) -> Result<(), KeyringError> {
        self.ids.clear();
        Ok(())
    }
}

/// SHA-256 of the lock passphrase while locked; zeroized on unlock, never printed.
struct LockHash(Zeroizing<[u8; 32]>);

impl fmt::Debug for LockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockHash(..)")
    }
}

impl<K: Keyring> Agent<K> {
    /// Replaces the policy (e.g. when the owner reconfigures the keyring).
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }
}

/// State shared by every connection: the keyring, the lock and the policy.
#[derive(Debug)]
pub struct Agent<K: Keyring> {
    keyring: K,
    config: Config,
    lock: Option<LockHash>,
    failed_unlocks: u32,
}

impl<K: Keyring> Agent<K> {
    /// An unlocked agent over `keyring`.
    pub fn new(keyring: K, config: Config) -> Self {
        Self {
            keyring,
            config,
            lock: None,
            failed_unlocks: 0,
        }
    }

    /// The keyring.
    pub fn keyring(&self) -> &K {
        &self.keyring
    }

    /// The keyring, e.g. to load persisted keys at start.
    pub fn keyring_mut(&mut self) -> &mut K {
        &mut self.keyring
    }

    /// The policy.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Whether the agent is locked.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Unlock attempts that failed since the last lock (the owner may want to know).
    pub fn failed_unlocks(&self) -> u32 {
        self.failed_unlocks
    }

    /// Removes keys whose lifetime ended at or before `now` (a key the store fails to remove
    /// is skipped now and signs nothing: [`Identity::expired`] is checked before each use).
    pub fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(id) = self.keyring.get(i) {
            if id.expired(now) && matches!(self.keyring.remove(i), Ok(Some(_))) {
                continue;
            }
            i += 1;
        }
    }

    /// When the next key expires (the loop should call [`expire`](Self::expire) then).
    pub fn poll_at(&self) -> Option<Instant> {
        (0..self.keyring.len())
            .filter_map(|i| self.keyring.get(i).and_then(|id| id.expires))
            .min()
    }

    fn lock(&mut self, p: &Passphrase) -> bool {
        // OpenSSH refuses an empty passphrase and locking twice.
        if self.lock.is_some() || p.as_bytes().is_empty() {
            return false;
        }
        self.lock = Some(LockHash(Zeroizing::new(
            Sha256::digest(p.as_bytes()).into(),
        )));
        self.failed_unlocks = 0;
        true
    }

    fn unlock(&mut self, p: &Passphrase) -> bool {
        let Some(hash) = &self.lock else {
            return false;
        };
        let candidate: Zeroizing<[u8; 32]> = Zeroizing::new(Sha256::digest(p.as_bytes()).into());
        if bool::from(candidate.ct_eq(&*hash.0)) {
            self.lock = None;
            true
        } else {
            self.failed_unlocks = self.failed_unlocks.saturating_add(1);
            false
        }
    }
}
