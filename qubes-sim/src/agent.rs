//! The Linux qube's qrexec agent: control vchan server on port 512 for dom0, services run from
//! `qubes-rpc/`, calls from `qrexec-client-vm` taken on the [`crate::local`] socket and relayed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use platform_api::DomId;
use qubes::qrexec::agent::{Event, Limits};
use qubes::qrexec::cmdline::{Command as QCommand, ServiceCall};
use qubes::qrexec::{
    Agent, DataChannel, RequestId, Stream, AGENT_VERSION, CONTROL_PORT, EXIT_NOT_FOUND,
    EXIT_PROBLEM,
};
use vchan::Interest;

use crate::chan::{Hosted, TxQueue, Vchan, CONNECT_TIMEOUT, CONTROL_QUEUE, TICK};
use crate::local;
use crate::pump::{self, ChildSink, Input, Outcome, INPUT_DEPTH};

/// A Linux qube runs more at once than a unikernel: twice the default channels.
pub const LIMITS: Limits = Limits {
    max_channels: 16,
    max_events: 32,
    out_bytes: 16 * 1024,
};

/// The qube's directory (services, agent socket).
pub const ENV_VM_DIR: &str = "QUBES_SIM_VM_DIR";
/// The qube's name.
pub const ENV_VM_NAME: &str = "QUBES_SIM_VM_NAME";
/// The directories of the qube's templates, nearest first (where more services are found).
pub const ENV_TEMPLATE_DIRS: &str = "QUBES_SIM_TEMPLATE_DIRS";
/// Overrides the agent socket path for `qrexec-client-vm`.
pub const ENV_AGENT_SOCK: &str = "QUBES_SIM_AGENT_SOCK";

/// The agent socket of a qube directory.
pub fn agent_socket(vm_dir: &Path) -> PathBuf {
    vm_dir.join("qrexec-agent.sock")
}

enum Msg {
    Call {
        target: String,
        service: String,
        conn: UnixStream,
    },
    Terminated {
        peer: DomId,
        port: u32,
        /// Told once the slot is free.
        ack: Option<Sender<()>>,
    },
    /// dom0 wrote `control/shutdown`.
    Shutdown(String),
}

