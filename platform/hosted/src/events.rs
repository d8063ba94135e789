//! Hosted event channels: a Unix datagram socket per handle, a registry entry per port, notify =
//! one datagram; pseudo-ports (from [`FIRST_PSEUDO_PORT`]) stand for fds such as a TAP or a socket.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use platform_api::{
    DomId, Duration, Events, EvtchnPort, Notify, PlatformError, Port, PortSet, MAX_PORTS,
};

use crate::sys::{self, PollFd};

/// The first pseudo-port; event channels are allocated below it, pseudo-ports from it up to
/// `MAX_PORTS - 1` (96 of them per handle).
pub const FIRST_PSEUDO_PORT: u32 = 4000;

/// Environment variable holding the simulated domain's id.
pub const ENV_DOMID: &str = "QUBES_HOSTED_DOMID";
/// Environment variable holding the run directory shared by all simulated domains.
pub const ENV_DIR: &str = "QUBES_HOSTED_DIR";

/// Largest registry entry we read (two socket paths and three numbers).
const MAX_ENTRY: u64 = 2048;
/// A notification datagram: destination port, then sender domid, both u32 little-endian.
const DGRAM_LEN: usize = 8;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The run directory and domid from [`ENV_DIR`] and [`ENV_DOMID`].
pub fn env_domain() -> Result<(PathBuf, DomId), PlatformError> {
    let dir = std::env::var_os(ENV_DIR).ok_or(PlatformError::Unsupported(
        "running outside the sim (QUBES_HOSTED_DIR unset)",
    ))?;
    let dom = std::env::var(ENV_DOMID).map_err(|_| {
        PlatformError::Unsupported("running outside the sim (QUBES_HOSTED_DOMID unset)")
    })?;
    let dom =
        DomId::parse(&dom).map_err(|_| PlatformError::Unsupported("QUBES_HOSTED_DOMID invalid"))?;
    Ok((PathBuf::from(dir), dom))
}

fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `<run>/evtchn/d<dom>`: the port registry of one domain.
pub fn port_dir(run_dir: &Path, dom: DomId) -> PathBuf {
    run_dir.join("evtchn").join(format!("d{}", dom.get()))
}

/// One registry entry: who may bind or is bound, and where to send notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    remote: DomId,
    /// The peer's port once bound.
    remote_port: Option<EvtchnPort>,
    own_sock: PathBuf,
    peer_sock: Option<PathBuf>,
}

impl Entry {
    fn encode(&self) -> String {
        let rp = self
            .remote_port
            .map_or_else(|| "-".to_string(), |p| p.get().to_string());
        let ps = self
            .peer_sock
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| p.display().to_string());
        format!(
            "{}\n{rp}\n{}\n{ps}\n",
            self.remote.get(),
            self.own_sock.display()
        )
    }

    fn decode(s: &str) -> Option<Entry> {
        let mut l = s.split('\n');
        let remote = DomId::parse(l.next()?).ok()?;
        let remote_port = match l.next()? {
            "-" => None,
            p => Some(EvtchnPort::parse(p).ok()?),
        };
        let own_sock = PathBuf::from(l.next()?);
        let peer_sock = match l.next()? {
            "-" => None,
            p => Some(PathBuf::from(p)),
        };
        Some(Entry {
            remote,
            remote_port,
            own_sock,
            peer_sock,
        })
    }

    fn read(path: &Path) -> Option<Entry> {
        let mut s = String::new();
        fs::File::open(path)
            .ok()?
            .take(MAX_ENTRY)
            .read_to_string(&mut s)
            .ok()?;
        Self::decode(&s)
    }
}

fn write_file(path: &Path, data: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data.as_bytes())
}

/// Sends one notification for `port` of `me` to `to`; a gone peer is not an error.
fn send(sock: &UnixDatagram, to: &Path, port: EvtchnPort, me: DomId) -> Result<(), PlatformError> {
    let mut d = [0u8; DGRAM_LEN];
    d[..4].copy_from_slice(&port.get().to_le_bytes());
    d[4..].copy_from_slice(&u32::from(me.get()).to_le_bytes());
    match sock.send_to(&d, to) {
        Ok(_) => Ok(()),
        // The peer's queue is full, so it has events pending and will wake anyway (like a
        // pending bit already set); or the peer handle is gone (like an unbound channel).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::NotFound
            ) || e.raw_os_error() == Some(libc::ECONNREFUSED) =>
        {
            Ok(())
        }
        Err(e) => Err(os("send event", &e)),
    }
}

