//! [`run`]: sets up QubesDB, the qrexec control channel and the shutdown watch, then loops
//! (deadline, wait, pump every vchan, deliver, poll) until poweroff; tears everything down.

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use platform_api::DomId;
use platform_api::{
    Clock, Duration, Env, Events, Instant, Platform, PortSet, Store, StoreError, Tx, Watches,
    XsErrno,
};
use qubes::qrexec::agent::{Event as QrexecEvent, Limits as QrexecLimits};
use qubes::qrexec::data::{Event as DataEvent, Handshake, Limits as DataLimits, Role};
use qubes::qrexec::{self, Agent, DataChannel, Stream, AGENT_VERSION, CONTROL_PORT};
use qubes::qubesdb::{Agent as QubesDb, Event as QubesDbEvent, Limits as QdbLimits, SyncState};
use vchan::setup::{client_init, server_init};

use crate::calls::{close_state, Kind, Link, Pipe, Slot, State};
use crate::cx::{log_line, Core};
use crate::deadline::Earliest;
use crate::names::{classify, Disposition};
use crate::{Admit, App, Config, Cx, RunError};

/// The node dom0 writes `poweroff`, `halt` or `reboot` into.
const SHUTDOWN_PATH: &str = "control/shutdown";
/// Our token for that watch; other tokens belong to the app.
const SHUTDOWN_TOKEN: &str = "runloop-shutdown";
/// QubesDB's vchan port (dom0 serves it).
const QUBESDB_PORT: u32 = 111;
/// Control vchan rings, as the C agent asks.
const CONTROL_RING: usize = 4096;
/// Receive and transmit buffers of the control channels; a QubesDB message is at most
/// 3143 bytes and a qrexec control message at most 4104.
const CONTROL_BUF: usize = 8192;
/// Transmit buffer of one data channel.
const DATA_TX_BUF: usize = 16 * 1024;
/// How often a data-channel client retries while its server is not advertised yet.
const CONNECT_RETRY: Duration = Duration::from_millis(10);
/// How often QubesDB is retried while dom0's daemon is not there.
const QUBESDB_RETRY: Duration = Duration::from_millis(20);
/// After a QubesDB connection failed later on, the pause before reconnecting.
const QUBESDB_RECONNECT: Duration = Duration::from_secs(1);
/// QubesDB events kept for the app until [`App::start`] (one per firewall client at most).
const EARLY_EVENTS: usize = 4096;

/// Runs `app` until poweroff (`Ok`) or until dom0's side of a control channel fails.
///
/// Order: the qrexec control vchan server is advertised and the shutdown watch set; QubesDB
/// connects and syncs (within `cfg.qubesdb_timeout`); [`App::start`]; then calls are served.
/// Before returning, every data vchan and QubesDB are closed (open calls end with
/// [`App::closed`] `None`, their ports released) and every advertised xenstore directory is
/// removed; after a poweroff the control vchan is left open for the domain's end to close
/// (dom0 treats an agent that closes it as failed).
pub fn run<P: Platform, A: App<P>>(env: Env<P>, app: A, cfg: Config) -> Result<(), RunError> {
    let mut engine = Engine::new(env, app, cfg)?;
    let result = engine.main_loop();
    engine.teardown(result.is_ok());
    result
}

enum QdbLink<P: Platform> {
    Connecting { next_try: Instant },
    Open(Box<Pipe<P>>),
}

struct Engine<P: Platform, A: App<P>> {
    env: Env<P>,
    app: A,
    core: Core<P>,
    ctrl: Option<Pipe<P>>,
    qdb: QdbLink<P>,
    /// When QubesDB started (re)connecting: the first sync must finish in time.
    qdb_since: Instant,
    started: bool,
    early: VecDeque<QubesDbEvent>,
}

fn control_server<P: Platform>(env: &mut Env<P>) -> Result<Pipe<P>, RunError> {
    let (server, dir) = server_init(
        &mut env.grants,
        &mut env.events,
        &mut env.store,
        DomId::DOM0,
        CONTROL_PORT,
        CONTROL_RING,
        CONTROL_RING,
    )
    .map_err(RunError::QrexecSetup)?;
    Ok(Pipe::new(
        Link::Server(server, Some(dir)),
        CONTROL_BUF,
        CONTROL_BUF,
    ))
}

