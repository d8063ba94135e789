//! dom0's qrexec daemon for one qube (a sim thread, control vchan client on port 512) and the
//! routing of its calls: policy, then EXEC_CMDLINE to the target and SERVICE_CONNECT, or refusal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use platform_api::DomId;
use qubes::policy::{CallTarget, Decision, Request};
use qubes::qrexec::cmdline::ServiceCall;
use qubes::qrexec::daemon::{Event, Limits};
use qubes::qrexec::data::{Handshake, Limits as DataLimits, Role};
use qubes::qrexec::{Daemon, DataChannel, RequestId, CONTROL_PORT, DAEMON_VERSION};
use vchan::Interest;

use crate::agent::{run_service, service_command_in};
use crate::chan::{Hosted, TxQueue, Vchan, CONNECT_TIMEOUT, CONTROL_QUEUE, TICK};
use crate::daemon::Sim;
use crate::registry::Registry;

/// What a qube's qrexec daemon thread is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// EXEC_CMDLINE to the agent, data channel to `peer`; answers the allocated port.
    Exec {
        /// The other end of the data channel.
        peer: DomId,
        /// `user:command`.
        cmdline: String,
        /// Where the port (or why not) goes.
        reply: Sender<Result<u32, String>>,
    },
    /// SERVICE_CONNECT for the agent's call `id`.
    Connect {
        /// The service's domain.
        peer: DomId,
        /// The data port.
        port: u32,
        /// The agent's request.
        id: RequestId,
    },
    /// Allocate a data port with dom0 as the peer and send SERVICE_CONNECT for call `id`
    /// (a call to a dom0 service); answers the port.
    ConnectDom0 {
        /// The agent's request.
        id: RequestId,
        /// Where the port (or why not) goes.
        reply: Sender<Result<u32, String>>,
    },
    /// SERVICE_REFUSED for the agent's call `id`.
    Refuse {
        /// The agent's request.
        id: RequestId,
    },
}

/// Calls of one qube being routed at once; more are refused (a flooding agent cannot make
/// dom0 spawn without bound).
const MAX_ROUTING: usize = 16;

/// The daemon thread's body; returns when the qube goes away or the sim stops.
pub fn run(
    sim: &Arc<Sim>,
    name: &str,
    domid: DomId,
    user: &str,
    stop: &AtomicBool,
    cmds: &Receiver<Cmd>,
) {
    if let Err(e) = serve(sim, name, domid, user, stop, cmds) {
        if !stop.load(Ordering::Relaxed) && !sim.stopping() {
            eprintln!("qubes-sim: qrexec-daemon for '{name}': {e:#}");
            sim.agent_failed(name);
        }
    }
}

