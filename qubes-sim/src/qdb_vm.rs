//! The qube's side of QubesDB for Linux qubes: a blocking client over `qubes::qubesdb::Agent`
//! (its own port-111 vchan, as any hosted unikernel would open) and the qubesdb-* tools.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use platform_api::{DomId, Events};
use qubes::qubesdb::{Agent, Event, Limits, SyncState};
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
            // Until synced, one message at a time: `connect` returns right at the dump's end,
            // so a change dom0 sent after it waits for the caller's watches.
            let mut take = self.in_len;
            if self.agent.state() != SyncState::Ready {
                if let Some(len) = self.inbuf.get(68..72) {
                    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                    take = take.min(72usize.saturating_add(len));
                }
            }
            let n = self
                .agent
                .handle_input(&self.inbuf[..take])
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

/// Options of the qubesdb-* tools (`qubesdb-cmd`'s: `-f` full paths, `-r` raw values, `-q`
/// quiet, `-w` wait for a value, `-n N` events for watch, negative: endless).
#[derive(Debug, Default)]
struct Opts {
    full: bool,
    raw: bool,
    quiet: bool,
    wait: bool,
    count: Option<i64>,
}

fn parse_opts<'a>(cmd: &str, args: &'a [String]) -> Result<(Opts, Vec<&'a str>)> {
    let mut o = Opts::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => o.full = true,
            "-r" => o.raw = true,
            "-q" => o.quiet = true,
            "-w" => o.wait = true,
            "-n" if cmd == "watch" => {
                let v = it.next().ok_or_else(|| Usage("-n needs a count".into()))?;
                o.count = Some(v.parse().map_err(|_| Usage(format!("bad count {v:?}")))?);
            }
            "-n" => return Err(Usage("-n valid only for watch command".into()).into()),
            "--" => rest.extend(it.by_ref().map(String::as_str)),
            f if f.starts_with('-') && f.len() > 1 => {
                return Err(Usage(format!("unknown option {f}")).into())
            }
            _ => rest.push(a.as_str()),
        }
    }
    if rest.is_empty() {
        return Err(Usage(format!("usage: qubesdb-{cmd} [-frqw] PATH...")).into());
    }
    Ok((o, rest))
}

/// A value as the tools print it: printable ASCII kept, other bytes as `\xNN` (`-r`: as is).
pub fn shown(value: &[u8], raw: bool) -> Vec<u8> {
    if raw {
        return value.to_vec();
    }
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if (0x20..0x80).contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out
}

/// `qubesdb-read [-frqw] PATH…`: each value on a line (`-f`: `PATH = value`); a missing one
/// is reported and makes the exit status 1; `-w` waits for it.
pub fn qubesdb_read(args: &[String]) -> Result<i32> {
    let (o, paths) = parse_opts("read", args)?;
    let mut c = QdbClient::connect()?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for p in paths {
        while o.wait && c.agent.read(p).is_none() {
            c.pump(TICK)?;
        }
        match c.agent.read(p) {
            Some(v) => {
                if o.full {
                    write!(out, "{p} = ")?;
                }
                out.write_all(&shown(v, o.raw))?;
                writeln!(out)?;
            }
            None => {
                if !o.quiet {
                    eprintln!("Failed to read {p}");
                }
                failed = 1;
            }
        }
    }
    Ok(failed)
}

/// `qubesdb-multiread [-frq] PREFIX…`: `path = value` for every entry under each prefix (the
/// prefix cut from the path unless `-f`).
pub fn qubesdb_multiread(args: &[String]) -> Result<i32> {
    let (o, prefixes) = parse_opts("multiread", args)?;
    let c = QdbClient::connect()?;
    let mut out = std::io::stdout().lock();
    for prefix in prefixes {
        for (p, v) in c.agent.list(prefix) {
            let p = p.as_str();
            let name = if o.full {
                p
            } else {
                p.strip_prefix(prefix).unwrap_or(p)
            };
            write!(out, "{name} = ")?;
            out.write_all(&shown(v, o.raw))?;
            writeln!(out)?;
        }
    }
    Ok(0)
}

/// `qubesdb-list [-f] PREFIX`: the paths under PREFIX, sorted, without it (`-f`: full).
pub fn qubesdb_list(args: &[String]) -> Result<i32> {
    let (o, prefixes) = parse_opts("list", args)?;
    let [prefix] = prefixes.as_slice() else {
        eprintln!("LIST command accept only one path");
        return Ok(1);
    };
    let c = QdbClient::connect()?;
    let mut out = std::io::stdout().lock();
    for (p, _) in c.agent.list(prefix) {
        let p = p.as_str();
        let shown = if o.full {
            p
        } else {
            p.strip_prefix(*prefix).unwrap_or(p)
        };
        writeln!(out, "{shown}")?;
    }
    Ok(0)
}

