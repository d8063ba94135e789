//! dom0's QubesDB daemon for one VM (the simulator's): holds the VM's DB, serves the full sync
//! in reverse sorted order, pushes changes and awaits their acks, keeps VM writes apart.

use alloc::collections::VecDeque;
use alloc::format;

use super::entries::{Entries, Full};
use super::out::{push_message, OutQueue};
use super::wire::{check_data, Message, MsgType, QdbFraming, QdbPath, HEADER_LEN, MAX_MESSAGE_LEN};
use super::{ConnError, LocalError, PeerError};
use crate::framing::FrameReader;

/// Bounds of the dom0 side. The VM can only fill its untrusted area (then its writes get
/// `RESP_ERROR`) and the reply queue (then input waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonLimits {
    /// Entries dom0 holds for the VM.
    pub max_entries: usize,
    /// Their path plus value bytes.
    pub max_bytes: usize,
    /// Entries the VM may write.
    pub max_vm_entries: usize,
    /// Their path plus value bytes.
    pub max_vm_bytes: usize,
    /// Pushed WRITE/RM awaiting the VM's RESP_OK.
    pub max_pending: usize,
    /// Undelivered events.
    pub max_events: usize,
    /// Bytes queued for the vchan.
    pub max_out: usize,
}

impl DaemonLimits {
    /// Defaults for the simulator.
    pub const DEFAULT: DaemonLimits = DaemonLimits {
        max_entries: 4096,
        max_bytes: 1 << 20,
        max_vm_entries: 256,
        max_vm_bytes: 64 * 1024,
        max_pending: 4096,
        max_events: 256,
        max_out: 64 * 1024,
    };
}

impl Default for DaemonLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the simulator learns from the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// The VM asked for the full sync (the dump is being sent).
    SyncRequested,
    /// The dump's end marker was queued.
    SyncServed {
        /// Entries dumped.
        entries: usize,
    },
    /// The VM stored a value in its untrusted area.
    VmWrite(QdbPath),
    /// The VM removed from its untrusted area.
    VmRemove(QdbPath),
    /// A VM write was refused (value with NUL, or the area is full).
    VmWriteRefused(QdbPath),
    /// The VM acknowledged a pushed WRITE/RM.
    Acked(QdbPath),
    /// The VM refused a pushed WRITE/RM.
    Refused(QdbPath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Disconnected,
    AwaitingMultiread,
    /// Dumping entries under `prefix` backwards; `before` is the last one sent.
    Dumping {
        prefix: QdbPath,
        before: Option<QdbPath>,
        sent: usize,
    },
    Ready,
    Failed(ConnError),
}

/// dom0's side of one VM's QubesDB connection.
#[derive(Debug)]
pub struct Daemon {
    limits: DaemonLimits,
    state: State,
    db: Entries,
    untrusted: Entries,
    reader: FrameReader<QdbFraming>,
    out: OutQueue,
    events: VecDeque<DaemonEvent>,
    pending: VecDeque<QdbPath>,
}

