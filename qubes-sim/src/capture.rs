//! Traffic capture for tests (`QUBES_SIM_CAPTURE=<file>`): every byte between a qube and dom0 on
//! xenstore sockets (a recording proxy) and dom0's vchans (qrexec, QubesDB, GUI), as records.
//!
//! [`decode`] checks a capture with the protocol crates (the tests and `qubes-sim
//! capture-decode FILE`). File: `QSIMCAP1`, then records `kind u8` (0 xenstore, 1 vchan), `dir u8` (0 qube→dom0,
//! 1 dom0→qube), `domid u32`, `stream u32` (xenstore connection / vchan port), `chan u32`
//! (vchan instance), `len u32`, bytes; all little-endian. [`read`] parses it back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use platform_api::DomId;

/// Names the capture file in the sim daemon's environment.
pub const ENV_CAPTURE: &str = "QUBES_SIM_CAPTURE";
/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"QSIMCAP1";
/// Largest record body read back (a proxy read or a vchan read is at most this).
pub const MAX_RECORD: usize = 1 << 20;
const RECORD_HEADER: usize = 18;
const POLL: Duration = Duration::from_millis(50);

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// xs_wire bytes on a domain's xenstore socket.
    Xenstore,
    /// Bytes on a vchan between dom0 and a qube.
    Vchan,
}

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    /// From the qube to dom0.
    ToDom0,
    /// From dom0 to the qube.
    FromDom0,
}

/// One captured chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Protocol carrier.
    pub kind: Kind,
    /// Direction.
    pub dir: Dir,
    /// The qube's domid.
    pub domid: u32,
    /// xenstore connection number, or vchan port.
    pub stream: u32,
    /// vchan instance (0 for xenstore).
    pub chan: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The sim's capture file and its xenstore proxies.
#[derive(Debug)]
pub struct Capture {
    out: Mutex<BufWriter<File>>,
    next: AtomicU32,
    stop: AtomicBool,
    tapped: Mutex<BTreeSet<DomId>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

static GLOBAL: OnceLock<Arc<Capture>> = OnceLock::new();

/// The capture of this process (the sim daemon), if one is on.
pub fn global() -> Option<&'static Arc<Capture>> {
    GLOBAL.get()
}

/// Starts capturing to the file `QUBES_SIM_CAPTURE` names, if set.
pub fn from_env() -> Result<Option<Arc<Capture>>> {
    let Some(path) = std::env::var_os(ENV_CAPTURE).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let mut f = File::create(&path)
        .with_context(|| format!("cannot create capture file {}", Path::new(&path).display()))?;
    f.write_all(MAGIC)?;
    let c = Arc::new(Capture {
        out: Mutex::new(BufWriter::new(f)),
        next: AtomicU32::new(1),
        stop: AtomicBool::new(false),
        tapped: Mutex::new(BTreeSet::new()),
        threads: Mutex::new(Vec::new()),
    });
    let _ = GLOBAL.set(c.clone());
    Ok(Some(c))
}