/// `qubes-sim vm-agent`: runs until dom0 closes the control channel or our parent dies.
pub fn run() -> Result<i32> {
    let vm_dir = PathBuf::from(
        std::env::var_os(ENV_VM_DIR).ok_or_else(|| anyhow!("{ENV_VM_DIR} is not set"))?,
    );
    let name = std::env::var(ENV_VM_NAME).unwrap_or_else(|_| "qube".into());
    let parent = std::os::unix::process::parent_id();
    let mut h = Hosted::from_env()?;
    let mut ctrl = Vchan::serve(&mut h, DomId::DOM0, CONTROL_PORT, 4096, 4096)?;
    let mut agent = Agent::new(LIMITS);
    let (tx, rx) = mpsc::channel::<Msg>();
    let sock = agent_socket(&vm_dir);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).with_context(|| format!("bind {}", sock.display()))?;
    spawn_listener(listener, tx.clone());
    let mut pending: HashMap<RequestId, UnixStream> = HashMap::new();
    let mut inbuf = vec![0u8; 8192];
    let mut in_len = 0;
    let mut out = TxQueue::new(CONTROL_QUEUE);
    spawn_shutdown_watch(&h, tx.clone())?;
    let mut shutdown = false;
    let result = loop {
        if shutdown {
            break Ok(0);
        }
        if std::os::unix::process::parent_id() != parent {
            // dom0 died: a qube does not outlive its hypervisor, nor do its services.
            kill_own_group();
            break Ok(0);
        }
        let mut progress = false;
        if in_len < inbuf.len() {
            match ctrl.read(&mut inbuf[in_len..]) {
                Ok(n) => {
                    in_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => break Ok(0),
                Err(e) => break Err(anyhow!("control vchan: {e}")),
            }
        }
        if in_len > 0 {
            match agent.handle_input(&inbuf[..in_len]) {
                Ok(n) => {
                    inbuf.copy_within(n..in_len, 0);
                    in_len -= n;
                    progress |= n > 0;
                    out.fill(|b| agent.poll_transmit(b));
                }
                Err(e) => break Err(anyhow!("dom0 broke the control protocol: {e}")),
            }
        }
        while let Some(ev) = agent.poll_event() {
            progress = true;
            handle_event(ev, &h, &vm_dir, &name, &tx, &mut pending);
        }
        while let Ok(m) = rx.try_recv() {
            progress = true;
            match m {
                Msg::Call {
                    target,
                    service,
                    mut conn,
                } => match agent.trigger_service(&target, &service) {
                    Ok(id) => {
                        pending.insert(id, conn);
                    }
                    Err(e) => {
                        let _ = writeln!(conn, "ERROR {e}");
                    }
                },
                Msg::Shutdown(how) => {
                    eprintln!("{name}: qrexec-agent: {how} requested");
                    shutdown = true;
                }
                Msg::Terminated { peer, port, ack } => {
                    if let Err(e) = agent.connection_terminated(peer, port) {
                        eprintln!("{name}: qrexec-agent: connection {peer}:{port}: {e}");
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
            }
        }
        out.fill(|b| agent.poll_transmit(b));
        match out.flush(&mut ctrl) {
            Ok(w) => progress |= w,
            Err(vchan::Error::PeerClosed) => break Ok(0),
            Err(e) => break Err(anyhow!("control vchan: {e}")),
        }
        ctrl.tidy(&mut h);
        if !progress {
            let interest = Interest {
                read: true,
                write: out.pending() > 0,
            };
            if let Err(e) = ctrl.wait(&mut h, interest, TICK) {
                break Err(e);
            }
        }
    };
    let _ = std::fs::remove_file(&sock);
    ctrl.shutdown(&mut h);
    result
}

/// Kills our process group (we lead it): the services we started go with us.
fn kill_own_group() {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", std::process::id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Watches `control/shutdown` on a store connection of its own (a watch fires once at once,
/// with the node absent or empty; only a value asks for the shutdown).
fn spawn_shutdown_watch(h: &Hosted, tx: Sender<Msg>) -> Result<()> {
    use platform_api::{Store, Tx};
    let mut store = platform_hosted::store::connect(&h.run, h.me).context("xenstore")?;
    store
        .watch("control/shutdown", "shutdown")
        .context("watch control/shutdown")?;
    std::thread::spawn(move || loop {
        match store.wait_watch(Some(Duration::from_secs(1))) {
            Ok(Some(_)) => {
                let v = store.read(Tx::NONE, "control/shutdown").unwrap_or_default();
                let how = String::from_utf8_lossy(&v).trim().to_string();
                if !how.is_empty() && tx.send(Msg::Shutdown(how)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
    });
    Ok(())
}

/// Request lines read at once; more connections wait in the listen backlog.
const MAX_READERS: usize = 16;

fn spawn_listener(listener: UnixListener, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let readers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            while readers.load(std::sync::atomic::Ordering::SeqCst) >= MAX_READERS {
                std::thread::sleep(Duration::from_millis(5));
            }
            readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (tx, readers) = (tx.clone(), readers.clone());
            // One short-lived thread per request line, so that a slow client cannot stall
            // the others.
            std::thread::spawn(move || {
                let _guard = Release(readers);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(line) = local::read_line(&mut conn) else {
                    return;
                };
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some("CALL"), Some(t), Some(s), None) => {
                        let _ = conn.set_read_timeout(None);
                        let _ = tx.send(Msg::Call {
                            target: t.into(),
                            service: s.into(),
                            conn,
                        });
                    }
                    _ => {
                        let _ = writeln!(conn, "ERROR malformed request");
                    }
                }
            });
        }
    });
}

/// Counts a reader thread out when it ends, however it ends.
struct Release(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn handle_event(
    ev: Event,
    h: &Hosted,
    vm_dir: &Path,
    name: &str,
    tx: &Sender<Msg>,
    pending: &mut HashMap<RequestId, UnixStream>,
) {
    match ev {
        Event::Ready { .. } => {}
        Event::Exec {
            peer,
            port,
            just_exec,
            command,
        } => {
            let (run, me, vm_dir, tx) = (h.run.clone(), h.me, vm_dir.to_path_buf(), tx.clone());
            let name = name.to_string();
            std::thread::spawn(move || {
                if let Err(e) = serve_call(&run, me, peer, port, just_exec, command, &vm_dir) {
                    eprintln!("{name}: qrexec-agent: call from {peer} on port {port}: {e:#}");
                }
                let _ = tx.send(Msg::Terminated {
                    peer,
                    port,
                    ack: None,
                });
            });
        }
        Event::ServiceConnect {
            peer,
            port,
            request_id,
        } => {
            let Some(conn) = pending.remove(&request_id) else {
                return;
            };
            let (run, me, tx, name) = (h.run.clone(), h.me, tx.clone(), name.to_string());
            std::thread::spawn(move || {
                if let Err(e) = relay_call(&run, me, peer, port, conn, &tx) {
                    eprintln!("{name}: qrexec-agent: call to {peer} on port {port}: {e:#}");
                }
            });
        }
        Event::Refused { request_id } => {
            if let Some(mut conn) = pending.remove(&request_id) {
                let _ = writeln!(conn, "REFUSED");
            }
        }
        Event::Overflow { peer, port } => {
            eprintln!("{name}: qrexec-agent: too many calls, dropped one from {peer} port {port}");
        }
    }
}

/// Data vchan ring sizes (both ways), as the C agent asks.
pub const DATA_RING: usize = 65536;

/// Our call was allowed: serve the data vchan for `peer` and relay it to the local client.
fn relay_call(
    run: &Path,
    me: DomId,
    peer: DomId,
    port: u32,
    mut conn: UnixStream,
    tx: &Sender<Msg>,
) -> Result<()> {
    let mut h = Hosted::new(run, me)?;
    let mut v = match Vchan::serve(&mut h, peer, port, DATA_RING, DATA_RING) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(conn, "ERROR {e:#}");
            let _ = tx.send(Msg::Terminated {
                peer,
                port,
                ack: None,
            });
            return Err(e);
        }
    };
    writeln!(conn, "CONNECTED")?;
    let r = local::relay(&mut h, &mut v, peer, &conn);
    v.shutdown(&mut h);
    // The slot is free before the client learns the status: a script's next call finds it.
    let (ack_tx, ack_rx) = mpsc::channel();
    if tx
        .send(Msg::Terminated {
            peer,
            port,
            ack: Some(ack_tx),
        })
        .is_ok()
    {
        let _ = ack_rx.recv_timeout(Duration::from_secs(5));
    }
    local::finish(&conn, &r);
    r.map(|_| ())
}