/// Notifies through `port` of domain `me` without a handle, by reading the registry (used
/// for the unmap-notify of the C shims). Unbound or closed ports are a silent no-op.
pub fn notify_port(run_dir: &Path, me: DomId, port: EvtchnPort) -> Result<(), PlatformError> {
    let Some(e) = Entry::read(&port_dir(run_dir, me).join(port.get().to_string())) else {
        return Ok(());
    };
    let (Some(peer_sock), Some(rp)) = (e.peer_sock, e.remote_port) else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound().map_err(|e| os("socket", &e))?;
    sock.set_nonblocking(true).map_err(|e| os("socket", &e))?;
    send(&sock, &peer_sock, rp, me)
}

#[derive(Debug)]
struct Inner {
    run_dir: PathBuf,
    me: DomId,
    recv: UnixDatagram,
    send: UnixDatagram,
    sock_path: PathBuf,
    /// Our open ports and the domain each belongs to.
    ports: Mutex<HashMap<u32, DomId>>,
    /// Pseudo-ports and our duplicate of the fd each stands for (shared so that `wait` can
    /// poll it without holding the lock while an owner unregisters).
    fds: Mutex<BTreeMap<u32, Arc<OwnedFd>>>,
}

impl Inner {
    fn ports(&self) -> MutexGuard<'_, HashMap<u32, DomId>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self) -> PathBuf {
        port_dir(&self.run_dir, self.me)
    }

    fn fds(&self) -> MutexGuard<'_, BTreeMap<u32, Arc<OwnedFd>>> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `entry` under the lowest free port (atomic: write a private file, then
    /// `link` it to the port name, which fails if the port is taken).
    fn alloc_port(&self, entry: &Entry) -> Result<EvtchnPort, PlatformError> {
        let dir = self.dir();
        let tmp = dir.join(unique(".tmp-"));
        write_file(&tmp, &entry.encode()).map_err(|e| os("write port entry", &e))?;
        let mut res = Err(PlatformError::Full {
            what: "event channel ports",
        });
        for p in 1..FIRST_PSEUDO_PORT {
            match fs::hard_link(&tmp, dir.join(p.to_string())) {
                Ok(()) => {
                    res = EvtchnPort::new(p).map_err(|_| PlatformError::Full {
                        what: "event channel ports",
                    });
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    res = Err(os("link port entry", &e));
                    break;
                }
            }
        }
        let _ = fs::remove_file(&tmp);
        let port = res?;
        self.ports().insert(port.get(), entry.remote);
        Ok(port)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.sock_path);
    }
}

/// An event-channel handle of one domain: its ports and the socket they are signalled on.
#[derive(Debug)]
pub struct HostedEvents {
    inner: Arc<Inner>,
}

