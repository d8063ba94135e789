//! The sim's state: run directory, hosted xenstored, one process and qrexec daemon thread per
//! running qube, crash supervision; everything it starts is stopped and removed on shutdown.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use platform_api::{Access, DomId, Perm, Store, Tx};
use platform_hosted::store::{self as hstore, Daemon as Xenstored};

use crate::admin;
use crate::agent::{ENV_TEMPLATE_DIRS, ENV_VM_DIR, ENV_VM_NAME};
use crate::chan::alive_marker;
use crate::helpers::Helpers;
use crate::registry::{Class, Registry};

/// Most admin requests served at once (a `qvm-run` holds one for the length of its call).
pub(crate) const MAX_ADMIN: usize = 64;
/// How often the supervisor looks at the qube processes.
pub(crate) const SUPERVISE_EVERY: Duration = Duration::from_millis(20);

/// A qube's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Its process runs; its agent has not answered yet.
    Starting,
    /// Its agent answered HELLO.
    Running,
    /// Its process died without being asked to.
    Crashed,
}

impl Power {
    /// The state as `qvm-ls` shows it (a starting qube is `Transient` in Qubes).
    pub fn as_str(self) -> &'static str {
        match self {
            Power::Starting => "Transient",
            Power::Running => "Running",
            Power::Crashed => "Crashed",
        }
    }
}

pub use crate::qrexecd::Cmd;

#[derive(Debug)]
pub(crate) struct Vm {
    pub(crate) domid: DomId,
    pub(crate) power: Power,
    /// dom0 asked it to power off: its exit is a halt, not a crash.
    halting: bool,
    child: Option<Child>,
    cmd: Option<Sender<Cmd>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Its dom0 QubesDB and GUI daemons.
    pub(crate) helpers: Helpers,
}

/// The running sim.
#[derive(Debug)]
pub struct Sim {
    /// The state directory.
    pub state: PathBuf,
    /// The run directory (`QUBES_HOSTED_DIR`).
    pub run: PathBuf,
    exe: PathBuf,
    xs: Mutex<Option<Xenstored>>,
    vms: Mutex<BTreeMap<String, Vm>>,
    changed: Condvar,
    pub(crate) stop: AtomicBool,
    pub(crate) admin_busy: AtomicUsize,
    /// Networked qubes get network namespaces (`QUBES_SIM_NETNS=1`, as root).
    pub(crate) netns: bool,
    /// The vif entries written for running links with a unikernel end, by client name.
    vifs: Mutex<BTreeMap<String, crate::devices::Vif>>,
    /// Frames between qubes and dom0, when `QUBES_SIM_CAPTURE` names a file.
    pub(crate) capture: Option<Arc<crate::capture::Capture>>,
}

impl Sim {
    /// Creates the run directory (replacing one a dead sim left) and starts xenstored.
    pub fn start(state: &Path) -> Result<Arc<Sim>> {
        let run = admin::run_dir(state);
        if run.exists() {
            if UnixStream::connect(admin::socket_path(state)).is_ok() {
                bail!("a sim is already running in {}", state.display());
            }
            std::fs::remove_dir_all(&run)
                .with_context(|| format!("cannot remove stale {}", run.display()))?;
        }
        for d in ["bin", "dom"] {
            std::fs::create_dir_all(run.join(d))
                .with_context(|| format!("cannot create {}", run.display()))?;
        }
        let exe = std::env::current_exe().context("own executable")?;
        for tool in crate::VM_TOOLS {
            std::os::unix::fs::symlink(&exe, run.join("bin").join(tool))?;
        }
        let xs = Xenstored::spawn(&run, &[DomId::DOM0]).context("start xenstored")?;
        let capture = crate::capture::from_env()?;
        let netns = crate::netns::wanted();
        if netns {
            crate::netns::delete_all(state);
        }
        Ok(Arc::new(Sim {
            state: state.to_path_buf(),
            run,
            exe,
            xs: Mutex::new(Some(xs)),
            vms: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            admin_busy: AtomicUsize::new(0),
            netns,
            vifs: Mutex::new(BTreeMap::new()),
            capture,
        }))
    }