impl Capture {
    /// A fresh number for a connection or a vchan.
    pub fn next_id(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends one record (errors are ignored: capture must not change what it observes).
    pub fn record(&self, kind: Kind, dir: Dir, domid: u32, stream: u32, chan: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut head = Vec::with_capacity(RECORD_HEADER);
        head.push(match kind {
            Kind::Xenstore => 0,
            Kind::Vchan => 1,
        });
        head.push(match dir {
            Dir::ToDom0 => 0,
            Dir::FromDom0 => 1,
        });
        for v in [domid, stream, chan, data.len() as u32] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        let _ = out.write_all(&head);
        let _ = out.write_all(data);
        let _ = out.flush();
    }

    /// Puts a recording proxy in front of `domid`'s xenstore socket: the daemon's socket moves
    /// to `d<N>.real.sock` and the qube connects to the proxy at the usual path.
    pub fn tap_xenstore(self: &Arc<Self>, run: &Path, domid: DomId) -> Result<()> {
        if !self
            .tapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domid)
        {
            return Ok(());
        }
        let sock = platform_hosted::store::socket_path(run, domid);
        let real = sock.with_extension("real.sock");
        std::fs::rename(&sock, &real)
            .with_context(|| format!("cannot move {} aside", sock.display()))?;
        let listener =
            UnixListener::bind(&sock).with_context(|| format!("cannot bind {}", sock.display()))?;
        listener.set_nonblocking(true)?;
        let me = self.clone();
        let d = u32::from(domid.get());
        let t = std::thread::spawn(move || me.accept_loop(&listener, &real, d));
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t);
        Ok(())
    }

    fn accept_loop(self: Arc<Self>, listener: &UnixListener, real: &Path, domid: u32) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let Ok(server) = UnixStream::connect(real) else {
                        continue;
                    };
                    let conn = self.next_id();
                    let pairs = [
                        (client.try_clone(), server.try_clone(), Dir::ToDom0),
                        (server.try_clone(), client.try_clone(), Dir::FromDom0),
                    ];
                    for (from, to, dir) in pairs {
                        let (Ok(from), Ok(to)) = (from, to) else {
                            continue;
                        };
                        let me = self.clone();
                        let t = std::thread::spawn(move || me.pump(from, to, dir, domid, conn));
                        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
                        threads.retain(|t| !t.is_finished());
                        threads.push(t);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn pump(&self, mut from: UnixStream, mut to: UnixStream, dir: Dir, domid: u32, conn: u32) {
        let _ = from.set_nonblocking(false);
        let _ = to.set_nonblocking(false);
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = vec![0u8; 16 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    self.record(Kind::Xenstore, dir, domid, conn, 0, data);
                    if to.write_all(data).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    }

    /// Stops the proxies and flushes the file.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        loop {
            let t = self.threads.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match t {
                Some(t) => {
                    let _ = t.join();
                }
                None => break,
            }
        }
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// A vchan's capture identity: dom0's end of `port` with `peer`.
#[derive(Debug, Clone)]
pub struct Tap {
    cap: Arc<Capture>,
    peer: u32,
    port: u32,
    chan: u32,
}

impl Tap {
    /// A tap for a new dom0 vchan when capture is on (never in a qube's own processes).
    pub fn for_vchan(me: DomId, peer: DomId, port: u32) -> Option<Tap> {
        let cap = global()?.clone();
        if me != DomId::DOM0 {
            return None;
        }
        let chan = cap.next_id();
        Some(Tap {
            cap,
            peer: u32::from(peer.get()),
            port,
            chan,
        })
    }

    /// Records bytes dom0 read from (`ToDom0`) or wrote to (`FromDom0`) the qube.
    pub fn record(&self, dir: Dir, data: &[u8]) {
        self.cap
            .record(Kind::Vchan, dir, self.peer, self.port, self.chan, data);
    }
}

/// Parses a capture file (bounded: each record at most [`MAX_RECORD`] bytes).
pub fn read(bytes: &[u8]) -> Result<Vec<Record>> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .context("not a capture file")?;
    let mut out = Vec::new();
    let mut off = 0usize;
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    while off < rest.len() {
        let Some(head) = rest.get(off..off + RECORD_HEADER) else {
            bail!("truncated record header at {off}");
        };
        let kind = match head[0] {
            0 => Kind::Xenstore,
            1 => Kind::Vchan,
            k => bail!("unknown record kind {k} at {off}"),
        };
        let dir = match head[1] {
            0 => Dir::ToDom0,
            1 => Dir::FromDom0,
            d => bail!("unknown direction {d} at {off}"),
        };
        let field = |i: usize| u32_at(head, 2 + 4 * i).unwrap_or(0);
        let (domid, stream, chan, len) = (field(0), field(1), field(2), field(3) as usize);
        if len > MAX_RECORD {
            bail!("record of {len} bytes at {off}");
        }
        let start = off + RECORD_HEADER;
        let Some(data) = rest.get(start..start + len) else {
            bail!("truncated record at {off}");
        };
        out.push(Record {
            kind,
            dir,
            domid,
            stream,
            chan,
            data: data.to_vec(),
        });
        off = start + len;
    }
    Ok(out)
}

/// What a decoded capture held, by protocol.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Count (xs requests).
    pub xs_requests: usize,
    /// Count (xs replies).
    pub xs_replies: usize,
    /// Count (qrexec control).
    pub qrexec_control: usize,
    /// Count (qrexec data).
    pub qrexec_data: usize,
    /// Count (qubesdb).
    pub qubesdb: usize,
    /// Count (gui from agent).
    pub gui_from_agent: usize,
    /// Count (gui to agent).
    pub gui_to_agent: usize,
    /// Count (gui to agent bytes).
    pub gui_to_agent_bytes: usize,
}

