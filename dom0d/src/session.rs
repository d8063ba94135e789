//! dom0's side for one domain over any `Platform`: the QubesDB daemon (vchan server, port 111),
//! the qrexec daemon's control channel (vchan client, port 512) and the three commands.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use platform_api::{DomId, Env, Events, Grants, Platform, PlatformError, SharedMem, Store};
use platform_api::{StoreError, Tx, XsErrno};
use qubes::gui::wire::{Version, WindowId, XConf};
use qubes::qrexec::daemon::{Event as CtrlEvent, Limits as CtrlLimits};
use qubes::qrexec::data::{Event as DataEvent, Handshake, Limits as DataLimits, Role};
use qubes::qrexec::{DataChannel, Stream, CONTROL_PORT, PROTOCOL_V3};
use qubes::qubesdb::{DaemonEvent as QdbEvent, DaemonLimits};
use vchan::SetupError;

use crate::link::{Link, LinkError};

/// QubesDB's vchan port.
pub const QUBESDB_PORT: u32 = 111;
/// The GUI protocol's vchan port.
pub const GUI_PORT: u32 = 6000;
/// The screen our GUI daemon offers.
pub const SCREEN: (u32, u32) = (1920, 1080);
/// Longest sleep of one loop turn: deadlines and the domain's presence are looked at this often.
const SLICE: Duration = Duration::from_millis(20);
/// How often the domain's xenstore home is checked.
const ALIVE_EVERY: Duration = Duration::from_millis(500);
/// Largest stdin a call takes (read whole before the call).
pub const MAX_STDIN: u64 = 64 << 20;
/// Data-channel ring sizes (as `qrexec-client` asks).
const DATA_RING: usize = 65536;

