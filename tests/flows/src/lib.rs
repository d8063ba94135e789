//! Helpers for the flow tests: where the built artifacts are, and a private simulated dom0
//! whose `qvm-*` stand-ins are on `PATH` the way they are in a real dom0.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/flows is two levels down")
        .to_path_buf()
}

/// The cargo target directory of this build.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("target"),
    }
}

/// A binary of the workspace built by the same `cargo test` run (debug profile).
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = target_dir().join("debug").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p {name}` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// The directory holding the RPMs `cargo xtask rpm` (or the package checks) built.
pub fn rpm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLOWS_RPM_DIR") {
        return PathBuf::from(d);
    }
    let built = repo_root().join("target/rpm");
    let checked = repo_root().join("target/rpm-check/a");
    if !built.is_dir() && checked.is_dir() {
        // `cargo xtask rpm check` leaves its packages here.
        return checked;
    }
    built
}

/// The built `.rpm` of package `name`.
pub fn built_rpm(name: &str) -> PathBuf {
    let dir = rpm_dir();
    let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{name}-"))
                    && n.ends_with(".noarch.rpm")
                    && !n[name.len() + 1..].starts_with(|c: char| c.is_ascii_alphabetic())
            })
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {name} RPM in {}: run `cargo xtask rpm` first (cargo xtask test does)",
            dir.display()
        )
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A private simulated dom0: a state directory and a `bin/` of `qvm-*` links to `qubes-sim`.
#[derive(Debug)]
pub struct Dom0 {
    /// Scratch directory (state, links, scratch roots), removed on drop.
    pub dir: PathBuf,
}

/// The dom0 commands a user types.
pub const DOM0_COMMANDS: &[&str] = &[
    "qvm-create",
    "qvm-prefs",
    "qvm-features",
    "qvm-volume",
    "qvm-ls",
    "qvm-remove",
    "qvm-start",
    "qvm-shutdown",
    "qvm-kill",
    "qvm-run",
    "qvm-firewall",
    "qvm-tags",
    "qvm-gui-input",
    "qrexec-client",
];

impl Dom0 {
    /// A fresh dom0 named after the test.
    pub fn new(tag: &str) -> Dom0 {
        let dir = std::env::temp_dir().join(format!(
            "flows-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let sim = workspace_bin("qubes-sim");
        for c in DOM0_COMMANDS {
            std::os::unix::fs::symlink(&sim, dir.join("bin").join(c)).unwrap();
        }
        Dom0 { dir }
    }

    /// `PATH` with the dom0 commands first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.dir.join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(paths).unwrap()
    }

    /// A command run as in a dom0 terminal.
    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env("PATH", self.path_env())
            .env("QUBES_SIM_DIR", self.dir.join("state"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `prog args…`; returns (exit status, stdout, stderr).
    pub fn run(&self, prog: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(prog).args(args).output().expect("command starts");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, prog: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
        let p = prog.as_ref().to_owned();
        let (code, out, err) = self.run(&p, args);
        assert_eq!(code, 0, "{p:?} {args:?} failed ({code}): {err}{out}");
        out
    }
}

impl Drop for Dom0 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A hosted unikernel binary of the workspace (`cargo test --workspace` builds them); built
/// with `cargo build -p NAME --bin NAME` if it is missing (e.g. `cargo test -p flows` alone).
pub fn unikernel_bin(name: &str) -> PathBuf {
    let p = target_dir().join("debug").join(name);
    if !p.is_file() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", name, "--bin", name])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building {name} failed");
    }
    workspace_bin(name)
}

/// Whether this process runs as root (network namespaces and TAP devices need it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether a program is on `PATH`.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Waits up to `limit` for `f`; panics with `what` and `diag()` when it never holds.
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {limit:?}: {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The template every AppVM of the flows is based on.
pub const TEMPLATE: &str = "debian-12";

/// The bundle as a user installs it on a simulated Qubes: the dom0 package in a scratch root
/// (dom0's `/`), the template package in template `debian-12`'s own directory (the template's
/// `/`, which its AppVMs see as `$QUBES_SIM_TEMPLATE_DIRS`), qubes `sys-net` (a Linux netvm) and
/// `work` (an AppVM of the template), and, once started, the sim daemon reading policy and dom0
/// services from the installed `/etc/qubes/policy.d` and `/etc/qubes-rpc`.
#[derive(Debug)]
pub struct Installed {
    /// The simulated dom0 (state directory, `qvm-*` links).
    pub dom0: Dom0,
    /// dom0's scratch root with the dom0 package installed.
    pub root: PathBuf,
    /// The template's directory with the template package installed.
    pub template_root: PathBuf,
    /// Whether the qubes got network namespaces (root only).
    pub netns: bool,
    daemon: Option<Child>,
    /// Background commands started through `qvm-run`; killed on drop.
    procs: Vec<Child>,
    /// Pid files written by servers started in qubes; those processes are ended on drop.
    pid_files: Vec<PathBuf>,
}

/// How long a flow waits for any one condition.
pub const DEADLINE: Duration = Duration::from_secs(30);

fn rpm_install(dom0: &Dom0, root: &Path, rpm: &Path) {
    let root_s = root.to_str().expect("UTF-8 path");
    dom0.ok("rpm", &["--root", root_s, "--initdb"]);
    dom0.ok(
        "rpm",
        &[
            "--root",
            root_s,
            "-i",
            "--nodeps",
            "--noscripts",
            rpm.to_str().expect("UTF-8 path"),
        ],
    );
}

impl Installed {
    /// Installs both packages and creates the template, `sys-net` and `work` (not started).
    pub fn new(tag: &str) -> Installed {
        let dom0 = Dom0::new(tag);
        let root = dom0.dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        rpm_install(&dom0, &root, &built_rpm("qubes-unikernel-bundle"));
        dom0.ok(
            "qvm-create",
            &["--class", "TemplateVM", "--label", "black", TEMPLATE],
        );
        // The sim's own policy directory (empty: the installed files are all the policy).
        std::fs::create_dir_all(dom0.dir.join("state/policy.d")).unwrap();
        let template_root = dom0.dir.join("state/vms").join(TEMPLATE);
        std::fs::create_dir_all(&template_root).unwrap();
        rpm_install(
            &dom0,
            &template_root,
            &built_rpm("qubes-unikernel-bundle-vm"),
        );
        dom0.ok(
            "qvm-create",
            &["--class", "StandaloneVM", "--label", "red", "sys-net"],
        );
        dom0.ok("qvm-prefs", &["sys-net", "provides_network", "True"]);
        dom0.ok(
            "qvm-create",
            &["--template", TEMPLATE, "--label", "blue", "work"],
        );
        Installed {
            dom0,
            root,
            template_root,
            netns: false,
            daemon: None,
            procs: Vec::new(),
            pid_files: Vec::new(),
        }
    }

    /// The sim's state directory.
    pub fn state(&self) -> PathBuf {
        self.dom0.dir.join("state")
    }

    /// A qube's directory (its files; the sim's stand-in for its private volume).
    pub fn vm_dir(&self, vm: &str) -> PathBuf {
        self.state().join("vms").join(vm)
    }

    /// A command in a dom0 terminal: the sim's `qvm-*`, then the installed `/usr/bin`.
    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut paths = vec![self.dom0.dir.join("bin"), self.root.join("usr/bin")];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        let mut c = Command::new(prog);
        c.env("PATH", std::env::join_paths(paths).unwrap())
            .env("QUBES_SIM_DIR", self.state())
            .stdin(Stdio::null());
        c
    }

    /// Runs a dom0 command; (exit status, stdout, stderr).
    pub fn run(&self, prog: &str, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(prog).args(args).output().expect("command starts");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs a dom0 command and asserts success; its stdout.
    pub fn ok(&self, prog: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(prog, args);
        assert_eq!(
            code,
            0,
            "{prog} {args:?} failed ({code}): {err}{out}\n{}",
            self.diag()
        );
        out
    }

    /// The installed `qubes-unikernel-setup --template debian-12` for the given roles, each
    /// `(role, kernel, kernelopts)` with the kernel an absolute path (a hosted build).
    pub fn setup(&self, roles: &[(&str, &Path, &str)]) -> String {
        let setup = self.root.join("usr/bin/qubes-unikernel-setup");
        let mut args: Vec<String> = vec!["--template".into(), TEMPLATE.into()];
        for (role, kernel, opts) in roles {
            args.push("--only".into());
            args.push((*role).into());
            args.push("--kernel".into());
            args.push(format!("{role}={}", kernel.display()));
            if !opts.is_empty() {
                args.push("--kernelopts".into());
                args.push(format!("{role}={opts}"));
            }
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(setup.to_str().unwrap(), &a)
    }

    /// Starts the sim daemon; `netns` gives every qube a network namespace (root only).
    pub fn start(&mut self, netns: bool) {
        let sim = workspace_bin("qubes-sim");
        let log = std::fs::File::create(self.dom0.dir.join("sim.log")).unwrap();
        // The sim hands its PATH to the qubes it starts: the template's /usr/bin goes first,
        // where an AppVM finds its template's programs.
        let mut paths = vec![self.template_root.join("usr/bin")];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        let mut c = Command::new(sim);
        c.args(["daemon", "--stdin-lifeline"])
            .env("QUBES_SIM_DIR", self.state())
            .env(
                "QUBES_SIM_POLICY_DIRS",
                self.root.join("etc/qubes/policy.d"),
            )
            .env("QUBES_SIM_DOM0_RPC", self.root.join("etc/qubes-rpc"))
            .env(
                "QUBES_UNIKERNEL_FIREWALL_DIR",
                self.root.join("etc/qubes/unikernel-firewall"),
            )
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env_remove("QUBES_SIM_ASK")
            .env_remove("QUBES_SIM_CONFIRM_ANSWER")
            .env_remove("QUBES_SIM_CAPTURE")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if netns {
            c.env("QUBES_SIM_NETNS", "1");
        } else {
            c.env_remove("QUBES_SIM_NETNS");
        }
        let mut daemon = c.spawn().expect("qubes-sim daemon starts");
        let out = daemon.stdout.take().unwrap();
        self.daemon = Some(daemon);
        self.netns = netns;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(DEADLINE).unwrap_or_default();
        assert!(
            ready.starts_with("ready "),
            "the sim did not get ready: {ready:?}\n{}",
            self.diag()
        );
    }

    /// `qvm-run -p VM CMD` (a shell command line in the qube); (status, stdout, stderr).
    pub fn in_vm(&self, vm: &str, cmd: &str) -> (i32, String, String) {
        self.run("qvm-run", &["-p", vm, cmd])
    }

    /// `qvm-run -p VM CMD` that must succeed; its stdout.
    pub fn in_vm_ok(&self, vm: &str, cmd: &str) -> String {
        self.ok("qvm-run", &["-p", vm, cmd])
    }

    /// `qvm-run -p VM CMD` in the background (stdout piped); killed on drop. Returns its index
    /// for [`Installed::proc`].
    pub fn spawn_in(&mut self, vm: &str, cmd: &str) -> usize {
        let c = self
            .cmd("qvm-run")
            .args(["-p", vm, cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qvm-run starts");
        self.procs.push(c);
        self.procs.len() - 1
    }

    /// A background command started by [`Installed::spawn_in`].
    pub fn proc(&mut self, i: usize) -> &mut Child {
        &mut self.procs[i]
    }

    /// A server started in a qube writes its pid here (`echo $$ > FILE; exec …`); it is
    /// ended when the flow ends.
    pub fn pid_file(&mut self, vm: &str, name: &str) -> PathBuf {
        let p = self.vm_dir(vm).join(name);
        self.pid_files.push(p.clone());
        p
    }

    /// A unikernel's console log.
    pub fn console(&self, vm: &str) -> String {
        std::fs::read_to_string(self.vm_dir(vm).join("console.log")).unwrap_or_default()
    }

    /// The sim's log (its stderr, with the Linux qubes' output).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dom0.dir.join("sim.log")).unwrap_or_default()
    }

    /// The sim's log and every unikernel console, for failure messages.
    pub fn diag(&self) -> String {
        let mut s = format!("--- sim log ---\n{}", tail(&self.log(), 60));
        if let Ok(rd) = std::fs::read_dir(self.state().join("vms")) {
            for e in rd.flatten() {
                let c = e.path().join("console.log");
                if let Ok(text) = std::fs::read_to_string(&c) {
                    s.push_str(&format!(
                        "\n--- console of {} ---\n{}",
                        e.file_name().to_string_lossy(),
                        tail(&text, 40)
                    ));
                }
            }
        }
        s
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Installed {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for f in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let _ = Command::new("kill")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = self
                .cmd(workspace_bin("qubes-sim"))
                .arg("shutdown")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            drop(d.stdin.take());
            let end = Instant::now() + DEADLINE;
            while d.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Prints a flow's one summary line straight to stdout, so it shows in `cargo test` output
/// (libtest captures only the print macros).
pub fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
