//! Shared test helpers: a private state directory and running `qubes-sim` commands in it.
#![allow(dead_code)]

pub mod sim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const EXE: &str = env!("CARGO_BIN_EXE_qubes-sim");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh state directory, removed on drop.
pub struct State {
    pub dir: PathBuf,
}

impl State {
    pub fn new(tag: &str) -> State {
        let dir = std::env::temp_dir().join(format!(
            "qsim-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        State { dir }
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(EXE);
        c.arg(prog)
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::null());
        c
    }

    /// Runs `prog args…`; returns (status, stdout, stderr).
    pub fn run(&self, prog: &str, args: &[&str]) -> (i32, String, String) {
        let out: Output = self.cmd(prog).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, prog: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(prog, args);
        assert_eq!(code, 0, "{prog} {args:?} failed: {err}");
        out
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // An empty path: handed on by `Sim::stop`.
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
