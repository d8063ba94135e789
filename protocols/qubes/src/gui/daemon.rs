//! The daemon half of the GUI protocol (for the simulator's GUI daemon): the handshake, agent
//! messages decoded under qubes-guid's rules into events, and daemon→agent messages.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use platform_api::GrantRef;

use super::queue::{push_message, OutQueue};
use super::wire::{
    parse_version, Configure, Create, GuiFraming, MapInfo, Message, MsgHeader, MsgType, Sender,
    ShmImage, Version, WindowDumpHdr, WindowFlags, WindowHints, WindowId, WireError, WmClass,
    WmName, XConf, HEADER_LEN, MAX_WINDOW_HEIGHT, MAX_WINDOW_WIDTH,
};
use super::{ConnError, LocalError, PeerError};
use crate::framing::FrameReader;

/// Bounds of the daemon side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonLimits {
    /// Windows an agent may create; one more ends the connection.
    pub max_windows: usize,
    /// Undelivered events; input waits at this bound.
    pub max_events: usize,
    /// Clipboard and grant-ref bytes held in undelivered events; input waits at this bound
    /// (one more message may overshoot it).
    pub max_event_bytes: usize,
    /// Bytes queued for the vchan.
    pub max_out: usize,
}

impl DaemonLimits {
    /// Defaults for the simulator.
    pub const DEFAULT: DaemonLimits = DaemonLimits {
        max_windows: 256,
        max_events: 256,
        max_event_bytes: 1024 * 1024,
        max_out: 512 * 1024,
    };
}

