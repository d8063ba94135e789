//! The VM side of QubesDB: one full sync per connection, then dom0's WRITE/RM applied to a
//! bounded local copy, own writes forwarded, local watches, and firewall commit detection.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::entries::{Entries, Full};
use super::out::{push_message, OutQueue};
use super::wire::{check_data, Message, MsgType, QdbFraming, QdbPath, HEADER_LEN};
use super::{ConnError, LocalError, PeerError};
use crate::framing::FrameReader;

/// Bounds of the VM side. Reaching `max_entries`/`max_bytes` from dom0's data ends the
/// connection ([`ConnError::Full`]): a copy missing a firewall rule must not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the local copy.
    pub max_entries: usize,
    /// Path plus value bytes in the local copy.
    pub max_bytes: usize,
    /// Registered watches.
    pub max_watches: usize,
    /// Undelivered events; input stops being consumed while they could overflow.
    pub max_events: usize,
    /// Own writes awaiting dom0's answer.
    pub max_pending_writes: usize,
    /// Bytes queued for the vchan; input stops being consumed while replies could overflow.
    pub max_out: usize,
}

impl Limits {
    /// Enough for a netvm with a few hundred firewall rules per client.
    pub const DEFAULT: Limits = Limits {
        max_entries: 4096,
        max_bytes: 1 << 20,
        max_watches: 16,
        max_events: 256,
        max_pending_writes: 16,
        max_out: 64 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A registered watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u32);

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No connection: call [`Agent::connect`].
    Disconnected,
    /// MULTIREAD sent, dump being received; reads still see the previous copy.
    Syncing,
    /// Dump complete; dom0's changes apply as they arrive.
    Ready,
    /// The connection failed; the error is sticky until the next [`Agent::connect`].
    Failed(ConnError),
}

/// What the app learns from the VM side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A full sync completed; the copy now mirrors dom0's.
    Synced {
        /// Entries in the copy.
        entries: usize,
    },
    /// Something under a watched prefix changed. `path` is the written or removed path (a
    /// prefix for a prefix RM), or the watch's prefix after a sync.
    Changed {
        /// The watch.
        watch: WatchId,
        /// What changed.
        path: QdbPath,
    },
    /// `/qubes-firewall/<ip>` was written with "" (or was "" at sync time): reload that
    /// client's rules now ([`firewall_commit_ip`] gives the ip).
    FirewallCommit(QdbPath),
    /// dom0 stored one of our writes.
    WriteAcked(QdbPath),
    /// dom0 refused one of our writes.
    WriteRefused(QdbPath),
    /// dom0 sent a value containing NUL; it was answered with RESP_ERROR and not stored.
    ValueRefused(QdbPath),
}

/// The `<ip>` of a firewall commit marker `/qubes-firewall/<ip>` (exactly two slashes, as the
/// Linux agent checks); `None` for any other path.
pub fn firewall_commit_ip(path: &QdbPath) -> Option<&str> {
    let ip = path.as_str().strip_prefix("/qubes-firewall/")?;
    (!ip.is_empty() && !ip.contains('/')).then_some(ip)
}

/// The VM's QubesDB. Sans-IO: feed vchan bytes to [`handle_input`](Self::handle_input), send
/// what [`poll_transmit`](Self::poll_transmit) yields, act on [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct Agent {
    limits: Limits,
    state: SyncState,
    db: Entries,
    /// The dump being received; swapped in at the end marker.
    staging: Entries,
    reader: FrameReader<QdbFraming>,
    out: OutQueue,
    events: VecDeque<Event>,
    watches: Vec<(WatchId, QdbPath)>,
    next_watch: u32,
    pending: VecDeque<QdbPath>,
}

impl Agent {
    /// A disconnected agent with an empty copy. `max_events` is raised to leave room for the
    /// events one message can cause (one per watch, plus one).
    pub fn new(mut limits: Limits) -> Self {
        limits.max_events = limits.max_events.max(limits.max_watches + 2);
        limits.max_out = limits.max_out.max(2 * super::wire::MAX_MESSAGE_LEN);
        Agent {
            limits,
            state: SyncState::Disconnected,
            db: Entries::new(limits.max_entries, limits.max_bytes),
            staging: Entries::new(limits.max_entries, limits.max_bytes),
            reader: FrameReader::new(QdbFraming),
            out: OutQueue::new(limits.max_out, "qubesdb agent output"),
            events: VecDeque::new(),
            watches: Vec::new(),
            next_watch: 1,
            pending: VecDeque::new(),
        }
    }