fn qrexec_agent(cfg: &Config) -> Agent {
    Agent::new(QrexecLimits {
        max_channels: cfg.max_calls.max(1),
        ..QrexecLimits::DEFAULT
    })
}

fn data_limits(cfg: &Config) -> DataLimits {
    DataLimits {
        max_events: 8,
        event_bytes: cfg.in_bytes.max(1),
        ..DataLimits::DEFAULT
    }
}

impl<P: Platform, A: App<P>> Engine<P, A> {
    fn new(mut env: Env<P>, app: A, cfg: Config) -> Result<Self, RunError> {
        let ctrl = control_server(&mut env)?;
        if let Err(e) = env.store.watch(SHUTDOWN_PATH, SHUTDOWN_TOKEN) {
            ctrl.close(&mut env.store);
            return Err(RunError::Store(e));
        }
        let now = env.clock.now();
        let core = Core::new(cfg, qrexec_agent(&cfg), QubesDb::new(QdbLimits::DEFAULT));
        Ok(Self {
            env,
            app,
            core,
            ctrl: Some(ctrl),
            qdb: QdbLink::Connecting { next_try: now },
            qdb_since: now,
            started: false,
            early: VecDeque::new(),
        })
    }

    fn log(&mut self, args: core::fmt::Arguments<'_>) {
        log_line(&mut self.env, args);
    }

    fn main_loop(&mut self) -> Result<(), RunError> {
        loop {
            let now = self.env.clock.now();
            let mut busy = self.poll_watches()?;
            busy |= self.pump_qubesdb(now)?;
            if !self.started && self.core.qdb.state() == SyncState::Ready {
                self.start()?;
                busy = true;
            }
            busy |= self.pump_control()?;
            busy |= self.pump_calls(now);
            let mut next = Earliest::NONE;
            if self.started {
                let mut cx = Cx::new(&mut self.env, &mut self.core);
                next.add(self.app.poll(&mut cx));
            }
            if self.core.stop {
                return Ok(());
            }
            // The app's requests in this pass (calls, QubesDB writes, finished calls).
            busy |= self.pump_calls(now);
            busy |= self.flush_control()?;
            // Any store request of this pass may have read a watch event off the connection
            // into the client's queue, where the wait below would not see it.
            busy |= self.poll_watches()?;
            if self.core.stop {
                return Ok(());
            }
            self.timers(&mut next);
            if self.started {
                self.core.app_ports = PortSet::new();
                self.app.wait_ports(&mut self.core.app_ports);
            }
            let timeout = if busy || !self.may_sleep() {
                Some(Duration::ZERO)
            } else {
                let cap = match self.env.store.port() {
                    Some(_) => None,
                    None => Some(self.core.cfg.store_poll),
                };
                next.timeout(self.env.clock.now(), cap)
            };
            self.core.woken = self.env.events.wait(timeout).map_err(RunError::Wait)?;
        }
    }

    /// Calls [`App::start`], hands it the QubesDB events of the sync, and lets it poll once.
    fn start(&mut self) -> Result<(), RunError> {
        self.started = true;
        let mut cx = Cx::new(&mut self.env, &mut self.core);
        self.app.start(&mut cx).map_err(RunError::Start)?;
        for ev in self.early.drain(..) {
            self.app.qubesdb(&mut cx, &ev);
        }
        Ok(())
    }

    /// Takes every fired xenstore watch: ours asks for shutdown, the rest go to the app.
    fn poll_watches(&mut self) -> Result<bool, RunError> {
        let mut busy = false;
        while let Some(ev) = self.env.store.poll_watch().map_err(RunError::Store)? {
            busy = true;
            if ev.token != SHUTDOWN_TOKEN {
                if self.started {
                    let mut cx = Cx::new(&mut self.env, &mut self.core);
                    self.app.watch(&mut cx, &ev);
                }
                continue;
            }
            let value = match self.env.store.read(Tx::NONE, SHUTDOWN_PATH) {
                Ok(v) => v,
                Err(StoreError::Xs(XsErrno::Enoent)) => continue,
                Err(e) => return Err(RunError::Store(e)),
            };
            let value = core::str::from_utf8(&value).unwrap_or("?");
            let how = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            match how {
                "" => {}
                "poweroff" | "halt" | "reboot" => {
                    self.log(format_args!("{how} requested"));
                    // Acknowledge like Xen guests do, so the toolstack sees it was taken.
                    let _ = self.env.store.write(Tx::NONE, SHUTDOWN_PATH, b"");
                    self.core.stop = true;
                }
                other => self.log(format_args!("ignoring control/shutdown {other:?}")),
            }
        }
        Ok(busy)
    }

