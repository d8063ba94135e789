//! One keyring (the qrexec argument names it): its keys in memory, each change made durable in
//! the shared store before the agent acknowledges it; keys with a lifetime stay in memory only.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use ssh_agent_wire::{Identity, Keyring, KeyringError};
use vault_store::BlockDevice;

use crate::store::Persist;

/// Most keys in one keyring.
pub const MAX_KEYS: usize = 64;

/// A keyring backed by the vault's store.
#[derive(Debug)]
pub struct VaultRing<D: BlockDevice> {
    name: String,
    ids: Vec<Identity>,
    store: Rc<RefCell<Persist<D>>>,
}

impl<D: BlockDevice> VaultRing<D> {
    /// An empty keyring named `name` over `store`.
    pub fn new(name: &str, store: Rc<RefCell<Persist<D>>>) -> Self {
        Self {
            name: name.into(),
            ids: Vec::new(),
            store,
        }
    }

    /// Puts a key read from the store back, without saving (at unlock).
    pub fn load(&mut self, id: Identity) -> Result<(), KeyringError> {
        if let Some(i) = self.position(id.public()) {
            if let Some(slot) = self.ids.get_mut(i) {
                *slot = id;
            }
            return Ok(());
        }
        if self.ids.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.ids.push(id);
        Ok(())
    }

    /// The keyring's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Lifetime keys are ephemeral (their expiry is a monotonic instant of this boot), as in OpenSSH.
fn persistent(id: &Identity) -> bool {
    id.expires.is_none()
}

impl<D: BlockDevice> Keyring for VaultRing<D> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn get(&self, index: usize) -> Option<&Identity> {
        self.ids.get(index)
    }

    fn insert(&mut self, identity: Identity) -> Result<(), KeyringError> {
        let existing = self.position(identity.public());
        if existing.is_none() && self.ids.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        let mut store = self.store.borrow_mut();
        if !store.writable() {
            return Err(KeyringError::Storage);
        }
        let replaced_persistent = existing
            .and_then(|i| self.ids.get(i))
            .is_some_and(persistent);
        let saved = if persistent(&identity) {
            store.put(&self.name, &identity)
        } else if replaced_persistent {
            // Re-added with a lifetime: the stored copy must go, or it would return at restart.
            store.delete(&self.name, identity.public())
        } else {
            Ok(())
        };
        saved.map_err(|_| KeyringError::Storage)?;
        drop(store);
        match existing.and_then(|i| self.ids.get_mut(i)) {
            Some(slot) => *slot = identity,
            None => self.ids.push(identity),
        }
        Ok(())
    }

    fn remove(&mut self, index: usize) -> Result<Option<Identity>, KeyringError> {
        let Some(id) = self.ids.get(index) else {
            return Ok(None);
        };
        if persistent(id) {
            self.store
                .borrow_mut()
                .delete(&self.name, id.public())
                .map_err(|_| KeyringError::Storage)?;
        }
        Ok(Some(self.ids.remove(index)))
    }

    fn clear(&mut self) -> Result<(), KeyringError> {
        if self.ids.iter().any(persistent) {
            self.store
                .borrow_mut()
                .clear(&self.name)
                .map_err(|_| KeyringError::Storage)?;
        }
        self.ids.clear();
        Ok(())
    }
}
