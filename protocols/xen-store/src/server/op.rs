//! One node operation against the main tree or a transaction's snapshot, recording what it
//! touched (for conflict detection) and what changed (for watches).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{DomId, Perm, XsErrno};

use super::tree::{can_read, can_write, parent, Node, Tree};
use super::Limits;
use crate::wire::{MsgType, Reply, Request, XsPath, PAYLOAD_MAX};

/// A change that fires watches: the node, the permissions that decide who may see it, and
/// whether a whole subtree went (so watches below fire too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) path: String,
    pub(crate) perms: Vec<Perm>,
    pub(crate) recursive: bool,
}

/// Changes keyed by path, merged, so repeated writes in a transaction stay bounded.
pub(crate) type Changes = BTreeMap<String, Change>;

pub(crate) struct Op<'a> {
    pub(crate) domid: DomId,
    pub(crate) limits: &'a Limits,
    pub(crate) tree: &'a mut Tree,
    pub(crate) gen: &'a mut u64,
    pub(crate) seen: Option<&'a mut BTreeMap<String, Option<u64>>>,
    pub(crate) changes: &'a mut Changes,
}

impl Op<'_> {
    pub(crate) fn run(&mut self, request: &Request) -> Result<Reply, XsErrno> {
        match request {
            Request::Read(p) => {
                let abs = self.abs(p);
                Ok(Reply::Read(self.readable(&abs)?.value.clone()))
            }
            Request::Write { path, value } => {
                let abs = self.abs(path);
                self.write(&abs, value)?;
                Ok(Reply::Ok(MsgType::Write))
            }
            Request::Mkdir(p) => {
                let abs = self.abs(p);
                self.touch(&abs);
                match self.tree.get(&abs) {
                    Some(n) if can_write(self.domid, &n.perms) => {}
                    Some(_) => return Err(XsErrno::Eacces),
                    None => self.write(&abs, &[])?,
                }
                Ok(Reply::Ok(MsgType::Mkdir))
            }
            Request::Rm(p) => {
                let abs = self.abs(p);
                self.rm(&abs)?;
                Ok(Reply::Ok(MsgType::Rm))
            }
            Request::Directory(p) => {
                let abs = self.abs(p);
                self.readable(&abs)?;
                Ok(Reply::Directory(self.tree.children(&abs)))
            }
            Request::DirectoryPart { path, offset } => {
                let abs = self.abs(path);
                let gencnt = self.readable(&abs)?.gen;
                self.directory_part(&abs, gencnt, *offset as usize)
            }
            Request::GetPerms(p) => {
                let abs = self.abs(p);
                Ok(Reply::Perms(self.readable(&abs)?.perms.clone()))
            }
            Request::SetPerms { path, perms } => {
                let abs = self.abs(path);
                self.set_perms(&abs, perms)?;
                Ok(Reply::Ok(MsgType::SetPerms))
            }
            _ => Err(XsErrno::Einval),
        }
    }

    fn abs(&self, p: &XsPath) -> String {
        p.resolve(self.domid)
    }

    /// Records, once, the snapshot generation of the nearest existing node at or above `path`
    /// (a node's creation changes its parent's generation, so absence is covered too).
    fn touch(&mut self, path: &str) {
        let Some(seen) = self.seen.as_deref_mut() else {
            return;
        };
        let mut at = Some(path);
        while let Some(p) = at {
            if let Some(n) = self.tree.get(p) {
                seen.entry(String::from(p)).or_insert(Some(n.gen));
                return;
            }
            at = parent(p);
        }
    }

    fn bump(&mut self) -> u64 {
        *self.gen += 1;
        *self.gen
    }

    fn changed(&mut self, path: &str, perms: &[Perm], recursive: bool) {
        let c = self
            .changes
            .entry(String::from(path))
            .or_insert_with(|| Change {
                path: String::from(path),
                perms: Vec::new(),
                recursive: false,
            });
        c.perms = perms.to_vec();
        c.recursive |= recursive;
    }

    fn readable(&mut self, abs: &str) -> Result<&Node, XsErrno> {
        self.touch(abs);
        let n = self.tree.get(abs).ok_or(XsErrno::Enoent)?;
        if !can_read(self.domid, &n.perms) {
            return Err(XsErrno::Eacces);
        }
        Ok(n)
    }

    fn write(&mut self, abs: &str, value: &[u8]) -> Result<(), XsErrno> {
        if value.len() > self.limits.max_value_len {
            return Err(XsErrno::E2big);
        }
        self.touch(abs);
        if let Some(n) = self.tree.get(abs) {
            if !can_write(self.domid, &n.perms) {
                return Err(XsErrno::Eacces);
            }
            let perms = n.perms.clone();
            let g = self.bump();
            if let Some(n) = self.tree.get_mut(abs) {
                n.value = value.to_vec();
                n.gen = g;
            }
            self.changed(abs, &perms, false);
            return Ok(());
        }
        // Create the node and any missing parents, inheriting the nearest parent's perms.
        let mut missing: Vec<String> = alloc::vec![String::from(abs)];
        let mut anc = parent(abs);
        while let Some(p) = anc {
            if self.tree.get(p).is_some() {
                break;
            }
            missing.push(String::from(p));
            anc = parent(p);
        }
        let anc = String::from(anc.ok_or(XsErrno::Enoent)?);
        let anc_perms = self.tree.get(&anc).ok_or(XsErrno::Enoent)?.perms.clone();
        if !can_write(self.domid, &anc_perms) {
            return Err(XsErrno::Eacces);
        }
        let privileged = self.domid == DomId::DOM0;
        if !privileged
            && self.tree.owned_by(self.domid) + missing.len() > self.limits.max_nodes_per_domain
        {
            return Err(XsErrno::Enospc);
        }
        let mut perms = anc_perms;
        if !privileged {
            if let Some(owner) = perms.first_mut() {
                owner.domid = self.domid;
            }
        }
        let g = self.bump();
        if let Some(a) = self.tree.get_mut(&anc) {
            a.gen = g;
        }
        for p in missing.into_iter().rev() {
            let v = if p == abs { value.to_vec() } else { Vec::new() };
            if let Some(seen) = self.seen.as_deref_mut() {
                seen.entry(p.clone()).or_insert(None);
            }
            self.tree.insert(
                p,
                Node {
                    value: v,
                    perms: perms.clone(),
                    gen: g,
                },
            );
        }
        self.changed(abs, &perms, false);
        Ok(())
    }

    fn rm(&mut self, abs: &str) -> Result<(), XsErrno> {
        let par = parent(abs).ok_or(XsErrno::Einval)?;
        self.touch(abs);
        let Some(n) = self.tree.get(abs) else {
            return if self.tree.get(par).is_some() {
                Ok(())
            } else {
                Err(XsErrno::Enoent)
            };
        };
        if !can_write(self.domid, &n.perms) {
            return Err(XsErrno::Eacces);
        }
        let perms = n.perms.clone();
        self.touch(par);
        let below = self.tree.descendants(abs);
        for d in &below {
            self.touch(d);
        }
        for d in &below {
            self.tree.remove(d);
        }
        self.tree.remove(abs);
        let g = self.bump();
        if let Some(p) = self.tree.get_mut(par) {
            p.gen = g;
        }
        self.changed(abs, &perms, true);
        Ok(())
    }

    fn set_perms(&mut self, abs: &str, perms: &[Perm]) -> Result<(), XsErrno> {
        if perms.len() > self.limits.max_perms {
            return Err(XsErrno::E2big);
        }
        let new_owner = perms.first().ok_or(XsErrno::Einval)?.domid;
        self.touch(abs);
        let n = self.tree.get(abs).ok_or(XsErrno::Enoent)?;
        let privileged = self.domid == DomId::DOM0;
        if !privileged {
            if n.owner() != self.domid || !can_write(self.domid, &n.perms) {
                return Err(XsErrno::Eacces);
            }
            if new_owner != n.owner() {
                return Err(XsErrno::Eperm);
            }
        }
        let g = self.bump();
        self.tree.set_perms(abs, perms.to_vec(), g);
        self.changed(abs, perms, false);
        Ok(())
    }

    fn directory_part(&self, abs: &str, gencnt: u64, offset: usize) -> Result<Reply, XsErrno> {
        let mut all: Vec<u8> = Vec::new();
        for c in self.tree.children(abs) {
            all.extend_from_slice(c.as_bytes());
            all.push(0);
        }
        let rest = all.get(offset..).ok_or(XsErrno::Einval)?;
        // Room after "<gencnt>\0" and the closing empty string.
        let room = PAYLOAD_MAX - 22;
        let mut children = Vec::new();
        let mut used = 0;
        let mut complete = true;
        for name in rest.split(|&b| b == 0) {
            if used == rest.len() {
                break;
            }
            if used + name.len() + 1 > room {
                complete = false;
                break;
            }
            used += name.len() + 1;
            children.push(String::from(
                core::str::from_utf8(name).map_err(|_| XsErrno::Eio)?,
            ));
        }
        Ok(Reply::DirectoryPart {
            gencnt,
            children,
            complete,
        })
    }
}