/// What failed.
#[derive(Debug)]
pub enum Error {
    /// The backend refused (device, event wait, grant map).
    Backend(&'static str, PlatformError),
    /// A vchan could not be advertised.
    Advertise(u32, SetupError),
    /// A vchan ended or its peer broke the protocol.
    Link(&'static str, LinkError),
    /// A bounded wait ran out.
    Timeout(String, Duration),
    /// The domain's xenstore home went away.
    DomainGone(DomId),
    /// The VM or its protocol machine refused what we asked.
    Refused(String),
    /// Local I/O (stdin, stdout, files).
    Io(String, std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backend(what, e) => write!(f, "{what}: {e}"),
            Self::Advertise(port, e) => write!(f, "cannot advertise vchan port {port}: {e}"),
            Self::Link(what, e) => write!(f, "{what}: {e}"),
            Self::Timeout(what, d) => {
                write!(f, "timed out after {}s waiting for {what}", d.as_secs())
            }
            Self::DomainGone(d) => write!(f, "domain {d} went away"),
            Self::Refused(e) => f.write_str(e),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

struct Qdb<P: Platform> {
    link: Link<P>,
    d: qubes::qubesdb::Daemon,
}

struct Ctrl<P: Platform> {
    link: Link<P>,
    d: qubes::qrexec::Daemon,
}

/// The daemons for one domain, pumped by the command loops.
pub struct Session<P: Platform> {
    /// Our backend.
    pub env: Env<P>,
    vm: DomId,
    name: String,
    entries: BTreeMap<String, String>,
    qdb: Option<Qdb<P>>,
    /// QubesDB was synced by the VM at least once.
    pub qdb_synced: bool,
    ctrl: Option<Ctrl<P>>,
    /// The agent's HELLO arrived on the control channel.
    pub ctrl_ready: bool,
    last_connect_error: Option<String>,
    /// The VM's calls (to dom0 or other qubes) refused: we route none.
    pub refused: usize,
    last_alive: Instant,
    gone: bool,
    /// `serve`'s entries file was removed: the way to end a `serve` cleanly (vchans closed,
    /// advertisements removed) before its time is up.
    file_removed: bool,
    /// The entries file and the text last seen in it (re-read while serving).
    file: Option<(std::path::PathBuf, String)>,
    /// Times the entries file changed and was applied.
    pub reloads: usize,
}

impl<P: Platform> fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("vm", &self.vm)
            .field("name", &self.name)
            .field("qdb_synced", &self.qdb_synced)
            .field("ctrl_ready", &self.ctrl_ready)
            .finish_non_exhaustive()
    }
}

fn log(args: fmt::Arguments<'_>) {
    eprintln!("qubes-dom0d: {args}");
}

impl<P: Platform> Session<P> {
    /// dom0's side for `vm` (named `name`) serving `entries` in its QubesDB.
    pub fn new(env: Env<P>, vm: DomId, name: String, entries: BTreeMap<String, String>) -> Self {
        Session {
            env,
            vm,
            name,
            entries,
            qdb: None,
            qdb_synced: false,
            ctrl: None,
            ctrl_ready: false,
            last_connect_error: None,
            refused: 0,
            last_alive: Instant::now(),
            gone: false,
            file_removed: false,
            file: None,
            reloads: 0,
        }
    }

    /// Re-reads `path` (whose text was `text`) every half second and applies its changes to
    /// the running QubesDB, as dom0 changes a running qube's entries.
    pub fn follow_file(&mut self, path: std::path::PathBuf, text: String) {
        self.file = Some((path, text));
    }

    fn reload(&mut self) {
        let Some((path, last)) = self.file.as_mut() else {
            return;
        };
        let max = crate::entries::MAX_FILE as u64;
        match std::fs::metadata(&*path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file_removed = true;
                return;
            }
            Ok(m) if m.len() <= max => {}
            _ => return,
        }
        let Ok(text) = std::fs::read_to_string(&*path) else {
            return;
        };
        if text == *last {
            return;
        }
        *last = text.clone();
        let new = match crate::entries::parse(&text) {
            Ok(n) => n,
            Err(e) => {
                log(format_args!(
                    "{}: {e}; keeping the entries served",
                    path.display()
                ));
                return;
            }
        };
        let changes = crate::entries::changes(&self.entries, &new);
        crate::entries::apply(&mut self.entries, &changes);
        self.reloads += 1;
        log(format_args!(
            "qubesdb of {}: {} changed: {} change(s)",
            self.name,
            path.display(),
            changes.len()
        ));
        let Some(q) = self.qdb.as_mut() else {
            return;
        };
        for c in &changes {
            let r = match c {
                crate::entries::Change::Write(k, v) => q.d.write(k, v.as_bytes()),
                crate::entries::Change::Rm(k) => q.d.rm(k),
            };
            if let Err(e) = r {
                // The VM's client then reconnects and syncs the whole new copy.
                log(format_args!(
                    "qubesdb of {}: dropping the connection: {e}",
                    self.name
                ));
                if let Some(q) = self.qdb.take() {
                    q.link.close(&mut self.env);
                }
                return;
            }
        }
    }

    /// Whether the domain's xenstore home has gone (looked at every half second, when the
    /// entries file is also re-read).
    pub fn gone(&mut self) -> bool {
        if !self.gone && self.last_alive.elapsed() >= ALIVE_EVERY {
            self.last_alive = Instant::now();
            self.reload();
            let home = format!("/local/domain/{}", self.vm);
            self.gone = matches!(
                self.env.store.directory(Tx::NONE, &home),
                Err(StoreError::Xs(XsErrno::Enoent))
            );
        }
        self.gone
    }

    fn pump_qdb(&mut self) -> Result<bool, Error> {
        if self.qdb.is_none() {
            let link = Link::serve(&mut self.env, self.vm, QUBESDB_PORT, 4096, 4096, 16384)
                .map_err(|e| Error::Advertise(QUBESDB_PORT, e))?;
            let mut d = qubes::qubesdb::Daemon::new(DaemonLimits::DEFAULT);
            for (k, v) in &self.entries {
                // Not connected yet: goes into the first dump, never refused for room.
                let _ = d.write(k, v.as_bytes());
            }
            d.connect();
            self.qdb = Some(Qdb { link, d });
        }
        let Some(q) = self.qdb.as_mut() else {
            return Ok(false);
        };
        let r = q.link.step(&mut q.d);
        q.link.tidy(&mut self.env);
        while let Some(ev) = q.d.poll_event() {
            if let QdbEvent::VmWriteRefused(p) | QdbEvent::Refused(p) = ev {
                log(format_args!("qubesdb of {}: refused {p:?}", self.name));
            }
        }
        if q.d.is_ready() && !self.qdb_synced {
            self.qdb_synced = true;
            log(format_args!("qubesdb of {}: synced", self.name));
        }
        match r {
            Ok(p) => Ok(p),
            Err(e) => {
                // The VM's client went (it restarts QubesDB): serve a fresh one.
                log(format_args!(
                    "qubesdb of {}: connection ended: {e}",
                    self.name
                ));
                if let Some(q) = self.qdb.take() {
                    q.link.close(&mut self.env);
                }
                Ok(true)
            }
        }
    }

    fn pump_ctrl(&mut self) -> Result<bool, Error> {
        if self.ctrl.is_none() {
            match Link::connect(&mut self.env, self.vm, CONTROL_PORT, 65536) {
                Ok(link) => {
                    let d = qubes::qrexec::Daemon::new(CtrlLimits::DEFAULT);
                    self.ctrl = Some(Ctrl { link, d });
                }
                Err(e) => {
                    self.last_connect_error = Some(e.to_string());
                    return Ok(false);
                }
            }
        }
        let Some(c) = self.ctrl.as_mut() else {
            return Ok(false);
        };
        let r = c.link.step(&mut c.d);
        while let Some(ev) = c.d.poll_event() {
            match ev {
                CtrlEvent::Ready { version, .. } => {
                    self.ctrl_ready = true;
                    log(format_args!(
                        "qrexec agent of {} ready (v{version})",
                        self.name
                    ));
                }
                CtrlEvent::Trigger {
                    target,
                    service,
                    argument,
                    request_id,
                    ..
                } => {
                    // We route no calls: every call the VM makes is refused, as a deny policy.
                    self.refused += 1;
                    log(format_args!(
                        "{} called {service}+{argument} in {target}: refused",
                        self.name
                    ));
                    c.d.refuse(request_id)
                        .map_err(|e| Error::Refused(format!("refuse: {e}")))?;
                }
                CtrlEvent::TriggerRefused { .. } | CtrlEvent::ConnectionTerminated { .. } => {}
            }
        }
        match r {
            Ok(p) => Ok(p),
            Err(e @ LinkError::Closed) if !self.ctrl_ready => {
                // A stale advertisement of an earlier connection: connect again.
                self.last_connect_error = Some(e.to_string());
                self.ctrl = None;
                Ok(false)
            }
            Err(e) => Err(Error::Link("qrexec control channel", e)),
        }
    }

    /// One pass over QubesDB and the control channel; whether anything moved.
    pub fn pump(&mut self) -> Result<bool, Error> {
        let a = self.pump_qdb()?;
        let b = self.pump_ctrl()?;
        Ok(a || b)
    }

    /// Sleeps until an event or one slice passes, unless some link has work now
    /// (`others_idle` = every other link of the command said it may sleep).
    pub fn wait(&mut self, others_idle: bool) -> Result<(), Error> {
        let mut idle = others_idle;
        if let Some(q) = self.qdb.as_mut() {
            idle &= q.link.ready_to_sleep();
        }
        if let Some(c) = self.ctrl.as_mut() {
            idle &= c.link.ready_to_sleep();
        }
        if idle {
            self.env
                .events
                .wait(Some(SLICE))
                .map_err(|e| Error::Backend("event wait", e))?;
        }
        Ok(())
    }

    /// Pumps until `done` or `deadline`; `what` names the wait in the timeout error.
    fn until(
        &mut self,
        what: &str,
        deadline: Instant,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), Error> {
        while !done(self) {
            if Instant::now() >= deadline {
                let why = match &self.last_connect_error {
                    Some(e) if self.ctrl.is_none() => format!("{what} (last: {e})"),
                    _ => what.to_string(),
                };
                return Err(Error::Timeout(why, timeout));
            }
            if self.gone() {
                return Err(Error::DomainGone(self.vm));
            }
            if !self.pump()? {
                self.wait(true)?;
            }
        }
        Ok(())
    }

    /// Closes both daemons' vchans and removes our advertisements.
    pub fn shutdown(mut self) {
        if let Some(q) = self.qdb.take() {
            q.link.close(&mut self.env);
        }
        if let Some(c) = self.ctrl.take() {
            c.link.close(&mut self.env);
        }
    }

    /// `serve SECONDS`: QubesDB and refusals until the time is up or the domain goes. The
    /// result line, or an error when the VM never synced QubesDB.
    pub fn serve(&mut self, duration: Duration) -> Result<String, Error> {
        let start = Instant::now();
        let end = start + duration;
        while Instant::now() < end && !self.gone() && !self.file_removed {
            if !self.pump()? {
                self.wait(true)?;
            }
        }
        let how = if self.gone {
            format!("until it went away after {}s", start.elapsed().as_secs())
        } else if self.file_removed {
            format!(
                "until its entries file was removed after {}s",
                start.elapsed().as_secs()
            )
        } else {
            format!("for {}s", duration.as_secs())
        };
        if !self.qdb_synced {
            return Err(Error::Refused(format!(
                "{} never synced QubesDB ({how})",
                self.name
            )));
        }
        Ok(format!(
            "served {} (domain {}) {how}: qubesdb synced, {} reload(s), qrexec {}, {} call(s) refused",
            self.name,
            self.vm,
            self.reloads,
            if self.ctrl_ready {
                "ready"
            } else {
                "never ready"
            },
            self.refused
        ))
    }

    /// Starts a dom0 → VM call of `service` (`SERVICE[+ARG]`) with `input` as its stdin, once
    /// the control channel is ready.
    fn start_call(
        &mut self,
        service: &str,
        input: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<CallRun<P>, Error> {
        self.until("the VM's qrexec agent", deadline, timeout, |s| s.ctrl_ready)?;
        let Some(c) = self.ctrl.as_mut() else {
            return Err(Error::Refused("control channel gone".into()));
        };
        // As `qrexec-client -d VM DEFAULT:QUBESRPC SERVICE+ARG dom0`: dom0 is the peer.
        let cmdline = format!("DEFAULT:QUBESRPC {service} dom0");
        let port =
            c.d.exec(DomId::DOM0, cmdline.as_bytes(), false)
                .map_err(|e| Error::Refused(format!("EXEC_CMDLINE: {e}")))?;
        let link = Link::serve(
            &mut self.env,
            self.vm,
            port,
            DATA_RING,
            DATA_RING,
            256 * 1024,
        )
        .map_err(|e| Error::Advertise(port, e))?;
        let chan = DataChannel::new(
            Role::Caller,
            Handshake::SendFirst,
            PROTOCOL_V3,
            DataLimits::DEFAULT,
        );
        Ok(CallRun {
            link: Some(link),
            chan,
            input,
            sent: 0,
            exit: None,
        })
    }

    /// `call SERVICE[+ARG]`: stdin to the VM, its stdout and stderr to ours; the remote exit
    /// code.
    pub fn call(
        &mut self,
        service: &str,
        input: Vec<u8>,
        timeout: Duration,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32, Error> {
        let deadline = Instant::now() + timeout;
        let mut run = self.start_call(service, input, deadline, timeout)?;
        loop {
            if let Some(code) = run.exit {
                run.end(&mut self.env);
                return Ok(code);
            }
            if Instant::now() >= deadline {
                run.end(&mut self.env);
                return Err(Error::Timeout(format!("{service} to exit"), timeout));
            }
            if self.gone() {
                return Err(Error::DomainGone(self.vm));
            }
            let a = self.pump()?;
            let b = run.step(&mut self.env, stdout, stderr)?;
            if !a && !b {
                let idle = run.ready_to_sleep();
                self.wait(idle)?;
            }
        }
    }

    /// `gui-handshake`: the GUI daemon (client of the VM's port 6000) until a window is
    /// mapped with its framebuffer mapped; with `open`, also sends that file with
    /// `qubes.OpenInVM` meanwhile. The window's id, size and BGRX pixels.
    pub fn gui_handshake(
        &mut self,
        open: Option<(String, Vec<u8>)>,
        timeout: Duration,
    ) -> Result<Shot, Error> {
        let deadline = Instant::now() + timeout;
        let mut call = None;
        if let Some((name, data)) = open {
            let mut input = vec![0u8; 256];
            let n = name.len().min(255);
            input[..n].copy_from_slice(&name.as_bytes()[..n]);
            input.extend_from_slice(&data);
            call = Some(self.start_call("qubes.OpenInVM", input, deadline, timeout)?);
        }
        let mut gui = Gui::new();
        let (mut sink_out, mut sink_err) = (std::io::sink(), std::io::stderr());
        loop {
            if let Some(shot) = gui.shot()? {
                if let Some(mut c) = call.take() {
                    c.end(&mut self.env);
                }
                return Ok(shot);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    format!("a mapped window of {} (GUI: {})", self.name, gui.state()),
                    timeout,
                ));
            }
            if self.gone() {
                return Err(Error::DomainGone(self.vm));
            }
            let mut progress = self.pump()?;
            if let Some(c) = call.as_mut() {
                progress |= c.step(&mut self.env, &mut sink_out, &mut sink_err)?;
                if let Some(code) = c.exit.filter(|code| *code != 0) {
                    return Err(Error::Refused(format!(
                        "qubes.OpenInVM ended with exit code {code} before a window appeared"
                    )));
                }
            }
            progress |= gui.step(&mut self.env, self.vm)?;
            if !progress {
                let idle = call.as_mut().is_none_or(|c| c.ready_to_sleep()) & gui.ready_to_sleep();
                self.wait(idle)?;
            }
        }
    }
}

/// One dom0 → VM call in progress (dom0 is the data vchan server).
struct CallRun<P: Platform> {
    link: Option<Link<P>>,
    chan: DataChannel,
    input: Vec<u8>,
    sent: usize,
    exit: Option<i32>,
}

impl<P: Platform> CallRun<P> {
    fn step(
        &mut self,
        env: &mut Env<P>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<bool, Error> {
        let Some(link) = self.link.as_mut() else {
            return Ok(false);
        };
        let r = link.step(&mut self.chan);
        link.tidy(env);
        let mut progress = matches!(r, Ok(true));
        while let Some(ev) = self.chan.poll_event() {
            progress = true;
            match ev {
                DataEvent::Data { stream, data } => {
                    let out: &mut dyn Write = match stream {
                        Stream::Stderr => &mut *stderr,
                        _ => &mut *stdout,
                    };
                    out.write_all(&data)
                        .and_then(|()| out.flush())
                        .map_err(|e| Error::Io("writing the call's output".into(), e))?;
                }
                DataEvent::Exit(code) => self.exit = Some(code),
                DataEvent::Ready { .. } | DataEvent::Eof(_) => {}
            }
        }
        if self.exit.is_some() {
            return Ok(true);
        }
        // Closed before EXIT_CODE is qrexec's "closed early" (an exit code ended the call above).
        r.map_err(|e| Error::Link("the call's data channel", e))?;
        if self.chan.version().is_some() && self.sent <= self.input.len() {
            let rest = self.input.get(self.sent..).unwrap_or(&[]);
            if rest.is_empty() {
                self.chan
                    .send_eof(Stream::Stdin)
                    .map_err(|e| Error::Refused(format!("stdin EOF: {e}")))?;
                // Past the end: EOF is sent once.
                self.sent = self.input.len() + 1;
                progress = true;
            } else {
                let n = self
                    .chan
                    .send(Stream::Stdin, rest)
                    .map_err(|e| Error::Refused(format!("stdin: {e}")))?;
                self.sent += n;
                progress |= n > 0;
            }
        }
        Ok(progress)
    }

    fn ready_to_sleep(&mut self) -> bool {
        self.link.as_mut().is_none_or(|l| l.ready_to_sleep())
    }

    fn end(&mut self, env: &mut Env<P>) {
        if let Some(l) = self.link.take() {
            l.close(env);
        }
    }
}

/// A mapped window's framebuffer, read out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// The agent's window id.
    pub window: u32,
    /// The window's size as created/configured.
    pub window_size: (u32, u32),
    /// The dump's size.
    pub width: u32,
    /// The dump's height.
    pub height: u32,
    /// Pixels, 4 bytes each (B, G, R, X).
    pub bgrx: Vec<u8>,
}

struct Win<M> {
    size: (u32, u32),
    mapped: bool,
    dump: Option<(u32, u32, M)>,
}

struct Gui<P: Platform> {
    link: Option<Link<P>>,
    d: qubes::gui::Daemon,
    windows: BTreeMap<WindowId, Win<<P::Grants as Grants>::Mem>>,
    connected: bool,
    last_error: Option<String>,
}

impl<P: Platform> Gui<P> {
    fn new() -> Self {
        Gui {
            link: None,
            d: qubes::gui::Daemon::new(
                qubes::gui::DaemonLimits::DEFAULT,
                XConf::for_screen(SCREEN.0, SCREEN.1),
            ),
            windows: BTreeMap::new(),
            connected: false,
            last_error: None,
        }
    }

