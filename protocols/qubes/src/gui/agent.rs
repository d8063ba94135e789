//! The VM side of the GUI protocol: the handshake at 1.8, a bounded window table with the
//! daemon's rules (ids ≥ 1, CONFIGURE echoed, DESTROY acknowledged), and input as events.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use platform_api::GrantRef;

use super::queue::{push_message, OutQueue};
use super::wire::{
    dump_pages, parse_version, Button, Configure, Create, Crossing, Cursor, Focus, GuiFraming,
    Keypress, MapInfo, Message, Motion, Sender, ShmImage, Version, WindowDumpHdr, WindowFlags,
    WindowHints, WindowId, WireError, WmClass, WmName, Words, XConf, HEADER_LEN, KEYMAP_LEN,
    MAX_WINDOW_HEIGHT, MAX_WINDOW_WIDTH,
};
use super::{ConnError, LocalError, PeerError};
use crate::framing::FrameReader;

/// Bounds of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Windows alive at once (including those awaiting the DESTROY echo).
    pub max_windows: usize,
    /// Undelivered events; input stops being consumed at this bound.
    pub max_events: usize,
    /// Clipboard bytes held in undelivered events; input stops being consumed at this bound
    /// (one more payload may overshoot it).
    pub max_event_bytes: usize,
    /// Bytes queued for the vchan (a full-screen dump is 16 + 4·98304 bytes).
    pub max_out: usize,
}

impl AgentLimits {
    /// A few windows and room for one largest dump.
    pub const DEFAULT: AgentLimits = AgentLimits {
        max_windows: 16,
        max_events: 256,
        max_event_bytes: 512 * 1024,
        max_out: 512 * 1024,
    };
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the daemon tells the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected {
        /// The daemon's (negotiated) version.
        version: Version,
        /// The screen.
        xconf: XConf,
    },
    /// A key went down or up.
    Key(WindowId, Keypress),
    /// A mouse button.
    Button(WindowId, Button),
    /// Pointer motion.
    Motion(WindowId, Motion),
    /// Pointer entered or left.
    Crossing(WindowId, Crossing),
    /// Focus in or out.
    Focus(WindowId, Focus),
    /// The user moved or resized the window; already answered with the same geometry. If the
    /// size changed, send a new dump.
    Configure(WindowId, Configure),
    /// The user asked to close the window; the app decides (usually [`Agent::destroy`]).
    Close(WindowId),
    /// The user asked to copy: answer with [`Agent::clipboard_data`].
    ClipboardRequest(WindowId),
    /// Pasted data.
    ClipboardData(WindowId, Vec<u8>),
    /// The pressed-keys bitmap.
    KeymapNotify(WindowId, [u8; KEYMAP_LEN]),
    /// The daemon changed window flags.
    Flags(WindowId, WindowFlags),
    /// The daemon finished mapping a dump (≥1.7): grants of the previous dump can be freed.
    DumpAcked(WindowId),
    /// The window is gone and its id may be reused.
    Destroyed(WindowId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Version word and xconf being received.
    Handshake,
    Ready,
    Failed(ConnError),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    destroying: bool,
}

/// The VM's GUI agent. Sans-IO: bytes in with [`handle_input`](Self::handle_input), out with
/// [`poll_transmit`](Self::poll_transmit), events from [`poll_event`](Self::poll_event).
///
/// Version policy: we announce 1.8 and accept a daemon at 1.4..=1.8. A daemon below 1.4 would
/// send only xconf, which cannot be told from a version word; R4.2 and R4.3 daemons are ≥ 1.7,
/// so anything else ends the connection ([`PeerError::VersionOutOfRange`]).
#[derive(Debug)]
pub struct Agent {
    limits: AgentLimits,
    phase: Phase,
    hs: [u8; 20],
    hs_len: usize,
    version: Version,
    reader: FrameReader<GuiFraming>,
    out: OutQueue,
    events: VecDeque<Event>,
    /// Clipboard bytes in `events`.
    event_bytes: usize,
    windows: BTreeMap<WindowId, Window>,
    skipped: u64,
}

/// Room kept for the CONFIGURE echo an input message may need.
const REPLY_ROOM: usize = HEADER_LEN + Configure::LEN;

impl Agent {
    /// The version this agent announces.
    pub const VERSION: Version = Version::V1_8;