impl Daemon {
    /// A daemon with an empty DB and no connection.
    pub fn new(limits: DaemonLimits) -> Self {
        let mut limits = limits;
        limits.max_out = limits.max_out.max(2 * MAX_MESSAGE_LEN);
        Daemon {
            limits,
            state: State::Disconnected,
            db: Entries::new(limits.max_entries, limits.max_bytes),
            untrusted: Entries::new(limits.max_vm_entries, limits.max_vm_bytes),
            reader: FrameReader::new(QdbFraming),
            out: OutQueue::new(limits.max_out, "qubesdb daemon output"),
            events: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// The VM connected the vchan: wait for its MULTIREAD.
    pub fn connect(&mut self) {
        self.reader = FrameReader::new(QdbFraming);
        self.out.clear();
        self.pending.clear();
        self.state = State::AwaitingMultiread;
    }

    /// The vchan closed.
    pub fn disconnect(&mut self) {
        self.out.clear();
        self.pending.clear();
        self.state = State::Disconnected;
    }

    /// The sticky error that ended the connection, if any.
    pub fn error(&self) -> Option<ConnError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the full sync has been served and pushes flow.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Consumes VM bytes; returns how many were taken (fewer when queues are full, 0 while
    /// disconnected). Errors are fatal to this connection, as in the C daemon, and sticky.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, ConnError> {
        match self.state {
            State::Failed(e) => return Err(e),
            State::Disconnected => return Ok(0),
            _ => {}
        }
        let mut used = 0;
        while used < data.len()
            && self.out.has_room(HEADER_LEN)
            && self.events.len() < self.limits.max_events
        {
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

    fn fail(&mut self, e: ConnError) -> ConnError {
        self.state = State::Failed(e);
        self.out.clear();
        e
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        let msg = Message::parse(frame).map_err(ConnError::Wire)?;
        let ty = msg.msg_type();
        if !ty.valid_on_vchan() {
            return Err(ConnError::Peer(PeerError::NotOnVchan(ty)));
        }
        let reply = match msg {
            Message::Multiread(prefix) => {
                if self.state != State::AwaitingMultiread {
                    return Err(ConnError::Peer(PeerError::SecondMultiread));
                }
                self.state = State::Dumping {
                    prefix,
                    before: None,
                    sent: 0,
                };
                self.events.push_back(DaemonEvent::SyncRequested);
                None
            }
            Message::Write(path, value) => {
                let stored =
                    check_data(value).is_ok() && self.untrusted.insert(path, value).is_ok();
                if stored {
                    self.events.push_back(DaemonEvent::VmWrite(path));
                    Some(Message::RespOk(path))
                } else {
                    self.events.push_back(DaemonEvent::VmWriteRefused(path));
                    Some(Message::RespError(path))
                }
            }
            Message::Rm(path) => {
                self.untrusted.remove(&path);
                self.events.push_back(DaemonEvent::VmRemove(path));
                Some(Message::RespOk(path))
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
                    DaemonEvent::Acked(path)
                } else {
                    DaemonEvent::Refused(path)
                };
                self.events.push_back(ev);
                None
            }
            _ => return Err(ConnError::Peer(PeerError::UnexpectedType(ty))),
        };
        if let Some(r) = reply {
            let ok = push_message(&mut self.out, &r);
            debug_assert!(ok, "room for a header-only reply was checked");
        }
        Ok(())
    }

    /// Copies bytes for the vchan into `out`, generating the dump as room allows; `None` when
    /// there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.refill_dump();
        self.out.poll_transmit(out)
    }

    /// Queues dump entries, newest-sorted first, while a whole message still fits.
    fn refill_dump(&mut self) {
        while let State::Dumping {
            prefix,
            before,
            sent,
        } = self.state
        {
            if !self.out.has_room(MAX_MESSAGE_LEN + HEADER_LEN) {
                return;
            }
            let next = self
                .db
                .under(&prefix, before.as_ref())
                .next_back()
                .map(|(p, v)| (*p, v));
            match next {
                Some((path, value)) => {
                    let ok = push_message(&mut self.out, &Message::RespMultiread(path, value));
                    debug_assert!(ok, "room was checked");
                    self.state = State::Dumping {
                        prefix,
                        before: Some(path),
                        sent: sent + 1,
                    };
                }
                None => {
                    let ok = push_message(&mut self.out, &Message::END_OF_DUMP);
                    debug_assert!(ok, "room was checked");
                    self.state = State::Ready;
                    self.events
                        .push_back(DaemonEvent::SyncServed { entries: sent });
                }
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DaemonEvent> {
        self.events.pop_front()
    }

    /// A value dom0 holds for the VM.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        self.db.get(&QdbPath::new(path).ok()?)
    }

    /// The entries dom0 holds under `prefix`, sorted (empty for an invalid prefix).
    pub fn list(&self, prefix: &str) -> impl DoubleEndedIterator<Item = (&QdbPath, &[u8])> + '_ {
        let p = QdbPath::new(prefix).ok();
        let valid = p.is_some();
        self.db
            .under(&p.unwrap_or(QdbPath::EMPTY), None)
            .filter(move |_| valid)
    }

    /// A value the VM wrote (untrusted).
    pub fn read_untrusted(&self, path: &str) -> Option<&[u8]> {
        self.untrusted.get(&QdbPath::new(path).ok()?)
    }

    /// Sets `path` = `value` and pushes it to the VM once its sync has started.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), LocalError> {
        let path = QdbPath::new(path)?;
        check_data(value)?;
        let msg = Message::Write(path, value);
        self.can_push(1, msg.buffer_len())?;
        self.db
            .insert(path, value)
            .map_err(|Full(what)| LocalError::Full { what })?;
        self.push(&msg);
        Ok(())
    }

    /// Removes `path` (a prefix if it ends in `/`) and pushes the RM.
    pub fn rm(&mut self, path: &str) -> Result<(), LocalError> {
        let path = QdbPath::new(path)?;
        let msg = Message::Rm(path);
        self.can_push(1, msg.buffer_len())?;
        self.db.remove(&path);
        self.push(&msg);
        Ok(())
    }

    fn pushing(&self) -> bool {
        matches!(self.state, State::Dumping { .. } | State::Ready)
    }

    fn can_push(&self, count: usize, bytes: usize) -> Result<(), LocalError> {
        if !self.pushing() {
            return Ok(());
        }
        if self.pending.len() + count > self.limits.max_pending {
            return Err(LocalError::Full {
                what: "pending pushes",
            });
        }
        if !self.out.has_room(bytes + HEADER_LEN) {
            return Err(LocalError::Full {
                what: "outgoing queue",
            });
        }
        Ok(())
    }

    fn push(&mut self, msg: &Message<'_>) {
        if self.pushing() {
            let ok = push_message(&mut self.out, msg);
            debug_assert!(ok, "can_push checked the room");
            self.pending.push_back(*msg.path());
        }
    }

    /// Reloads one client's firewall exactly as dom0 does (\[QA\] `reload_firewall_for_vm`):
    /// RM `/qubes-firewall/<ip>/`, WRITE `policy` = `drop` and each rule as `NNNN`, then the
    /// commit marker `/qubes-firewall/<ip>` = "". All or nothing: refused before any change if
    /// the queues cannot take the whole sequence.
    pub fn reload_firewall(&mut self, ip: &str, rules: &[&str]) -> Result<(), LocalError> {
        let base = format!("/qubes-firewall/{ip}");
        QdbPath::new(&format!("{base}/policy"))?;
        for r in rules {
            check_data(r.as_bytes())?;
        }
        if rules.len() > 10_000 {
            return Err(LocalError::Full {
                what: "firewall rules",
            });
        }
        let bytes: usize =
            rules.iter().map(|r| HEADER_LEN + r.len()).sum::<usize>() + 3 * HEADER_LEN + 4;
        self.can_push(rules.len() + 3, bytes)?;
        self.rm(&format!("{base}/"))?;
        self.write(&format!("{base}/policy"), b"drop")?;
        for (i, r) in rules.iter().enumerate() {
            self.write(&format!("{base}/{i:04}"), r.as_bytes())?;
        }
        self.write(&base, b"")
    }
}