impl HostedEvents {
    /// A new handle for domain `me` of the run in `run_dir`.
    pub fn new(run_dir: &Path, me: DomId) -> Result<Self, PlatformError> {
        let dir = port_dir(run_dir, me);
        fs::create_dir_all(&dir).map_err(|e| os("create port directory", &e))?;
        let sock_path = dir.join(format!("{}.sock", unique("h")));
        let recv = UnixDatagram::bind(&sock_path).map_err(|e| os("bind event socket", &e))?;
        recv.set_nonblocking(true)
            .map_err(|e| os("event socket", &e))?;
        let send = UnixDatagram::unbound().map_err(|e| os("event socket", &e))?;
        send.set_nonblocking(true)
            .map_err(|e| os("event socket", &e))?;
        let inner = Inner {
            run_dir: run_dir.to_path_buf(),
            me,
            recv,
            send,
            sock_path,
            ports: Mutex::default(),
            fds: Mutex::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// A handle for the domain named by `QUBES_HOSTED_DIR` and `QUBES_HOSTED_DOMID`.
    pub fn from_env() -> Result<Self, PlatformError> {
        let (dir, me) = env_domain()?;
        Self::new(&dir, me)
    }

    /// Our domain id.
    pub fn domid(&self) -> DomId {
        self.inner.me
    }

    /// Registers `fd` as a pseudo-port: [`Events::wait`] wakes and reports the port while the
    /// fd is readable (or hung up). Level-triggered: the owner drains the fd after a wakeup.
    /// The handle keeps a duplicate of the fd until the returned [`FdPort`] is dropped.
    pub fn register_fd(&self, fd: BorrowedFd<'_>) -> Result<FdPort, PlatformError> {
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| os("duplicate fd for a pseudo-port", &e))?;
        let mut fds = self.inner.fds();
        let free = (FIRST_PSEUDO_PORT..MAX_PORTS).find(|p| !fds.contains_key(p));
        let port = free
            .and_then(|p| EvtchnPort::new(p).ok())
            .ok_or(PlatformError::Full {
                what: "fd pseudo-ports",
            })?;
        fds.insert(port.get(), Arc::new(dup));
        Ok(FdPort {
            inner: self.inner.clone(),
            port,
        })
    }

    /// Adds to `set` every pseudo-port whose fd is ready within `timeout` (`ZERO`: now).
    fn ready_fds(&self, set: &mut PortSet, timeout: Option<Duration>) -> Result<(), PlatformError> {
        let fds: Vec<(u32, Arc<OwnedFd>)> = self
            .inner
            .fds()
            .iter()
            .map(|(p, fd)| (*p, fd.clone()))
            .collect();
        if fds.is_empty() {
            return Ok(());
        }
        let mut polled: Vec<PollFd<'_>> = fds
            .iter()
            .map(|(_, fd)| PollFd {
                fd: fd.as_fd(),
                ready: false,
            })
            .collect();
        if sys::poll(&mut polled, timeout).map_err(|e| os("poll pseudo-ports", &e))? > 0 {
            for ((p, _), r) in fds.iter().zip(&polled) {
                if let (true, Ok(port)) = (r.ready, EvtchnPort::new(*p)) {
                    set.insert(port);
                }
            }
        }
        Ok(())
    }

    /// Drains every queued notification datagram into `set`; true if there was any.
    fn drain(&self, set: &mut PortSet) -> Result<bool, PlatformError> {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.inner.recv.recv(&mut buf) {
                Ok(n) => {
                    got = true;
                    self.accept(buf.get(..n).unwrap_or(&[]), set);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(os("receive event", &e)),
            }
        }
    }

    /// Adds the port a datagram names to `set` if it is ours and came from its peer domain.
    fn accept(&self, d: &[u8], set: &mut PortSet) {
        let (Some(p), Some(from)) = (d.get(..4), d.get(4..DGRAM_LEN)) else {
            return;
        };
        let p = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        let from = u32::from_le_bytes([from[0], from[1], from[2], from[3]]);
        let (Ok(port), Ok(from)) = (EvtchnPort::new(p), DomId::new(from)) else {
            return;
        };
        if d.len() == DGRAM_LEN && self.inner.ports().get(&p) == Some(&from) {
            set.insert(port);
        }
    }
}

impl AsFd for HostedEvents {
    /// The socket that becomes readable when an event channel is signalled, for poll-based
    /// loops (pseudo-ports are not covered: poll their fds too, or use `wait`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.recv.as_fd()
    }
}

impl AsRawFd for HostedEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.recv.as_raw_fd()
    }
}

impl HostedEvents {
    /// The rest of `bind_interdomain`, run while we hold the peer entry's bind lock.
    fn bind_claimed(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
        theirs: &Path,
    ) -> Result<HostedPort, PlatformError> {
        let me = self.inner.me;
        let peer = match Entry::read(theirs) {
            Some(e) if e.remote == me && e.remote_port.is_none() => e,
            _ => return Err(PlatformError::BadPort(remote_port)),
        };
        let mine = Entry {
            remote,
            remote_port: Some(remote_port),
            own_sock: self.inner.sock_path.clone(),
            peer_sock: Some(peer.own_sock.clone()),
        };
        let port = self.inner.alloc_port(&mine)?;
        let bound = Entry {
            remote: me,
            remote_port: Some(port),
            own_sock: peer.own_sock.clone(),
            peer_sock: Some(self.inner.sock_path.clone()),
        };
        let tmp = theirs.with_file_name(unique(".tmp-"));
        // Atomic replace: the name never disappears from the peer's directory.
        if let Err(e) = write_file(&tmp, &bound.encode()).and_then(|()| fs::rename(&tmp, theirs)) {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(self.inner.dir().join(port.get().to_string()));
            self.inner.ports().remove(&port.get());
            return Err(os("update peer port entry", &e));
        }
        Ok(HostedPort {
            inner: self.inner.clone(),
            port,
            peer: Mutex::new(Some((peer.own_sock, remote_port))),
        })
    }
}

