//! A running sim for the QubesDB and GUI tests: `qubes-sim daemon` with a lifeline, stopped
//! on drop; processes "inside" a qube get its hosted environment.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{State, EXE};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Sim {
    pub state: State,
    daemon: Option<Child>,
    pub log: PathBuf,
}

impl Sim {
    /// A sim over `state` (qubes already created), booted.
    pub fn boot(state: State) -> Sim {
        Self::boot_with(state, &[])
    }

    /// [`Sim::boot`] with extra environment for the daemon.
    pub fn boot_with(state: State, env: &[(&str, &str)]) -> Sim {
        let log = state.path().join("sim.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut child = state
            .cmd("daemon")
            .envs(env.iter().copied())
            .arg("--stdin-lifeline")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(f)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let sim = Sim {
            state,
            daemon: Some(child),
            log,
        };
        let line = lines(out)
            .recv_timeout(DEADLINE)
            .expect("sim did not get ready");
        assert!(line.starts_with("ready "), "{line}");
        sim
    }

    pub fn path(&self) -> &Path {
        self.state.path()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ok(&self, prog: &str, args: &[&str]) -> String {
        let (code, out, err) = self.state.run(prog, args);
        assert_eq!(
            code,
            0,
            "{prog} {args:?} failed: {err}\nsim log:\n{}",
            self.log()
        );
        out
    }

    pub fn domid(&self, vm: &str) -> String {
        self.ok("qvm-prefs", &[vm, "qid"]).trim().to_string()
    }

    /// A process inside `vm`: the environment its agent gives to its own children.
    pub fn in_vm(&self, vm: &str, prog: &str) -> Command {
        let mut c = Command::new(EXE);
        c.arg(prog)
            .env("QUBES_HOSTED_DIR", self.run_dir())
            .env("QUBES_HOSTED_DOMID", self.domid(vm))
            .env("QUBES_SIM_VM_DIR", self.path().join("vms").join(vm))
            .env_remove("QUBES_SIM_DIR")
            .stdin(Stdio::null());
        c
    }

    /// Runs a tool inside `vm`; (status, stdout, stderr).
    pub fn run_in(&self, vm: &str, prog: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.in_vm(vm, prog).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Sim {
    /// Shuts the sim down (as on drop) and hands back its state directory, kept.
    pub fn stop(mut self) -> State {
        self.halt();
        let dir = std::mem::take(&mut self.state.dir);
        State { dir }
    }

    fn halt(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = self.state.run("shutdown", &[]);
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The lines of `out`, as they come.
pub fn lines(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines until none came for `quiet` (at most `DEADLINE` in all).
pub fn drain(rx: &mpsc::Receiver<String>, quiet: Duration) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    let mut v = Vec::new();
    while Instant::now() < end {
        match rx.recv_timeout(quiet) {
            Ok(l) => v.push(l),
            Err(_) => break,
        }
    }
    v
}

/// A child killed on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