    fn state(&self) -> String {
        match (&self.link, self.connected, &self.last_error) {
            (None, _, Some(e)) => format!("not connected, last: {e}"),
            (None, _, None) => "not connected".into(),
            (Some(_), false, _) => "handshake not done".into(),
            (Some(_), true, _) => format!("connected, {} window(s)", self.windows.len()),
        }
    }

    fn step(&mut self, env: &mut Env<P>, vm: DomId) -> Result<bool, Error> {
        if self.link.is_none() {
            match Link::connect(env, vm, GUI_PORT, 65536) {
                Ok(l) => self.link = Some(l),
                Err(e) => {
                    self.last_error = Some(e.to_string());
                    return Ok(false);
                }
            }
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(false);
        };
        let r = link.step(&mut self.d);
        let mut progress = matches!(r, Ok(true));
        while let Some(ev) = self.d.poll_event() {
            progress = true;
            self.event(env, vm, ev)?;
        }
        r.map_err(|e| Error::Link("GUI vchan", e))?;
        Ok(progress)
    }

    fn event(
        &mut self,
        env: &mut Env<P>,
        vm: DomId,
        ev: qubes::gui::DaemonEvent,
    ) -> Result<(), Error> {
        use qubes::gui::DaemonEvent as G;
        match ev {
            G::Connected { negotiated, .. } => {
                self.connected = true;
                log(format_args!("GUI agent connected, protocol {negotiated:?}"));
            }
            G::Created(w, c) => {
                let win = Win {
                    size: (c.width, c.height),
                    mapped: false,
                    dump: None,
                };
                self.windows.insert(w, win);
            }
            G::Destroyed(w) => {
                self.windows.remove(&w);
            }
            G::Mapped(w, _) => {
                if let Some(win) = self.windows.get_mut(&w) {
                    win.mapped = true;
                }
            }
            G::Unmapped(w) => {
                if let Some(win) = self.windows.get_mut(&w) {
                    win.mapped = false;
                }
            }
            G::Configured(w, c) => {
                if let Some(win) = self.windows.get_mut(&w) {
                    win.size = (c.width, c.height);
                }
            }
            G::Dump(w, hdr, refs) => {
                // Read-only, as the real daemon maps them; a dump replaces the old mapping.
                let mem = env
                    .grants
                    .map(vm, &refs, false)
                    .map_err(|e| Error::Backend("mapping a window dump", e))?;
                let need = u64::from(hdr.width) * u64::from(hdr.height) * 4;
                if (mem.size() as u64) < need {
                    return Err(Error::Refused(format!(
                        "window {} dump of {} bytes is smaller than {}x{}",
                        w.0,
                        mem.size(),
                        hdr.width,
                        hdr.height
                    )));
                }
                if let Some(win) = self.windows.get_mut(&w) {
                    win.dump = Some((hdr.width, hdr.height, mem));
                }
                if self.d.version() >= Version::V1_7 {
                    self.d
                        .ack_dump(w)
                        .map_err(|e| Error::Refused(format!("ack dump: {e}")))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The first mapped window with a mapped dump, read out.
    fn shot(&self) -> Result<Option<Shot>, Error> {
        for (w, win) in &self.windows {
            let (true, Some((width, height, mem))) = (win.mapped, &win.dump) else {
                continue;
            };
            if !(1..=crate::png::MAX_SIDE).contains(width)
                || !(1..=crate::png::MAX_SIDE).contains(height)
            {
                return Err(Error::Refused(format!(
                    "window {} dump of {width}x{height} is out of bounds",
                    w.0
                )));
            }
            let mut bgrx = vec![0u8; (*width as usize) * (*height as usize) * 4];
            mem.read(0, &mut bgrx)
                .map_err(|e| Error::Backend("reading a window dump", e.into()))?;
            return Ok(Some(Shot {
                window: w.0,
                window_size: win.size,
                width: *width,
                height: *height,
                bgrx,
            }));
        }
        Ok(None)
    }

    fn ready_to_sleep(&mut self) -> bool {
        // Not connected yet: the next turn retries the connect after one slice.
        self.link.as_mut().is_none_or(|l| l.ready_to_sleep())
    }
}
