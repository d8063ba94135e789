//! Hosted xenstore: a Unix-socket transport for the `xen-store` client, and the daemon that
//! serves the `xen-store` server core on one socket per domain, `<run>/xenstore/d<domid>.sock`.
//!
//! The connection's domid is the socket's domain. Sockets exist for the domains given to
//! [`Daemon::spawn`], for those added with [`Daemon::add_domain`], and on demand: a client
//! that finds no socket creates `<run>/xenstore/d<domid>.want`, which the daemon polls for.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use platform_api::{DomId, EvtchnPort, PlatformError, StoreError};
use xen_store::blocking::{BlockingStore, Transport};
use xen_store::server::{ConnId, Limits, Server};

use crate::events::{FdPort, HostedEvents};

pub use xen_store::blocking::with_transaction;
pub use xen_store::client::WatchEvent;

/// How long [`connect`] waits for the daemon to create a socket asked for on demand.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How often the daemon's threads look at the stop flag and for `.want` files.
const TICK: Duration = Duration::from_millis(20);

/// `<run>/xenstore`.
pub fn store_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("xenstore")
}

/// `<run>/xenstore/d<domid>.sock`: the socket of one domain.
pub fn socket_path(run_dir: &Path, domid: DomId) -> PathBuf {
    store_dir(run_dir).join(format!("d{domid}.sock"))
}

/// `<run>/xenstore/d<domid>.want`: asks the daemon for a domain's socket.
pub fn want_path(run_dir: &Path, domid: DomId) -> PathBuf {
    store_dir(run_dir).join(format!("d{domid}.want"))
}

fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// A stream to the daemon, as a [`Transport`] for [`BlockingStore`].
#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    /// The socket as a pseudo-port of the domain's events, so watches wake `Events::wait`.
    pseudo: Option<FdPort>,
}

impl UnixTransport {
    /// Wraps a connected stream (no pseudo-port: [`Transport::port`] is `None`).
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            pseudo: None,
        }
    }

    /// Wraps a connected stream and registers it as a pseudo-port of `events`.
    pub fn with_events(stream: UnixStream, events: &HostedEvents) -> Result<Self, PlatformError> {
        let pseudo = events.register_fd(stream.as_fd())?;
        Ok(Self {
            stream,
            pseudo: Some(pseudo),
        })
    }
}

