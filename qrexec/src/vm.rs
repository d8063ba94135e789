//! The Linux VM's qrexec agent over any `Platform`: control vchan server on port 512 for dom0,
//! calls from local commands (`qrexec-client-vm`, the forwarder) on a Unix socket, relayed.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use platform_api::{DomId, Env, Events, Platform};
use qubes::qrexec::agent::{Event as AgentEvent, Limits};
use qubes::qrexec::{Agent, DataChannel, RequestId, AGENT_VERSION, CONTROL_PORT, EXIT_NOT_FOUND};
use qubes_dom0d::link::{Link, Machine};

use crate::local::{self, LocalConn};
use crate::relay::{CallerRelay, Ended, ExitOnly};

/// The agent socket when `QUBES_QREXEC_AGENT_SOCK` does not name one.
pub const DEFAULT_SOCKET: &str = "/run/qubes-qrexec-agent.sock";
/// Environment variable naming the agent socket (for commands and the agent).
pub const ENV_SOCKET: &str = "QUBES_QREXEC_AGENT_SOCK";
/// Longest sleep of one loop turn (local sockets are looked at this often).
const SLICE: Duration = Duration::from_millis(10);
/// Local requests waiting for the control channel or a decision; more are answered ERROR.
const MAX_WAITING: usize = 64;
/// How long a local request waits for dom0's daemon to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The socket path from the environment, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os(ENV_SOCKET)
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// `qubes::qrexec::Agent` as a link machine.
#[derive(Debug)]
struct AgentM(Agent);

impl Machine for AgentM {
    fn input(&mut self, data: &[u8]) -> Result<usize, String> {
        self.0.handle_input(data).map_err(|e| e.to_string())
    }
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.0.poll_transmit(out)
    }
}

fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("qubes-vm-agent: {args}");
}

/// A local request: read its line, then waiting for the control channel and the decision.
#[derive(Debug)]
struct Waiting {
    conn: LocalConn,
    call: Option<(String, String)>,
    id: Option<RequestId>,
    since: Instant,
}

/// Counters for the result line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Calls connected (SERVICE_CONNECT).
    pub connected: usize,
    /// Calls refused by dom0.
    pub refused: usize,
    /// Calls of other domains to us, answered 127.
    pub not_found: usize,
    /// Times dom0's daemon connected the control channel.
    pub daemon_connects: usize,
}

/// The agent: one domain's control channel, local requests and the relays.
pub struct VmAgent<P: Platform> {
    env: Env<P>,
    ctrl: Option<(Link<P>, AgentM)>,
    ready: bool,
    listener: UnixListener,
    waiting: Vec<Waiting>,
    relays: Vec<(DomId, u32, CallerRelay<P>)>,
    services: Vec<(DomId, u32, ExitOnly<P>)>,
    /// What happened so far.
    pub stats: Stats,
}

