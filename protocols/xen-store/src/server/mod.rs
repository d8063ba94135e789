//! A sans-IO xenstored core: a node tree with permissions, watches, transactions and quotas,
//! fed bytes per connection and producing reply and event bytes per connection.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform_api::{Access, DomId, Perm, XsErrno};

use crate::wire::{
    Header, MsgHeader, Reply, ReplyMsg, Request, RequestMsg, WireError, XsPath, HEADER_LEN,
    INTRODUCE_DOMAIN, RELEASE_DOMAIN,
};

mod op;
#[cfg(test)]
mod tests;
mod tree;
mod view;
mod watch;

use op::{Change, Changes, Op};
use tree::{Node, Tree};
use view::{TxState, View};
use watch::Watch;

/// Bounds that keep a hostile domain from exhausting the daemon's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections.
    pub max_connections: usize,
    /// Nodes owned by one unprivileged domain (xenstored's `quota-nodes`).
    pub max_nodes_per_domain: usize,
    /// Bytes in one value.
    pub max_value_len: usize,
    /// Entries in one permission list.
    pub max_perms: usize,
    /// Watches per connection.
    pub max_watches: usize,
    /// Open transactions per connection.
    pub max_transactions: usize,
    /// Nodes one transaction may touch (read, write or remove); more is `ENOSPC`.
    pub max_transaction_nodes: usize,
    /// Queued output bytes per connection: input stops being read above it, and watch events
    /// for that connection are dropped (counted) rather than queued.
    pub max_output: usize,
}

impl Limits {
    /// xenstored-like defaults.
    pub const DEFAULT: Limits = Limits {
        max_connections: 256,
        max_nodes_per_domain: 1000,
        max_value_len: 2048,
        max_perms: 8,
        max_watches: 128,
        max_transactions: 10,
        max_transaction_nodes: 1024,
        max_output: 64 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One connection's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u32);

/// Why a connection-level call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    /// No such connection (closed or never opened).
    UnknownConn(ConnId),
    /// A bound of [`Limits`] is reached.
    Full {
        /// Which bound.
        what: &'static str,
    },
    /// The peer's framing is broken (`len > XENSTORE_PAYLOAD_MAX`): drop the connection.
    Malformed(WireError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownConn(c) => write!(f, "no connection {}", c.0),
            Self::Full { what } => write!(f, "too many {what}"),
            Self::Malformed(e) => write!(f, "connection sent an undecodable frame: {e}"),
        }
    }
}

impl core::error::Error for ServerError {}

#[derive(Debug)]
struct Conn {
    domid: DomId,
    watches: Vec<Watch>,
    txs: BTreeMap<u32, TxState>,
    out: VecDeque<u8>,
    inbuf: Vec<u8>,
    events_dropped: u64,
    /// Initial events of watches registered by the request being executed.
    initial: Vec<(XsPath, String)>,
}

/// The xenstore daemon core.
#[derive(Debug)]
pub struct Server {
    limits: Limits,
    tree: Tree,
    gen: u64,
    conns: BTreeMap<u32, Conn>,
    next_conn: u32,
    next_tx: u32,
    introduced: BTreeSet<DomId>,
    special_perms: [Vec<Perm>; 2],
    /// Changes of the request being executed, fired once its reply is queued.
    deferred: Vec<Change>,
}

fn dom0_only() -> Vec<Perm> {
    alloc::vec![Perm {
        domid: DomId::DOM0,
        access: Access::None
    }]
}