    fn pump_qubesdb(&mut self, now: Instant) -> Result<bool, RunError> {
        if !self.started
            && now.saturating_duration_since(self.qdb_since) > self.core.cfg.qubesdb_timeout
        {
            return Err(RunError::QubesDbTimeout);
        }
        let pipe = match &mut self.qdb {
            QdbLink::Connecting { next_try } => {
                if now < *next_try {
                    return Ok(false);
                }
                let env = &mut self.env;
                match client_init(
                    &mut env.grants,
                    &mut env.events,
                    &mut env.store,
                    DomId::DOM0,
                    QUBESDB_PORT,
                ) {
                    Ok(c) => {
                        self.core.qdb.connect();
                        self.qdb = QdbLink::Open(Box::new(Pipe::new(
                            Link::Client(c),
                            CONTROL_BUF,
                            CONTROL_BUF,
                        )));
                        return Ok(true);
                    }
                    Err(e) if e.is_not_ready() => {
                        *next_try = now.saturating_add(QUBESDB_RETRY);
                        return Ok(false);
                    }
                    Err(e) if !self.started => return Err(RunError::QubesDbSetup(e)),
                    Err(e) => {
                        *next_try = now.saturating_add(QUBESDB_RECONNECT);
                        self.log(format_args!("qubesdb: reconnect failed: {e}"));
                        return Ok(false);
                    }
                }
            }
            QdbLink::Open(pipe) => pipe,
        };
        let qdb = &mut self.core.qdb;
        let store = &mut self.env.store;
        let step = (|| {
            let mut busy = pipe.fill(store).map_err(RunError::Vchan)?;
            busy |= pipe
                .feed(|d| qdb.handle_input(d))
                .map_err(RunError::QubesDb)?;
            busy |= pipe
                .flush(|b| qdb.poll_transmit(b))
                .map_err(RunError::Vchan)?;
            if pipe.peer_closed && pipe.unread() == 0 {
                return Err(RunError::Vchan(vchan::Error::PeerClosed));
            }
            Ok(busy)
        })();
        let mut busy = match step {
            Ok(b) => b,
            Err(e) if !self.started => return Err(e),
            Err(e) => {
                self.log(format_args!("qubesdb: {e}; reconnecting"));
                let old = core::mem::replace(
                    &mut self.qdb,
                    QdbLink::Connecting {
                        next_try: now.saturating_add(QUBESDB_RECONNECT),
                    },
                );
                if let QdbLink::Open(p) = old {
                    p.close(&mut self.env.store);
                }
                self.core.qdb.disconnect();
                return Ok(true);
            }
        };
        while let Some(ev) = self.core.qdb.poll_event() {
            busy = true;
            if self.started {
                let mut cx = Cx::new(&mut self.env, &mut self.core);
                self.app.qubesdb(&mut cx, &ev);
            } else if self.early.len() < EARLY_EVENTS {
                self.early.push_back(ev);
            } else if self.early.len() == EARLY_EVENTS {
                // Once: the app reads the synced copy in start() anyway.
                self.early.push_back(ev);
                self.log(format_args!(
                    "qubesdb: more than {EARLY_EVENTS} events before start; later ones dropped"
                ));
            }
        }
        Ok(busy)
    }

    fn pump_control(&mut self) -> Result<bool, RunError> {
        let Some(pipe) = self.ctrl.as_mut() else {
            return Ok(false);
        };
        let agent = &mut self.core.qrexec;
        let mut busy = pipe.fill(&mut self.env.store).map_err(RunError::Vchan)?;
        busy |= pipe
            .feed(|d| agent.handle_input(d))
            .map_err(RunError::Qrexec)?;
        if pipe.peer_closed && pipe.unread() == 0 {
            self.reopen_control()?;
            return Ok(true);
        }
        if self.started && !self.core.stop {
            while let Some(ev) = self.core.qrexec.poll_event() {
                busy = true;
                self.qrexec_event(ev);
            }
        }
        busy |= self.flush_control()?;
        Ok(busy)
    }