    /// A new connection: the version word is queued at once.
    pub fn new(limits: AgentLimits) -> Self {
        let mut out = OutQueue::new(limits.max_out.max(4 * REPLY_ROOM), "gui agent output");
        let ok = out.push_all(&[&Self::VERSION.0.to_le_bytes()]).is_ok();
        debug_assert!(ok, "an empty queue holds a version word");
        Agent {
            limits,
            phase: Phase::Handshake,
            hs: [0; 20],
            hs_len: 0,
            version: Self::VERSION,
            reader: FrameReader::new(GuiFraming {
                sender: Sender::Daemon,
                version: Self::VERSION,
            }),
            out,
            events: VecDeque::new(),
            event_bytes: 0,
            windows: BTreeMap::new(),
            skipped: 0,
        }
    }

    /// The negotiated version (ours until the daemon answered).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the handshake completed and the connection is up.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The sticky error that ended the connection, if any.
    pub fn error(&self) -> Option<ConnError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Messages of unknown or unexpected types skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Consumes daemon bytes; returns how many were taken (fewer while queues are full).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, ConnError> {
        if let Phase::Failed(e) = self.phase {
            return Err(e);
        }
        let mut used = 0;
        while used < data.len() && self.phase == Phase::Handshake {
            // Stop at the version word's end so it is checked before xconf is read.
            let end = if self.hs_len < 4 { 4 } else { 20 };
            let n = (end - self.hs_len).min(data.len() - used);
            self.hs[self.hs_len..self.hs_len + n].copy_from_slice(&data[used..used + n]);
            self.hs_len += n;
            used += n;
            if self.hs_len == 4 {
                if let Err(e) = self.check_version() {
                    return Err(self.fail(e));
                }
            }
            if self.hs_len == 20 {
                let xconf =
                    XConf::parse(&self.hs[4..]).map_err(|e| self.fail(ConnError::Wire(e)))?;
                self.phase = Phase::Ready;
                self.events.push_back(Event::Connected {
                    version: self.version,
                    xconf,
                });
            }
        }
        while used < data.len()
            && self.out.has_room(REPLY_ROOM)
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

    fn check_version(&mut self) -> Result<(), ConnError> {
        let v = parse_version(&self.hs[..4]).map_err(|e| match e {
            WireError::BadMajor(m) => ConnError::Peer(PeerError::BadMajor(m)),
            other => ConnError::Wire(other),
        })?;
        if v < Version::V1_4 || v > Self::VERSION {
            return Err(ConnError::Peer(PeerError::VersionOutOfRange(v)));
        }
        self.version = v;
        self.reader.framing_mut().version = v;
        Ok(())
    }

    fn fail(&mut self, e: ConnError) -> ConnError {
        self.phase = Phase::Failed(e);
        self.out.clear();
        e
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        let (hdr, body) = frame
            .split_at_checked(HEADER_LEN)
            .ok_or(ConnError::Wire(WireError::Truncated { needed: HEADER_LEN }))?;
        let h = super::wire::MsgHeader::new_unchecked(hdr);
        let w = h.window();
        let ty = h.msg_type();
        if let super::wire::MsgType::Unknown(_) = ty {
            self.skipped += 1;
            return Ok(());
        }
        let msg = Message::parse_body(ty, body).map_err(ConnError::Wire)?;
        if let Message::ClipboardData(d) = msg {
            self.event_bytes = self.event_bytes.saturating_add(d.len());
            self.events.push_back(Event::ClipboardData(w, d.to_vec()));
            return Ok(());
        }
        // Input can race with our DESTROY; events for windows we do not have are dropped.
        let Some(win) = self.windows.get(&w).copied() else {
            self.skipped += 1;
            return Ok(());
        };
        let ev = match msg {
            Message::Keypress(k) => Event::Key(w, k),
            Message::Button(b) => Event::Button(w, b),
            Message::Motion(m) => Event::Motion(w, m),
            Message::Crossing(c) => Event::Crossing(w, c),
            Message::Focus(f) => Event::Focus(w, f),
            Message::KeymapNotify(k) => Event::KeymapNotify(w, k),
            Message::WindowFlags(f) => Event::Flags(w, f),
            Message::ClipboardReq => Event::ClipboardRequest(w),
            Message::Close => Event::Close(w),
            Message::WindowDumpAck => Event::DumpAcked(w),
            Message::Configure(c) if !win.destroying => {
                // The daemon sends no other CONFIGURE for this window until this echo.
                let ok = push_message(&mut self.out, w, &Message::Configure(c));
                debug_assert!(ok, "REPLY_ROOM was reserved");
                Event::Configure(w, c)
            }
            Message::Destroy if win.destroying => {
                self.windows.remove(&w);
                Event::Destroyed(w)
            }
            _ => {
                self.skipped += 1;
                return Ok(());
            }
        };
        self.events.push_back(ev);
        Ok(())
    }

    /// Copies queued bytes into `out`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.out.poll_transmit(out)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        if let Event::ClipboardData(_, d) = &e {
            self.event_bytes = self.event_bytes.saturating_sub(d.len());
        }
        Some(e)
    }

