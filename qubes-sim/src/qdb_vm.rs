//! The qube's side of QubesDB for Linux qubes: a blocking client over `qubes::qubesdb::Agent`
//! (its own port-111 vchan, as any hosted unikernel would open) and the qubesdb-* tools.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use platform_api::{DomId, Events};
use qubes::qubesdb::{Agent, Event, Limits, SyncState, WatchId};
use vchan::Interest;

use crate::chan::{Hosted, TxQueue, Vchan, TICK};
use crate::cli::Usage;
use crate::qdb::{PORT, RING};

/// How long a tool waits for dom0's daemon and the first sync.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A synced QubesDB connection of the current domain (`QUBES_HOSTED_*`).
pub struct QdbClient {
    h: Hosted,
    v: Vchan,
    /// The local copy.
    pub agent: Agent,
    out: TxQueue,
    inbuf: Vec<u8>,
    in_len: usize,
    /// Events seen while pumping, oldest first.
    pub events: Vec<Event>,
}

impl std::fmt::Debug for QdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdbClient").finish_non_exhaustive()
    }
}

impl QdbClient {
    /// Connects to dom0's daemon and waits for the full sync.
    pub fn connect() -> Result<QdbClient> {
        let mut h = Hosted::from_env()?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        // dom0 advertises its next server only once the previous client attached; a client
        // that raced another for the same server fails its bind and tries again.
        let v = loop {
            match Vchan::connect(&mut h, DomId::DOM0, PORT, CONNECT_TIMEOUT, &|| false) {
                Ok(v) => break v,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut agent = Agent::new(Limits::DEFAULT);
        agent.connect();
        let mut c = QdbClient {
            h,
            v,
            agent,
            out: TxQueue::new(RING * 4),
            inbuf: vec![0u8; 8192],
            in_len: 0,
            events: Vec::new(),
        };
        while c.agent.state() != SyncState::Ready {
            if Instant::now() >= deadline {
                bail!("qubesdb: no full sync from dom0 within {CONNECT_TIMEOUT:?}");
            }
            c.pump(TICK)?;
        }
        c.events.clear();
        Ok(c)
    }

    /// One round: sends what is queued, takes dom0's input, waits up to `wait` if idle.
    pub fn pump(&mut self, wait: Duration) -> Result<()> {
        let mut progress = false;
        if self.in_len < self.inbuf.len() {
            let n = self
                .v
                .read(&mut self.inbuf[self.in_len..])
                .map_err(|e| anyhow!("qubesdb vchan: {e}"))?;
            self.in_len += n;
            progress |= n > 0;
        }
        if self.in_len > 0 {
            let n = self
                .agent
                .handle_input(&self.inbuf[..self.in_len])
                .map_err(|e| anyhow!("qubesdb: dom0 broke the protocol: {e}"))?;
            self.inbuf.copy_within(n..self.in_len, 0);
            self.in_len -= n;
            progress |= n > 0;
        }
        while let Some(ev) = self.agent.poll_event() {
            self.events.push(ev);
            progress = true;
        }
        self.out.fill(|b| self.agent.poll_transmit(b));
        progress |= self
            .out
            .flush(&mut self.v)
            .map_err(|e| anyhow!("qubesdb vchan: {e}"))?;
        if let SyncState::Failed(e) = self.agent.state() {
            bail!("qubesdb: {e}");
        }
        if !progress && !wait.is_zero() {
            let interest = Interest {
                read: true,
                write: self.out.pending() > 0,
            };
            if self
                .v
                .prepare_wait(interest)
                .map_err(|e| anyhow!("qubesdb vchan: {e}"))?
            {
                self.h.events.wait(Some(wait)).context("event wait")?;
            }
        }
        Ok(())
    }

    /// A value as text (`None`: absent).
    pub fn read(&self, path: &str) -> Option<String> {
        self.agent
            .read(path)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// `qubesdb-read [-n] [-d DEFAULT] [-w] PATH…`: each value on its own line (`-n`: no newline);
/// a missing one is an error unless `-d`; `-w` waits for it to appear.
pub fn qubesdb_read(args: &[String]) -> Result<i32> {
    let (mut newline, mut default, mut wait, mut paths) = (true, None, false, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => newline = false,
            "-w" => wait = true,
            "-d" => default = Some(it.next().ok_or_else(|| Usage("-d needs a value".into()))?),
            _ => paths.push(a.as_str()),
        }
    }
    if paths.is_empty() {
        return Err(Usage("usage: qubesdb-read [-n] [-d DEFAULT] [-w] PATH...".into()).into());
    }
    let mut c = QdbClient::connect()?;
    let mut out = std::io::stdout().lock();
    for p in paths {
        let v = loop {
            match (c.read(p), default, wait) {
                (Some(v), _, _) => break v,
                (None, Some(d), false) => break d.clone(),
                (None, _, true) => c.pump(TICK)?,
                (None, None, false) => {
                    eprintln!("Failed to read {p}");
                    return Ok(1);
                }
            }
        };
        write!(out, "{v}{}", if newline { "\n" } else { "" })?;
    }
    Ok(0)
}

/// `qubesdb-list [-f] PREFIX`: the paths under PREFIX, sorted, without it (`-f`: full).
pub fn qubesdb_list(args: &[String]) -> Result<i32> {
    let full = args.iter().any(|a| a == "-f");
    let prefixes: Vec<&String> = args.iter().filter(|a| *a != "-f").collect();
    let [prefix] = prefixes.as_slice() else {
        return Err(Usage("usage: qubesdb-list [-f] PREFIX".into()).into());
    };
    let c = QdbClient::connect()?;
    let mut out = std::io::stdout().lock();
    for (p, _) in c.agent.list(prefix) {
        let p = p.as_str();
        let shown = if full {
            p
        } else {
            p.strip_prefix(prefix.as_str()).unwrap_or(p)
        };
        writeln!(out, "{shown}")?;
    }
    Ok(0)
}

/// `qubesdb-write PATH VALUE`: stores into the qube's (untrusted) area at dom0.
pub fn qubesdb_write(args: &[String]) -> Result<i32> {
    let [path, value] = args else {
        return Err(Usage("usage: qubesdb-write PATH VALUE".into()).into());
    };
    let mut c = QdbClient::connect()?;
    c.agent
        .write(path, value.as_bytes())
        .map_err(|e| anyhow!("qubesdb-write: {e}"))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        c.pump(TICK)?;
        for ev in c.events.drain(..) {
            match ev {
                Event::WriteAcked(p) if p.as_str() == path => return Ok(0),
                Event::WriteRefused(p) if p.as_str() == path => bail!("dom0 refused {path}"),
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            bail!("no answer from dom0");
        }
    }
}

/// `qubesdb-watch [-n COUNT] PATH…`: prints each changed path (a prefix watch for a path ending
/// in `/`) as dom0's changes arrive, one per line; exits after COUNT of them.
pub fn qubesdb_watch(args: &[String]) -> Result<i32> {
    let (mut count, mut paths) = (None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => {
                let v = it.next().ok_or_else(|| Usage("-n needs a count".into()))?;
                count = Some(
                    v.parse::<u64>()
                        .map_err(|_| Usage(format!("bad count {v:?}")))?,
                );
            }
            _ => paths.push(a.as_str()),
        }
    }
    if paths.is_empty() {
        return Err(Usage("usage: qubesdb-watch [-n COUNT] PATH...".into()).into());
    }
    let mut c = QdbClient::connect()?;
    let mut ids: Vec<WatchId> = Vec::new();
    for p in &paths {
        ids.push(c.agent.watch(p).map_err(|e| anyhow!("watch {p}: {e}"))?);
    }
    let mut out = std::io::stdout();
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|n| seen >= n) {
            return Ok(0);
        }
        c.pump(Duration::from_millis(200))?;
        let mut last = None;
        for ev in std::mem::take(&mut c.events) {
            let fired = match ev {
                Event::Changed { watch, path } if ids.contains(&watch) => Some(path),
                // The Agent fires watches only when a value changes, but QubesDB fires them on
                // every write: dom0's commit marker is rewritten with the same "".
                Event::FirewallCommit(path)
                    if last != Some(path) && paths.iter().any(|p| path.as_str().starts_with(p)) =>
                {
                    Some(path)
                }
                _ => None,
            };
            last = match ev {
                Event::Changed { path, .. } => Some(path),
                _ => None,
            };
            if let Some(path) = fired.filter(|_| count.is_none_or(|n| seen < n)) {
                writeln!(out, "{}", path.as_str())?;
                out.flush()?;
                seen += 1;
            }
        }
    }
}