    pub(crate) fn vms(&self) -> MutexGuard<'_, BTreeMap<String, Vm>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the sim is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Power states by name (halted qubes are absent).
    pub fn states(&self) -> BTreeMap<String, Power> {
        self.vms()
            .iter()
            .map(|(n, v)| (n.clone(), v.power))
            .collect()
    }

    /// Which qubes run (for policy).
    pub fn running(&self) -> BTreeMap<String, bool> {
        self.states()
            .into_iter()
            .map(|(n, p)| (n, p != Power::Crashed))
            .collect()
    }

    /// Sends `cmd` to the qrexec daemon of `vm`.
    pub fn send(&self, vm: &str, cmd: Cmd) -> Result<()> {
        let vms = self.vms();
        let tx = vms
            .get(vm)
            .and_then(|v| v.cmd.as_ref())
            .ok_or_else(|| anyhow!("qube '{vm}' is not running"))?;
        tx.send(cmd)
            .map_err(|_| anyhow!("qube '{vm}' is going down"))
    }

    /// The daemon thread saw the agent's HELLO.
    pub fn set_running(&self, vm: &str) {
        if let Some(v) = self.vms().get_mut(vm) {
            v.power = Power::Running;
        }
        self.changed.notify_all();
    }

    fn with_store<R>(&self, f: impl FnOnce(&mut hstore::HostedStore) -> R) -> Option<R> {
        hstore::connect(&self.run, DomId::DOM0)
            .ok()
            .map(|mut s| f(&mut s))
    }