fn serve(
    sim: &Arc<Sim>,
    name: &str,
    domid: DomId,
    user: &str,
    stop: &AtomicBool,
    cmds: &Receiver<Cmd>,
) -> Result<()> {
    let mut h = Hosted::new(&sim.run, DomId::DOM0)?;
    let timeout = Duration::from_secs(60);
    let quit = || stop.load(Ordering::Relaxed) || sim.stopping();
    let mut v = Vchan::connect(&mut h, domid, CONTROL_PORT, timeout, &quit)?;
    let mut d = Daemon::new(Limits::DEFAULT);
    d.set_default_user(user).map_err(|e| anyhow!("{e}"))?;
    let routing = Arc::new(AtomicUsize::new(0));
    let mut inbuf = vec![0u8; 8192];
    let mut in_len = 0;
    let mut out = TxQueue::new(CONTROL_QUEUE);
    while !quit() {
        let mut progress = false;
        if in_len < inbuf.len() {
            match v.read(&mut inbuf[in_len..]) {
                Ok(n) => {
                    in_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => bail!("the agent closed the control channel"),
                Err(e) => bail!("control vchan: {e}"),
            }
        }
        if in_len > 0 {
            let n = d
                .handle_input(&inbuf[..in_len])
                .map_err(|e| anyhow!("agent broke the protocol: {e}"))?;
            inbuf.copy_within(n..in_len, 0);
            in_len -= n;
            progress |= n > 0;
            out.fill(|b| d.poll_transmit(b));
        }
        while let Some(ev) = d.poll_event() {
            progress = true;
            match ev {
                Event::Ready { .. } => sim.set_running(name),
                Event::Trigger {
                    target,
                    service,
                    argument,
                    request_id,
                    ..
                } => {
                    if routing.fetch_add(1, Ordering::SeqCst) >= MAX_ROUTING {
                        routing.fetch_sub(1, Ordering::SeqCst);
                        d.refuse(request_id).map_err(|e| anyhow!("{e}"))?;
                        continue;
                    }
                    let call = Call {
                        source: name.to_string(),
                        source_id: domid,
                        target,
                        service,
                        argument,
                        id: request_id,
                    };
                    let (sim, routing) = (sim.clone(), routing.clone());
                    std::thread::spawn(move || {
                        route(&sim, call);
                        routing.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Event::TriggerRefused { reason, .. } => {
                    eprintln!("qubes-sim: qrexec: call from '{name}' refused: {reason:?}");
                }
                Event::ConnectionTerminated { released: true, .. } if disposable(sim, name) => {
                    // A disposable serves one call; it goes when that call's channel closes.
                    let (sim, name) = (sim.clone(), name.to_string());
                    std::thread::spawn(move || sim.remove_dispvm(&name));
                }
                Event::ConnectionTerminated { .. } => {}
            }
        }
        while let Ok(cmd) = cmds.try_recv() {
            progress = true;
            match cmd {
                Cmd::Exec {
                    peer,
                    cmdline,
                    reply,
                } => {
                    let r = d.exec(peer, cmdline.as_bytes(), false);
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                Cmd::Connect { peer, port, id } => {
                    d.service_connect(peer, port, id)
                        .map_err(|e| anyhow!("{e}"))?;
                }
                Cmd::Refuse { id } => d.refuse(id).map_err(|e| anyhow!("{e}"))?,
                Cmd::ConnectDom0 { id, reply } => {
                    let r = match d.allocate_port(DomId::DOM0) {
                        Some(port) => match d.service_connect(DomId::DOM0, port, id) {
                            Ok(()) => Ok(port),
                            Err(e) => {
                                d.release_port(port, 0);
                                Err(e.to_string())
                            }
                        },
                        None => Err("no free data port".to_string()),
                    };
                    let _ = reply.send(r);
                }
            }
        }
        out.fill(|b| d.poll_transmit(b));
        progress |= out
            .flush(&mut v)
            .map_err(|e| anyhow!("control vchan: {e}"))?;
        if !progress {
            let interest = Interest {
                read: true,
                write: out.pending() > 0,
            };
            v.wait(&mut h, interest, TICK)?;
        }
    }
    Ok(())
}

fn disposable(sim: &Sim, name: &str) -> bool {
    Registry::load(&sim.state)
        .ok()
        .and_then(|r| r.get(name).ok().map(|d| d.prefs.auto_cleanup))
        .unwrap_or(false)
}

/// One call a qube asked for.
#[derive(Debug)]
struct Call {
    source: String,
    source_id: DomId,
    target: String,
    service: String,
    argument: String,
    id: RequestId,
}

fn route(sim: &Arc<Sim>, call: Call) {
    let what = format!(
        "{}+{} from '{}' to '{}'",
        call.service, call.argument, call.source, call.target
    );
    let r = decide_and_connect(sim, &call).and_then(|to| match to {
        Routed::Qube(peer, port) => sim.send(
            &call.source,
            Cmd::Connect {
                peer,
                port,
                id: call.id,
            },
        ),
        Routed::Dom0(user) => dom0_service(sim, &call, user),
    });
    if let Err(e) = r {
        eprintln!("qubes-sim: qrexec: {what} refused: {e:#}");
        let _ = sim.send(&call.source, Cmd::Refuse { id: call.id });
    }
}

/// Where an allowed call goes.
enum Routed {
    /// A qube's agent got EXEC_CMDLINE; its domid and the data port.
    Qube(DomId, u32),
    /// A dom0 service, run as this user.
    Dom0(String),
}

/// Runs a dom0 service (from [`crate::policy::dom0_rpc_dirs`], as Qubes runs
/// `/etc/qubes-rpc/<service>` in dom0) for the caller: its daemon allocates the
/// port and sends SERVICE_CONNECT with dom0 as the peer; dom0 is the data-vchan client and
/// reads the caller's HELLO first, as the C daemon does.
fn dom0_service(sim: &Arc<Sim>, call: &Call, user: String) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    sim.send(
        &call.source,
        Cmd::ConnectDom0 {
            id: call.id,
            reply: tx,
        },
    )?;
    let port = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => bail!("{e}"),
        Err(_) => bail!("the caller's qrexec daemon did not answer"),
    };
    // From here on the caller has been told to connect: failures end the data channel.
    let sc = ServiceCall {
        user,
        nogui: true,
        service: call.service.clone(),
        argument: Some(call.argument.clone()),
        source: call.source.clone(),
    };
    let dirs = crate::policy::dom0_rpc_dirs(&sim.state);
    let run = || -> Result<()> {
        let mut h = Hosted::new(&sim.run, DomId::DOM0)?;
        let stop = || sim.stopping();
        let v = Vchan::connect(&mut h, call.source_id, port, CONNECT_TIMEOUT, &stop)?;
        let chan = DataChannel::new(
            Role::Service { just_exec: false },
            Handshake::ReadFirst,
            DAEMON_VERSION,
            DataLimits::DEFAULT,
        );
        let cmd = service_command_in(&dirs, &sc);
        run_service(h, v, call.source_id, chan, false, cmd, &sim.state)
    };
    if let Err(e) = run() {
        eprintln!(
            "qubes-sim: dom0 service {}+{} for '{}': {e:#}",
            call.service, call.argument, call.source
        );
    }
    Ok(())
}

/// Evaluates policy, starts the target if allowed, sends it EXEC_CMDLINE; the target's domid
/// and the data port.
fn decide_and_connect(sim: &Arc<Sim>, call: &Call) -> Result<Routed> {
    let reg = Registry::load(&sim.state)?;
    let system = crate::policy::system(&reg, &sim.running());
    let policy = crate::policy::load(&sim.state).map_err(|e| anyhow!("policy: {e}"))?;
    let req = Request {
        service: &call.service,
        argument: &call.argument,
        source: &call.source,
        target: &call.target,
    };
    let (target, user, autostart) = match policy.evaluate(&system, &req) {
        Decision::Allow {
            target,
            user,
            autostart,
            ..
        } => (target, user, autostart),
        Decision::Ask {
            targets,
            default_target,
            user,
            autostart,
            ..
        } => {
            let q = format!(
                "{}+{} from '{}' to '{}'",
                call.service, call.argument, call.source, call.target
            );
            let t = crate::policy::ask(&sim.state, &q, &targets, default_target.as_ref())
                .ok_or_else(|| anyhow!("the user refused"))?;
            (t, user, autostart)
        }
        Decision::Deny { reason, .. } => bail!("{reason}"),
    };
    let (name, peer) = match target {
        CallTarget::Dom0 => return Ok(Routed::Dom0(user.unwrap_or_else(|| "root".into()))),
        CallTarget::Qube(n) => {
            let running = sim.states().get(&n) == Some(&crate::daemon::Power::Running);
            if !running && !autostart {
                bail!("target '{n}' is not running and autostart=no");
            }
            let peer = sim.start_vm(&n)?;
            (n, peer)
        }
        CallTarget::NewDisposable(t) => sim.start_dispvm(&t)?,
    };
    let user = user.unwrap_or_else(|| "DEFAULT".into());
    let cmdline = format!(
        "{user}:QUBESRPC {}+{} {}",
        call.service, call.argument, call.source
    );
    match sim.exec(&name, call.source_id, &cmdline) {
        Ok(port) => Ok(Routed::Qube(peer, port)),
        Err(e) => {
            // A disposable made for this call must not outlive its failure.
            sim.remove_dispvm(&name);
            Err(e)
        }
    }
}
