//! The keys on the vault's block device: one vault-store record per persistent key, the whole
//! record set saved (encrypted, A/B slots) before a change is acknowledged.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use platform_api::Entropy;
use sha2::{Digest, Sha256};
use ssh_agent_wire::wire::codec::{put_string, Reader};
use ssh_agent_wire::wire::Constraint;
use ssh_agent_wire::{Identity, KeyBlob, PrivateKey};
use vault_store::{BlockDevice, DeviceError, KdfParams, Vault, VaultError};
use zeroize::Zeroizing;

/// Version byte in front of every stored key.
const RECORD_VERSION: u8 = 1;
/// Prefix of key records: `k/<keyring>/<sha256 of the public blob, hex>`.
const KEY_PREFIX: &str = "k/";

/// A device handle that can be cloned, so a failed [`Vault::open`] (which consumes its device)
/// leaves the device with us for the next attempt without running the KDF twice.
#[derive(Debug)]
pub struct Shared<D>(Rc<RefCell<D>>);

impl<D> Clone for Shared<D> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<D> Shared<D> {
    /// Wraps `dev`.
    pub fn new(dev: D) -> Self {
        Self(Rc::new(RefCell::new(dev)))
    }

    /// The device, for tests that inspect or damage it.
    pub fn with<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl<D: BlockDevice> BlockDevice for Shared<D> {
    fn sector_size(&self) -> usize {
        self.0.borrow().sector_size()
    }
    fn sectors(&self) -> u64 {
        self.0.borrow().sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.0.borrow_mut().read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.0.borrow_mut().write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.0.borrow_mut().flush()
    }
}

/// Random bytes for nonces and salts inside keyring operations, which cannot reach the platform:
/// SHA-256 over a state the owner reseeds from the platform's entropy before each input.
pub struct Drbg {
    state: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl fmt::Debug for Drbg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Drbg(..)")
    }
}

impl Drbg {
    /// A generator seeded with `seed`.
    pub fn new(seed: &[u8; 32]) -> Self {
        let mut d = Self {
            state: Zeroizing::new([0; 32]),
            counter: 0,
        };
        d.reseed(seed);
        d
    }

    /// Mixes fresh platform entropy in.
    pub fn reseed(&mut self, seed: &[u8; 32]) {
        let mut h = Sha256::new();
        h.update(b"reseed");
        h.update(self.state.as_slice());
        h.update(seed);
        *self.state = h.finalize().into();
    }
}

impl Entropy for Drbg {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(b"out");
            h.update(self.state.as_slice());
            h.update(self.counter.to_le_bytes());
            self.counter = self.counter.wrapping_add(1);
            let block: Zeroizing<[u8; 32]> = Zeroizing::new(h.finalize().into());
            chunk.copy_from_slice(block.get(..chunk.len()).unwrap_or_default());
        }
        // Ratchet, so the bytes just given out cannot be recomputed from a later state.
        let mut h = Sha256::new();
        h.update(b"next");
        h.update(self.state.as_slice());
        *self.state = h.finalize().into();
    }
}

/// Where the vault's store stands.
pub enum StoreState<D: BlockDevice> {
    /// No block device: keys live in memory only (logged at start).
    Memory,
    /// A device without a vault: the first admin UNLOCK formats it under that passphrase.
    Unformatted(Shared<D>),
    /// A vault waiting for its passphrase: nothing served, nothing added until then.
    Sealed(Shared<D>),
    /// Open: every change is saved before it is acknowledged.
    Open(alloc::boxed::Box<Vault<Shared<D>>>),
    /// The device was lost after a failed operation (e.g. the KDF refused): nothing persists.
    Broken,
}

impl<D: BlockDevice> fmt::Debug for StoreState<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "Memory",
            Self::Unformatted(_) => "Unformatted",
            Self::Sealed(_) => "Sealed",
            Self::Open(_) => "Open",
            Self::Broken => "Broken",
        })
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The vault is not open (sealed, unformatted or broken).
    NotOpen,
    /// The vault is already open.
    AlreadyOpen,
    /// There is no device to open.
    NoDevice,
    /// An empty passphrase cannot format a vault.
    EmptyPassphrase,
    /// A record could not be encoded (too many keys, name too long).
    Record,
    /// vault-store failed.
    Vault(VaultError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOpen => f.write_str("key store not open"),
            Self::AlreadyOpen => f.write_str("key store already open"),
            Self::NoDevice => f.write_str("no key store device"),
            Self::EmptyPassphrase => f.write_str("empty passphrase refused"),
            Self::Record => f.write_str("key record does not fit the store"),
            Self::Vault(e) => write!(f, "key store: {e}"),
        }
    }
}