    fn send(&mut self, w: WindowId, m: &Message<'_>) -> Result<(), LocalError> {
        if self.phase != Phase::Ready {
            return Err(LocalError::NotConnected);
        }
        m.check()?;
        // Leave room for the echoes input may need, so local sends cannot stall the daemon.
        if !self.out.has_room(m.buffer_len() + REPLY_ROOM) || !push_message(&mut self.out, w, m) {
            return Err(LocalError::Full {
                what: "outgoing queue",
            });
        }
        Ok(())
    }

    fn live(&self, w: WindowId) -> Result<(), LocalError> {
        match self.windows.get(&w) {
            None => Err(LocalError::NoSuchWindow(w)),
            Some(win) if win.destroying => Err(LocalError::Busy(w)),
            Some(_) => Ok(()),
        }
    }

    /// Creates window `w` (≥ 1) with this geometry, clamped to 16384×6144 and at least 1×1.
    pub fn create_window(
        &mut self,
        w: WindowId,
        x: i32,
        y: i32,
        width: u32,
        height: u32,
    ) -> Result<(), LocalError> {
        if w.0 == 0 {
            return Err(LocalError::WindowZero);
        }
        if self.windows.contains_key(&w) {
            return Err(LocalError::WindowExists(w));
        }
        if self.windows.len() >= self.limits.max_windows {
            return Err(LocalError::Full { what: "windows" });
        }
        let (width, height) = (
            width.clamp(1, MAX_WINDOW_WIDTH),
            height.clamp(1, MAX_WINDOW_HEIGHT),
        );
        self.send(
            w,
            &Message::Create(Create {
                x,
                y,
                width,
                height,
                parent: 0,
                override_redirect: 0,
            }),
        )?;
        self.windows.insert(w, Window { destroying: false });
        Ok(())
    }