    /// Starts `name` (if not running) and waits until its agent answered; returns its domid.
    pub fn start_vm(self: &Arc<Self>, name: &str) -> Result<DomId> {
        let mut reg = Registry::load(&self.state)?;
        if reg.get(name)?.ip.is_empty() && !self.vms().contains_key(name) {
            reg = Registry::update(&self.state, |r| {
                r.ensure_ip(name)?;
                Ok(r.clone())
            })?;
        }
        let d = reg.get(name)?;
        if d.class == Class::AdminVM {
            return Ok(DomId::DOM0);
        }
        let timeout = Duration::from_secs(u64::from(d.prefs.qrexec_timeout.clamp(1, 600)));
        let domid = DomId::new(d.domid).map_err(|e| anyhow!("bad domid of '{name}': {e}"))?;
        let stale = {
            let mut vms = self.vms();
            match vms.get(name).map(|v| v.power) {
                Some(Power::Crashed) => vms.remove(name),
                _ => None,
            }
        };
        // Joined without the lock: the old daemon thread may still take it once.
        if let Some(v) = stale {
            reap(v);
        }
        let mut vms = self.vms();
        if !vms.contains_key(name) {
            if self.stopping() {
                bail!("the sim is shutting down");
            }
            let templates: Vec<PathBuf> = reg
                .template_chain(name)
                .iter()
                .map(|t| self.state.join("vms").join(t))
                .collect();
            let vm = self.spawn_vm(name, domid, &reg, &templates)?;
            vms.insert(name.to_string(), vm);
            drop(vms);
            // dom0 loads a client's rules into its running netvm before it starts.
            if let Err(e) = self.reload_firewall_in(&reg, name) {
                eprintln!("qubes-sim: firewall of '{name}': {e:#}");
            }
            self.plumb(&reg);
            self.sync_vifs();
            vms = self.vms();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match vms.get(name).map(|v| v.power) {
                Some(Power::Running) => return Ok(domid),
                Some(Power::Starting) => {}
                Some(Power::Crashed) | None => bail!("qube '{name}' died while starting"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(vms);
                self.kill_vm(name);
                bail!(
                    "qube '{name}': no qrexec agent after {}s",
                    timeout.as_secs()
                );
            }
            vms = self
                .changed
                .wait_timeout(vms, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Starts the qube's process: the built-in Linux agent, or the hosted executable its
    /// `kernel` property names by absolute path (a unikernel built for the hosted backend).
    fn spawn_vm(
        self: &Arc<Self>,
        name: &str,
        domid: DomId,
        reg: &Registry,
        templates: &[PathBuf],
    ) -> Result<Vm> {
        let prefs = &reg.get(name)?.prefs;
        let (user, kernel) = (prefs.default_user.as_str(), prefs.kernel.as_str());
        {
            let xs = self.xs.lock().unwrap_or_else(|p| p.into_inner());
            let xs = xs.as_ref().ok_or_else(|| anyhow!("xenstored is gone"))?;
            xs.add_domain(domid)?;
            xs.with_server(|s| s.introduce_domain(domid));
        }
        if let Some(c) = &self.capture {
            c.tap_xenstore(&self.run, domid)?;
        }
        self.with_store(|s| -> Result<(), platform_api::StoreError> {
            let home = format!("/local/domain/{domid}");
            s.write(Tx::NONE, &format!("{home}/name"), name.as_bytes())?;
            // The qube owns its control directory, as the toolstack sets it up.
            let own = [Perm {
                domid,
                access: Access::None,
            }];
            for key in ["control", "control/shutdown"] {
                let path = format!("{home}/{key}");
                s.write(Tx::NONE, &path, b"")?;
                s.set_perms(Tx::NONE, &path, &own)?;
            }
            Ok(())
        })
        .ok_or_else(|| anyhow!("cannot reach xenstored"))??;
        let d = reg.get(name)?;
        let unikernel = crate::devices::is_unikernel(d);
        if unikernel {
            if let Some((image, size)) = crate::devices::ensure_private_image(&self.state, d)? {
                self.with_store(|s| crate::devices::write_vbd(s, domid, &image, size))
                    .ok_or_else(|| anyhow!("cannot reach xenstored"))??;
            }
        }
        let vm_dir = self.state.join("vms").join(name);
        std::fs::create_dir_all(vm_dir.join("qubes-rpc"))?;
        std::fs::write(alive_marker(&self.run, domid), name)?;
        let stop = Arc::new(AtomicBool::new(false));
        // QubesDB is served before the qube runs, as qubesdb-daemon starts before unpause.
        let mut helpers = self.start_helpers(reg, name, domid, &stop)?;
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut v = vec![self.run.join("bin")];
                v.extend(std::env::split_paths(&p));
                std::env::join_paths(v)?
            }
            None => self.run.join("bin").into_os_string(),
        };
        let (program, args) = if kernel.starts_with('/') {
            (PathBuf::from(kernel), None)
        } else {
            (self.exe.clone(), Some("vm-agent"))
        };
        let netns = self.netns_for(domid, &stop, &mut helpers)?;
        let mut cmd = match &netns {
            Some(ns) => crate::netns::wrap(ns, &program),
            None => Command::new(&program),
        };
        cmd.args(args);
        // A unikernel's console goes to its log, as xenconsoled writes guest-NAME.log.
        let (out, err) = if unikernel {
            let log = console_log(&self.state, name)?;
            (Stdio::from(log.try_clone()?), Stdio::from(log))
        } else {
            (console()?, Stdio::inherit())
        };
        let child = cmd
            .env(platform_hosted::events::ENV_DIR, &self.run)
            .env(platform_hosted::events::ENV_DOMID, domid.get().to_string())
            .env(ENV_HOSTED_NAME, name)
            .env(ENV_HOSTED_CMDLINE, &d.prefs.kernelopts)
            .env_remove(crate::capture::ENV_CAPTURE)
            .env(ENV_VM_DIR, &vm_dir)
            .env(ENV_VM_NAME, name)
            .env(ENV_TEMPLATE_DIRS, std::env::join_paths(templates)?)
            .env("PATH", path)
            .env_remove(crate::cli::ENV_STATE)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("spawn the qube's process");
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                helpers.stop();
                return Err(e);
            }
        };
        self.start_gui(reg, name, domid, &stop, &mut helpers)?;
        // A qube whose `qrexec` feature is off (a unikernel without an agent) runs at once, as
        // qubesd does not wait for an agent it was told is not there.
        let qrexec = reg
            .get(name)?
            .features
            .get("qrexec")
            .is_none_or(|v| crate::qdb::truthy(Some(v)));
        let (cmd, thread) = if qrexec {
            let (tx, rx) = mpsc::channel();
            let (sim, name, stop, user) = (
                self.clone(),
                name.to_string(),
                stop.clone(),
                user.to_string(),
            );
            let t = std::thread::spawn(move || {
                crate::qrexecd::run(&sim, &name, domid, &user, &stop, &rx)
            });
            (Some(tx), Some(t))
        } else {
            (None, None)
        };
        eprintln!(
            "qubes-sim: started qube '{name}' (domid {domid}, pid {})",
            child.id()
        );
        Ok(Vm {
            domid,
            power: if qrexec {
                Power::Starting
            } else {
                Power::Running
            },
            halting: false,
            child: Some(child),
            cmd,
            stop,
            thread,
            helpers,
        })
    }

