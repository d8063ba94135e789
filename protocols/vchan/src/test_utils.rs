//! In-memory test peers (feature `test-utils`): a counting [`TestNotify`], and a fake hub of
//! grants, event channels and a xenstore shared by several fake domains.

use std::sync::atomic::{AtomicUsize, Ordering as AtOrd};
use std::sync::Arc;

use platform_api::{Notify, PlatformError};

/// A notifier that counts notifications; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct TestNotify {
    count: Arc<AtomicUsize>,
}

impl TestNotify {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }
    /// Notifications sent so far.
    pub fn count(&self) -> usize {
        self.count.load(AtOrd::SeqCst)
    }
    /// Returns the count and resets it to 0.
    pub fn take(&self) -> usize {
        self.count.swap(0, AtOrd::SeqCst)
    }
}

impl Notify for TestNotify {
    fn notify(&self) -> Result<(), PlatformError> {
        self.count.fetch_add(1, AtOrd::SeqCst);
        Ok(())
    }
}

use std::collections::{BTreeMap, HashMap};
use std::string::{String, ToString};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant as StdInstant;
use std::vec::Vec;

use platform_api::{
    Access, DomId, Duration, EvtchnPort, GrantRef, HeapMem, OutOfBounds, Perm, PortSet, SharedMem,
    StoreError, Tx, XsErrno, PAGE_SIZE,
};

/// Pages shared through the fake hub: a list of separately granted pages seen as one region,
/// optionally read-only (stores then fail with [`OutOfBounds`]).
#[derive(Debug, Clone)]
pub struct FakeMem {
    pages: Arc<[HeapMem]>,
    writable: bool,
}

impl FakeMem {
    /// Whether stores are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    fn page(&self, offset: usize, len: usize) -> Result<(&HeapMem, usize), OutOfBounds> {
        platform_api::check_range(offset, len, self.size())?;
        let p = &self.pages[offset / PAGE_SIZE];
        Ok((p, offset % PAGE_SIZE))
    }

    fn writable(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        if self.writable {
            Ok(())
        } else {
            Err(OutOfBounds {
                offset,
                len,
                size: 0,
            })
        }
    }
}