    /// Sets the title (sanitised to printable ASCII, at most 127 bytes).
    pub fn set_title(&mut self, w: WindowId, title: &str) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::WmName(WmName::new(title)))
    }

    /// Sets `WM_CLASS`.
    pub fn set_class(&mut self, w: WindowId, class: &str, name: &str) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::WmClass(WmClass::new(class, name)))
    }

    /// Sets size hints (min = max fixes the size).
    pub fn set_hints(&mut self, w: WindowId, hints: WindowHints) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::WindowHints(hints))
    }

    /// Sets and clears window flags (FULLSCREEN 1, DEMANDS_ATTENTION 2, MINIMIZE 4).
    pub fn set_flags(
        &mut self,
        w: WindowId,
        flags_set: u32,
        flags_unset: u32,
    ) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(
            w,
            &Message::WindowFlags(WindowFlags {
                flags_set,
                flags_unset,
            }),
        )
    }

    /// Sets the cursor (0 default, 0x100 + XC_* for an X font cursor).
    pub fn set_cursor(&mut self, w: WindowId, cursor: u32) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::Cursor(Cursor { cursor }))
    }

    /// Moves or resizes the window (size clamped as in [`create_window`](Self::create_window)).
    pub fn configure(
        &mut self,
        w: WindowId,
        x: i32,
        y: i32,
        width: u32,
        height: u32,
    ) -> Result<(), LocalError> {
        self.live(w)?;
        let (width, height) = (
            width.clamp(1, MAX_WINDOW_WIDTH),
            height.clamp(1, MAX_WINDOW_HEIGHT),
        );
        self.send(
            w,
            &Message::Configure(Configure {
                x,
                y,
                width,
                height,
                override_redirect: 0,
            }),
        )
    }

    /// Shares a `width`×`height` BGRX framebuffer: `refs[i]` grants page i to the GUI domain and
    /// there must be exactly `ceil(width*height*4 / 4096)` of them. At ≥1.7 keep the previous
    /// dump's grants until [`Event::DumpAcked`].
    pub fn window_dump(
        &mut self,
        w: WindowId,
        width: u32,
        height: u32,
        refs: &[GrantRef],
    ) -> Result<(), LocalError> {
        self.live(w)?;
        if refs.len() as u64 != dump_pages(width, height) {
            return Err(LocalError::Invalid(WireError::DumpRefs(
                (refs.len() as u64 * 4).min(u32::MAX.into()) as u32,
            )));
        }
        let words: Vec<u32> = refs.iter().map(|r| r.0).collect();
        let hdr = WindowDumpHdr {
            ty: 0,
            width,
            height,
            bpp: 32,
        };
        self.send(w, &Message::WindowDump(hdr, Words::Values(&words)))
    }

    /// Maps (shows) the window.
    pub fn map(&mut self, w: WindowId) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(
            w,
            &Message::Map(MapInfo {
                transient_for: 0,
                override_redirect: 0,
            }),
        )
    }

    /// Unmaps (hides) the window.
    pub fn unmap(&mut self, w: WindowId) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::Unmap)
    }

    /// Asks the daemon to repaint a region from the dumped framebuffer.
    pub fn shm_image(
        &mut self,
        w: WindowId,
        x: i32,
        y: i32,
        width: u32,
        height: u32,
    ) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(
            w,
            &Message::ShmImage(ShmImage {
                x,
                y,
                width,
                height,
            }),
        )
    }

    /// Answers a clipboard request (at most 65000 bytes, 256000 at 1.8).
    pub fn clipboard_data(&mut self, w: WindowId, data: &[u8]) -> Result<(), LocalError> {
        let max = self
            .version
            .max_clipboard()
            .min(super::wire::MAX_CLIPBOARD_1_8 - 1);
        if data.len() > max {
            return Err(LocalError::Invalid(WireError::ClipboardTooLong(
                data.len() as u32
            )));
        }
        self.send(w, &Message::ClipboardData(data))
    }

    /// Destroys the window. At ≥1.5 the id stays taken until the daemon echoes the DESTROY
    /// ([`Event::Destroyed`]); below, it is free at once.
    pub fn destroy(&mut self, w: WindowId) -> Result<(), LocalError> {
        self.live(w)?;
        self.send(w, &Message::Destroy)?;
        if self.version >= Version::V1_5 {
            self.windows.insert(w, Window { destroying: true });
        } else {
            self.windows.remove(&w);
            self.events.push_back(Event::Destroyed(w));
        }
        Ok(())
    }

    /// Whether `w` exists and is not being destroyed.
    pub fn has_window(&self, w: WindowId) -> bool {
        self.live(w).is_ok()
    }

    /// Pixels → pages helper for callers sizing a framebuffer.
    pub fn pages_for(width: u32, height: u32) -> usize {
        dump_pages(width, height) as usize
    }
}

impl Default for Agent {
    fn default() -> Self {
        Self::new(AgentLimits::DEFAULT)
    }
}