impl AsRawFd for UnixTransport {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsFd for UnixTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Transport for UnixTransport {
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        loop {
            match self.stream.write(data) {
                Ok(0) => return Err(StoreError::Disconnected),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(StoreError::Disconnected),
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError> {
        // set_read_timeout refuses zero; poll with a non-blocking read instead.
        let poll = timeout == Some(Duration::ZERO);
        let set = if poll {
            self.stream.set_nonblocking(true)
        } else {
            self.stream.set_read_timeout(timeout)
        };
        set.map_err(|_| StoreError::Disconnected)?;
        let r = loop {
            match self.stream.read(buf) {
                Ok(0) => break Err(StoreError::Disconnected),
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break Ok(0)
                }
                Err(_) => break Err(StoreError::Disconnected),
            }
        };
        if poll {
            self.stream
                .set_nonblocking(false)
                .map_err(|_| StoreError::Disconnected)?;
        }
        r
    }

    fn port(&self) -> Option<EvtchnPort> {
        self.pseudo.as_ref().map(FdPort::port)
    }
}

/// The hosted store client: `platform_api::Store` plus watches
/// ([`BlockingStore::watch`], [`BlockingStore::wait_watch`]).
pub type HostedStore = BlockingStore<UnixTransport>;

/// Connects to the daemon as `domid`, asking for the socket on demand (a `.want` file) and
/// waiting up to [`CONNECT_WAIT`] for it.
pub fn connect(run_dir: &Path, domid: DomId) -> Result<HostedStore, PlatformError> {
    Ok(BlockingStore::new(UnixTransport::new(connect_stream(
        run_dir, domid,
    )?)))
}

/// [`connect`] for the domain of `events`, with the socket registered as a pseudo-port of it,
/// so `Watches::port` is `Some` and fired watches wake `events.wait`. The run loop must still
/// drain `poll_watch` after every wakeup: a watch event read while awaiting a reply is queued
/// in the client, not in the socket.
pub fn connect_with_events(
    run_dir: &Path,
    events: &HostedEvents,
) -> Result<HostedStore, PlatformError> {
    let stream = connect_stream(run_dir, events.domid())?;
    Ok(BlockingStore::new(UnixTransport::with_events(
        stream, events,
    )?))
}

fn connect_stream(run_dir: &Path, domid: DomId) -> Result<UnixStream, PlatformError> {
    let sock = socket_path(run_dir, domid);
    let deadline = Instant::now() + CONNECT_WAIT;
    let mut asked = false;
    loop {
        match UnixStream::connect(&sock) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(os("connect to xenstored", &e)),
            Err(_) => {
                if !asked {
                    fs::create_dir_all(store_dir(run_dir)).map_err(|e| os("mkdir xenstore", &e))?;
                    fs::write(want_path(run_dir, domid), b"").map_err(|e| os("write .want", &e))?;
                    asked = true;
                }
                std::thread::sleep(TICK);
            }
        }
    }
}

/// [`connect`] with the run directory and domid from `QUBES_HOSTED_DIR` / `QUBES_HOSTED_DOMID`.
pub fn connect_from_env() -> Result<HostedStore, PlatformError> {
    let (dir, dom) = crate::events::env_domain()?;
    connect(&dir, dom)
}

struct Shared {
    server: Mutex<Server>,
    /// Signalled on any change of output or connection state.
    changed: Condvar,
    stop: AtomicBool,
    run_dir: PathBuf,
    domains: Mutex<BTreeSet<DomId>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn spawn(self: &Arc<Self>, f: impl FnOnce(Arc<Shared>) + Send + 'static) {
        let me = self.clone();
        let h = std::thread::spawn(move || f(me));
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(h);
    }
}

/// The hosted xenstored: the server core behind one Unix socket per domain, run on threads.
/// Dropping it stops the threads and removes the sockets.
pub struct Daemon {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("run_dir", &self.shared.run_dir)
            .finish()
    }
}

impl Daemon {
    /// Starts serving `domids` (each introduced, with its home created) under `run_dir`.
    pub fn spawn(run_dir: &Path, domids: &[DomId]) -> io::Result<Daemon> {
        Self::spawn_with(run_dir, domids, Limits::DEFAULT)
    }

    /// [`Self::spawn`] with explicit server limits.
    pub fn spawn_with(run_dir: &Path, domids: &[DomId], limits: Limits) -> io::Result<Daemon> {
        fs::create_dir_all(store_dir(run_dir))?;
        let shared = Arc::new(Shared {
            server: Mutex::new(Server::new(limits)),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            run_dir: run_dir.to_path_buf(),
            domains: Mutex::new(BTreeSet::new()),
            threads: Mutex::new(Vec::new()),
        });
        let daemon = Daemon { shared };
        for &d in domids {
            daemon.add_domain(d)?;
        }
        daemon.shared.spawn(scan_wants);
        Ok(daemon)
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.shared.run_dir
    }

    /// Introduces `domid` and listens on its socket (nothing happens if it already is).
    pub fn add_domain(&self, domid: DomId) -> io::Result<()> {
        add_domain(&self.shared, domid)
    }

    /// Runs `f` on the server core, e.g. to fire `@releaseDomain` or seed nodes.
    pub fn with_server<R>(&self, f: impl FnOnce(&mut Server) -> R) -> R {
        let r = f(&mut self.shared.lock());
        self.shared.changed.notify_all();
        r
    }

    /// Stops all threads and removes the sockets.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        loop {
            let next = self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            match next {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
        let domains = self
            .shared
            .domains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for d in domains {
            let _ = fs::remove_file(socket_path(&self.shared.run_dir, d));
        }
    }
}

fn add_domain(shared: &Arc<Shared>, domid: DomId) -> io::Result<()> {
    let mut domains = shared.domains.lock().unwrap_or_else(|p| p.into_inner());
    if domains.contains(&domid) {
        return Ok(());
    }
    let path = socket_path(&shared.run_dir, domid);
    // A socket file left by an earlier run would make bind fail.
    let _ = fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    shared.lock().introduce_domain(domid);
    domains.insert(domid);
    drop(domains);
    let _ = fs::remove_file(want_path(&shared.run_dir, domid));
    shared.spawn(move |s| listen(s, listener, domid));
    Ok(())
}

