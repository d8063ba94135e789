//! The daemon on threads with real sockets: two domains, permissions, a watch, a transaction
//! conflict and the retry helper, on-demand sockets.

use std::sync::atomic::AtomicU32;

use platform_api::{Access, Perm, Store, StoreError, Tx, XsErrno};

use super::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "xs-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn d(n: u32) -> DomId {
    DomId::new(n).unwrap()
}

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn two_domains_perms_watch_and_transactions() {
    let dir = run_dir();
    let daemon = Daemon::spawn(&dir, &[d(0), d(1), d(2)]).unwrap();
    let mut dom0 = connect(&dir, d(0)).unwrap();
    let mut a = connect(&dir, d(1)).unwrap();
    let mut b = connect(&dir, d(2)).unwrap();

    assert_eq!(a.read(Tx::NONE, "domid").unwrap(), b"1");
    assert_eq!(b.read(Tx::NONE, "domid").unwrap(), b"2");
    a.write(Tx::NONE, "data/vchan/2/111/ring-ref", b"8")
        .unwrap();
    let other = "/local/domain/1/data/vchan/2/111/ring-ref";
    assert_eq!(
        b.read(Tx::NONE, other),
        Err(StoreError::Xs(XsErrno::Eacces))
    );
    assert_eq!(
        b.write(Tx::NONE, other, b"9"),
        Err(StoreError::Xs(XsErrno::Eacces))
    );
    assert_eq!(dom0.read(Tx::NONE, other).unwrap(), b"8");
    let perms = [
        Perm {
            domid: d(1),
            access: Access::None,
        },
        Perm {
            domid: d(2),
            access: Access::Read,
        },
    ];
    a.set_perms(Tx::NONE, "data/vchan/2/111/ring-ref", &perms)
        .unwrap();
    assert_eq!(b.read(Tx::NONE, other).unwrap(), b"8");
    assert_eq!(b.get_perms(Tx::NONE, other).unwrap(), perms.to_vec());

    // A watch fires once at once, then on a change made by another domain.
    b.watch(other, "ring").unwrap();
    let ev = b.wait_watch(WAIT).unwrap().unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), (other, "ring"));
    a.write(Tx::NONE, "data/vchan/2/111/ring-ref", b"10")
        .unwrap();
    let ev = b.wait_watch(WAIT).unwrap().unwrap();
    assert_eq!(ev.path, other);
    assert_eq!(b.wait_watch(Some(Duration::from_millis(50))).unwrap(), None);

    // Relative watch in the own home gives relative paths.
    a.watch("control", "ctl").unwrap();
    assert_eq!(a.wait_watch(WAIT).unwrap().unwrap().path, "control");
    dom0.write(Tx::NONE, "/local/domain/1/control/shutdown", b"poweroff")
        .unwrap();
    assert_eq!(
        a.wait_watch(WAIT).unwrap().unwrap().path,
        "control/shutdown"
    );

    // A conflicting write makes the commit fail with EAGAIN; the helper retries and succeeds.
    a.write(Tx::NONE, "counter", b"0").unwrap();
    let mut a2 = connect(&dir, d(1)).unwrap();
    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read(tx, "counter").unwrap(), b"0");
    a.write(tx, "counter", b"1").unwrap();
    a2.write(Tx::NONE, "counter", b"5").unwrap();
    assert_eq!(
        a.transaction_end(tx, true),
        Err(StoreError::Xs(XsErrno::Eagain))
    );
    assert_eq!(a.read(Tx::NONE, "counter").unwrap(), b"5");
    let mut attempts = 0;
    let v = with_transaction(&mut a, 5, |s, tx| {
        attempts += 1;
        let n: u32 = String::from_utf8(s.read(tx, "counter")?)
            .unwrap()
            .parse()
            .unwrap();
        if attempts == 1 {
            a2.write(Tx::NONE, "counter", b"7").unwrap();
        }
        s.write(tx, "counter", format!("{}", n + 1).as_bytes())?;
        Ok(n + 1)
    })
    .unwrap();
    assert_eq!((v, attempts), (8, 2));
    assert_eq!(a.read(Tx::NONE, "counter").unwrap(), b"8");
    drop(daemon);
    assert!(!socket_path(&dir, d(1)).exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn socket_on_demand_and_special_watch() {
    let dir = run_dir();
    let daemon = Daemon::spawn(&dir, &[d(0)]).unwrap();
    let mut dom0 = connect(&dir, d(0)).unwrap();
    dom0.watch("@introduceDomain", "intro").unwrap();
    assert_eq!(
        dom0.wait_watch(WAIT).unwrap().unwrap().path,
        "@introduceDomain"
    );
    // No socket for domain 7 yet: connect asks for one with a .want file.
    let mut c = connect(&dir, d(7)).unwrap();
    assert_eq!(c.read(Tx::NONE, "domid").unwrap(), b"7");
    assert_eq!(
        dom0.wait_watch(WAIT).unwrap().unwrap().path,
        "@introduceDomain"
    );
    assert!(dom0.is_domain_introduced(d(7)).unwrap());
    daemon.with_server(|s| s.release_domain(d(7)));
    dom0.watch("@releaseDomain", "rel").unwrap();
    assert_eq!(dom0.wait_watch(WAIT).unwrap().unwrap().token, "rel");
    assert!(!dom0.is_domain_introduced(d(7)).unwrap());
    drop(daemon);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn hostile_oversized_frame_closes_only_that_connection() {
    let dir = run_dir();
    let _daemon = Daemon::spawn(&dir, &[d(1)]).unwrap();
    let mut good = connect(&dir, d(1)).unwrap();
    let mut bad = UnixStream::connect(socket_path(&dir, d(1))).unwrap();
    let mut h = [0u8; 16];
    h[0] = 2;
    h[12..].copy_from_slice(&100_000u32.to_le_bytes());
    bad.write_all(&h).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap(),
        0,
        "the daemon closes the connection"
    );
    assert_eq!(good.read(Tx::NONE, "domid").unwrap(), b"1");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn hostile_client_that_never_reads_stalls_only_itself() {
    use xen_store::wire::{Request, RequestMsg, XsPath};
    let dir = run_dir();
    let daemon = Daemon::spawn(&dir, &[d(1), d(2)]).unwrap();
    let mut bad = UnixStream::connect(socket_path(&dir, d(1))).unwrap();
    bad.set_nonblocking(true).unwrap();
    let req = RequestMsg {
        req_id: 1,
        tx_id: 0,
        request: Request::Read(XsPath::new("domid").unwrap()),
    }
    .to_vec()
    .unwrap();
    let flood: Vec<u8> = req
        .iter()
        .copied()
        .cycle()
        .take(req.len() * 200_000)
        .collect();
    let mut at = 0;
    let start = Instant::now();
    while at < flood.len() && start.elapsed() < Duration::from_millis(1500) {
        match bad.write(&flood[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        at < flood.len(),
        "the daemon stops reading a client that does not read"
    );
    let mut good = connect(&dir, d(2)).unwrap();
    assert_eq!(good.read(Tx::NONE, "domid").unwrap(), b"2");
    let t = Instant::now();
    drop(daemon);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn hosted_store_is_a_sendable_store() {
    fn check<T: Store + Send + 'static>() {}
    check::<HostedStore>();
}

#[test]
fn args_parse() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (dir, ds) = parse_args(&s(&["/tmp/r", "--domains", "0,1,2"]), None).unwrap();
    assert_eq!(dir, PathBuf::from("/tmp/r"));
    assert_eq!(ds, vec![d(0), d(1), d(2)]);
    let (dir, ds) = parse_args(&s(&[]), Some(PathBuf::from("/e"))).unwrap();
    assert_eq!((dir, ds.len()), (PathBuf::from("/e"), 0));
    assert!(parse_args(&s(&[]), None).is_err());
    assert!(parse_args(&s(&["x", "--domains", "a"]), None).is_err());
    assert!(parse_args(&s(&["x", "--bogus"]), None).is_err());
}