    fn flush_control(&mut self) -> Result<bool, RunError> {
        let Some(pipe) = self.ctrl.as_mut() else {
            return Ok(false);
        };
        let agent = &mut self.core.qrexec;
        let mut busy = pipe
            .flush(|b| agent.poll_transmit(b))
            .map_err(RunError::Vchan)?;
        if let QdbLink::Open(q) = &mut self.qdb {
            let qdb = &mut self.core.qdb;
            // A failure shows up in the next pump, which reconnects.
            busy |= q.flush(|b| qdb.poll_transmit(b)).unwrap_or(true);
        }
        Ok(busy)
    }

    /// dom0's qrexec daemon went away (restarted): serve the control channel afresh. Calls
    /// waiting for its answer are over; open data channels go on.
    fn reopen_control(&mut self) -> Result<(), RunError> {
        self.log(format_args!(
            "qrexec daemon closed the control channel; serving it again"
        ));
        if let Some(old) = self.ctrl.take() {
            old.close(&mut self.env.store);
        }
        self.core.qrexec = qrexec_agent(&self.core.cfg);
        for slot in &mut self.core.calls {
            if matches!(slot.state, State::Pending(_)) {
                slot.dead = Some(None);
            }
        }
        self.ctrl = Some(control_server(&mut self.env)?);
        Ok(())
    }

    fn qrexec_event(&mut self, ev: QrexecEvent) {
        let now = self.env.clock.now();
        match ev {
            QrexecEvent::Ready { .. } => {}
            QrexecEvent::Exec {
                peer,
                port,
                just_exec,
                command,
            } => {
                let id = self.core.fresh_id();
                let out = self.core.cfg.out_bytes;
                let disposition = classify(&command, self.app.services());
                let answer = match disposition {
                    Disposition::Serve(_) => None,
                    Disposition::Answer(code) => Some(code),
                };
                let mut slot = Slot::new(
                    id,
                    Kind::Served { just_exec, answer },
                    State::Connecting { next_try: now },
                    now,
                    out,
                );
                slot.chan = Some((peer, port));
                self.core.calls.push(slot);
                if let Disposition::Serve(call) = disposition {
                    let mut cx = Cx::new(&mut self.env, &mut self.core);
                    if self.app.call(&mut cx, id, &call) == Admit::Refuse {
                        if let Some(slot) = self.core.slot(id) {
                            slot.kind = Kind::Served {
                                just_exec,
                                answer: Some(qrexec::EXIT_REFUSED),
                            };
                            slot.out.clear();
                        }
                    } else if just_exec {
                        // MSG_JUST_EXEC carries no stdin: its input is over before it starts.
                        self.app.input_end(&mut cx, id);
                    }
                }
            }
            QrexecEvent::ServiceConnect {
                peer,
                port,
                request_id,
            } => {
                let found = self
                    .core
                    .calls
                    .iter()
                    .position(|s| matches!(s.state, State::Pending(r) if r == request_id));
                let Some(at) = found else {
                    // The call was aborted meanwhile: give the port back at once.
                    let _ = self.core.qrexec.connection_terminated(peer, port);
                    return;
                };
                let ring = self.core.cfg.data_ring;
                let env = &mut self.env;
                let made = server_init(
                    &mut env.grants,
                    &mut env.events,
                    &mut env.store,
                    peer,
                    port,
                    ring,
                    ring,
                );
                let in_buf = self.core.cfg.in_bytes;
                let limits = data_limits(&self.core.cfg);
                let Some(slot) = self.core.calls.get_mut(at) else {
                    return;
                };
                slot.chan = Some((peer, port));
                slot.since = now;
                match made {
                    Ok((server, dir)) => {
                        slot.state = State::Open {
                            pipe: Box::new(Pipe::new(
                                Link::Server(server, Some(dir)),
                                in_buf,
                                DATA_TX_BUF,
                            )),
                            chan: Box::new(DataChannel::new(
                                Role::Caller,
                                Handshake::SendFirst,
                                AGENT_VERSION,
                                limits,
                            )),
                        };
                    }
                    Err(e) => {
                        slot.dead = Some(None);
                        let id = slot.id;
                        self.log(format_args!("{id} to domain {peer}: data vchan: {e}"));
                    }
                }
            }
            QrexecEvent::Refused { request_id } => {
                if let Some(slot) = self
                    .core
                    .calls
                    .iter_mut()
                    .find(|s| matches!(s.state, State::Pending(r) if r == request_id))
                {
                    slot.dead = Some(Some(qrexec::EXIT_REFUSED));
                }
            }
            QrexecEvent::Overflow { peer, port } => {
                self.log(format_args!(
                    "too many calls: dropped one from domain {peer} (port {port})"
                ));
            }
        }
    }