/// Polls for `d<N>.want` files and creates the sockets they ask for.
fn scan_wants(shared: Arc<Shared>) {
    let dir = store_dir(&shared.run_dir);
    while !shared.stopped() {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(n) = name.strip_prefix('d').and_then(|r| r.strip_suffix(".want")) else {
                    continue;
                };
                match DomId::parse(n) {
                    Ok(d) => {
                        let _ = add_domain(&shared, d);
                    }
                    Err(_) => {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        std::thread::sleep(TICK);
    }
}

fn listen(shared: Arc<Shared>, listener: UnixListener, domid: DomId) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = shared.lock().connect(domid);
                let (Ok(conn), Ok(writer)) = (conn, stream.try_clone()) else {
                    continue;
                };
                if stream.set_nonblocking(false).is_err() {
                    shared.lock().disconnect(conn);
                    continue;
                }
                shared.spawn(move |s| read_loop(s, stream, conn));
                shared.spawn(move |s| write_loop(s, writer, conn));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

fn close(shared: &Shared, conn: ConnId) {
    shared.lock().disconnect(conn);
    shared.changed.notify_all();
}

fn read_loop(shared: Arc<Shared>, mut stream: UnixStream, conn: ConnId) {
    let _ = stream.set_read_timeout(Some(TICK * 5));
    let mut buf = vec![0u8; 4096];
    while !shared.stopped() {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut pending = &buf[..n];
        let mut server = shared.lock();
        while !pending.is_empty() {
            match server.handle_input(conn, pending) {
                Ok(k) => pending = &pending[k..],
                Err(_) => {
                    drop(server);
                    close(&shared, conn);
                    return;
                }
            }
            shared.changed.notify_all();
            if !pending.is_empty() {
                // Output above the bound: wait for the writer to drain it.
                if shared.stopped() || server.conn_domid(conn).is_none() {
                    return;
                }
                server = shared
                    .changed
                    .wait_timeout(server, TICK * 5)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }
    }
    close(&shared, conn);
}

/// Writes all of `data`, giving up only when the daemon stops or the peer is gone; a peer
/// that does not read just keeps this thread waiting (its output stays bounded in the core).
fn send_all(shared: &Shared, stream: &mut UnixStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        if shared.stopped() {
            return Err(ErrorKind::Interrupted.into());
        }
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_loop(shared: Arc<Shared>, mut stream: UnixStream, conn: ConnId) {
    // Bounded waits, so a peer that stops reading cannot keep shutdown from joining us.
    let _ = stream.set_write_timeout(Some(TICK * 5));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = {
            let mut server = shared.lock();
            loop {
                if shared.stopped() || server.conn_domid(conn).is_none() {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return;
                }
                if let Some(n) = server.poll_transmit(conn, &mut buf) {
                    break n;
                }
                server = shared
                    .changed
                    .wait_timeout(server, TICK * 5)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        };
        shared.changed.notify_all();
        if send_all(&shared, &mut stream, &buf[..n]).is_err() {
            close(&shared, conn);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Command line of `hosted-xenstored`: `[RUN_DIR] [--domains 0,1,2]`; the run directory
/// defaults to `QUBES_HOSTED_DIR`.
pub fn parse_args(
    args: &[String],
    env_dir: Option<PathBuf>,
) -> Result<(PathBuf, Vec<DomId>), String> {
    let mut dir = None;
    let mut domids = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--domains" => {
                let list = it.next().ok_or("--domains needs a list such as 0,1,2")?;
                for d in list.split(',').filter(|s| !s.is_empty()) {
                    domids.push(DomId::parse(d).map_err(|e| format!("--domains: {e}"))?);
                }
            }
            "-h" | "--help" => {
                return Err(String::from(
                    "usage: hosted-xenstored [RUN_DIR] [--domains 0,1,2]",
                ))
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    let dir = dir
        .or(env_dir)
        .ok_or("no run directory (argument or QUBES_HOSTED_DIR)")?;
    Ok((dir, domids))
}

#[cfg(test)]
mod tests;