/// Decodes a stream of xs_wire messages; every byte must belong to one.
fn xenstore(bytes: &[u8], dir: Dir, seen: &mut Seen) -> Result<(), String> {
    use xen_store::wire::MsgHeader;
    use xen_store::wire::ReplyMsg;
    use xen_store::wire::RequestMsg;
    let mut rest = bytes;
    while !rest.is_empty() {
        let h = MsgHeader::new_checked(rest).map_err(|e| format!("xs header: {e}"))?;
        let n = h.total_len();
        match dir {
            Dir::ToDom0 => {
                RequestMsg::parse(&h).map_err(|e| format!("xs request: {e}"))?;
                seen.xs_requests += 1;
            }
            Dir::FromDom0 => {
                ReplyMsg::parse(&h).map_err(|e| format!("xs reply: {e}"))?;
                seen.xs_replies += 1;
            }
        }
        rest = rest.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

/// Decodes qrexec messages (control or data channel): header, then exactly the declared body.
fn qrexec(bytes: &[u8], count: &mut usize) -> Result<(), String> {
    use qubes::qrexec::Message;
    let mut rest = bytes;
    while !rest.is_empty() {
        let m = Message::parse(rest).map_err(|e| format!("qrexec: {e}"))?;
        let len = rest
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("qrexec: short header")?;
        if m.buffer_len() != 8 + len {
            return Err(format!(
                "qrexec: {m:?} re-encodes to {} bytes, not {}",
                m.buffer_len(),
                8 + len
            ));
        }
        rest = rest.get(8 + len..).unwrap_or(&[]);
        *count += 1;
    }
    Ok(())
}

/// Decodes QubesDB messages (72-byte header and its value).
fn qubesdb(bytes: &[u8], count: &mut usize) -> Result<(), String> {
    use qubes::qubesdb::wire::{Message, HEADER_LEN, MAX_DATA};
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = rest
            .get(68..72)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("qubesdb: short header")?;
        if len >= MAX_DATA {
            return Err(format!("qubesdb: {len}-byte value"));
        }
        let frame = rest
            .get(..HEADER_LEN + len)
            .ok_or("qubesdb: truncated message")?;
        Message::parse(frame).map_err(|e| format!("qubesdb: {e}"))?;
        rest = rest.get(HEADER_LEN + len..).unwrap_or(&[]);
        *count += 1;
    }
    Ok(())
}

/// Feeds one direction of a GUI connection to the machine of the receiving side, which
/// validates the handshake and every message; all bytes must be taken.
fn gui(bytes: &[u8], dir: Dir, seen: &mut Seen) -> Result<(), String> {
    use qubes::gui::wire::XConf;
    use qubes::gui::{Agent, AgentLimits, Daemon, DaemonLimits};
    let mut scratch = vec![0u8; 1 << 16];
    let mut off = 0;
    match dir {
        Dir::ToDom0 => {
            let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(1920, 1080));
            while off < bytes.len() {
                let n = d
                    .handle_input(bytes.get(off..).unwrap_or(&[]))
                    .map_err(|e| format!("gui from agent: {e}"))?;
                off += n;
                while d.poll_transmit(&mut scratch).is_some() {}
                while d.poll_event().is_some() {
                    seen.gui_from_agent += 1;
                }
                if n == 0 && off < bytes.len() {
                    return Err("gui from agent: the daemon machine took no more".into());
                }
            }
        }
        Dir::FromDom0 => {
            seen.gui_to_agent_bytes += bytes.len();
            let mut a = Agent::new(AgentLimits::DEFAULT);
            while a.poll_transmit(&mut scratch).is_some() {}
            while off < bytes.len() {
                let n = a
                    .handle_input(bytes.get(off..).unwrap_or(&[]))
                    .map_err(|e| format!("gui to agent: {e}"))?;
                off += n;
                while a.poll_transmit(&mut scratch).is_some() {}
                while a.poll_event().is_some() {
                    seen.gui_to_agent += 1;
                }
                if n == 0 && off < bytes.len() {
                    return Err("gui to agent: the agent machine took no more".into());
                }
            }
        }
    }
    Ok(())
}