impl Events for HostedEvents {
    type Port = HostedPort;

    fn alloc_unbound(&mut self, remote: DomId) -> Result<HostedPort, PlatformError> {
        let entry = Entry {
            remote,
            remote_port: None,
            own_sock: self.inner.sock_path.clone(),
            peer_sock: None,
        };
        let port = self.inner.alloc_port(&entry)?;
        Ok(HostedPort {
            inner: self.inner.clone(),
            port,
            peer: Mutex::new(None),
        })
    }

    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<HostedPort, PlatformError> {
        let theirs = port_dir(&self.inner.run_dir, remote).join(remote_port.get().to_string());
        // Claim the unbound entry with an exclusive lock file beside it: only one binder can
        // create it. The entry itself keeps its name throughout, so the peer's own port
        // allocation can never take that number while we bind (it would if we renamed it).
        let lock = theirs.with_file_name(format!(".bind-{}", remote_port.get()));
        write_file(&lock, "").map_err(|_| PlatformError::BadPort(remote_port))?;
        let result = self.bind_claimed(remote, remote_port, &theirs);
        let _ = fs::remove_file(&lock);
        result
    }

    /// Drains queued notifications and looks at the pseudo-ports' fds; if nothing is there,
    /// sleeps in poll(2) on the socket and every fd, then looks again. A datagram for a port we
    /// closed meanwhile (or from the wrong domain) is dropped, so the set may come back empty
    /// before `timeout`; callers loop anyway.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<PortSet, PlatformError> {
        let mut set = PortSet::new();
        let got = self.drain(&mut set)?;
        self.ready_fds(&mut set, Some(Duration::ZERO))?;
        if got || !set.is_empty() || timeout == Some(Duration::ZERO) {
            return Ok(set);
        }
        // Sleep on everything at once; the fds' own readiness is re-read right after.
        let fds: Vec<Arc<OwnedFd>> = self.inner.fds().values().cloned().collect();
        let mut polled: Vec<PollFd<'_>> = core::iter::once(self.inner.recv.as_fd())
            .chain(fds.iter().map(|f| f.as_fd()))
            .map(|fd| PollFd { fd, ready: false })
            .collect();
        let n = sys::poll(&mut polled, timeout).map_err(|e| os("poll event socket", &e))?;
        drop(polled);
        if n > 0 {
            self.drain(&mut set)?;
            self.ready_fds(&mut set, Some(Duration::ZERO))?;
        }
        Ok(set)
    }
}

/// A bound (or allocated, not yet bound) port; dropping it closes the port.
#[derive(Debug)]
pub struct HostedPort {
    inner: Arc<Inner>,
    port: EvtchnPort,
    /// The peer's socket and port once known (from binding, or read from our entry).
    peer: Mutex<Option<(PathBuf, EvtchnPort)>>,
}

impl HostedPort {
    /// The domain at the other end (or allowed to bind).
    pub fn remote(&self) -> Option<DomId> {
        self.inner.ports().get(&self.port.get()).copied()
    }

    /// Whether the peer has bound to this port (always true for `bind_interdomain` ports).
    pub fn is_bound(&self) -> bool {
        self.peer_target().is_some()
    }

    fn peer_target(&self) -> Option<(PathBuf, EvtchnPort)> {
        let mut g = self.peer.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let e = Entry::read(&self.inner.dir().join(self.port.get().to_string()))?;
            *g = Some((e.peer_sock?, e.remote_port?));
        }
        g.clone()
    }
}

impl Notify for HostedPort {
    fn notify(&self) -> Result<(), PlatformError> {
        match self.peer_target() {
            Some((sock, rp)) => send(&self.inner.send, &sock, rp, self.inner.me),
            None => Ok(()),
        }
    }
}

