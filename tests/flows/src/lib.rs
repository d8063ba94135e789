//! Helpers for the flow tests: where the built artifacts are, and a private simulated dom0
//! whose `qvm-*` stand-ins are on `PATH` the way they are in a real dom0.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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
    repo_root().join("target/rpm")
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