    /// Starts a connection (first or after a dom0 daemon restart): queues the MULTIREAD and
    /// begins a new sync. Reads keep seeing the previous copy until the sync completes.
    pub fn connect(&mut self) {
        self.reader = FrameReader::new(QdbFraming);
        self.out.clear();
        self.pending.clear();
        self.staging.clear();
        self.state = SyncState::Syncing;
        let ok = push_message(&mut self.out, &Message::Multiread(QdbPath::EMPTY));
        debug_assert!(ok, "an empty queue holds a MULTIREAD");
    }

    /// Drops the connection; the copy stays readable.
    pub fn disconnect(&mut self) {
        self.out.clear();
        self.pending.clear();
        self.state = SyncState::Disconnected;
    }

    /// Where the connection is.
    pub fn state(&self) -> SyncState {
        self.state
    }

    /// Consumes vchan bytes and returns how many were taken. Fewer than given means queues are
    /// full: transmit and take events, then offer the rest again (0 while disconnected).
    /// Errors are sticky until [`connect`](Self::connect).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, ConnError> {
        match self.state {
            SyncState::Failed(e) => return Err(e),
            SyncState::Disconnected => return Ok(0),
            SyncState::Syncing | SyncState::Ready => {}
        }
        let mut used = 0;
        while used < data.len() && self.has_room() {
            let n = match self.reader.push(&data[used..]) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(ConnError::Frame(e))),
            };
            used += n;
            if let Some(frame) = self.reader.take() {
                if let Err(e) = self.handle_frame(&frame) {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(used)
    }

    fn has_room(&self) -> bool {
        self.out.has_room(HEADER_LEN)
            && self.events.len() + self.limits.max_watches < self.limits.max_events
    }

    fn fail(&mut self, e: ConnError) -> ConnError {
        self.state = SyncState::Failed(e);
        self.out.clear();
        e
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        let msg = Message::parse(frame).map_err(ConnError::Wire)?;
        let ty = msg.msg_type();
        if !ty.valid_on_vchan() {
            return Err(ConnError::Peer(PeerError::NotOnVchan(ty)));
        }
        let syncing = self.state == SyncState::Syncing;
        match msg {
            Message::Write(path, value) => {
                if check_data(value).is_err() {
                    self.reply(Message::RespError(path));
                    self.events.push_back(Event::ValueRefused(path));
                    return Ok(());
                }
                let target = if syncing {
                    &mut self.staging
                } else {
                    &mut self.db
                };
                let changed = target
                    .insert(path, value)
                    .map_err(|Full(what)| ConnError::Full { what })?;
                self.reply(Message::RespOk(path));
                if !syncing {
                    if changed {
                        self.fire(&path);
                    }
                    if value.is_empty() && firewall_commit_ip(&path).is_some() {
                        self.events.push_back(Event::FirewallCommit(path));
                    }
                }
            }
            Message::Rm(path) => {
                // Like mirage, an RM of a missing key is acknowledged (the C VM daemon treats
                // it as a fatal de-sync); dom0's first firewall reload removes an empty prefix.
                let target = if syncing {
                    &mut self.staging
                } else {
                    &mut self.db
                };
                let removed = target.remove(&path);
                self.reply(Message::RespOk(path));
                if removed > 0 && !syncing {
                    self.fire(&path);
                }
            }
            Message::RespMultiread(path, value) if syncing => {
                if msg.is_end_of_dump() {
                    self.finish_sync();
                } else if check_data(value).is_ok() {
                    // An entry with NUL is skipped: it was never valid in dom0's DB either.
                    self.staging
                        .insert(path, value)
                        .map_err(|Full(what)| ConnError::Full { what })?;
                }
            }
            Message::RespOk(path) | Message::RespError(path) => {
                let expected = *self
                    .pending
                    .front()
                    .ok_or(ConnError::Peer(PeerError::UnsolicitedAck(path)))?;
                if expected != path {
                    return Err(ConnError::Peer(PeerError::AckMismatch(path)));
                }
                self.pending.pop_front();
                let ev = if ty == MsgType::RespOk {
                    Event::WriteAcked(path)
                } else {
                    Event::WriteRefused(path)
                };
                self.events.push_back(ev);
            }
            _ => return Err(ConnError::Peer(PeerError::UnexpectedType(ty))),
        }
        Ok(())
    }

    fn reply(&mut self, m: Message<'_>) {
        // has_room() reserved space for one header-only reply before this frame was read.
        let ok = push_message(&mut self.out, &m);
        debug_assert!(ok, "reply space was reserved");
    }

    /// Queues one `Changed` per watch affected by a change at `path` (a prefix RM affects
    /// watches below it too).
    fn fire(&mut self, path: &QdbPath) {
        for (id, prefix) in &self.watches {
            let hit = path.starts_with(prefix.as_bytes())
                || (path.is_prefix() && prefix.starts_with(path.as_bytes()));
            if hit {
                self.events.push_back(Event::Changed {
                    watch: *id,
                    path: *path,
                });
            }
        }
    }

    fn finish_sync(&mut self) {
        core::mem::swap(&mut self.db, &mut self.staging);
        let old = core::mem::replace(
            &mut self.staging,
            Entries::new(self.limits.max_entries, self.limits.max_bytes),
        );
        self.state = SyncState::Ready;
        self.events.push_back(Event::Synced {
            entries: self.db.len(),
        });
        for (id, prefix) in &self.watches {
            if !self.db.under(prefix, None).eq(old.under(prefix, None)) {
                self.events.push_back(Event::Changed {
                    watch: *id,
                    path: *prefix,
                });
            }
        }
        // As mirage does, markers already empty at sync time count as committed. Events past
        // the bound are not lost: the app re-reads the copy on `Synced` anyway, and the
        // commits are queued regardless so that no client keeps stale rules.
        let commits: Vec<QdbPath> = self
            .db
            .under(
                &QdbPath::from_bytes(b"/qubes-firewall/").unwrap_or(QdbPath::EMPTY),
                None,
            )
            .filter(|(p, v)| v.is_empty() && firewall_commit_ip(p).is_some())
            .map(|(p, _)| *p)
            .collect();
        self.events
            .extend(commits.into_iter().map(Event::FirewallCommit));
    }

    /// Copies queued bytes for the vchan into `out`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.out.poll_transmit(out)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The value at `path` in the last complete copy.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        self.db.get(&QdbPath::new(path).ok()?)
    }

    /// The entries whose path starts with `prefix`, sorted (empty for an invalid prefix).
    pub fn list(&self, prefix: &str) -> impl DoubleEndedIterator<Item = (&QdbPath, &[u8])> + '_ {
        let p = QdbPath::new(prefix).ok();
        let valid = p.is_some();
        self.db
            .under(&p.unwrap_or(QdbPath::EMPTY), None)
            .filter(move |_| valid)
    }

    /// Entries in the copy.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    /// Whether the copy is empty.
    pub fn is_empty(&self) -> bool {
        self.db.len() == 0
    }

    /// Writes `path` = `value` locally and sends it to dom0, which answers with
    /// [`Event::WriteAcked`] or [`Event::WriteRefused`].
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), LocalError> {
        let path = QdbPath::new(path)?;
        check_data(value)?;
        let msg = Message::Write(path, value);
        self.can_send(&msg)?;
        // Ours to keep in the copy too (the C VM daemon does the same); also in the dump being
        // received, so a running sync does not lose it.
        let changed = self
            .db
            .insert(path, value)
            .map_err(|Full(what)| LocalError::Full { what })?;
        if self.state == SyncState::Syncing {
            let _ = self.staging.insert(path, value);
        }
        self.send(&msg);
        if changed {
            self.fire(&path);
        }
        Ok(())
    }

    /// Removes `path` (a prefix if it ends in `/`) locally and at dom0.
    pub fn remove(&mut self, path: &str) -> Result<(), LocalError> {
        let path = QdbPath::new(path)?;
        let msg = Message::Rm(path);
        self.can_send(&msg)?;
        self.send(&msg);
        self.staging.remove(&path);
        if self.db.remove(&path) > 0 {
            self.fire(&path);
        }
        Ok(())
    }

    fn can_send(&self, msg: &Message<'_>) -> Result<(), LocalError> {
        if !matches!(self.state, SyncState::Syncing | SyncState::Ready) {
            return Err(LocalError::NotConnected);
        }
        if self.pending.len() >= self.limits.max_pending_writes {
            return Err(LocalError::Full {
                what: "pending writes",
            });
        }
        // Keep room for the reply input needs, so our writes cannot stall dom0's.
        if !self.out.has_room(msg.buffer_len() + HEADER_LEN) {
            return Err(LocalError::Full {
                what: "outgoing queue",
            });
        }
        Ok(())
    }

    fn send(&mut self, msg: &Message<'_>) {
        let ok = push_message(&mut self.out, msg);
        debug_assert!(ok, "can_send checked the room");
        self.pending.push_back(*msg.path());
    }

    /// Registers a watch on every path starting with `prefix`.
    pub fn watch(&mut self, prefix: &str) -> Result<WatchId, LocalError> {
        let prefix = QdbPath::new(prefix)?;
        if self.watches.len() >= self.limits.max_watches {
            return Err(LocalError::Full { what: "watches" });
        }
        let id = WatchId(self.next_watch);
        self.next_watch = self.next_watch.wrapping_add(1);
        self.watches.push((id, prefix));
        Ok(id)
    }

    /// Removes a watch; returns whether it existed.
    pub fn unwatch(&mut self, id: WatchId) -> bool {
        let before = self.watches.len();
        self.watches.retain(|(w, _)| *w != id);
        before != self.watches.len()
    }
}