    /// Makes the vif entries in xenstore match the running links that have a unikernel end:
    /// written when both ends run, removed when either goes or the netvm changes.
    pub(crate) fn sync_vifs(&self) {
        let Ok(reg) = Registry::load(&self.state) else {
            return;
        };
        let running: BTreeMap<String, (DomId, Option<String>)> = self
            .vms()
            .iter()
            .filter(|(_, v)| v.power != Power::Crashed)
            .map(|(n, v)| (n.clone(), (v.domid, v.helpers.netns.clone())))
            .collect();
        let want = crate::devices::wanted_vifs(&reg, &running);
        let mut have = self.vifs.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = have
            .iter()
            .filter(|(n, v)| want.get(*n) != Some(*v))
            .map(|(n, _)| n.clone())
            .collect();
        for n in stale {
            if let Some(v) = have.remove(&n) {
                let _ = self.with_store(|s| crate::devices::remove_vif(s, &v));
            }
        }
        for (n, v) in want {
            if have.contains_key(&n) {
                continue;
            }
            match self.with_store(|s| crate::devices::write_vif(s, &v)) {
                Some(Ok(())) => {
                    have.insert(n, v);
                }
                Some(Err(e)) => eprintln!("qubes-sim: vif of '{n}': {e:#}"),
                None => eprintln!("qubes-sim: vif of '{n}': cannot reach xenstored"),
            }
        }
    }

    /// The qube's qrexec daemon gave up on its agent (protocol violation, no HELLO): the
    /// qube is killed; the supervisor then reports it and releases the domain.
    pub fn agent_failed(&self, name: &str) {
        // A qube shutting down closes its control channel on its way out: that is not a failure,
        // and killing it would race its clean exit.
        if let Some(c) = self
            .vms()
            .get(name)
            .filter(|v| !v.halting)
            .and_then(|v| v.child.as_ref())
        {
            kill_group(c.id());
        }
    }

    /// Kills a qube's processes and forgets it (a halted qube has no entry).
    pub fn kill_vm(&self, name: &str) -> bool {
        let vm = self.vms().remove(name);
        let Some(vm) = vm else { return false };
        let domid = vm.domid;
        reap(vm);
        self.released(domid);
        self.sync_vifs();
        self.changed.notify_all();
        true
    }

    /// Creates a disposable from `template` and starts it; its name and domid.
    pub fn start_dispvm(self: &Arc<Self>, template: &str) -> Result<(String, DomId)> {
        let name = Registry::update(&self.state, |reg| reg.create_dispvm(template))?;
        match self.start_vm(&name) {
            Ok(d) => Ok((name, d)),
            Err(e) => {
                self.remove_dispvm(&name);
                Err(e)
            }
        }
    }

