//! One node operation against a [`View`] (the main tree or a transaction's overlay), with
//! xenstored's permission, parent-creation and quota rules; changes are kept for watches.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{DomId, Perm, XsErrno};

use super::tree::{can_read, can_write, parent, Node};
use super::view::View;
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
    pub(crate) view: View<'a>,
    pub(crate) gen: &'a mut u64,
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
                self.view.touch(&abs)?;
                match self.view.get(&abs) {
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
                Ok(Reply::Directory(self.view.children(&abs)))
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

    fn bump(&mut self) -> u64 {
        *self.gen += 1;
        *self.gen
    }

    fn changed(&mut self, path: &str, perms: &[Perm], recursive: bool) {
        let c = self
            .view
            .changes()
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
        self.view.touch(abs)?;
        let n = self.view.get(abs).ok_or(XsErrno::Enoent)?;
        if !can_read(self.domid, &n.perms) {
            return Err(XsErrno::Eacces);
        }
        Ok(n)
    }

    fn write(&mut self, abs: &str, value: &[u8]) -> Result<(), XsErrno> {
        if value.len() > self.limits.max_value_len {
            return Err(XsErrno::E2big);
        }
        self.view.touch(abs)?;
        if let Some(n) = self.view.get(abs) {
            if !can_write(self.domid, &n.perms) {
                return Err(XsErrno::Eacces);
            }
            let mut n = n.clone();
            n.value = value.to_vec();
            n.gen = self.bump();
            let perms = n.perms.clone();
            self.view.insert(String::from(abs), n);
            self.changed(abs, &perms, false);
            return Ok(());
        }
        // Create the node and any missing parents, inheriting the nearest parent's perms.
        let mut missing: Vec<String> = alloc::vec![String::from(abs)];
        let mut anc = parent(abs);
        while let Some(p) = anc {
            self.view.touch(p)?;
            if self.view.get(p).is_some() {
                break;
            }
            missing.push(String::from(p));
            anc = parent(p);
        }
        let anc = String::from(anc.ok_or(XsErrno::Enoent)?);
        let anc_perms = self.view.get(&anc).ok_or(XsErrno::Enoent)?.perms.clone();
        if !can_write(self.domid, &anc_perms) {
            return Err(XsErrno::Eacces);
        }
        let privileged = self.domid == DomId::DOM0;
        if !privileged
            && self.view.owned_by(self.domid) + missing.len() > self.limits.max_nodes_per_domain
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
        self.view.set_gen(&anc, g);
        for p in missing.into_iter().rev() {
            let v = if p == abs { value.to_vec() } else { Vec::new() };
            let node = Node {
                value: v,
                perms: perms.clone(),
                gen: g,
            };
            self.view.insert(p, node);
        }
        self.changed(abs, &perms, false);
        Ok(())
    }

    fn rm(&mut self, abs: &str) -> Result<(), XsErrno> {
        let par = parent(abs).ok_or(XsErrno::Einval)?;
        self.view.touch(abs)?;
        self.view.touch(par)?;
        let Some(n) = self.view.get(abs) else {
            return if self.view.get(par).is_some() {
                Ok(())
            } else {
                Err(XsErrno::Enoent)
            };
        };
        if !can_write(self.domid, &n.perms) {
            return Err(XsErrno::Eacces);
        }
        let perms = n.perms.clone();
        let below = self.view.descendants(abs);
        for d in &below {
            self.view.touch(d)?;
        }
        for d in &below {
            self.view.remove(d);
        }
        self.view.remove(abs);
        let g = self.bump();
        self.view.set_gen(par, g);
        self.changed(abs, &perms, true);
        Ok(())
    }

    fn set_perms(&mut self, abs: &str, perms: &[Perm]) -> Result<(), XsErrno> {
        if perms.len() > self.limits.max_perms {
            return Err(XsErrno::E2big);
        }
        let new_owner = perms.first().ok_or(XsErrno::Einval)?.domid;
        self.view.touch(abs)?;
        let n = self.view.get(abs).ok_or(XsErrno::Enoent)?;
        let privileged = self.domid == DomId::DOM0;
        if !privileged {
            if n.owner() != self.domid || !can_write(self.domid, &n.perms) {
                return Err(XsErrno::Eacces);
            }
            if new_owner != n.owner() {
                return Err(XsErrno::Eperm);
            }
        }
        let mut n = n.clone();
        n.perms = perms.to_vec();
        n.gen = self.bump();
        self.view.insert(String::from(abs), n);
        self.changed(abs, perms, false);
        Ok(())
    }

    fn directory_part(&self, abs: &str, gencnt: u64, offset: usize) -> Result<Reply, XsErrno> {
        let mut all: Vec<u8> = Vec::new();
        for c in self.view.children(abs) {
            all.extend_from_slice(c.as_bytes());
            all.push(0);
        }
        let rest = all.get(offset..).ok_or(XsErrno::Einval)?;
        // An offset inside a name would split it; only name boundaries are valid.
        if offset > 0 && all.get(offset - 1) != Some(&0) {
            return Err(XsErrno::Einval);
        }
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