impl<P: Platform> std::fmt::Debug for VmAgent<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmAgent")
            .field("ready", &self.ready)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> VmAgent<P> {
    /// The agent of `env`'s domain taking local requests on `listener`.
    pub fn new(env: Env<P>, listener: UnixListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(VmAgent {
            env,
            ctrl: None,
            ready: false,
            listener,
            waiting: Vec::new(),
            relays: Vec::new(),
            services: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Whether dom0's daemon is connected and the HELLO exchange done.
    pub fn ready(&self) -> bool {
        self.ready
    }

    fn pump_ctrl(&mut self) -> bool {
        if self.ctrl.is_none() {
            let limits = Limits {
                max_channels: 32,
                max_events: 32,
                out_bytes: 16 * 1024,
            };
            match Link::serve(&mut self.env, DomId::DOM0, CONTROL_PORT, 4096, 4096, 65536) {
                Ok(l) => self.ctrl = Some((l, AgentM(Agent::new(limits)))),
                Err(e) => {
                    log(format_args!("cannot serve the control vchan: {e}"));
                    return false;
                }
            }
        }
        let Some((link, m)) = self.ctrl.as_mut() else {
            return false;
        };
        let r = link.step(m);
        link.tidy(&mut self.env);
        let mut progress = matches!(r, Ok(true));
        let mut events = Vec::new();
        while let Some(ev) = m.0.poll_event() {
            events.push(ev);
        }
        for ev in events {
            progress = true;
            self.event(ev);
        }
        if let Err(e) = r {
            log(format_args!(
                "control channel ended ({e}); serving it again"
            ));
            if let Some((l, _)) = self.ctrl.take() {
                l.close(&mut self.env);
            }
            self.ready = false;
            // Decisions of the old daemon will not come.
            for w in self.waiting.iter_mut().filter(|w| w.id.is_some()) {
                w.conn.answer("ERROR dom0's qrexec daemon went away");
                w.call = None;
            }
            self.waiting.retain(|w| w.call.is_some() || w.id.is_none());
            progress = true;
        }
        progress
    }

    fn event(&mut self, ev: AgentEvent) {
        match ev {
            AgentEvent::Ready { version } => {
                self.ready = true;
                self.stats.daemon_connects += 1;
                log(format_args!("dom0's qrexec daemon connected (v{version})"));
            }
            AgentEvent::ServiceConnect {
                peer,
                port,
                request_id,
            } => {
                let Some(at) = self.waiting.iter().position(|w| w.id == Some(request_id)) else {
                    return;
                };
                let mut w = self.waiting.swap_remove(at);
                match Link::serve(&mut self.env, peer, port, 65536, 65536, 256 * 1024) {
                    Ok(link) => {
                        w.conn.answer("CONNECTED");
                        self.stats.connected += 1;
                        let chan = DataChannel::caller(AGENT_VERSION);
                        self.relays
                            .push((peer, port, CallerRelay::new(link, chan, w.conn)));
                    }
                    Err(e) => {
                        w.conn.answer(&format!("ERROR data vchan: {e}"));
                        self.terminated(peer, port);
                    }
                }
            }
            AgentEvent::Refused { request_id } => {
                if let Some(at) = self.waiting.iter().position(|w| w.id == Some(request_id)) {
                    let mut w = self.waiting.swap_remove(at);
                    w.conn.answer("REFUSED");
                    self.stats.refused += 1;
                }
            }
            AgentEvent::Exec {
                peer,
                port,
                just_exec,
                command,
            } => {
                log(format_args!(
                    "call from domain {peer} ({:?}): no such service here",
                    command
                        .as_ref()
                        .map(|c| format!("{c:?}"))
                        .unwrap_or_default()
                ));
                self.stats.not_found += 1;
                let chan = DataChannel::service(just_exec, AGENT_VERSION);
                self.services
                    .push((peer, port, ExitOnly::new(chan, EXIT_NOT_FOUND)));
            }
            AgentEvent::Overflow { peer, port } => {
                log(format_args!(
                    "too many channels: dropped a call from {peer} on port {port}"
                ));
            }
        }
    }

    fn terminated(&mut self, peer: DomId, port: u32) {
        if let Some((_, m)) = self.ctrl.as_mut() {
            if let Err(e) = m.0.connection_terminated(peer, port) {
                log(format_args!("connection {peer}:{port}: {e}"));
            }
        }
    }

    fn pump_local(&mut self) -> bool {
        let mut progress = false;
        while let Ok((s, _)) = self.listener.accept() {
            progress = true;
            let Ok(mut conn) = LocalConn::new(s) else {
                continue;
            };
            if self.waiting.len() >= MAX_WAITING {
                conn.answer("ERROR too many calls waiting");
                continue;
            }
            self.waiting.push(Waiting {
                conn,
                call: None,
                id: None,
                since: Instant::now(),
            });
        }
        let ready = self.ready;
        let mut i = 0;
        while i < self.waiting.len() {
            let Some(w) = self.waiting.get_mut(i) else {
                break;
            };
            if w.call.is_none() && w.id.is_none() {
                match w.conn.poll_request(&mut progress) {
                    local::Request::Call(t, s) => w.call = Some((t, s)),
                    local::Request::Pending => {}
                    local::Request::Gone => {
                        self.waiting.swap_remove(i);
                        continue;
                    }
                }
            }
            if let (Some((target, service)), true, None) = (&w.call, ready, w.id) {
                let r = self
                    .ctrl
                    .as_mut()
                    .map(|(_, m)| m.0.trigger_service(target, service));
                match r {
                    Some(Ok(id)) => {
                        w.id = Some(id);
                        progress = true;
                    }
                    Some(Err(e)) => {
                        w.conn.answer(&format!("ERROR {e}"));
                        self.waiting.swap_remove(i);
                        continue;
                    }
                    None => {}
                }
            }
            if w.id.is_none() && w.since.elapsed() > READY_TIMEOUT {
                w.conn
                    .answer("ERROR dom0's qrexec daemon did not connect in time");
                self.waiting.swap_remove(i);
                continue;
            }
            i += 1;
        }
        progress
    }

    fn pump_relays(&mut self) -> bool {
        let mut progress = false;
        let mut done = Vec::new();
        for (i, (peer, port, r)) in self.relays.iter_mut().enumerate() {
            progress |= r.step(&mut self.env);
            if let Some(how) = r.ended() {
                if let Ended::Broken(why) = how {
                    log(format_args!("call to domain {peer} port {port}: {why}"));
                }
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let (peer, port, _) = self.relays.swap_remove(i);
            self.terminated(peer, port);
        }
        let mut finished = Vec::new();
        for (i, (peer, port, s)) in self.services.iter_mut().enumerate() {
            progress |= s.step(&mut self.env, *peer, *port);
            if s.done {
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            let (peer, port, _) = self.services.swap_remove(i);
            self.terminated(peer, port);
        }
        progress
    }

    /// One turn: control channel, local requests, relays; sleeps when nothing moved.
    pub fn turn(&mut self) -> Result<(), platform_api::PlatformError> {
        let a = self.pump_ctrl();
        let b = self.pump_local();
        let c = self.pump_relays();
        // Whatever the events queued for dom0 goes out in this turn.
        let d = self.pump_ctrl();
        if a || b || c || d {
            return Ok(());
        }
        let mut idle = self.ctrl.as_mut().is_none_or(|(l, _)| l.ready_to_sleep());
        for (_, _, r) in &mut self.relays {
            idle &= r.ready_to_sleep();
        }
        for (_, _, s) in &mut self.services {
            idle &= s.ready_to_sleep();
        }
        if idle {
            self.env.events.wait(Some(SLICE))?;
        }
        Ok(())
    }

    /// Runs until `stop()` says so (or forever).
    pub fn run(&mut self, stop: &dyn Fn() -> bool) -> Result<(), platform_api::PlatformError> {
        while !stop() {
            self.turn()?;
        }
        if let Some((l, _)) = self.ctrl.take() {
            l.close(&mut self.env);
        }
        Ok(())
    }
}