    /// Kills and removes a disposable (registry entry and directory); other qubes are left
    /// alone.
    pub fn remove_dispvm(&self, name: &str) {
        let disposable = Registry::load(&self.state)
            .ok()
            .and_then(|r| r.get(name).ok().map(|d| d.prefs.auto_cleanup))
            .unwrap_or(false);
        if !disposable {
            return;
        }
        self.kill_vm(name);
        let gone = Registry::update(&self.state, |reg| {
            Ok(reg
                .domains
                .get(name)
                .is_some_and(|d| d.prefs.auto_cleanup)
                .then(|| reg.domains.remove(name)))
        });
        if matches!(gone, Ok(Some(_))) {
            let _ = std::fs::remove_dir_all(self.state.join("vms").join(name));
            eprintln!("qubes-sim: disposable '{name}' removed");
        }
    }

    /// Tells the store and the peers' vchans that `domid` is gone.
    fn released(&self, domid: DomId) {
        let _ = std::fs::remove_file(alive_marker(&self.run, domid));
        if self.netns {
            crate::netns::delete(&crate::netns::ns_name(&self.state, u32::from(domid.get())));
        }
        let _ = self.with_store(|s| s.rm(Tx::NONE, &format!("/local/domain/{domid}")));
        if let Some(xs) = self.xs.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            xs.with_server(|s| s.release_domain(domid));
        }
        for sub in ["evtchn", "gnt"] {
            let _ = std::fs::remove_dir_all(self.run.join(sub).join(format!("d{domid}")));
        }
    }

    /// One supervisor pass: a qube process that exited is a crash.
    pub(crate) fn supervise(&self) {
        let mut dead = Vec::new();
        let mut vms = self.vms();
        for (name, vm) in vms.iter_mut() {
            let Some(child) = vm.child.as_mut() else {
                continue;
            };
            if let Ok(Some(st)) = child.try_wait() {
                if vm.halting {
                    eprintln!("qubes-sim: qube '{name}' (domid {}) halted", vm.domid);
                } else {
                    let tail = console_tail(&self.state, name);
                    let tail = if tail.is_empty() {
                        String::new()
                    } else {
                        format!("; console: {tail}")
                    };
                    eprintln!(
                        "qubes-sim: qube '{name}' (domid {}) crashed: {st}{tail}",
                        vm.domid
                    );
                }
                // Its services die with it, as a domain's do.
                kill_group(child.id());
                vm.power = Power::Crashed;
                vm.child = None;
                vm.cmd = None;
                vm.stop.store(true, Ordering::Relaxed);
                vm.helpers.disconnect();
                dead.push(vm.domid);
            }
        }
        // Released before the lock goes: whoever sees Crashed (qvm-ls, a restart in
        // start_vm that reuses the domid) or waits for a halted qube's entry to go
        // (qvm-shutdown) finds the domain's traces gone, and a late release cannot remove a
        // restarted instance's fresh xenstore home, ports and grants.
        let crashed_now = !dead.is_empty();
        for d in dead {
            self.released(d);
        }
        let halted: Vec<Vm> = {
            let names: Vec<String> = vms
                .iter()
                .filter(|(_, v)| v.halting && v.power == Power::Crashed)
                .map(|(n, _)| n.clone())
                .collect();
            names.iter().filter_map(|n| vms.remove(n)).collect()
        };
        drop(vms);
        // Joined without the lock; a halted qube leaves no entry (Halted).
        let gone = !halted.is_empty() || crashed_now;
        for vm in halted {
            reap(vm);
        }
        if gone {
            self.sync_vifs();
        }
        self.changed.notify_all();
    }

    /// Asks `name` to power off (`control/shutdown`) and waits up to `timeout` for its
    /// process to exit; kills it after that.
    pub fn shutdown_vm(&self, name: &str, timeout: Duration) -> Result<()> {
        let domid = {
            let mut vms = self.vms();
            let vm = vms
                .get_mut(name)
                .ok_or_else(|| anyhow!("qube '{name}' is not running"))?;
            vm.halting = true;
            vm.domid
        };
        let path = format!("/local/domain/{domid}/control/shutdown");
        let _ = self.with_store(|s| s.write(Tx::NONE, &path, b"poweroff"));
        let deadline = Instant::now() + timeout;
        let mut vms = self.vms();
        while vms.get(name).is_some_and(|v| v.domid == domid) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(vms);
                self.kill_vm(name);
                bail!(
                    "qube '{name}' did not shut down within {}s; killed",
                    timeout.as_secs()
                );
            }
            vms = self
                .changed
                .wait_timeout(vms, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Powers every qube off (killing what does not stop within a second), stops xenstored
    /// and removes the run directory.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let names: Vec<(String, DomId)> = self
            .vms()
            .iter()
            .map(|(n, v)| (n.clone(), v.domid))
            .collect();
        for (n, d) in &names {
            if let Some(v) = self.vms().get_mut(n) {
                v.halting = true;
            }
            let path = format!("/local/domain/{d}/control/shutdown");
            let _ = self.with_store(|s| s.write(Tx::NONE, &path, b"poweroff"));
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.vms().is_empty() && Instant::now() < deadline {
            self.supervise();
            std::thread::sleep(SUPERVISE_EVERY);
        }
        let names: Vec<String> = self.vms().keys().cloned().collect();
        for n in names {
            self.kill_vm(&n);
        }
        drop(self.xs.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(c) = &self.capture {
            c.stop();
        }
        if self.netns {
            crate::netns::delete_all(&self.state);
        }
        let _ = std::fs::remove_dir_all(&self.run);
    }

    /// EXEC_CMDLINE through `vm`'s daemon with the data channel to `peer`; the port.
    pub fn exec(&self, vm: &str, peer: DomId, cmdline: &str) -> Result<u32> {
        let (tx, rx) = mpsc::channel();
        self.send(
            vm,
            Cmd::Exec {
                peer,
                cmdline: cmdline.to_string(),
                reply: tx,
            },
        )?;
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(port)) => Ok(port),
            Ok(Err(e)) => bail!("qube '{vm}': {e}"),
            Err(_) => bail!("qube '{vm}': its qrexec daemon did not answer"),
        }
    }
}

