//! dom0's qrexec daemon for several domains over any `Platform`: QubesDB (server, port 111) and
//! the control channel (client of port 512) per domain, VM → VM calls routed by Qubes policy.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use platform_api::{DomId, Env, Events, Platform, Store, StoreError, Tx, XsErrno};
use qubes::policy::{
    CallTarget, Decision, Limits as PolicyLimits, Policy, PolicySource, Qube, QubeType, Request,
    SourceError, System,
};
use qubes::qrexec::daemon::{Event as CtrlEvent, Limits as CtrlLimits};
use qubes::qrexec::data::{Handshake, Limits as DataLimits, Role};
use qubes::qrexec::{DataChannel, RequestId, CONTROL_PORT, PROTOCOL_V3};
use qubes::qubesdb::{DaemonEvent as QdbEvent, DaemonLimits};
use qubes_dom0d::link::{Link, LinkError};
use qubes_dom0d::session::QUBESDB_PORT;

use crate::local::{self, LocalConn};
use crate::relay::{CallerRelay, Ended};

/// Longest sleep of one loop turn.
const SLICE: Duration = Duration::from_millis(10);
/// How often each domain's xenstore home is looked at.
const ALIVE_EVERY: Duration = Duration::from_millis(500);
/// How often a control channel connect is retried while the agent has not advertised it.
const CONNECT_EVERY: Duration = Duration::from_millis(100);
/// Largest policy file read.
const MAX_POLICY_FILE: u64 = 1 << 20;
/// dom0's own calls (local socket) waiting at once.
const MAX_LOCAL: usize = 64;
/// How long a VM's call waits for its allowed target's agent.
const TARGET_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Calls of one VM held for targets that are not up yet; more are refused.
const MAX_HELD_PER_SOURCE: usize = 16;
/// How long a dom0 call waits for its target's agent.
const LOCAL_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One domain to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// Its qube name (what policy and callers use).
    pub name: String,
    /// Its domain id.
    pub domid: DomId,
    /// Its QubesDB entries.
    pub entries: BTreeMap<String, String>,
}

/// Policy files from the file system (`policy.d` directories).
#[derive(Debug, Clone, Copy, Default)]
pub struct FsPolicy;

impl PolicySource for FsPolicy {
    fn read_file(&self, path: &str) -> Result<String, SourceError> {
        let meta = std::fs::metadata(path).map_err(|_| SourceError::NotFound)?;
        if !meta.is_file() {
            return Err(SourceError::NotAFile);
        }
        let mut s = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_POLICY_FILE).read_to_string(&mut s))
            .map_err(|_| SourceError::Unreadable)?;
        Ok(s)
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let rd = std::fs::read_dir(dir).map_err(|_| SourceError::NotADirectory)?;
        Ok(rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
}

fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("qubes-qrexecd: {args}");
}

struct Qdb<P: Platform> {
    link: Link<P>,
    d: qubes::qubesdb::Daemon,
}

struct Ctrl<P: Platform> {
    link: Link<P>,
    d: qubes::qrexec::Daemon,
}

struct Dom<P: Platform> {
    spec: DomainSpec,
    qdb: Option<Qdb<P>>,
    synced: bool,
    ctrl: Option<Ctrl<P>>,
    ready: bool,
    next_connect: Instant,
    last_alive: Instant,
    gone: bool,
}

/// A trigger taken from a domain's control channel, routed after the pump.
#[derive(Debug)]
struct Trigger {
    since: Instant,
    source: usize,
    target: String,
    service: String,
    argument: String,
    id: RequestId,
}

/// A dom0 call from the local socket: waiting for its line or its target.
#[derive(Debug)]
struct LocalCall {
    conn: LocalConn,
    call: Option<(String, String)>,
    since: Instant,
}

/// Counters for the result line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// VM → VM calls connected.
    pub routed: usize,
    /// Calls refused (policy, target not served, no dom0 services).
    pub refused: usize,
    /// dom0 → VM calls started from the local socket.
    pub dom0_calls: usize,
}

