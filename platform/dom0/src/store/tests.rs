//! The transport over a socketpair whose far end is `xen-store`'s server core, as the xenbus
//! device's far end is xenstored: requests, watches waking `wait`, timeouts, a dead or
//! hostile far end.

use super::*;
use platform_api::{DomId, Events, Store, Tx, Watches};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use xen_store::server::{Limits, Server};

fn dom(d: u32) -> DomId {
    DomId::new(d).unwrap()
}

/// The server core behind socketpairs, one serving thread per connection.
pub(crate) struct Xenstored {
    server: Arc<Mutex<Server>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Xenstored {
    pub(crate) fn new(domains: &[DomId]) -> Self {
        let mut s = Server::new(Limits::DEFAULT);
        for &d in domains {
            s.introduce_domain(d);
        }
        Self {
            server: Arc::new(Mutex::new(s)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// A client end connected as `domid`.
    pub(crate) fn connect(&mut self, domid: DomId) -> OwnedFd {
        let (client, mut far) = UnixStream::pair().unwrap();
        let conn = self.server.lock().unwrap().connect(domid).unwrap();
        let (server, stop) = (self.server.clone(), self.stop.clone());
        far.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                match far.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if server
                            .lock()
                            .unwrap()
                            .handle_input(conn, &buf[..n])
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
                loop {
                    let n = server.lock().unwrap().poll_transmit(conn, &mut buf);
                    match n {
                        Some(n) => {
                            if far.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        None => break,
                    }
                }
            }
            server.lock().unwrap().disconnect(conn);
        }));
        OwnedFd::from(client)
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn requests_round_trip_through_the_fd_transport() {
    let mut xs = Xenstored::new(&[dom(7)]);
    let mut s = BlockingStore::new(FdTransport::new(xs.connect(dom(0))).unwrap());
    s.write(Tx::NONE, "/local/domain/7/name", b"work").unwrap();
    assert_eq!(s.read(Tx::NONE, "/local/domain/7/name").unwrap(), b"work");
    let mut kids = s.directory(Tx::NONE, "/local/domain/7").unwrap();
    kids.sort();
    assert_eq!(kids, ["domid", "name"]);
    s.rm(Tx::NONE, "/local/domain/7/name").unwrap();
    assert_eq!(
        s.read(Tx::NONE, "/local/domain/7/name").unwrap_err(),
        StoreError::Xs(platform_api::XsErrno::Enoent)
    );
    // A domU's relative paths resolve under its own home, which is how env_from_system
    // learns its domid.
    let mut u = BlockingStore::new(FdTransport::new(xs.connect(dom(7))).unwrap());
    assert_eq!(u.read(Tx::NONE, "domid").unwrap(), b"7");
    let big = vec![b'v'; 2000];
    u.write(Tx::NONE, "data/big", &big).unwrap();
    assert_eq!(u.read(Tx::NONE, "data/big").unwrap(), big);
}

#[test]
fn a_fired_watch_wakes_wait_on_the_store_pseudo_port() {
    let mut xs = Xenstored::new(&[dom(7)]);
    let mut events = DomEvents::fd_only();
    let mut s = BlockingStore::new(FdTransport::with_events(xs.connect(dom(7)), &events).unwrap());
    let mut d0 = BlockingStore::new(FdTransport::new(xs.connect(dom(0))).unwrap());
    let port = Watches::port(&s).expect("the store has a pseudo-port");
    s.watch("control", "tok").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.is_empty() && Instant::now() < deadline {
        while let Some(ev) = Watches::poll_watch(&mut s).unwrap() {
            seen.push((ev.path, ev.token));
        }
        if seen.is_empty() {
            events.wait(Some(Duration::from_millis(100))).unwrap();
        }
    }
    assert_eq!(
        seen,
        [("control".to_string(), "tok".to_string())],
        "the initial firing"
    );
    assert!(
        events
            .wait(Some(Duration::from_millis(30)))
            .unwrap()
            .is_empty(),
        "a drained transport no longer wakes wait"
    );
    d0.write(Tx::NONE, "/local/domain/7/control/shutdown", b"poweroff")
        .unwrap();
    let set = events.wait(Some(Duration::from_secs(5))).unwrap();
    assert!(set.contains(port), "wait woke on the store's pseudo-port");
    let ev = Watches::poll_watch(&mut s).unwrap().expect("the change");
    assert_eq!(ev.path, "control/shutdown", "relative watch, relative path");
    drop(s);
    assert!(
        events.wait(Some(Duration::ZERO)).unwrap().is_empty(),
        "dropping the store unregisters its fd"
    );
}

#[test]
fn recv_times_out_with_zero_and_a_closed_far_end_is_disconnected() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut t = FdTransport::new(OwnedFd::from(a)).unwrap();
    let mut buf = [0u8; 16];
    let start = Instant::now();
    assert_eq!(
        t.recv(&mut buf, Some(Duration::from_millis(30))).unwrap(),
        0
    );
    assert!(start.elapsed() >= Duration::from_millis(29));
    assert_eq!(t.recv(&mut buf, Some(Duration::ZERO)).unwrap(), 0);
    drop(b);
    assert_eq!(t.recv(&mut buf, None), Err(StoreError::Disconnected));
    assert_eq!(t.send(b"x"), Err(StoreError::Disconnected));
}

#[test]
fn a_request_to_a_dead_xenstored_fails_instead_of_hanging() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut s = BlockingStore::new(FdTransport::new(OwnedFd::from(a)).unwrap());
    let far = std::thread::spawn(move || {
        let mut b = b;
        let mut hdr = [0u8; 16];
        b.read_exact(&mut hdr).unwrap();
        // Read the request header, then die without answering.
    });
    assert_eq!(s.read(Tx::NONE, "/x"), Err(StoreError::Disconnected));
    far.join().unwrap();
}

#[test]
fn hostile_reply_length_is_refused_before_allocating() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut s = BlockingStore::new(FdTransport::new(OwnedFd::from(a)).unwrap());
    let far = std::thread::spawn(move || {
        let mut req = [0u8; 64];
        let n = b.read(&mut req).unwrap();
        assert!(n >= 16);
        // A READ reply with the request's id declaring a 4 GiB payload.
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&2u32.to_le_bytes());
        hdr.extend_from_slice(&req[4..8]);
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&u32::MAX.to_le_bytes());
        b.write_all(&hdr).unwrap();
        b
    });
    let e = s.read(Tx::NONE, "/x").unwrap_err();
    assert!(matches!(e, StoreError::BadReply(_)), "{e:?}");
    drop(far.join().unwrap());
}