/// The name a hosted unikernel finds itself under (contract §2).
pub const ENV_HOSTED_NAME: &str = "QUBES_HOSTED_NAME";
/// Its command line, the `kernelopts` property.
pub const ENV_HOSTED_CMDLINE: &str = "QUBES_HOSTED_CMDLINE";

/// `<state>/vms/<name>/console.log`: a hosted unikernel's stdout and stderr.
pub fn console_log_path(state: &Path, name: &str) -> PathBuf {
    state.join("vms").join(name).join("console.log")
}

/// Opens a fresh console log for a starting qube.
fn console_log(state: &Path, name: &str) -> Result<std::fs::File> {
    let p = console_log_path(state, name);
    std::fs::File::create(&p).with_context(|| format!("cannot create {}", p.display()))
}

/// The last lines of a unikernel's console, for a crash report.
fn console_tail(state: &Path, name: &str) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(console_log_path(state, name)) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut buf = Vec::new();
    let _ = f.take(2048).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A qube's console: our stderr (our stdout is the `ready` line for whoever started us).
fn console() -> Result<Stdio> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
    Ok(Stdio::from(fd))
}

/// Kills a qube's whole process group (it leads its own): its services die with it.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn reap(mut vm: Vm) {
    vm.stop.store(true, Ordering::Relaxed);
    vm.cmd = None;
    if let Some(mut c) = vm.child.take() {
        kill_group(c.id());
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(t) = vm.thread.take() {
        let _ = t.join();
    }
    vm.helpers.stop();
}