impl SharedMem for FakeMem {
    fn size(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        platform_api::check_range(offset, buf.len(), self.size())?;
        let mut done = 0;
        while done < buf.len() {
            let o = offset + done;
            let n = (PAGE_SIZE - o % PAGE_SIZE).min(buf.len() - done);
            self.pages[o / PAGE_SIZE].read(o % PAGE_SIZE, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.writable(offset, data.len())?;
        platform_api::check_range(offset, data.len(), self.size())?;
        let mut done = 0;
        while done < data.len() {
            let o = offset + done;
            let n = (PAGE_SIZE - o % PAGE_SIZE).min(data.len() - done);
            self.pages[o / PAGE_SIZE].write(o % PAGE_SIZE, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn load_u8(&self, offset: usize, order: platform_api::Ordering) -> Result<u8, OutOfBounds> {
        let (p, o) = self.page(offset, 1)?;
        p.load_u8(o, order)
    }
    fn store_u8(
        &self,
        offset: usize,
        value: u8,
        order: platform_api::Ordering,
    ) -> Result<(), OutOfBounds> {
        self.writable(offset, 1)?;
        let (p, o) = self.page(offset, 1)?;
        p.store_u8(o, value, order)
    }
    fn load_u16(&self, offset: usize, order: platform_api::Ordering) -> Result<u16, OutOfBounds> {
        let (p, o) = self.page(offset, 2)?;
        p.load_u16(o, order)
    }
    fn store_u16(
        &self,
        offset: usize,
        value: u16,
        order: platform_api::Ordering,
    ) -> Result<(), OutOfBounds> {
        self.writable(offset, 2)?;
        let (p, o) = self.page(offset, 2)?;
        p.store_u16(o, value, order)
    }
    fn load_u32(&self, offset: usize, order: platform_api::Ordering) -> Result<u32, OutOfBounds> {
        let (p, o) = self.page(offset, 4)?;
        p.load_u32(o, order)
    }
    fn store_u32(
        &self,
        offset: usize,
        value: u32,
        order: platform_api::Ordering,
    ) -> Result<(), OutOfBounds> {
        self.writable(offset, 4)?;
        let (p, o) = self.page(offset, 4)?;
        p.store_u32(o, value, order)
    }
    fn fetch_and_u8(
        &self,
        offset: usize,
        mask: u8,
        order: platform_api::Ordering,
    ) -> Result<u8, OutOfBounds> {
        self.writable(offset, 1)?;
        let (p, o) = self.page(offset, 1)?;
        p.fetch_and_u8(o, mask, order)
    }
    fn fetch_or_u8(
        &self,
        offset: usize,
        bits: u8,
        order: platform_api::Ordering,
    ) -> Result<u8, OutOfBounds> {
        self.writable(offset, 1)?;
        let (p, o) = self.page(offset, 1)?;
        p.fetch_or_u8(o, bits, order)
    }
}

#[derive(Debug)]
struct Grant {
    page: HeapMem,
    grantee: DomId,
    writable: bool,
}

#[derive(Debug)]
struct PortEnd {
    /// The domain allowed to bind (unbound) or bound.
    remote_dom: DomId,
    /// The remote port once bound.
    remote: Option<u32>,
    pending: bool,
}

#[derive(Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
}

#[derive(Debug, Default)]
struct HubState {
    grants: HashMap<(DomId, u32), Grant>,
    next_ref: u32,
    ports: HashMap<(DomId, u32), PortEnd>,
    next_port: HashMap<DomId, u32>,
    nodes: BTreeMap<String, Node>,
    next_tx: u32,
    eagain: usize,
    notifies: usize,
}

#[derive(Debug, Default)]
struct HubInner {
    state: Mutex<HubState>,
    cond: Condvar,
}

/// A fake Xen: grant tables, event channels and a xenstore shared by fake domains, usable
/// across threads. Each domain gets [`FakeGrants`], [`FakeEvents`] and [`FakeStore`].
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// One fake domain's view of the hub.
#[derive(Debug)]
pub struct FakeDomain {
    /// Its grant table.
    pub grants: FakeGrants,
    /// Its event channels.
    pub events: FakeEvents,
    /// Its xenstore connection.
    pub store: FakeStore,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a domain: writes `/local/domain/<id>/domid` and hands out its handles.
    pub fn domain(&self, id: u16) -> FakeDomain {
        let domid = DomId::new(u32::from(id)).expect("test domid");
        self.lock().nodes.insert(
            std::format!("/local/domain/{id}/domid"),
            Node {
                value: id.to_string().into_bytes(),
                perms: std::vec![Perm {
                    domid,
                    access: Access::Read
                }],
            },
        );
        FakeDomain {
            grants: FakeGrants {
                hub: self.clone(),
                dom: domid,
            },
            events: FakeEvents {
                hub: self.clone(),
                dom: domid,
            },
            store: FakeStore {
                hub: self.clone(),
                dom: domid,
            },
        }
    }

    /// Makes the next `n` transaction commits fail with `EAGAIN`.
    pub fn fail_commits(&self, n: usize) {
        self.lock().eagain = n;
    }

    /// Reads a node with dom0's rights (absolute path), for assertions.
    pub fn node(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().nodes.get(path).map(|n| n.value.clone())
    }

    /// A node's permissions (absolute path).
    pub fn perms(&self, path: &str) -> Option<Vec<Perm>> {
        self.lock().nodes.get(path).map(|n| n.perms.clone())
    }

    /// Writes a node with dom0's rights (absolute path), e.g. to plant hostile values.
    pub fn set_node(&self, path: &str, value: &[u8]) {
        self.lock().nodes.insert(
            path.to_string(),
            Node {
                value: value.to_vec(),
                perms: Vec::new(),
            },
        );
    }

    /// Total event-channel notifications sent through the hub.
    pub fn notifies(&self) -> usize {
        self.lock().notifies
    }
}

/// A domain's grant table on the hub.
#[derive(Debug)]
pub struct FakeGrants {
    hub: Hub,
    dom: DomId,
}

impl platform_api::Grants for FakeGrants {
    type Mem = FakeMem;
    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(FakeMem, Vec<GrantRef>), PlatformError> {
        if pages == 0 || pages > 1024 {
            return Err(PlatformError::Full {
                what: "grant pages",
            });
        }
        let mut st = self.hub.lock();
        let mut mems = Vec::with_capacity(pages);
        let mut refs = Vec::with_capacity(pages);
        for _ in 0..pages {
            st.next_ref += 1;
            let r = st.next_ref + 7; // refs 0..8 are reserved on Xen
            let page = HeapMem::new(PAGE_SIZE);
            st.grants.insert(
                (self.dom, r),
                Grant {
                    page: page.clone(),
                    grantee: peer,
                    writable,
                },
            );
            mems.push(page);
            refs.push(GrantRef(r));
        }
        Ok((
            FakeMem {
                pages: mems.into(),
                writable: true,
            },
            refs,
        ))
    }

    fn map(
        &mut self,
        peer: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<FakeMem, PlatformError> {
        let st = self.hub.lock();
        let mut mems = Vec::with_capacity(refs.len());
        for r in refs {
            match st.grants.get(&(peer, r.0)) {
                Some(g) if g.grantee == self.dom && (g.writable || !writable) => {
                    mems.push(g.page.clone())
                }
                _ => return Err(PlatformError::BadGrant(*r)),
            }
        }
        if mems.is_empty() {
            return Err(PlatformError::BadGrant(GrantRef(0)));
        }
        Ok(FakeMem {
            pages: mems.into(),
            writable,
        })
    }
}

/// A domain's event channels on the hub.
#[derive(Debug)]
pub struct FakeEvents {
    hub: Hub,
    dom: DomId,
}

/// A bound port on the hub; dropping it closes it.
#[derive(Debug)]
pub struct FakePort {
    hub: Hub,
    dom: DomId,
    port: EvtchnPort,
}

impl Notify for FakePort {
    fn notify(&self) -> Result<(), PlatformError> {
        let mut st = self.hub.lock();
        let (remote_dom, remote) = match st.ports.get(&(self.dom, self.port.get())) {
            Some(PortEnd {
                remote_dom,
                remote: Some(r),
                ..
            }) => (*remote_dom, *r),
            // Unbound yet: Xen drops the event.
            Some(_) => return Ok(()),
            None => return Err(PlatformError::BadPort(self.port)),
        };
        st.notifies += 1;
        if let Some(end) = st.ports.get_mut(&(remote_dom, remote)) {
            end.pending = true;
        }
        drop(st);
        self.hub.inner.cond.notify_all();
        Ok(())
    }
}

impl platform_api::Port for FakePort {
    fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for FakePort {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        if let Some(end) = st.ports.remove(&(self.dom, self.port.get())) {
            if let Some(r) = end.remote {
                if let Some(peer) = st.ports.get_mut(&(end.remote_dom, r)) {
                    peer.remote = None;
                    peer.pending = true;
                }
            }
        }
        drop(st);
        self.hub.inner.cond.notify_all();
    }
}

impl FakeEvents {
    fn new_port(&self, st: &mut HubState, end: PortEnd) -> Result<FakePort, PlatformError> {
        let next = st.next_port.entry(self.dom).or_insert(0);
        *next += 1;
        let port = EvtchnPort::new(*next).map_err(|_| PlatformError::Full {
            what: "event channel ports",
        })?;
        st.ports.insert((self.dom, port.get()), end);
        Ok(FakePort {
            hub: self.hub.clone(),
            dom: self.dom,
            port,
        })
    }
}

impl platform_api::Events for FakeEvents {
    type Port = FakePort;
    fn alloc_unbound(&mut self, remote: DomId) -> Result<FakePort, PlatformError> {
        let mut st = self.hub.lock();
        self.new_port(
            &mut st,
            PortEnd {
                remote_dom: remote,
                remote: None,
                pending: false,
            },
        )
    }

    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<FakePort, PlatformError> {
        let mut st = self.hub.lock();
        match st.ports.get(&(remote, remote_port.get())) {
            Some(PortEnd {
                remote_dom,
                remote: None,
                ..
            }) if *remote_dom == self.dom => {}
            _ => return Err(PlatformError::BadPort(remote_port)),
        }
        let p = self.new_port(
            &mut st,
            PortEnd {
                remote_dom: remote,
                remote: Some(remote_port.get()),
                pending: false,
            },
        )?;
        if let Some(end) = st.ports.get_mut(&(remote, remote_port.get())) {
            end.remote = Some(p.port.get());
        }
        Ok(p)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<PortSet, PlatformError> {
        let deadline = timeout.map(|t| StdInstant::now() + t);
        let mut st = self.hub.lock();
        loop {
            let mut set = PortSet::new();
            for ((d, p), end) in st.ports.iter_mut() {
                if *d == self.dom && end.pending {
                    end.pending = false;
                    if let Ok(p) = EvtchnPort::new(*p) {
                        set.insert(p);
                    }
                }
            }
            if !set.is_empty() {
                return Ok(set);
            }
            let now = StdInstant::now();
            st = match deadline {
                Some(d) if now >= d => return Ok(set),
                Some(d) => {
                    self.hub
                        .inner
                        .cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .hub
                    .inner
                    .cond
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// A domain's xenstore connection on the hub. Transactions are not isolated (writes apply at
/// once); commits can be made to fail with `EAGAIN` by [`Hub::fail_commits`]. Reads check the
/// node permissions (dom0 may read everything).
#[derive(Debug)]
pub struct FakeStore {
    hub: Hub,
    dom: DomId,
}

impl FakeStore {
    fn abs(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            std::format!("/local/domain/{}/{path}", self.dom)
        }
    }

    fn may_read(&self, perms: &[Perm]) -> bool {
        if self.dom == DomId::DOM0 {
            return true;
        }
        let Some(owner) = perms.first() else {
            return true;
        };
        if owner.domid == self.dom {
            return true;
        }
        let access = perms[1..]
            .iter()
            .find(|p| p.domid == self.dom)
            .map_or(owner.access, |p| p.access);
        matches!(access, Access::Read | Access::Both)
    }
}

impl platform_api::Store for FakeStore {
    fn read(&mut self, _tx: Tx, path: &str) -> Result<Vec<u8>, StoreError> {
        let st = self.hub.lock();
        match st.nodes.get(&self.abs(path)) {
            Some(n) if self.may_read(&n.perms) => Ok(n.value.clone()),
            Some(_) => Err(StoreError::Xs(XsErrno::Eacces)),
            None => Err(StoreError::Xs(XsErrno::Enoent)),
        }
    }
    fn write(&mut self, _tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.abs(path);
        let owner = Perm {
            domid: self.dom,
            access: Access::None,
        };
        let mut st = self.hub.lock();
        // Create missing parents, as xenstored does.
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            let parent = &path[..at + 1 + i];
            st.nodes.entry(parent.to_string()).or_insert(Node {
                value: Vec::new(),
                perms: std::vec![owner],
            });
            at += 1 + i;
        }
        let node = st.nodes.entry(path).or_insert(Node {
            value: Vec::new(),
            perms: std::vec![owner],
        });
        node.value = value.to_vec();
        Ok(())
    }
    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        if self.hub.lock().nodes.contains_key(&self.abs(path)) {
            return Ok(());
        }
        self.write(tx, path, b"")
    }
    fn rm(&mut self, _tx: Tx, path: &str) -> Result<(), StoreError> {
        let path = self.abs(path);
        let prefix = std::format!("{path}/");
        let mut st = self.hub.lock();
        if st.nodes.remove(&path).is_none() {
            return Err(StoreError::Xs(XsErrno::Enoent));
        }
        st.nodes.retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
    fn directory(&mut self, _tx: Tx, path: &str) -> Result<Vec<String>, StoreError> {
        let path = self.abs(path);
        let prefix = std::format!("{path}/");
        let st = self.hub.lock();
        if !st.nodes.contains_key(&path) {
            return Err(StoreError::Xs(XsErrno::Enoent));
        }
        Ok(st
            .nodes
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(|s| s.to_string())
            .collect())
    }
    fn get_perms(&mut self, _tx: Tx, path: &str) -> Result<Vec<Perm>, StoreError> {
        let st = self.hub.lock();
        st.nodes
            .get(&self.abs(path))
            .map(|n| n.perms.clone())
            .ok_or(StoreError::Xs(XsErrno::Enoent))
    }
    fn set_perms(&mut self, _tx: Tx, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        let mut st = self.hub.lock();
        let node = st
            .nodes
            .get_mut(&self.abs(path))
            .ok_or(StoreError::Xs(XsErrno::Enoent))?;
        node.perms = perms.to_vec();
        Ok(())
    }
    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        let mut st = self.hub.lock();
        st.next_tx += 1;
        Ok(Tx(st.next_tx))
    }
    fn transaction_end(&mut self, _tx: Tx, commit: bool) -> Result<(), StoreError> {
        let mut st = self.hub.lock();
        if commit && st.eagain > 0 {
            st.eagain -= 1;
            return Err(StoreError::Xs(XsErrno::Eagain));
        }
        Ok(())
    }
}