/// Waits for dom0's answers to our own writes/removals of `paths`; whether all were taken.
fn await_acks(c: &mut QdbClient, mut left: Vec<String>, quiet: bool) -> Result<bool> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut ok = true;
    while !left.is_empty() {
        c.pump(TICK)?;
        for ev in c.events.drain(..) {
            let (p, good) = match ev {
                Event::WriteAcked(p) => (p, true),
                Event::WriteRefused(p) => (p, false),
                _ => continue,
            };
            if let Some(i) = left.iter().position(|l| l == p.as_str()) {
                left.remove(i);
                if !good && !quiet {
                    eprintln!("Failed to write {}", p.as_str());
                }
                ok &= good;
            }
        }
        if Instant::now() >= deadline {
            bail!("no answer from dom0");
        }
    }
    Ok(ok)
}

/// `qubesdb-write [-q] PATH VALUE [PATH VALUE…]`: stores into the qube's (untrusted) area.
pub fn qubesdb_write(args: &[String]) -> Result<i32> {
    let (o, rest) = parse_opts("write", args)?;
    if rest.len() % 2 != 0 {
        eprintln!("Invalid number of parameters");
        return Ok(1);
    }
    let mut c = QdbClient::connect()?;
    let mut sent = Vec::new();
    for pair in rest.chunks(2) {
        let [path, value] = pair else { continue };
        c.agent
            .write(path, value.as_bytes())
            .map_err(|e| anyhow!("qubesdb-write {path}: {e}"))?;
        sent.push(path.to_string());
    }
    Ok(i32::from(!await_acks(&mut c, sent, o.quiet)?))
}

/// `qubesdb-rm [-q] PATH…`: removes from the qube's area (a prefix if it ends in `/`).
pub fn qubesdb_rm(args: &[String]) -> Result<i32> {
    let (o, rest) = parse_opts("rm", args)?;
    let mut c = QdbClient::connect()?;
    let mut sent = Vec::new();
    for path in rest {
        c.agent
            .remove(path)
            .map_err(|e| anyhow!("qubesdb-rm {path}: {e}"))?;
        sent.push(path.to_string());
    }
    Ok(i32::from(!await_acks(&mut c, sent, o.quiet)?))
}

/// Whether a change of `changed` fires a watch on `watched`: a path ending in `/` watches
/// everything under it, any other path itself (and prefix removals covering it).
fn fires(watched: &str, changed: &str) -> bool {
    if watched.ends_with('/') {
        changed.starts_with(watched) || (changed.ends_with('/') && watched.starts_with(changed))
    } else {
        changed == watched || (changed.ends_with('/') && watched.starts_with(changed))
    }
}

/// `qubesdb-watch [-n COUNT] PATH…`: prints each changed path as dom0's changes arrive, one
/// per line; exits after COUNT of them (default 1, negative: never).
pub fn qubesdb_watch(args: &[String]) -> Result<i32> {
    let (o, paths) = parse_opts("watch", args)?;
    let count = o.count.unwrap_or(1);
    let mut c = QdbClient::connect()?;
    for p in &paths {
        // The agent's watches are prefix watches; `fires` narrows them to QubesDB's rule.
        let prefix = match p.rfind('/') {
            Some(i) => &p[..=i],
            None => p,
        };
        c.agent
            .watch(prefix)
            .map_err(|e| anyhow!("Failed to setup watch on {p}: {e}"))?;
    }
    let mut out = std::io::stdout();
    let mut seen = 0i64;
    loop {
        if count >= 0 && seen >= count {
            return Ok(0);
        }
        c.pump(Duration::from_millis(200))?;
        let mut last = None;
        for ev in std::mem::take(&mut c.events) {
            let fired = match ev {
                Event::Changed { path, .. } => Some(path),
                // The Agent fires watches only when a value changes, but QubesDB fires them on
                // every write: dom0's commit marker is rewritten with the same "".
                Event::FirewallCommit(path) if last != Some(path) => Some(path),
                _ => None,
            };
            last = match ev {
                Event::Changed { path, .. } => Some(path),
                _ => None,
            };
            let Some(path) = fired else { continue };
            if !paths.iter().any(|w| fires(w, path.as_str())) || (count >= 0 && seen >= count) {
                continue;
            }
            writeln!(out, "{}", path.as_str())?;
            out.flush()?;
            seen += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fires, shown};

    #[test]
    fn values_are_shown_escaped_unless_raw() {
        assert_eq!(shown(b"a b\x01\xff", false), b"a b\\x01\\xff");
        assert_eq!(shown(b"a\x01", true), b"a\x01");
    }

    #[test]
    fn watches_follow_qubesdb_path_rules() {
        assert!(fires("/qubes-firewall/", "/qubes-firewall/10.0.0.1/0000"));
        assert!(fires("/qubes-firewall/1/", "/qubes-firewall/"));
        assert!(fires("/name", "/name"));
        assert!(!fires("/name", "/name2"));
        assert!(fires("/a/b", "/a/"));
        assert!(!fires("/a/b", "/a/c"));
    }
}