#[test]
fn the_transport_takes_a_large_write_even_when_the_socket_buffer_fills() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut t = FdTransport::new(OwnedFd::from(a)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = b;
        std::thread::sleep(Duration::from_millis(50));
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        all.len()
    });
    let data = vec![7u8; 4 << 20];
    let mut at = 0;
    while at < data.len() {
        at += t.send(&data[at..]).unwrap();
    }
    drop(t);
    assert_eq!(reader.join().unwrap(), data.len());
}

#[test]
fn driver_refusals_of_a_message_are_xenstore_errors_and_dead_fds_are_disconnects() {
    let e = |n| std::io::Error::from_raw_os_error(n);
    assert_eq!(
        write_error(&e(libc::EINVAL)),
        StoreError::Xs(platform_api::XsErrno::Einval)
    );
    assert_eq!(
        write_error(&e(libc::E2BIG)),
        StoreError::Xs(platform_api::XsErrno::E2big)
    );
    assert_eq!(write_error(&e(libc::EPIPE)), StoreError::Disconnected);
    assert_eq!(write_error(&e(libc::EBADF)), StoreError::Disconnected);
}

#[test]
fn a_store_path_that_is_a_socket_is_connected_to() {
    let dir = std::env::temp_dir().join(format!("dom0-xs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let fd = open_path(&sock).unwrap();
    let (mut far, _) = listener.accept().unwrap();
    let mut t = FdTransport::new(fd).unwrap();
    assert_eq!(t.send(b"ping").unwrap(), 4);
    let mut got = [0u8; 4];
    far.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(matches!(
        open_path(&dir.join("missing")),
        Err(PlatformError::Os {
            what: "stat XENSTORED_PATH",
            ..
        })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