/// Whether the device holds a vault: its magic at the start of either slot (no KDF run).
pub fn is_formatted<D: BlockDevice>(dev: &mut D) -> Result<bool, DeviceError> {
    let ss = dev.sector_size();
    let half = dev.sectors() / 2;
    if ss == 0 || half == 0 || ss > vault_store::MAX_SECTOR_SIZE {
        return Ok(false);
    }
    let mut buf = alloc::vec![0u8; ss];
    for lba in [0, half] {
        dev.read(lba, &mut buf)?;
        if buf.get(..vault_store::MAGIC.len()) == Some(&vault_store::MAGIC[..]) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The persistent side of every keyring, shared by them: store state and randomness.
#[derive(Debug)]
pub struct Persist<D: BlockDevice> {
    /// Where the store stands.
    pub state: StoreState<D>,
    /// Randomness for saves.
    pub rng: Drbg,
    /// KDF for a new vault or a new passphrase.
    pub kdf: KdfParams,
    /// Another handle on the device (the vault owns one while open).
    device: Option<Shared<D>>,
}

/// Record name of `key` in `keyring`.
pub fn record_name(keyring: &str, key: &KeyBlob) -> Vec<u8> {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = Vec::with_capacity(KEY_PREFIX.len() + keyring.len() + 1 + 64);
    name.extend_from_slice(KEY_PREFIX.as_bytes());
    name.extend_from_slice(keyring.as_bytes());
    name.push(b'/');
    for b in digest {
        for nib in [b >> 4, b & 15] {
            name.push(b"0123456789abcdef"[usize::from(nib)]);
        }
    }
    name
}

fn keyring_prefix(keyring: &str) -> Vec<u8> {
    let mut p = Vec::from(KEY_PREFIX.as_bytes());
    p.extend_from_slice(keyring.as_bytes());
    p.push(b'/');
    p
}

/// A stored key: version, the private key as ADD_IDENTITY carries it, the comment, then its
/// constraints as ADD_ID_CONSTRAINED carries them (never a lifetime: such keys are not stored).
pub fn encode_identity(id: &Identity) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.push(RECORD_VERSION);
    id.key.emit(&mut out);
    put_string(&mut out, id.comment.as_bytes());
    if id.confirm {
        Constraint::Confirm.emit(&mut out);
    }
    if !id.destinations.is_empty() {
        Constraint::RestrictDestination(id.destinations.clone()).emit(&mut out);
    }
    out
}

/// Why a stored key did not decode (the store is authenticated, so this means a bug or an
/// incompatible version: the key is skipped and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord;

/// The inverse of [`encode_identity`].
pub fn decode_identity(bytes: &[u8]) -> Result<Identity, BadRecord> {
    let mut r = Reader::new(bytes);
    if r.u8("version").map_err(|_| BadRecord)? != RECORD_VERSION {
        return Err(BadRecord);
    }
    let key = PrivateKey::parse(&mut r).map_err(|_| BadRecord)?;
    let comment = r.utf8_owned("comment").map_err(|_| BadRecord)?;
    let mut id = Identity {
        key,
        comment,
        expires: None,
        confirm: false,
        destinations: Vec::new(),
    };
    for c in Constraint::parse_all(&mut r).map_err(|_| BadRecord)? {
        match c {
            Constraint::Confirm => id.confirm = true,
            Constraint::RestrictDestination(d) => id.destinations = d,
            Constraint::Lifetime(_) => return Err(BadRecord),
        }
    }
    Ok(id)
}

impl<D: BlockDevice> Persist<D> {
    /// A store over `dev` (probed for a vault), or memory-only without one.
    pub fn new(dev: Option<D>, kdf: KdfParams, seed: &[u8; 32]) -> Result<Self, DeviceError> {
        let device = dev.map(Shared::new);
        let state = match device.clone() {
            None => StoreState::Memory,
            Some(mut d) => {
                if is_formatted(&mut d)? {
                    StoreState::Sealed(d)
                } else {
                    StoreState::Unformatted(d)
                }
            }
        };
        Ok(Self {
            state,
            rng: Drbg::new(seed),
            kdf,
            device,
        })
    }

    /// Runs `f` on the device, if there is one (tests inspect what a restart would see).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> Option<R> {
        self.device.as_ref().map(|d| d.with(f))
    }

    /// Whether keys may be added (open vault, or memory-only).
    pub fn writable(&self) -> bool {
        matches!(self.state, StoreState::Memory | StoreState::Open(_))
    }

    /// Opens (or formats) the vault; returns every stored key as (keyring, identity), and the
    /// names of records that did not decode.
    #[allow(clippy::type_complexity)]
    pub fn unlock(
        &mut self,
        passphrase: &[u8],
    ) -> Result<(Vec<(String, Identity)>, Vec<String>), StoreError> {
        let state = core::mem::replace(&mut self.state, StoreState::Broken);
        let (result, state) = match state {
            StoreState::Sealed(dev) => match Vault::open(dev.clone(), passphrase) {
                Ok(v) => (Ok(()), StoreState::Open(alloc::boxed::Box::new(v))),
                Err(e) => (Err(StoreError::Vault(e)), StoreState::Sealed(dev)),
            },
            StoreState::Unformatted(dev) if passphrase.is_empty() => (
                Err(StoreError::EmptyPassphrase),
                StoreState::Unformatted(dev),
            ),
            StoreState::Unformatted(dev) => {
                match Vault::create(dev.clone(), passphrase, self.kdf, &mut self.rng) {
                    Ok(v) => (Ok(()), StoreState::Open(alloc::boxed::Box::new(v))),
                    // A create that failed part-way may have written slot B's wipe: probe again.
                    Err(e) => (Err(StoreError::Vault(e)), StoreState::Unformatted(dev)),
                }
            }
            s @ StoreState::Open(_) => (Err(StoreError::AlreadyOpen), s),
            s @ (StoreState::Memory | StoreState::Broken) => (Err(StoreError::NoDevice), s),
        };
        self.state = state;
        result?;
        let StoreState::Open(v) = &self.state else {
            return Err(StoreError::NotOpen);
        };
        let mut keys = Vec::new();
        let mut bad = Vec::new();
        for (name, value) in v.records().iter() {
            let Some(rest) = name.strip_prefix(KEY_PREFIX.as_bytes()) else {
                continue;
            };
            let ring = rest.split(|&b| b == b'/').next().unwrap_or_default();
            let ring = String::from_utf8_lossy(ring).into_owned();
            match decode_identity(value) {
                Ok(id) => keys.push((ring, id)),
                Err(BadRecord) => bad.push(String::from_utf8_lossy(name).into_owned()),
            }
        }
        Ok((keys, bad))
    }

    /// Re-wraps the vault's key under a new passphrase.
    pub fn set_passphrase(&mut self, passphrase: &[u8]) -> Result<(), StoreError> {
        if passphrase.is_empty() {
            return Err(StoreError::EmptyPassphrase);
        }
        let StoreState::Open(v) = &mut self.state else {
            return Err(StoreError::NotOpen);
        };
        v.change_passphrase(passphrase, self.kdf, &mut self.rng)
            .map_err(StoreError::Vault)
    }

    /// Stores `id` in `keyring` and saves; on failure the records are as before.
    pub fn put(&mut self, keyring: &str, id: &Identity) -> Result<(), StoreError> {
        let name = record_name(keyring, id.public());
        let value = encode_identity(id);
        self.change(|r| {
            r.insert(&name, &value)
                .map(|_| ())
                .map_err(|_| StoreError::Record)
        })
    }

    /// Removes `key` from `keyring` and saves.
    pub fn delete(&mut self, keyring: &str, key: &KeyBlob) -> Result<(), StoreError> {
        let name = record_name(keyring, key);
        self.change(|r| {
            r.remove(&name);
            Ok(())
        })
    }

    /// Removes every key of `keyring` and saves.
    pub fn clear(&mut self, keyring: &str) -> Result<(), StoreError> {
        let prefix = keyring_prefix(keyring);
        self.change(|r| {
            let names: Vec<Vec<u8>> = r
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix))
                .map(|(n, _)| n.to_vec())
                .collect();
            for n in names {
                r.remove(&n);
            }
            Ok(())
        })
    }

    /// Applies `f` to the records and saves; memory-only stores accept without saving.
    fn change(
        &mut self,
        f: impl FnOnce(&mut vault_store::Records) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let v = match &mut self.state {
            StoreState::Memory => return Ok(()),
            StoreState::Open(v) => v,
            _ => return Err(StoreError::NotOpen),
        };
        let before = v.records().clone();
        let result =
            f(v.records_mut()).and_then(|()| v.save(&mut self.rng).map_err(StoreError::Vault));
        if result.is_err() {
            *v.records_mut() = before;
        }
        result
    }
}