impl Port for HostedPort {
    fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for HostedPort {
    fn drop(&mut self) {
        self.inner.ports().remove(&self.port.get());
        let _ = fs::remove_file(self.inner.dir().join(self.port.get().to_string()));
    }
}

/// A registered fd's pseudo-port; dropping it unregisters the fd (and closes our duplicate).
#[derive(Debug)]
pub struct FdPort {
    inner: Arc<Inner>,
    port: EvtchnPort,
}

impl FdPort {
    /// The pseudo-port number [`Events::wait`] reports.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for FdPort {
    fn drop(&mut self) {
        self.inner.fds().remove(&self.port.get());
    }
}

/// A private directory under the system temp dir, removed on drop (tests only).
#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new() -> Self {
            let p = std::env::temp_dir().join(super::unique("hosted-test-"));
            std::fs::create_dir_all(&p).unwrap();
            TestDir(p)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_dir::TestDir;
    use super::*;

    fn dom(d: u32) -> DomId {
        DomId::new(d).unwrap()
    }

    const SHORT: Option<Duration> = Some(Duration::from_millis(50));

    /// Regression: binding used to rename the peer's entry away while it worked, so the peer
    /// could allocate the same port number meanwhile ("port 8 is not bound" in the sim).
    #[test]
    fn bind_never_frees_the_port_number_for_a_concurrent_allocation() {
        let t = TestDir::new();
        for _ in 0..200 {
            let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
            let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
            let pa = a.alloc_unbound(dom(2)).unwrap();
            let want = pa.port();
            let binder =
                std::thread::spawn(move || b.bind_interdomain(dom(1), want).map(|p| (b, p)));
            let others: Vec<_> = (0..4).map(|_| a.alloc_unbound(dom(3)).unwrap()).collect();
            assert!(
                others.iter().all(|o| o.port() != want),
                "port {want} handed out twice"
            );
            let (_b, pb) = binder.join().unwrap().expect("bind succeeds");
            assert_eq!(pb.remote(), Some(dom(1)));
            pb.notify().unwrap();
            assert!(a.wait(Some(Duration::from_secs(5))).unwrap().contains(want));
        }
    }

