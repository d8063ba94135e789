//! One qubes-sim per test: a private state directory, its daemon, and the dom0 commands.
//! The daemon and any helper processes are stopped on drop; the directory is kept on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{wait_until, DEADLINE};

/// The `qubes-sim` binary next to `bin` (an app's `CARGO_BIN_EXE_*`), built once if missing.
pub fn sim_exe(bin: &str) -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = Path::new(bin).parent().expect("binary path").to_path_buf();
        let exe = dir.join("qubes-sim");
        if !exe.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = Command::new(cargo);
            c.args(["build", "-p", "qubes-sim"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                c.arg("--release");
            }
            let ok = c.status().is_ok_and(|s| s.success());
            assert!(ok && exe.exists(), "cannot build qubes-sim next to {bin}");
        }
        exe
    })
    .clone()
}

/// A sim state directory (`QUBES_SIM_DIR`), its daemon once started, and helper processes.
#[derive(Debug)]
pub struct Sim {
    /// The `qubes-sim` binary.
    pub exe: PathBuf,
    /// The state directory, unique per test and process.
    pub dir: PathBuf,
    daemon: Option<Child>,
    helpers: Vec<Child>,
}

impl Sim {
    /// A fresh `<tmp>/<tag>-<pid>` with an empty `policy.d`, for the sim next to `bin`;
    /// nothing runs yet (create qubes with [`Sim::ok`], then [`Sim::start_daemon`]).
    pub fn new(bin: &str, tag: &str) -> Sim {
        let exe = sim_exe(bin);
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy.d")).unwrap();
        Sim {
            exe,
            dir,
            daemon: None,
            helpers: Vec::new(),
        }
    }

    /// Writes `text` at `rel` below the state directory (parents created), executable if `exec`.
    pub fn write(&self, rel: &str, text: &str, exec: bool) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }

    /// Starts `qubes-sim daemon` and waits for its `ready` line. The confirmation answer is
    /// taken from the state directory only, never from the caller's environment.
    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.dir.join("sim.log")).unwrap();
        let mut daemon = Command::new(&self.exe)
            .args(["daemon", "--stdin-lifeline"])
            .env("QUBES_SIM_DIR", &self.dir)
            .env_remove("QUBES_SIM_CONFIRM_ANSWER")
            .env_remove("QUBES_SIM_ASK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(daemon.stdout.take().unwrap());
        self.daemon = Some(daemon);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(line.starts_with("ready "), "{line}\n{}", self.log());
    }

    /// A `qubes-sim` command (`qvm-*`, dom0's tools) on this state directory, stdin closed.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::null());
        c
    }

    /// Runs a `qubes-sim` command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sim daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sim.log")).unwrap_or_default()
    }

    /// A qube's directory (`vms/<qube>`).
    pub fn vm_dir(&self, qube: &str) -> PathBuf {
        self.dir.join("vms").join(qube)
    }

    /// A qube's console log so far.
    pub fn console(&self, qube: &str) -> String {
        std::fs::read_to_string(self.vm_dir(qube).join("console.log")).unwrap_or_default()
    }

    /// Waits until `what` appears `count` times on `qube`'s console.
    pub fn wait_console(&self, qube: &str, what: &str, count: usize) {
        wait_until(
            &format!("{what:?} ×{count} on {qube}'s console"),
            Duration::from_millis(50),
            || self.console(qube).matches(what).count() >= count,
            || format!("console:\n{}\nsim log:\n{}", self.console(qube), self.log()),
        );
    }

    /// A qube's domain id (`qvm-prefs QUBE qid`).
    pub fn qid(&self, qube: &str) -> String {
        self.ok(&["qvm-prefs", qube, "qid"]).trim().to_string()
    }

    /// `PATH` with the sim's qube-side tools (`run/bin`: `qrexec-client-vm`, ...) first.
    pub fn qube_path(&self) -> std::ffi::OsString {
        let mut v = vec![self.dir.join("run").join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            v.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(v).unwrap()
    }

    /// A command run as a process of `qube` (the environment the sim gives its Linux qubes).
    pub fn in_qube_cmd(&self, qube: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env("QUBES_HOSTED_DIR", self.dir.join("run"))
            .env("QUBES_HOSTED_DOMID", self.qid(qube))
            .env("QUBES_SIM_VM_DIR", self.vm_dir(qube))
            .env("QUBES_SIM_VM_NAME", qube)
            .env("PATH", self.qube_path())
            .env_remove("QUBES_SIM_DIR")
            .stdin(Stdio::null());
        c
    }

    /// Keeps `child` until the sim is dropped, then kills and reaps it.
    pub fn adopt(&mut self, child: Child) {
        self.helpers.push(child);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = self.cmd(&["shutdown"]).status();
            let end = Instant::now() + Duration::from_secs(10);
            while daemon.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits for `child` to exit (polling, so a hung child fails the test instead of hanging it).
pub fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}
