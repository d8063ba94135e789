//! Runs simulated domains for the interop tests and benches: a private run directory under
//! /dev/shm, the hosted xenstored, and peer processes with their output; everything is killed
//! and removed on drop, also when a check fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::interop_build::Artifacts;

/// Which vchan implementation a peer process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// Our vchan crate (the Rust example peer).
    Ours,
    /// Debian's libxenvchan over the shims (the C peer).
    Libxenvchan,
}

impl Impl {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Libxenvchan => "libxenvchan",
        }
    }
}

/// A run directory with a xenstored; removed (and the daemon killed) on drop.
#[derive(Debug)]
pub struct Sim {
    pub run_dir: PathBuf,
    art: Artifacts,
    daemon: Option<Child>,
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Sim {
    /// Starts a xenstored serving domains `doms` in a fresh run directory.
    pub fn start(art: &Artifacts, doms: &[u16]) -> Result<Sim> {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let run_dir = base.join(format!("qubes-interop-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let mut sim = Sim {
            run_dir,
            art: art.clone(),
            daemon: None,
        };
        let mut cmd = Command::new(&art.xenstored);
        let list: Vec<String> = doms.iter().map(u16::to_string).collect();
        cmd.arg(&sim.run_dir).arg("--domains").arg(list.join(","));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", art.xenstored))?;
        sim.daemon = Some(child);
        for d in doms {
            let sock = sim.run_dir.join("xenstore").join(format!("d{d}.sock"));
            wait_for(Duration::from_secs(10), || sock.exists())
                .with_context(|| format!("xenstored socket {sock:?}"))?;
        }
        Ok(sim)
    }

    /// Starts a peer of implementation `which` as domain `dom` with the vchan_peer arguments.
    /// `cpu`: pin the process to that CPU (with `taskset`).
    pub fn spawn(
        &self,
        which: Impl,
        dom: u16,
        args: &[String],
        cpu: Option<usize>,
    ) -> Result<PeerProc> {
        let prog = match which {
            Impl::Ours => &self.art.rust_peer,
            Impl::Libxenvchan => &self.art.c_peer,
        };
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.arg("-c").arg(c.to_string()).arg(prog);
                t
            }
            None => Command::new(prog),
        };
        cmd.args(args)
            .env("QUBES_HOSTED_DIR", &self.run_dir)
            .env("QUBES_HOSTED_DOMID", dom.to_string())
            .env("LD_LIBRARY_PATH", &self.art.shim_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {prog:?}"))?;
        let (tx, lines) = channel();
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).take(1 << 20).read_to_string(&mut s);
            if let Ok(mut g) = sink.lock() {
                g.push_str(&s);
            }
        });
        Ok(PeerProc {
            name: format!("{} dom{dom}", which.name()),
            child,
            lines,
            stderr,
        })
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > end {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A running peer; killed on drop if still running.
#[derive(Debug)]
pub struct PeerProc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// What a peer reported on success (`OK sent=.. recv=.. fnv_tx=.. fnv_rx=.. ns=..`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: u64,
    pub recv: u64,
    pub fnv_tx: String,
    pub fnv_rx: String,
    pub ns: u64,
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let mut r = Report::default();
        let rest = line.strip_prefix("OK ")?;
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "sent" => r.sent = v.parse().ok()?,
                "recv" => r.recv = v.parse().ok()?,
                "fnv_tx" => r.fnv_tx = v.to_string(),
                "fnv_rx" => r.fnv_rx = v.to_string(),
                "ns" => r.ns = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }
}

impl PeerProc {
    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Waits for the `READY` line a server prints once its xenstore keys exist.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == "READY" => return Ok(()),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: not ready after {timeout:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    bail!("{}: exited before ready: {}", self.name, self.stderr())
                }
            }
        }
    }

    /// Waits for exit; success means exit 0 and an `OK` line.
    pub fn finish(mut self, timeout: Duration) -> Result<Report> {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > end {
                bail!("{}: still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut report = None;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if let Some(r) = Report::parse(&l) {
                report = Some(r);
            }
        }
        // The stderr reader finishes once the process is gone.
        std::thread::sleep(Duration::from_millis(10));
        match (status.success(), report) {
            (true, Some(r)) => Ok(r),
            _ => bail!("{}: {status}: {}", self.name, self.stderr()),
        }
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