/// The daemon: every listed domain's daemons on one backend, one thread.
pub struct Router<P: Platform> {
    env: Env<P>,
    doms: Vec<Dom<P>>,
    policy_dirs: Vec<String>,
    listener: Option<UnixListener>,
    local: Vec<LocalCall>,
    relays: Vec<CallerRelay<P>>,
    /// Allowed calls waiting for their target's agent.
    held: Vec<(Trigger, String)>,
    /// What happened so far.
    pub stats: Stats,
}

impl<P: Platform> std::fmt::Debug for Router<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("domains", &self.doms.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Router<P> {
    /// Serves `domains`, deciding calls with the policy in `policy_dirs` (read at each call,
    /// as Qubes does; earlier directories shadow later ones by file name); dom0's own calls
    /// come on `listener`.
    pub fn new(
        env: Env<P>,
        domains: Vec<DomainSpec>,
        policy_dirs: Vec<String>,
        listener: Option<UnixListener>,
    ) -> std::io::Result<Self> {
        if let Some(l) = &listener {
            l.set_nonblocking(true)?;
        }
        let now = Instant::now();
        let doms = domains
            .into_iter()
            .map(|spec| Dom {
                spec,
                qdb: None,
                synced: false,
                ctrl: None,
                ready: false,
                next_connect: now,
                last_alive: now,
                gone: false,
            })
            .collect();
        Ok(Router {
            env,
            doms,
            policy_dirs,
            listener,
            local: Vec::new(),
            relays: Vec::new(),
            held: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Whether domain `name`'s agent is connected (HELLO done).
    pub fn ready(&self, name: &str) -> bool {
        self.doms.iter().any(|d| d.spec.name == name && d.ready)
    }

    /// Whether every domain has gone away.
    pub fn all_gone(&self) -> bool {
        self.doms.iter().all(|d| d.gone)
    }

    fn pump_qdb(env: &mut Env<P>, d: &mut Dom<P>) -> bool {
        if d.qdb.is_none() {
            let link = match Link::serve(env, d.spec.domid, QUBESDB_PORT, 4096, 4096, 16384) {
                Ok(l) => l,
                Err(e) => {
                    log(format_args!(
                        "qubesdb of {}: cannot serve: {e}",
                        d.spec.name
                    ));
                    return false;
                }
            };
            let mut q = qubes::qubesdb::Daemon::new(DaemonLimits::DEFAULT);
            for (k, v) in &d.spec.entries {
                // Not connected yet: goes into the first dump.
                let _ = q.write(k, v.as_bytes());
            }
            q.connect();
            d.qdb = Some(Qdb { link, d: q });
        }
        let Some(q) = d.qdb.as_mut() else {
            return false;
        };
        let r = q.link.step(&mut q.d);
        q.link.tidy(env);
        while let Some(ev) = q.d.poll_event() {
            if let QdbEvent::VmWriteRefused(p) | QdbEvent::Refused(p) = ev {
                log(format_args!("qubesdb of {}: refused {p:?}", d.spec.name));
            }
        }
        if q.d.is_ready() && !d.synced {
            d.synced = true;
            log(format_args!("qubesdb of {}: synced", d.spec.name));
        }
        match r {
            Ok(p) => p,
            Err(e) => {
                log(format_args!(
                    "qubesdb of {}: connection ended: {e}",
                    d.spec.name
                ));
                if let Some(q) = d.qdb.take() {
                    q.link.close(env);
                }
                true
            }
        }
    }

    fn pump_ctrl(env: &mut Env<P>, i: usize, d: &mut Dom<P>, out: &mut Vec<Trigger>) -> bool {
        if d.ctrl.is_none() {
            if Instant::now() < d.next_connect {
                return false;
            }
            d.next_connect = Instant::now() + CONNECT_EVERY;
            match Link::connect(env, d.spec.domid, CONTROL_PORT, 65536) {
                Ok(link) => {
                    let mut q = qubes::qrexec::Daemon::new(CtrlLimits::DEFAULT);
                    // Real dom0 passes the qube's default_user; ours are all "user".
                    let _ = q.set_default_user("user");
                    d.ctrl = Some(Ctrl { link, d: q });
                }
                Err(_) => return false,
            }
        }
        let Some(c) = d.ctrl.as_mut() else {
            return false;
        };
        let r = c.link.step(&mut c.d);
        let mut progress = matches!(r, Ok(true));
        while let Some(ev) = c.d.poll_event() {
            progress = true;
            match ev {
                CtrlEvent::Ready { version, .. } => {
                    d.ready = true;
                    log(format_args!(
                        "qrexec agent of {} (domain {}) ready (v{version})",
                        d.spec.name, d.spec.domid
                    ));
                }
                CtrlEvent::Trigger {
                    target,
                    service,
                    argument,
                    request_id,
                    ..
                } => out.push(Trigger {
                    since: Instant::now(),
                    source: i,
                    target,
                    service,
                    argument,
                    id: request_id,
                }),
                CtrlEvent::TriggerRefused { reason, .. } => {
                    log(format_args!(
                        "{}: malformed call refused: {reason:?}",
                        d.spec.name
                    ));
                }
                CtrlEvent::ConnectionTerminated { .. } => {}
            }
        }
        if let Err(e) = r {
            if d.ready || !matches!(e, LinkError::Closed) {
                log(format_args!(
                    "control channel of {} ended: {e}; connecting again",
                    d.spec.name
                ));
            }
            // A stale advertisement, or the agent restarted: connect again.
            d.ctrl = None;
            d.ready = false;
            progress = true;
        }
        progress
    }

    fn alive(env: &mut Env<P>, d: &mut Dom<P>) {
        if d.gone || d.last_alive.elapsed() < ALIVE_EVERY {
            return;
        }
        d.last_alive = Instant::now();
        let home = format!("/local/domain/{}", d.spec.domid);
        if matches!(
            env.store.directory(Tx::NONE, &home),
            Err(StoreError::Xs(XsErrno::Enoent))
        ) {
            log(format_args!(
                "{} (domain {}) went away",
                d.spec.name, d.spec.domid
            ));
            d.gone = true;
            d.ready = false;
            if let Some(q) = d.qdb.take() {
                q.link.close(env);
            }
            if let Some(c) = d.ctrl.take() {
                c.link.close(env);
            }
        }
    }

    fn system(&self) -> System {
        let mut sys = System::new();
        for d in self.doms.iter().filter(|d| !d.gone) {
            let mut q = Qube::new(&d.spec.name, QubeType::AppVM);
            q.running = d.ready;
            sys.add(q);
        }
        sys
    }

    fn policy(&self) -> Result<Policy, String> {
        let dirs: Vec<&str> = self.policy_dirs.iter().map(String::as_str).collect();
        Policy::load(&FsPolicy, &dirs, PolicyLimits::DEFAULT).map_err(|e| e.to_string())
    }

    /// Decides and routes one VM's call: EXEC_CMDLINE to the target (data channel to the
    /// caller on a port of the target's daemon), then SERVICE_CONNECT; or SERVICE_REFUSED.
    fn route(&mut self, t: Trigger) {
        let Some(src) = self.doms.get(t.source) else {
            return;
        };
        let (src_name, src_id) = (src.spec.name.clone(), src.spec.domid);
        let call = if t.argument.is_empty() {
            t.service.clone()
        } else {
            format!("{}+{}", t.service, t.argument)
        };
        let what = format!("{call} from {src_name} to {}", t.target);
        let decision = match self.policy() {
            Ok(p) => p.evaluate(
                &self.system(),
                &Request {
                    service: &t.service,
                    argument: &t.argument,
                    source: &src_name,
                    target: &t.target,
                },
            ),
            Err(e) => {
                // Fail closed, as qrexec-policy-daemon does on a broken policy.
                log(format_args!("policy: {e}"));
                return self.refuse(t.source, t.id, &what, "the policy does not load");
            }
        };
        let (target, user) = match decision {
            Decision::Allow {
                target: CallTarget::Qube(n),
                user,
                rule,
                ..
            } => {
                log(format_args!("{what}: allowed to {n} by {rule}"));
                (n, user)
            }
            Decision::Allow { target, .. } => {
                let why = format!("allowed to {target}, which this daemon does not serve");
                return self.refuse(t.source, t.id, &what, &why);
            }
            Decision::Ask { .. } => {
                return self.refuse(t.source, t.id, &what, "'ask': no dialog here");
            }
            Decision::Deny { reason, .. } => {
                return self.refuse(t.source, t.id, &what, &reason.to_string());
            }
        };
        let Some(ti) = self
            .doms
            .iter()
            .position(|d| d.spec.name == target && !d.gone)
        else {
            return self.refuse(t.source, t.id, &what, "the target is not running");
        };
        if !self.doms.get(ti).is_some_and(|d| d.ready) {
            // As qrexec waits for a qube it starts: the call goes once its agent connects.
            if t.since.elapsed() > TARGET_READY_TIMEOUT {
                return self.refuse(t.source, t.id, &what, "the target's agent never connected");
            }
            // A caller flooding calls at a target that is not up cannot grow dom0's memory.
            let waiting = self
                .held
                .iter()
                .filter(|(h, _)| h.source == t.source)
                .count();
            if waiting >= MAX_HELD_PER_SOURCE {
                return self.refuse(t.source, t.id, &what, "too many calls wait for targets");
            }
            self.held.push((t, target));
            return;
        }
        let Some(tgt) = self.doms.get_mut(ti) else {
            return;
        };
        let tgt_id = tgt.spec.domid;
        let cmdline = format!(
            "{}:QUBESRPC {call} {src_name}",
            user.as_deref().unwrap_or("DEFAULT")
        );
        let port = match tgt
            .ctrl
            .as_mut()
            .map(|c| c.d.exec(src_id, cmdline.as_bytes(), false))
        {
            Some(Ok(port)) => port,
            Some(Err(e)) => {
                return self.refuse(t.source, t.id, &what, &format!("EXEC_CMDLINE: {e}"));
            }
            None => return self.refuse(t.source, t.id, &what, "target gone"),
        };
        let connected = self
            .doms
            .get_mut(t.source)
            .and_then(|d| d.ctrl.as_mut())
            .map(|c| c.d.service_connect(tgt_id, port, t.id));
        match connected {
            Some(Ok(())) => {
                self.stats.routed += 1;
                log(format_args!(
                    "{what}: {target} (domain {tgt_id}) serves it on port {port}"
                ));
            }
            _ => {
                log(format_args!("{what}: the caller's control channel went"));
                if let Some(c) = self.doms.get_mut(ti).and_then(|d| d.ctrl.as_mut()) {
                    c.d.release_port(port, u32::from(src_id.get()));
                }
            }
        }
    }

    fn refuse(&mut self, source: usize, id: RequestId, what: &str, why: &str) {
        self.stats.refused += 1;
        log(format_args!("{what}: refused: {why}"));
        if let Some(c) = self.doms.get_mut(source).and_then(|d| d.ctrl.as_mut()) {
            if let Err(e) = c.d.refuse(id) {
                log(format_args!("{what}: SERVICE_REFUSED: {e}"));
            }
        }
    }

    fn pump_local(&mut self) -> bool {
        let mut progress = false;
        if let Some(l) = &self.listener {
            while let Ok((s, _)) = l.accept() {
                progress = true;
                let Ok(mut conn) = LocalConn::new(s) else {
                    continue;
                };
                if self.local.len() >= MAX_LOCAL {
                    conn.answer("ERROR too many calls waiting");
                    continue;
                }
                self.local.push(LocalCall {
                    conn,
                    call: None,
                    since: Instant::now(),
                });
            }
        }
        let mut i = 0;
        while i < self.local.len() {
            let Some(w) = self.local.get_mut(i) else {
                break;
            };
            if w.call.is_none() {
                match w.conn.poll_request(&mut progress) {
                    local::Request::Call(t, s) => w.call = Some((t, s)),
                    local::Request::Pending => {}
                    local::Request::Gone => {
                        self.local.swap_remove(i);
                        continue;
                    }
                }
            }
            let target_ready = w
                .call
                .as_ref()
                .and_then(|(t, _)| self.doms.iter().position(|d| &d.spec.name == t && d.ready));
            match (target_ready, &w.call) {
                (Some(ti), Some(_)) => {
                    let w = self.local.swap_remove(i);
                    self.dom0_call(ti, w);
                    progress = true;
                    continue;
                }
                (None, Some((t, _))) if w.since.elapsed() > LOCAL_READY_TIMEOUT => {
                    let msg = format!("ERROR {t}'s qrexec agent is not connected");
                    w.conn.answer(&msg);
                    self.local.swap_remove(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        progress
    }

    /// A dom0 → VM call, as `qrexec-client -d VM DEFAULT:QUBESRPC SERVICE+ARG dom0` (dom0's
    /// own calls bypass policy in Qubes too).
    fn dom0_call(&mut self, ti: usize, mut w: LocalCall) {
        let Some((_, service)) = w.call.take() else {
            return;
        };
        let Some(d) = self.doms.get_mut(ti) else {
            return;
        };
        let vm = d.spec.domid;
        let cmdline = format!("DEFAULT:QUBESRPC {service} dom0");
        let port = match d
            .ctrl
            .as_mut()
            .map(|c| c.d.exec(DomId::DOM0, cmdline.as_bytes(), false))
        {
            Some(Ok(p)) => p,
            Some(Err(e)) => return w.conn.answer(&format!("ERROR EXEC_CMDLINE: {e}")),
            None => return w.conn.answer("ERROR the target's agent is not connected"),
        };
        match Link::serve(&mut self.env, vm, port, 65536, 65536, 256 * 1024) {
            Ok(link) => {
                w.conn.answer("CONNECTED");
                self.stats.dom0_calls += 1;
                log(format_args!(
                    "dom0 calls {service} in {} on port {port}",
                    d.spec.name
                ));
                let chan = DataChannel::new(
                    Role::Caller,
                    Handshake::SendFirst,
                    PROTOCOL_V3,
                    DataLimits::DEFAULT,
                );
                self.relays.push(CallerRelay::new(link, chan, w.conn));
            }
            Err(e) => w.conn.answer(&format!("ERROR data vchan: {e}")),
        }
    }

    /// One turn over every domain, the local socket and the relays; sleeps when idle.
    pub fn turn(&mut self) -> Result<(), platform_api::PlatformError> {
        let mut progress = false;
        let mut triggers = Vec::new();
        for (i, d) in self.doms.iter_mut().enumerate() {
            Self::alive(&mut self.env, d);
            if d.gone {
                continue;
            }
            progress |= Self::pump_qdb(&mut self.env, d);
            progress |= Self::pump_ctrl(&mut self.env, i, d, &mut triggers);
        }
        for t in triggers {
            progress = true;
            self.route(t);
        }
        // Held calls are decided again (policy may have changed) once their target is up.
        let held = std::mem::take(&mut self.held);
        for (t, target) in held {
            let ready = self.doms.iter().any(|d| d.ready && d.spec.name == target);
            if ready || t.since.elapsed() > TARGET_READY_TIMEOUT {
                progress = true;
                self.route(t);
            } else {
                self.held.push((t, target));
            }
        }
        progress |= self.pump_local();
        let mut i = 0;
        while i < self.relays.len() {
            let Some(r) = self.relays.get_mut(i) else {
                break;
            };
            progress |= r.step(&mut self.env);
            if let Some(how) = r.ended() {
                if let Ended::Broken(why) = how {
                    log(format_args!("dom0 call: {why}"));
                }
                self.relays.swap_remove(i);
                continue;
            }
            i += 1;
        }
        if progress {
            return Ok(());
        }
        let mut idle = true;
        for d in &mut self.doms {
            if let Some(q) = d.qdb.as_mut() {
                idle &= q.link.ready_to_sleep();
            }
            if let Some(c) = d.ctrl.as_mut() {
                idle &= c.link.ready_to_sleep();
            }
        }
        for r in &mut self.relays {
            idle &= r.ready_to_sleep();
        }
        if idle {
            self.env.events.wait(Some(SLICE))?;
        }
        Ok(())
    }

    /// Runs until `stop()` says so; closes every vchan.
    pub fn run(&mut self, stop: &dyn Fn(&Self) -> bool) -> Result<(), platform_api::PlatformError> {
        while !stop(self) {
            self.turn()?;
        }
        for d in &mut self.doms {
            if let Some(q) = d.qdb.take() {
                q.link.close(&mut self.env);
            }
            if let Some(c) = d.ctrl.take() {
                c.link.close(&mut self.env);
            }
        }
        Ok(())
    }
}