    /// One pass over every call; dead ones are reaped at the end.
    fn pump_calls(&mut self, now: Instant) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.core.calls.len() {
            busy |= self.pump_call(i, now);
            i += 1;
        }
        busy | self.reap()
    }

    fn pump_call(&mut self, i: usize, now: Instant) -> bool {
        let cfg = self.core.cfg;
        let Some(slot) = self.core.calls.get_mut(i) else {
            return false;
        };
        if slot.dead.is_some() {
            return false;
        }
        let id = slot.id;
        match &mut slot.state {
            State::Pending(_) => false,
            State::Connecting { next_try } => {
                if now < *next_try {
                    return false;
                }
                let (Some((peer, port)), Kind::Served { just_exec, .. }) = (slot.chan, slot.kind)
                else {
                    slot.dead = Some(None);
                    return true;
                };
                let env = &mut self.env;
                match client_init(&mut env.grants, &mut env.events, &mut env.store, peer, port) {
                    Ok(c) => {
                        slot.since = now;
                        slot.state = State::Open {
                            pipe: Box::new(Pipe::new(Link::Client(c), cfg.in_bytes, DATA_TX_BUF)),
                            chan: Box::new(DataChannel::new(
                                Role::Service { just_exec },
                                Handshake::SendFirst,
                                AGENT_VERSION,
                                data_limits(&cfg),
                            )),
                        };
                        true
                    }
                    Err(e)
                        if e.is_not_ready()
                            && now.saturating_duration_since(slot.since) < cfg.connect_timeout =>
                    {
                        *next_try = now.saturating_add(CONNECT_RETRY);
                        false
                    }
                    Err(e) => {
                        slot.dead = Some(None);
                        log_line(
                            &mut self.env,
                            format_args!("{id} from domain {peer}: data vchan: {e}"),
                        );
                        true
                    }
                }
            }
            State::Open { .. } => self.pump_open(i, now),
        }
    }

    /// Moves one open call forward: vchan in, events to the app, app bytes in, vchan out,
    /// and decides whether it is over.
    fn pump_open(&mut self, i: usize, now: Instant) -> bool {
        let mut busy = match self.receive(i) {
            Ok(b) => b,
            Err(why) => return self.fail(i, why),
        };
        loop {
            let Some(slot) = self.core.calls.get_mut(i) else {
                return busy;
            };
            if slot.paused || slot.dead.is_some() {
                break;
            }
            let State::Open { chan, .. } = &mut slot.state else {
                return busy;
            };
            let (id, kind) = (slot.id, slot.kind);
            let Some(ev) = chan.poll_event() else { break };
            busy = true;
            let visible = slot.visible();
            let mut cx = Cx::new(&mut self.env, &mut self.core);
            match (kind, ev) {
                (_, DataEvent::Ready { .. }) => {}
                (Kind::Served { .. }, DataEvent::Data { data, .. }) if visible => {
                    self.app.input(&mut cx, id, &data);
                }
                (Kind::Served { .. }, DataEvent::Eof(Stream::Stdin)) if visible => {
                    self.app.input_end(&mut cx, id);
                }
                (
                    Kind::Outgoing,
                    DataEvent::Data {
                        stream: Stream::Stdout,
                        data,
                    },
                ) => self.app.output(&mut cx, id, &data),
                (_, DataEvent::Exit(code)) => {
                    if let Some(s) = self.core.calls.get_mut(i) {
                        s.exit_seen = Some(code);
                    }
                }
                // Stderr, other EOFs, and stdin of a call the app does not serve.
                _ => {}
            }
        }
        match self.transmit(i) {
            Ok(b) => busy |= b,
            Err(why) => return self.fail(i, why),
        }
        self.check_done(i, now);
        busy
    }

    /// Reads the vchan and feeds the channel machine.
    fn receive(&mut self, i: usize) -> Result<bool, &'static str> {
        let Some(slot) = self.core.calls.get_mut(i) else {
            return Ok(false);
        };
        let State::Open { pipe, chan } = &mut slot.state else {
            return Ok(false);
        };
        if slot.paused {
            return Ok(false);
        }
        let mut busy = pipe
            .fill(&mut self.env.store)
            .map_err(|_| "data vchan failed")?;
        busy |= pipe
            .feed(|d| chan.handle_input(d))
            .map_err(|_| "peer broke the qrexec data protocol")?;
        Ok(busy)
    }

    /// Moves the app's bytes (then EOF or exit code) into the machine and the machine's
    /// bytes into the vchan.
    fn transmit(&mut self, i: usize) -> Result<bool, &'static str> {
        let Some(slot) = self.core.calls.get_mut(i) else {
            return Ok(false);
        };
        if slot.dead.is_some() {
            return Ok(false);
        }
        let State::Open { pipe, chan } = &mut slot.state else {
            return Ok(false);
        };
        let mut busy = false;
        if chan.version().is_some() {
            let stream = match slot.kind {
                Kind::Served { .. } => Stream::Stdout,
                Kind::Outgoing => Stream::Stdin,
            };
            while !slot.out.is_empty() {
                match chan.send(stream, slot.out.front()) {
                    Ok(0) => break,
                    Ok(n) => {
                        slot.out.consume(n);
                        busy = true;
                    }
                    Err(qrexec::Error::NotAllowed(_)) => slot.out.clear(),
                    Err(_) => return Err("data channel refused our bytes"),
                }
            }
            let exit = match slot.kind {
                Kind::Served {
                    answer: Some(code), ..
                } => Some(code),
                Kind::Served { .. } if slot.out.is_empty() => slot.finish,
                _ => None,
            };
            if let (Some(code), false) = (exit, slot.exit_sent) {
                match chan.send_exit(code) {
                    Ok(()) => {
                        slot.exit_sent = true;
                        busy = true;
                    }
                    Err(qrexec::Error::Full { .. }) => {}
                    Err(_) => return Err("could not send the exit code"),
                }
            }
            if slot.kind == Kind::Outgoing
                && slot.end_input
                && !slot.eof_sent
                && slot.out.is_empty()
            {
                match chan.send_eof(Stream::Stdin) {
                    Ok(()) | Err(qrexec::Error::NotAllowed(_)) => {
                        slot.eof_sent = true;
                        busy = true;
                    }
                    Err(qrexec::Error::Full { .. }) => {}
                    Err(_) => return Err("could not send stdin EOF"),
                }
            }
        }
        busy |= pipe
            .flush(|b| chan.poll_transmit(b))
            .map_err(|_| "data vchan failed")?;
        Ok(busy)
    }

    /// Marks a call over when its exchange is complete, its peer left, or it never connected.
    fn check_done(&mut self, i: usize, now: Instant) {
        let timeout = self.core.cfg.connect_timeout;
        let Some(slot) = self.core.calls.get_mut(i) else {
            return;
        };
        if slot.dead.is_some() {
            return;
        }
        let State::Open { pipe, chan } = &mut slot.state else {
            return;
        };
        let code = match slot.kind {
            Kind::Served { answer, .. } => answer.or(slot.finish),
            Kind::Outgoing => slot.exit_seen,
        };
        if chan.is_finished() && !pipe.tx_pending() {
            slot.dead = Some(code);
            return;
        }
        let why = if pipe.peer_closed && pipe.unread() == 0 {
            match chan.handle_close() {
                Ok(()) if slot.exit_seen.is_some() => {
                    slot.dead = Some(slot.exit_seen);
                    return;
                }
                _ => "peer closed the data vchan early",
            }
        } else if chan.version().is_none() && now.saturating_duration_since(slot.since) >= timeout {
            // A peer that never attaches or never says HELLO must not hold a slot forever.
            if pipe.attached() {
                "peer never completed the data-channel handshake"
            } else {
                "peer never attached to the data vchan"
            }
        } else {
            return;
        };
        slot.dead = Some(None);
        let (id, chan) = (slot.id, slot.chan);
        if slot.visible() {
            let peer = chan.map_or(0, |(p, _)| p.get());
            log_line(
                &mut self.env,
                format_args!("{id} with domain {peer}: {why}"),
            );
        }
    }

    /// Ends call `i` after a failure of its peer or channel; one log line.
    fn fail(&mut self, i: usize, why: &'static str) -> bool {
        if let Some(slot) = self.core.calls.get_mut(i) {
            slot.dead = Some(None);
            let (id, chan) = (slot.id, slot.chan);
            let peer = chan.map_or(0, |(p, _)| p.get());
            log_line(
                &mut self.env,
                format_args!("{id} with domain {peer}: {why}"),
            );
        }
        true
    }

    /// Removes dead calls: closes the vchan, releases the daemon's port, tells the app.
    fn reap(&mut self) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.core.calls.len() {
            if self.core.calls.get(i).is_some_and(|s| s.dead.is_none()) {
                i += 1;
                continue;
            }
            busy = true;
            let slot = self.core.calls.remove(i);
            let visible = slot.visible();
            let (id, exit, chan) = (slot.id, slot.dead.flatten(), slot.chan);
            close_state(slot.state, &mut self.env.store);
            if let Some((peer, port)) = chan {
                // Fails only when the control channel was reopened meanwhile.
                let _ = self.core.qrexec.connection_terminated(peer, port);
            }
            if visible {
                let mut cx = Cx::new(&mut self.env, &mut self.core);
                self.app.closed(&mut cx, id, exit);
            }
        }
        busy
    }

    /// The loop's own deadlines: connect retries and timeouts, QubesDB retries.
    fn timers(&mut self, next: &mut Earliest) {
        let timeout = self.core.cfg.connect_timeout;
        for slot in &mut self.core.calls {
            match &mut slot.state {
                State::Connecting { next_try } => next.add(Some(*next_try)),
                State::Open { chan, .. } if chan.version().is_none() => {
                    next.add(Some(slot.since.saturating_add(timeout)));
                }
                _ => {}
            }
        }
        if let QdbLink::Connecting { next_try } = self.qdb {
            next.add(Some(next_try));
        }
        if !self.started {
            next.add(Some(
                self.qdb_since.saturating_add(self.core.cfg.qubesdb_timeout),
            ));
        }
    }

    /// Posts wake-up interest on every vchan; false if one of them has work already.
    fn may_sleep(&mut self) -> bool {
        let mut sleep = true;
        if let Some(c) = self.ctrl.as_mut() {
            sleep &= c.may_sleep(true).unwrap_or(false);
        }
        if let QdbLink::Open(q) = &mut self.qdb {
            sleep &= q.may_sleep(true).unwrap_or(false);
        }
        for slot in &mut self.core.calls {
            if let State::Open { pipe, .. } = &mut slot.state {
                sleep &= pipe.may_sleep(!slot.paused).unwrap_or(false);
            }
        }
        sleep
    }

    /// Stops the app (on a clean stop), ends every call, closes the control channels.
    fn teardown(&mut self, clean: bool) {
        if clean && self.started {
            let mut cx = Cx::new(&mut self.env, &mut self.core);
            self.app.stop(&mut cx);
        }
        for slot in &mut self.core.calls {
            if slot.dead.is_none() {
                slot.dead = Some(None);
            }
        }
        self.reap();
        // Best effort: the CONNECTION_TERMINATED messages the reaping queued.
        let _ = self.flush_control();
        if let QdbLink::Open(q) = core::mem::replace(
            &mut self.qdb,
            QdbLink::Connecting {
                next_try: Instant(0),
            },
        ) {
            q.close(&mut self.env.store);
        }
        let _ = self.env.store.unwatch(SHUTDOWN_PATH, SHUTDOWN_TOKEN);
        // After a poweroff the control channel is only unadvertised and dropped, not
        // closed: dom0 learns of the shutdown from the domain going away (the C agent's live
        // byte is cleared by its kernel when the process ends), and a daemon that sees the
        // agent close first treats it as failed and may kill the domain mid-teardown. After
        // an error it is closed, so that dom0 knows the agent is gone.
        if let Some(mut c) = self.ctrl.take() {
            if clean {
                c.unadvertise(&mut self.env.store);
            } else {
                c.close(&mut self.env.store);
            }
        }
    }
}