impl Server {
    /// A store holding `/`, `/local` and `/local/domain` (owned by dom0, private), with dom0
    /// introduced.
    pub fn new(limits: Limits) -> Self {
        let mut tree = Tree::default();
        for p in ["/", "/local", "/local/domain"] {
            tree.insert(
                p.into(),
                Node {
                    value: Vec::new(),
                    perms: dom0_only(),
                    gen: 0,
                },
            );
        }
        let mut introduced = BTreeSet::new();
        introduced.insert(DomId::DOM0);
        Self {
            limits,
            tree,
            gen: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            next_tx: 1,
            introduced,
            special_perms: [dom0_only(), dom0_only()],
            deferred: Vec::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Opens a connection for `domid` (dom0 is privileged).
    pub fn connect(&mut self, domid: DomId) -> Result<ConnId, ServerError> {
        if self.conns.len() >= self.limits.max_connections {
            return Err(ServerError::Full {
                what: "connections",
            });
        }
        let mut id = self.next_conn;
        while self.conns.contains_key(&id) || id == 0 {
            id = id.wrapping_add(1);
        }
        self.next_conn = id.wrapping_add(1);
        let conn = Conn {
            domid,
            watches: Vec::new(),
            txs: BTreeMap::new(),
            out: VecDeque::new(),
            inbuf: Vec::new(),
            events_dropped: 0,
            initial: Vec::new(),
        };
        self.conns.insert(id, conn);
        Ok(ConnId(id))
    }

    /// Closes a connection, dropping its watches and transactions.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn.0);
    }

    /// The domain of a connection.
    pub fn conn_domid(&self, conn: ConnId) -> Option<DomId> {
        self.conns.get(&conn.0).map(|c| c.domid)
    }

    /// Open connections.
    pub fn connections(&self) -> Vec<ConnId> {
        self.conns.keys().map(|&k| ConnId(k)).collect()
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Nodes owned by `domid` (what its node quota counts).
    pub fn nodes_owned_by(&self, domid: DomId) -> usize {
        self.tree.owned_by(domid)
    }

    /// Watch events dropped for a connection because its output was full.
    pub fn events_dropped(&self, conn: ConnId) -> u64 {
        self.conns.get(&conn.0).map_or(0, |c| c.events_dropped)
    }

    /// Whether a domain is introduced.
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.introduced.contains(&domid)
    }

    /// Toolstack action: creates `/local/domain/<domid>` (owned by the domain, private) with
    /// its `domid` key if missing, marks it introduced and fires `@introduceDomain`.
    pub fn introduce_domain(&mut self, domid: DomId) {
        self.introduce_home(domid);
        self.fire_special(INTRODUCE_DOMAIN);
    }

    fn introduce_home(&mut self, domid: DomId) {
        let home = alloc::format!("/local/domain/{domid}");
        if self.tree.get(&home).is_none() {
            self.gen += 1;
            let perms = alloc::vec![Perm {
                domid,
                access: Access::None
            }];
            let node = |value: Vec<u8>, gen| Node {
                value,
                perms: perms.clone(),
                gen,
            };
            self.tree.insert(
                alloc::format!("{home}/domid"),
                node(alloc::format!("{domid}").into_bytes(), self.gen),
            );
            self.tree.insert(home, node(Vec::new(), self.gen));
            if let Some(n) = self.tree.get_mut("/local/domain") {
                n.gen = self.gen;
            }
        }
        self.introduced.insert(domid);
    }

    /// Toolstack action: runs a node request (READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS,
    /// SET_PERMS, ...) as `domid` outside any transaction and fires the watches it triggers.
    pub fn execute_as(&mut self, domid: DomId, request: &Request) -> Result<Reply, XsErrno> {
        let node_request = match request {
            Request::GetPerms(p) | Request::SetPerms { path: p, .. } => !p.is_special(),
            Request::Read(_)
            | Request::Write { .. }
            | Request::Mkdir(_)
            | Request::Rm(_)
            | Request::Directory(_)
            | Request::DirectoryPart { .. } => true,
            _ => false,
        };
        if !node_request {
            return Err(XsErrno::Einval);
        }
        let r = self.node_op(ConnId(0), domid, 0, request);
        for change in core::mem::take(&mut self.deferred) {
            self.fire(&change);
        }
        r
    }

    /// Toolstack action: marks a domain released and fires `@releaseDomain`.
    pub fn release_domain(&mut self, domid: DomId) {
        self.introduced.remove(&domid);
        self.fire_special(RELEASE_DOMAIN);
    }

    /// Fires a special watch path (`@releaseDomain` or `@introduceDomain`); other paths are
    /// ignored.
    pub fn fire_special(&mut self, which: &str) {
        let Some(i) = special_index(which) else {
            return;
        };
        let change = Change {
            path: which.into(),
            perms: self.special_perms[i].clone(),
            recursive: false,
        };
        self.fire(&change);
    }

    fn defer_special(&mut self, which: &str) {
        if let Some(i) = special_index(which) {
            let perms = self.special_perms[i].clone();
            self.deferred.push(Change {
                path: which.into(),
                perms,
                recursive: false,
            });
        }
    }

    /// Bytes queued for a connection.
    pub fn output_len(&self, conn: ConnId) -> usize {
        self.conns.get(&conn.0).map_or(0, |c| c.out.len())
    }

    /// Copies queued output for `conn` into `out`; `None` when nothing is queued.
    #[must_use]
    pub fn poll_transmit(&mut self, conn: ConnId, out: &mut [u8]) -> Option<usize> {
        let c = self.conns.get_mut(&conn.0)?;
        if c.out.is_empty() {
            return None;
        }
        let n = out.len().min(c.out.len());
        for (dst, src) in out.iter_mut().zip(c.out.drain(..n)) {
            *dst = src;
        }
        Some(n)
    }

    /// Feeds bytes from a connection and executes every complete request. Returns how many
    /// bytes were taken: fewer than given while the connection's output is above
    /// `max_output` (offer the rest again after transmitting). `Malformed` means drop it.
    pub fn handle_input(&mut self, conn: ConnId, bytes: &[u8]) -> Result<usize, ServerError> {
        let mut taken = 0;
        loop {
            let limits = self.limits;
            let c = self
                .conns
                .get_mut(&conn.0)
                .ok_or(ServerError::UnknownConn(conn))?;
            if c.out.len() >= limits.max_output || taken == bytes.len() {
                return Ok(taken);
            }
            let want = if c.inbuf.len() < HEADER_LEN {
                HEADER_LEN
            } else {
                Header::parse_prefix(&c.inbuf)
                    .map_err(ServerError::Malformed)?
                    .total_len()
            };
            let n = (want - c.inbuf.len()).min(bytes.len() - taken);
            c.inbuf.extend_from_slice(&bytes[taken..taken + n]);
            taken += n;
            if c.inbuf.len() < HEADER_LEN {
                continue;
            }
            let h = Header::parse_prefix(&c.inbuf).map_err(ServerError::Malformed)?;
            if c.inbuf.len() == h.total_len() {
                let frame = core::mem::take(&mut c.inbuf);
                self.execute_frame(conn, &frame);
            }
        }
    }

    fn execute_frame(&mut self, conn: ConnId, frame: &[u8]) {
        let view = MsgHeader::new_unchecked(frame);
        let (req_id, tx_id) = (view.req_id(), view.tx_id());
        let result = match RequestMsg::parse(&view) {
            Ok(msg) => self.execute(conn, msg),
            Err(WireError::UnexpectedType(_)) => Err(XsErrno::Enosys),
            Err(_) => Err(XsErrno::Einval),
        };
        let reply = match result {
            Ok(r) => r,
            Err(e) => Reply::Error(e),
        };
        let mut bytes = ReplyMsg {
            req_id,
            tx_id,
            reply,
        }
        .to_vec();
        if bytes.is_err() {
            // Only a listing can outgrow the payload; xenstored answers E2BIG too.
            bytes = ReplyMsg {
                req_id,
                tx_id,
                reply: Reply::Error(XsErrno::E2big),
            }
            .to_vec();
        }
        if let (Some(c), Ok(b)) = (self.conns.get_mut(&conn.0), bytes) {
            c.out.extend(b);
        }
        self.flush_pending_events(conn);
        for change in core::mem::take(&mut self.deferred) {
            self.fire(&change);
        }
    }

    fn execute(&mut self, conn: ConnId, msg: RequestMsg) -> Result<Reply, XsErrno> {
        let c = self.conns.get(&conn.0).ok_or(XsErrno::Einval)?;
        let domid = c.domid;
        let privileged = domid == DomId::DOM0;
        let t = msg.request.msg_type();
        match msg.request {
            Request::Read(_)
            | Request::Write { .. }
            | Request::Mkdir(_)
            | Request::Rm(_)
            | Request::Directory(_)
            | Request::DirectoryPart { .. } => self.node_op(conn, domid, msg.tx_id, &msg.request),
            Request::GetPerms(ref p) | Request::SetPerms { path: ref p, .. } if !p.is_special() => {
                self.node_op(conn, domid, msg.tx_id, &msg.request)
            }
            Request::GetPerms(p) => {
                let i = special_index(p.as_str()).ok_or(XsErrno::Einval)?;
                Ok(Reply::Perms(self.special_perms[i].clone()))
            }
            Request::SetPerms { path, perms } => {
                if !privileged {
                    return Err(XsErrno::Eacces);
                }
                if perms.len() > self.limits.max_perms {
                    return Err(XsErrno::E2big);
                }
                let i = special_index(path.as_str()).ok_or(XsErrno::Einval)?;
                self.special_perms[i] = perms;
                Ok(Reply::Ok(t))
            }
            Request::GetDomainPath(d) => Ok(Reply::DomainPath(alloc::format!("/local/domain/{d}"))),
            Request::Watch { path, token, depth } => self.watch(conn, domid, path, token, depth),
            Request::Unwatch { path, token } => {
                let c = self.conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
                let i = c
                    .watches
                    .iter()
                    .position(|w| w.path == path && w.token == token)
                    .ok_or(XsErrno::Enoent)?;
                c.watches.remove(i);
                Ok(Reply::Ok(t))
            }
            Request::TransactionStart => {
                if msg.tx_id != 0 {
                    return Err(XsErrno::Einval);
                }
                let c = self.conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
                if c.txs.len() >= self.limits.max_transactions {
                    return Err(XsErrno::Enospc);
                }
                let mut id = self.next_tx;
                while id == 0 || c.txs.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                self.next_tx = id.wrapping_add(1);
                c.txs.insert(id, TxState::default());
                Ok(Reply::TransactionStarted(id))
            }
            Request::TransactionEnd { commit } => {
                let c = self.conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
                let tx = c.txs.remove(&msg.tx_id).ok_or(XsErrno::Enoent)?;
                if commit {
                    self.commit(domid, tx)?;
                }
                Ok(Reply::Ok(t))
            }
            Request::ResetWatches => {
                let c = self.conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
                c.watches.clear();
                c.txs.clear();
                Ok(Reply::Ok(t))
            }
            Request::Introduce { domid: d, .. } => {
                if !privileged {
                    return Err(XsErrno::Eacces);
                }
                self.introduce_home(d);
                self.defer_special(INTRODUCE_DOMAIN);
                Ok(Reply::Ok(t))
            }
            Request::Release(d) => {
                if !privileged {
                    return Err(XsErrno::Eacces);
                }
                if !self.introduced.contains(&d) {
                    return Err(XsErrno::Enoent);
                }
                self.introduced.remove(&d);
                self.defer_special(RELEASE_DOMAIN);
                Ok(Reply::Ok(t))
            }
            Request::IsDomainIntroduced(d) => Ok(Reply::IsIntroduced(self.introduced.contains(&d))),
            Request::Control { .. }
            | Request::Resume(_)
            | Request::SetTarget { .. }
            | Request::GetFeature(_)
            | Request::SetFeature { .. }
            | Request::GetQuota { .. }
            | Request::SetQuota { .. }
            | Request::Invalid => Err(XsErrno::Enosys),
        }
    }

    fn node_op(
        &mut self,
        conn: ConnId,
        domid: DomId,
        tx_id: u32,
        request: &Request,
    ) -> Result<Reply, XsErrno> {
        let mut fired = Changes::new();
        let result = {
            let Server {
                tree,
                conns,
                gen,
                limits,
                ..
            } = self;
            let view = if tx_id == 0 {
                View::Main {
                    tree,
                    changes: &mut fired,
                }
            } else {
                let c = conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
                let tx = c.txs.get_mut(&tx_id).ok_or(XsErrno::Enoent)?;
                View::Tx {
                    main: tree,
                    tx,
                    max_nodes: limits.max_transaction_nodes,
                }
            };
            Op {
                domid,
                limits,
                view,
                gen,
            }
            .run(request)
        };
        self.defer(conn, fired);
        result
    }

    fn commit(&mut self, domid: DomId, tx: TxState) -> Result<(), XsErrno> {
        if tx.conflicts(&self.tree) {
            return Err(XsErrno::Eagain);
        }
        if domid != DomId::DOM0 && tx.over_quota(&self.tree, self.limits.max_nodes_per_domain) {
            return Err(XsErrno::Enospc);
        }
        let changes = tx.apply(&mut self.tree);
        self.deferred.extend(changes.into_values());
        Ok(())
    }

    /// Changes are fired once the reply is queued, so a watcher sees the reply first.
    fn defer(&mut self, _conn: ConnId, changes: Changes) {
        self.deferred.extend(changes.into_values());
    }
}

fn special_index(p: &str) -> Option<usize> {
    match p {
        RELEASE_DOMAIN => Some(0),
        INTRODUCE_DOMAIN => Some(1),
        _ => None,
    }
}