/// Decodes every stream of a capture with the protocol crates: each byte must belong to an
/// xs_wire message (on xenstore), or to a qrexec (control port 512, data ports), QubesDB
/// (port 111) or GUI (port 6000) message on a vchan; the first one that does not is the error.
pub fn decode(records: &[Record]) -> Result<Seen, String> {
    // One byte stream per connection and direction, in capture order.
    let mut streams: BTreeMap<(Kind, u32, u32, u32, Dir), Vec<u8>> = BTreeMap::new();
    for r in records {
        streams
            .entry((r.kind, r.domid, r.stream, r.chan, r.dir))
            .or_default()
            .extend_from_slice(&r.data);
    }
    let mut seen = Seen::default();
    for ((kind, domid, stream, chan, dir), bytes) in &streams {
        let what = format!("{kind:?} domain {domid} stream {stream} chan {chan} {dir:?}");
        let r = match (kind, *stream) {
            (Kind::Xenstore, _) => xenstore(bytes, *dir, &mut seen),
            (Kind::Vchan, qubes::qrexec::CONTROL_PORT) => qrexec(bytes, &mut seen.qrexec_control),
            (Kind::Vchan, p) if qubes::qrexec::is_data_port(p) => {
                qrexec(bytes, &mut seen.qrexec_data)
            }
            (Kind::Vchan, crate::qdb::PORT) => qubesdb(bytes, &mut seen.qubesdb),
            (Kind::Vchan, crate::gui::PORT) => gui(bytes, *dir, &mut seen),
            (Kind::Vchan, p) => Err(format!("vchan port {p} carries no known protocol")),
        };
        r.map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(seen)
}

/// `qubes-sim capture-decode FILE`: decodes a capture; prints what it held (exit 0) or the
/// first undecodable byte's stream (exit 1).
pub fn decode_file(args: &[String]) -> Result<i32> {
    let [file] = args else {
        bail!("usage: qubes-sim capture-decode FILE");
    };
    let meta = std::fs::metadata(file).with_context(|| format!("cannot read {file}"))?;
    if meta.len() > 1 << 30 {
        bail!("{file} is larger than 1 GiB");
    }
    let records = read(&std::fs::read(file)?)?;
    let domains: BTreeSet<u32> = records.iter().map(|r| r.domid).collect();
    match decode(&records) {
        Ok(s) => {
            let messages = s.xs_requests
                + s.xs_replies
                + s.qrexec_control
                + s.qrexec_data
                + s.qubesdb
                + s.gui_from_agent;
            println!(
                "{} records from {} qubes, all decoded: {} xs_wire requests and {} replies, \
                 {} qrexec control and {} data messages, {} QubesDB messages, {} GUI events \
                 ({messages} in all)",
                records.len(),
                domains.len(),
                s.xs_requests,
                s.xs_replies,
                s.qrexec_control,
                s.qrexec_data,
                s.qubesdb,
                s.gui_from_agent
            );
            Ok(0)
        }
        Err(e) => {
            println!("undecodable: {e}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_truncation_is_an_error() {
        let p = std::env::temp_dir().join(format!("qsim-cap-{}", std::process::id()));
        let c = Capture {
            out: Mutex::new(BufWriter::new(File::create(&p).unwrap())),
            next: AtomicU32::new(1),
            stop: AtomicBool::new(false),
            tapped: Mutex::new(BTreeSet::new()),
            threads: Mutex::new(Vec::new()),
        };
        c.out.lock().unwrap().write_all(MAGIC).unwrap();
        c.record(Kind::Vchan, Dir::FromDom0, 3, 111, 9, b"abc");
        c.record(Kind::Xenstore, Dir::ToDom0, 3, 2, 0, b"x");
        c.stop();
        let bytes = std::fs::read(&p).unwrap();
        let r = read(&bytes).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].kind, r[0].dir, r[0].domid, r[0].stream, r[0].chan),
            (Kind::Vchan, Dir::FromDom0, 3, 111, 9)
        );
        assert_eq!(r[0].data, b"abc");
        assert_eq!(
            (r[1].kind, r[1].data.as_slice()),
            (Kind::Xenstore, &b"x"[..])
        );
        assert!(read(&bytes[..bytes.len() - 1]).is_err());
        assert!(read(b"nope").is_err());
        let _ = std::fs::remove_file(&p);
    }
}