/// What a command line runs: an executable with its argument, or a shell command.
fn resolve(
    command: &Result<QCommand, qubes::qrexec::cmdline::CmdlineError>,
    vm_dir: &Path,
) -> Result<(Command, String), i32> {
    match command {
        Ok(QCommand::Service(call)) => {
            let mut dirs = vec![vm_dir.to_path_buf()];
            if let Some(t) = std::env::var_os(ENV_TEMPLATE_DIRS) {
                dirs.extend(std::env::split_paths(&t));
            }
            service_command(&dirs, call).map(|c| (c, call.source.clone()))
        }
        Ok(QCommand::Shell { command, .. }) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(command).env("QREXEC_REMOTE_DOMAIN", "dom0");
            Ok((c, "dom0".into()))
        }
        Err(_) => Err(EXIT_PROBLEM),
    }
}

/// Exit status as a shell reports it: the code, or 128 + signal.
pub fn status_code(st: std::process::ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(EXIT_PROBLEM)
}

/// Runs one EXEC_CMDLINE: data vchan client of `peer`, the service's I/O through it.
fn serve_call(
    run: &Path,
    me: DomId,
    peer: DomId,
    port: u32,
    just_exec: bool,
    command: Result<QCommand, qubes::qrexec::cmdline::CmdlineError>,
    vm_dir: &Path,
) -> Result<()> {
    let mut h = Hosted::new(run, me)?;
    let v = Vchan::connect(&mut h, peer, port, CONNECT_TIMEOUT, &|| false)?;
    let chan = DataChannel::service(just_exec, AGENT_VERSION);
    let cmd = resolve(&command, vm_dir).map(|(c, _)| c);
    run_service(h, v, peer, chan, just_exec, cmd, vm_dir)
}