impl Default for DaemonLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the agent did, as the daemon understood it (sizes already clamped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonEvent {
    /// The handshake completed.
    Connected {
        /// What the agent announced.
        agent: Version,
        /// `1.min(agent_minor, 8)`.
        negotiated: Version,
    },
    /// MSG_CREATE.
    Created(WindowId, Create),
    /// MSG_DESTROY (echoed at ≥1.5).
    Destroyed(WindowId),
    /// MSG_MAP.
    Mapped(WindowId, MapInfo),
    /// MSG_UNMAP.
    Unmapped(WindowId),
    /// MSG_CONFIGURE from the agent (its own, or the reply to ours).
    Configured(WindowId, Configure),
    /// MSG_SHMIMAGE on a mapped window with a dump: repaint this region.
    Damage(WindowId, ShmImage),
    /// MSG_WMNAME.
    Title(WindowId, WmName),
    /// MSG_WMCLASS.
    Class(WindowId, WmClass),
    /// MSG_WINDOW_HINTS.
    Hints(WindowId, WindowHints),
    /// MSG_WINDOW_FLAGS.
    Flags(WindowId, WindowFlags),
    /// MSG_CURSOR.
    Cursor(WindowId, u32),
    /// MSG_DOCK.
    Dock(WindowId),
    /// MSG_WINDOW_DUMP: map these grants (then [`Daemon::ack_dump`] at ≥1.7).
    Dump(WindowId, WindowDumpHdr, Vec<GrantRef>),
    /// MSG_CLIPBOARD_DATA.
    ClipboardData(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Ready,
    Failed(ConnError),
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    mapped: bool,
    dumped: bool,
    /// Our CONFIGURE awaiting the agent's identical reply.
    awaiting: Option<Configure>,
}

/// The daemon side of one agent's GUI connection.
#[derive(Debug)]
pub struct Daemon {
    limits: DaemonLimits,
    phase: Phase,
    xconf: XConf,
    hs: [u8; 4],
    hs_len: usize,
    version: Version,
    reader: FrameReader<GuiFraming>,
    out: OutQueue,
    events: VecDeque<DaemonEvent>,
    /// Payload bytes in `events` (see `event_bytes`).
    event_bytes: usize,
    windows: BTreeMap<WindowId, Window>,
}

/// Heap bytes an event holds: a clipboard payload or a dump's grant refs.
fn event_bytes(e: &DaemonEvent) -> usize {
    match e {
        DaemonEvent::ClipboardData(d) => d.len(),
        DaemonEvent::Dump(_, _, refs) => {
            refs.len().saturating_mul(core::mem::size_of::<GrantRef>())
        }
        _ => 0,
    }
}

impl Daemon {
    /// The highest version the daemon side speaks.
    pub const VERSION: Version = Version::V1_8;

    /// Awaits the agent's version word; will offer this screen.
    pub fn new(limits: DaemonLimits, xconf: XConf) -> Self {
        Daemon {
            limits,
            phase: Phase::Handshake,
            xconf,
            hs: [0; 4],
            hs_len: 0,
            version: Self::VERSION,
            reader: FrameReader::new(GuiFraming {
                sender: Sender::Agent,
                version: Self::VERSION,
            }),
            out: OutQueue::new(limits.max_out.max(1024), "gui daemon output"),
            events: VecDeque::new(),
            event_bytes: 0,
            windows: BTreeMap::new(),
        }
    }

    /// The negotiated version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The sticky error that ended the connection (the real daemon exits), if any.
    pub fn error(&self) -> Option<ConnError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Consumes agent bytes; returns how many were taken (fewer while queues are full).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, ConnError> {
        if let Phase::Failed(e) = self.phase {
            return Err(e);
        }
        let mut used = 0;
        if self.phase == Phase::Handshake {
            let n = (4 - self.hs_len).min(data.len());
            self.hs[self.hs_len..self.hs_len + n].copy_from_slice(&data[..n]);
            self.hs_len += n;
            used = n;
            if self.hs_len == 4 {
                self.handshake().map_err(|e| self.fail(e))?;
            }
        }
        while used < data.len()
            && self.out.has_room(HEADER_LEN)
            && self.events.len() < self.limits.max_events
            && self.event_bytes < self.limits.max_event_bytes
        {
            let n = self
                .reader
                .push(&data[used..])
                .map_err(|e| self.fail(ConnError::Frame(e)))?;
            used += n;
            if let Some(frame) = self.reader.take() {
                if let Err(e) = self.handle_frame(&frame) {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(used)
    }

    fn handshake(&mut self) -> Result<(), ConnError> {
        let agent = parse_version(&self.hs).map_err(|e| match e {
            WireError::BadMajor(m) => ConnError::Peer(PeerError::BadMajor(m)),
            other => ConnError::Wire(other),
        })?;
        let negotiated = Version::new(1, agent.minor().min(Self::VERSION.minor()));
        self.version = negotiated;
        self.reader.framing_mut().version = negotiated;
        let mut ok = true;
        if negotiated >= Version::V1_4 {
            ok &= self.out.push_all(&[&negotiated.0.to_le_bytes()]).is_ok();
        }
        let mut x = [0u8; XConf::LEN];
        self.xconf.emit(&mut x);
        ok &= self.out.push_all(&[&x]).is_ok();
        debug_assert!(ok, "the queue is empty during the handshake");
        self.phase = Phase::Ready;
        self.events
            .push_back(DaemonEvent::Connected { agent, negotiated });
        Ok(())
    }

    fn fail(&mut self, e: ConnError) -> ConnError {
        self.phase = Phase::Failed(e);
        self.out.clear();
        e
    }

    fn clamp(width: u32, height: u32) -> (u32, u32) {
        (width.min(MAX_WINDOW_WIDTH), height.min(MAX_WINDOW_HEIGHT))
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        let (hdr, body) = frame
            .split_at_checked(HEADER_LEN)
            .ok_or(ConnError::Wire(WireError::Truncated { needed: HEADER_LEN }))?;
        let h = MsgHeader::new_unchecked(hdr);
        let (w, ty) = (h.window(), h.msg_type());
        let msg = Message::parse_body(ty, body).map_err(ConnError::Wire)?;
        if let Message::ClipboardData(d) = msg {
            self.push_event(DaemonEvent::ClipboardData(d.to_vec()));
            return Ok(());
        }
        if let Message::Create(mut c) = msg {
            if w.0 == 0 {
                return Err(ConnError::Peer(PeerError::WindowZero));
            }
            if self.windows.contains_key(&w) {
                return Err(ConnError::Peer(PeerError::WindowExists(w)));
            }
            if self.windows.len() >= self.limits.max_windows {
                return Err(ConnError::Full { what: "windows" });
            }
            (c.width, c.height) = Self::clamp(c.width, c.height);
            self.windows.insert(w, Window::default());
            self.events.push_back(DaemonEvent::Created(w, c));
            return Ok(());
        }
        let win = self
            .windows
            .get_mut(&w)
            .ok_or(ConnError::Peer(PeerError::UnknownWindow(w)))?;
        let ev = match msg {
            Message::Destroy => {
                self.windows.remove(&w);
                if self.version >= Version::V1_5 {
                    let ok = push_message(&mut self.out, w, &Message::Destroy);
                    debug_assert!(ok, "room for a header was checked");
                }
                DaemonEvent::Destroyed(w)
            }
            Message::Map(m) => {
                win.mapped = true;
                DaemonEvent::Mapped(w, m)
            }
            Message::Unmap => {
                win.mapped = false;
                DaemonEvent::Unmapped(w)
            }
            Message::Configure(mut c) => {
                (c.width, c.height) = Self::clamp(c.width, c.height);
                if win
                    .awaiting
                    .is_some_and(|a| (a.x, a.y, a.width, a.height) == (c.x, c.y, c.width, c.height))
                {
                    win.awaiting = None;
                }
                DaemonEvent::Configured(w, c)
            }
            Message::ShmImage(s) => {
                if !(win.mapped && win.dumped) {
                    // Ignored by the real daemon too.
                    return Ok(());
                }
                DaemonEvent::Damage(w, s)
            }
            Message::WmName(t) => DaemonEvent::Title(w, t),
            Message::WmClass(c) => DaemonEvent::Class(w, c),
            Message::WindowHints(hn) => DaemonEvent::Hints(w, hn),
            Message::WindowFlags(f) => DaemonEvent::Flags(w, f),
            Message::Cursor(c) => DaemonEvent::Cursor(w, c.cursor),
            Message::Dock => DaemonEvent::Dock(w),
            Message::WindowDump(hd, refs) => {
                win.dumped = true;
                DaemonEvent::Dump(w, hd, refs.iter().map(GrantRef).collect())
            }
            Message::MfnDump(..) => return Err(ConnError::Peer(PeerError::MfnDump)),
            other => return Err(ConnError::Peer(PeerError::UnexpectedType(other.msg_type()))),
        };
        self.push_event(ev);
        Ok(())
    }

    fn push_event(&mut self, e: DaemonEvent) {
        self.event_bytes = self.event_bytes.saturating_add(event_bytes(&e));
        self.events.push_back(e);
    }

    /// Copies queued bytes into `out`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.out.poll_transmit(out)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DaemonEvent> {
        let e = self.events.pop_front()?;
        self.event_bytes = self.event_bytes.saturating_sub(event_bytes(&e));
        Some(e)
    }

    /// Whether the agent created `w` and has not destroyed it.
    pub fn has_window(&self, w: WindowId) -> bool {
        self.windows.contains_key(&w)
    }

    fn send(&mut self, w: WindowId, m: &Message<'_>) -> Result<(), LocalError> {
        if self.phase != Phase::Ready {
            return Err(LocalError::NotConnected);
        }
        if !self.windows.contains_key(&w) {
            return Err(LocalError::NoSuchWindow(w));
        }
        m.check()?;
        if !self.out.has_room(m.buffer_len() + HEADER_LEN) || !push_message(&mut self.out, w, m) {
            return Err(LocalError::Full {
                what: "outgoing queue",
            });
        }
        Ok(())
    }

    /// Sends an input message (KEYPRESS, BUTTON, MOTION, CROSSING, FOCUS, KEYMAP_NOTIFY,
    /// WINDOW_FLAGS, CLIPBOARD_REQ) to window `w`.
    pub fn send_input(&mut self, w: WindowId, m: &Message<'_>) -> Result<(), LocalError> {
        match m.msg_type() {
            MsgType::Keypress
            | MsgType::Button
            | MsgType::Motion
            | MsgType::Crossing
            | MsgType::Focus
            | MsgType::KeymapNotify
            | MsgType::WindowFlags
            | MsgType::ClipboardReq => self.send(w, m),
            t => Err(LocalError::Invalid(WireError::UnknownType(u32::from(t)))),
        }
    }

    /// Tells the agent the user moved or resized `w`. Refused with [`LocalError::Busy`] until
    /// the agent has answered the previous one with identical geometry.
    pub fn configure(&mut self, w: WindowId, mut c: Configure) -> Result<(), LocalError> {
        // Clamped like the agent's reply will be, so the two can match.
        (c.width, c.height) = Self::clamp(c.width, c.height);
        if self
            .windows
            .get(&w)
            .is_some_and(|win| win.awaiting.is_some())
        {
            return Err(LocalError::Busy(w));
        }
        self.send(w, &Message::Configure(c))?;
        if let Some(win) = self.windows.get_mut(&w) {
            win.awaiting = Some(c);
        }
        Ok(())
    }

    /// Tells the agent the user asked to close `w`.
    pub fn close(&mut self, w: WindowId) -> Result<(), LocalError> {
        self.send(w, &Message::Close)
    }

    /// Pastes `data` into window `w`.
    pub fn clipboard_data(&mut self, w: WindowId, data: &[u8]) -> Result<(), LocalError> {
        if data.len() > self.version.max_clipboard() {
            return Err(LocalError::Invalid(WireError::ClipboardTooLong(
                data.len() as u32
            )));
        }
        self.send(w, &Message::ClipboardData(data))
    }

    /// Acknowledges that `w`'s dump is mapped (≥1.7), so the agent may free older grants.
    pub fn ack_dump(&mut self, w: WindowId) -> Result<(), LocalError> {
        if self.version < Version::V1_7 {
            return Err(LocalError::Unsupported(self.version));
        }
        self.send(w, &Message::WindowDumpAck)
    }
}