    #[test]
    fn a_second_binder_of_the_same_port_is_refused() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let mut b2 = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let _pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        assert_eq!(
            b2.bind_interdomain(dom(1), pa.port()).err(),
            Some(PlatformError::BadPort(pa.port()))
        );
    }

    #[test]
    fn bind_notify_wait_both_ways() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        assert!(pa.is_bound() && pb.is_bound());
        assert_eq!(pb.remote(), Some(dom(1)));
        pb.notify().unwrap();
        pb.notify().unwrap();
        let got = a.wait(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), [pa.port()]);
        assert!(
            a.wait(Some(Duration::ZERO)).unwrap().is_empty(),
            "wait drains every datagram"
        );
        let waiter = std::thread::spawn(move || (b.wait(None).unwrap(), pb.port()));
        std::thread::sleep(Duration::from_millis(20));
        pa.notify().unwrap();
        let (set, port) = waiter.join().unwrap();
        assert!(set.contains(port));
    }

    #[test]
    fn ports_are_allocated_uniquely_per_domain() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut a2 = HostedEvents::new(t.path(), dom(1)).unwrap();
        let p1 = a.alloc_unbound(dom(2)).unwrap();
        let p2 = a2.alloc_unbound(dom(2)).unwrap();
        assert_eq!((p1.port().get(), p2.port().get()), (1, 2));
        drop(p1);
        assert_eq!(
            a2.alloc_unbound(dom(3)).unwrap().port().get(),
            1,
            "closed ports are reused"
        );
    }

    #[test]
    fn wait_times_out_empty() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let _p = a.alloc_unbound(dom(2)).unwrap();
        let start = std::time::Instant::now();
        assert!(a.wait(SHORT).unwrap().is_empty());
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(a.wait(Some(Duration::ZERO)).unwrap().is_empty());
    }

    #[test]
    fn notify_on_unbound_or_closed_peer_is_a_no_op() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        pa.notify().unwrap();
        let pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        drop(pb);
        pa.notify().unwrap();
        assert!(
            b.wait(SHORT).unwrap().is_empty(),
            "a closed port is not reported"
        );
        drop(b);
        pa.notify().unwrap();
    }

    #[test]
    fn bind_refuses_port_offered_to_another_domain() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut c = HostedEvents::new(t.path(), dom(3)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        assert_eq!(
            c.bind_interdomain(dom(1), pa.port()).unwrap_err(),
            PlatformError::BadPort(pa.port())
        );
        // The refused bind left the offer intact for the right domain.
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        b.bind_interdomain(dom(1), pa.port()).unwrap();
    }

    #[test]
    fn bind_refuses_already_bound_and_missing_ports() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let _pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        assert!(b.bind_interdomain(dom(1), pa.port()).is_err());
        let p9 = EvtchnPort::new(9).unwrap();
        assert_eq!(
            b.bind_interdomain(dom(1), p9).unwrap_err(),
            PlatformError::BadPort(p9)
        );
    }

    #[test]
    fn closing_a_port_unlinks_its_entry() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let entry = port_dir(t.path(), dom(1)).join(pa.port().get().to_string());
        assert!(entry.exists());
        drop(pa);
        assert!(!entry.exists());
        drop(a);
        assert_eq!(
            fs::read_dir(port_dir(t.path(), dom(1))).unwrap().count(),
            0,
            "socket removed too"
        );
    }

    #[test]
    fn hostile_datagrams_are_ignored() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let s = UnixDatagram::unbound().unwrap();
        let p = pa.port().get().to_le_bytes();
        // Wrong sender domain, short, long, port 0, port out of range.
        s.send_to(&[p[0], p[1], p[2], p[3], 3, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        s.send_to(&p, &a.inner.sock_path).unwrap();
        s.send_to(&[p[0], p[1], p[2], p[3], 2, 0, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        s.send_to(&[0, 0, 0, 0, 2, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        s.send_to(&[0, 0x10, 0, 0, 2, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        assert!(a.wait(SHORT).unwrap().is_empty());
        s.send_to(&[p[0], p[1], p[2], p[3], 2, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        assert!(a.wait(SHORT).unwrap().contains(pa.port()));
    }

    #[test]
    fn hostile_registry_entry_is_refused() {
        let t = TestDir::new();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let dir = port_dir(t.path(), dom(1));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("5"), "2\nnot-a-port\n/x\n-\n").unwrap();
        let p5 = EvtchnPort::new(5).unwrap();
        assert_eq!(
            b.bind_interdomain(dom(1), p5).unwrap_err(),
            PlatformError::BadPort(p5)
        );
        assert!(dir.join("5").exists(), "a refused bind restores the entry");
    }

    proptest::proptest! {
        #[test]
        fn registry_entries_round_trip(
            remote in 0u32..0x7FF0,
            port in proptest::option::of(1u32..MAX_PORTS),
            own in "/[a-zA-Z0-9/._-]{0,60}",
            peer in proptest::option::of("/[a-zA-Z0-9/._-]{0,60}"),
        ) {
            let e = Entry {
                remote: dom(remote),
                remote_port: port.map(|p| EvtchnPort::new(p).unwrap()),
                own_sock: PathBuf::from(own),
                peer_sock: peer.map(PathBuf::from),
            };
            proptest::prop_assert_eq!(Entry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn hostile_registry_text_never_panics(s in "\\PC{0,200}") {
            let _ = Entry::decode(&s);
        }

        #[test]
        fn hostile_datagram_bytes_never_panic_or_name_foreign_ports(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
            let t = TestDir::new();
            let ev = HostedEvents::new(t.path(), dom(1)).unwrap();
            let mut set = PortSet::new();
            ev.accept(&d, &mut set);
            proptest::prop_assert!(set.is_empty(), "no port is open, so nothing may be reported");
        }
    }

    #[test]
    fn a_readable_fd_wakes_wait_as_its_pseudo_port_until_drained() {
        use std::os::unix::net::UnixStream;
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let (mine, mut theirs) = UnixStream::pair().unwrap();
        mine.set_nonblocking(true).unwrap();
        let fp = a.register_fd(mine.as_fd()).unwrap();
        assert_eq!(fp.port().get(), FIRST_PSEUDO_PORT);
        assert!(a.wait(SHORT).unwrap().is_empty());
        // A writer while we sleep in poll(2): wait(None) must return.
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            theirs.write_all(b"x").unwrap();
            theirs
        });
        let set = a.wait(None).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [fp.port()]);
        let mut theirs = w.join().unwrap();
        assert!(
            a.wait(Some(Duration::ZERO)).unwrap().contains(fp.port()),
            "level-triggered: still readable, still reported"
        );
        let mut buf = [0u8; 8];
        assert_eq!((&mine).read(&mut buf).unwrap(), 1);
        let start = std::time::Instant::now();
        assert!(a.wait(SHORT).unwrap().is_empty(), "drained fd is quiet");
        assert!(start.elapsed() >= Duration::from_millis(40));
        // Event channels and pseudo-ports in one wakeup.
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        pb.notify().unwrap();
        theirs.write_all(b"y").unwrap();
        let mut got = PortSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(got.contains(pa.port()) && got.contains(fp.port()))
            && std::time::Instant::now() < deadline
        {
            for p in a.wait(Some(Duration::from_secs(1))).unwrap().iter() {
                got.insert(p);
            }
        }
        assert!(got.contains(pa.port()) && got.contains(fp.port()));
        // A hung-up peer is reported too, so the owner sees the end.
        assert_eq!((&mine).read(&mut buf).unwrap(), 1);
        drop(theirs);
        assert!(a.wait(SHORT).unwrap().contains(fp.port()));
        // Unregistered: no longer watched.
        drop(fp);
        assert!(a.wait(SHORT).unwrap().is_empty());
    }

    #[test]
    fn pseudo_ports_are_above_every_event_channel_and_bounded() {
        let t = TestDir::new();
        let a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let (s, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let ports: Vec<FdPort> = (FIRST_PSEUDO_PORT..MAX_PORTS)
            .map(|_| a.register_fd(s.as_fd()).unwrap())
            .collect();
        assert_eq!(ports.len(), 96);
        assert!(ports.iter().all(|p| p.port().get() >= FIRST_PSEUDO_PORT));
        assert_eq!(
            a.register_fd(s.as_fd()).unwrap_err(),
            PlatformError::Full {
                what: "fd pseudo-ports"
            }
        );
        drop(ports);
        assert_eq!(
            a.register_fd(s.as_fd()).unwrap().port().get(),
            FIRST_PSEUDO_PORT
        );
    }

    #[test]
    fn hostile_datagram_naming_a_pseudo_port_is_ignored() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let (s, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let fp = a.register_fd(s.as_fd()).unwrap();
        let d = UnixDatagram::unbound().unwrap();
        let p = fp.port().get().to_le_bytes();
        d.send_to(&[p[0], p[1], p[2], p[3], 2, 0, 0, 0], &a.inner.sock_path)
            .unwrap();
        assert!(a.wait(SHORT).unwrap().is_empty());
    }

    #[test]
    fn event_channels_are_never_allocated_in_the_pseudo_range() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        // Fill the registry up to the last event-channel number, then one more.
        let dir = port_dir(t.path(), dom(1));
        for p in 1..FIRST_PSEUDO_PORT - 1 {
            fs::write(dir.join(p.to_string()), "2\n-\n/x\n-\n").unwrap();
        }
        let last = a.alloc_unbound(dom(2)).unwrap();
        assert_eq!(last.port().get(), FIRST_PSEUDO_PORT - 1);
        assert_eq!(
            a.alloc_unbound(dom(2)).unwrap_err(),
            PlatformError::Full {
                what: "event channel ports"
            }
        );
    }

    #[test]
    fn notify_port_by_number_reaches_the_peer() {
        let t = TestDir::new();
        let mut a = HostedEvents::new(t.path(), dom(1)).unwrap();
        let mut b = HostedEvents::new(t.path(), dom(2)).unwrap();
        let pa = a.alloc_unbound(dom(2)).unwrap();
        let pb = b.bind_interdomain(dom(1), pa.port()).unwrap();
        notify_port(t.path(), dom(2), pb.port()).unwrap();
        assert!(a
            .wait(Some(Duration::from_secs(5)))
            .unwrap()
            .contains(pa.port()));
        notify_port(t.path(), dom(2), EvtchnPort::new(77).unwrap()).unwrap();
    }
}