/// The executable for a service call in the first of `dirs` (the qube's own directory, then
/// its templates') whose `qubes-rpc` has `service+arg`, or else `service` with the argument
/// as `$1`; `Err(127)` when none has it.
pub fn service_command(dirs: &[PathBuf], call: &ServiceCall) -> Result<Command, i32> {
    let rpc: Vec<PathBuf> = dirs.iter().map(|d| d.join("qubes-rpc")).collect();
    service_command_in(&rpc, call)
}

/// [`service_command`] over `qubes-rpc` directories themselves (dom0's are configured).
pub fn service_command_in(rpc_dirs: &[PathBuf], call: &ServiceCall) -> Result<Command, i32> {
    let arg = call.argument();
    let found = rpc_dirs.iter().find_map(|rpc| {
        let specific = rpc.join(format!("{}+{arg}", call.service));
        let general = rpc.join(&call.service);
        if !arg.is_empty() && specific.is_file() {
            Some(specific)
        } else if general.is_file() {
            Some(general)
        } else {
            None
        }
    });
    let mut c = match found {
        Some(path) => Command::new(path),
        // Installed in every Linux template: the editor half of qvm-open-in-(d)vm.
        None if call.service == "qubes.OpenInVM" => {
            let exe = std::env::current_exe().map_err(|_| EXIT_NOT_FOUND)?;
            let mut c = Command::new(exe);
            c.arg("vm-file-editor");
            c
        }
        None => return Err(EXIT_NOT_FOUND),
    };
    if !arg.is_empty() {
        c.arg(arg).env("QREXEC_SERVICE_ARGUMENT", arg);
    }
    c.env("QREXEC_REMOTE_DOMAIN", &call.source)
        .env("QREXEC_SERVICE_FULL_NAME", call.service_and_arg());
    Ok(c)
}

/// Runs the service side of a connected data channel: `cmd` (or the exit status that
/// replaces it) with its stdin/stdout/stderr on the channel; kills it if the caller goes.
pub fn run_service(
    mut h: Hosted,
    mut v: Vchan,
    peer: DomId,
    mut chan: DataChannel,
    just_exec: bool,
    cmd: Result<Command, i32>,
    cwd: &Path,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<Input>(INPUT_DEPTH);
    let mut child: Option<Arc<Mutex<Child>>> = None;
    let mut sink = ChildSink::new(None::<std::process::ChildStdin>);
    match cmd {
        Err(code) => {
            let _ = tx.send(Input::Exit(code));
        }
        Ok(mut cmd) => {
            let io = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            cmd.stdin(io(!just_exec))
                .stdout(io(!just_exec))
                .stderr(io(!just_exec))
                .current_dir(cwd);
            match cmd.spawn() {
                Err(_) => {
                    let _ = tx.send(Input::Exit(EXIT_NOT_FOUND));
                }
                Ok(mut c) => {
                    sink = ChildSink::new(c.stdin.take());
                    let readers: Vec<_> = [
                        c.stdout
                            .take()
                            .map(|o| pump::spawn_reader(o, Stream::Stdout, tx.clone())),
                        c.stderr
                            .take()
                            .map(|e| pump::spawn_reader(e, Stream::Stderr, tx.clone())),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    let c = Arc::new(Mutex::new(c));
                    child = Some(c.clone());
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        for r in readers {
                            let _ = r.join();
                        }
                        let code = loop {
                            let st = c.lock().unwrap_or_else(|p| p.into_inner()).try_wait();
                            match st {
                                Ok(Some(st)) => break status_code(st),
                                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                                Err(_) => break EXIT_PROBLEM,
                            }
                        };
                        let _ = tx.send(Input::Exit(code));
                    });
                }
            }
        }
    }
    drop(tx);
    let res = pump::pump(&mut h, &mut v, peer, &mut chan, &rx, &mut sink, &|| false);
    if !matches!(res, Ok(Outcome::Exit(_))) {
        if let Some(c) = &child {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    drop(v);
    res.map(|_| ())
}
