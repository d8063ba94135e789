//! Setup over the fake hub (grants, events, xenstore), and threaded transfers through it.

use alloc::string::String;
use alloc::vec;

use platform_api::{Access, DomId, Duration, Perm, SharedMem, Store, StoreError, Tx, XsErrno};

use crate::setup::{client_init, read_blocking, server_init, wait_connected, write_all_blocking};
use crate::test_utils::{FakeDomain, FakeMem, FakePort, Hub};
use crate::{Client, Error, Interest, LayoutError, Ring, Server, SetupError};

const SRV: u16 = 5;
const CLI: u16 = 7;
const T: Option<Duration> = Some(Duration::from_secs(20));

fn dom(id: u16) -> DomId {
    DomId::new(u32::from(id)).unwrap()
}

type FS = Server<FakeMem, FakePort>;
type FC = Client<FakeMem, FakePort>;

fn connect(l: usize, r: usize) -> (Hub, FakeDomain, FakeDomain, FS, FC) {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let mut cd = hub.domain(CLI);
    let (mut s, dir) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        513,
        l,
        r,
    )
    .unwrap();
    assert_eq!(dir.path(), "data/vchan/7/513");
    let c = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 513).unwrap();
    wait_connected(&mut s, &mut sd.events, T).unwrap();
    dir.remove(&mut sd.store).unwrap();
    (hub, sd, cd, s, c)
}

#[test]
fn qubes_keys_written_with_permissions() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let (s, _dir) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        512,
        4096,
        4096,
    )
    .unwrap();
    let base = "/local/domain/5/data/vchan/7/512";
    let port =
        String::from_utf8(hub.node(&alloc::format!("{base}/event-channel")).unwrap()).unwrap();
    assert_eq!(
        port,
        alloc::format!("{}", platform_api::Port::port(s.notifier()))
    );
    let rref = hub.node(&alloc::format!("{base}/ring-ref")).unwrap();
    assert!(!rref.is_empty() && rref != b"0");
    let perms = vec![
        Perm {
            domid: dom(SRV),
            access: Access::None,
        },
        Perm {
            domid: dom(CLI),
            access: Access::Read,
        },
    ];
    assert_eq!(
        hub.perms(&alloc::format!("{base}/ring-ref")),
        Some(perms.clone())
    );
    assert_eq!(
        hub.perms(&alloc::format!("{base}/event-channel")),
        Some(perms)
    );
    // A third domain may not read them.
    let mut other = hub.domain(9);
    assert_eq!(
        other
            .store
            .read(Tx::NONE, &alloc::format!("{base}/ring-ref")),
        Err(StoreError::Xs(XsErrno::Eacces))
    );
    assert_eq!(s.geometry().left_order(), 12);
}

#[test]
fn transaction_retried_on_eagain() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    hub.fail_commits(3);
    assert!(server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        512,
        1,
        1
    )
    .is_ok());
    hub.fail_commits(1000);
    let e = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        513,
        1,
        1,
    )
    .unwrap_err();
    assert_eq!(e, SetupError::Store(StoreError::Xs(XsErrno::Eagain)));
}

#[test]
fn client_maps_right_ring_read_only_and_left_writable() {
    let (_hub, _sd, _cd, s, c) = connect(16384, 65536);
    assert!(c.ring_pages(Ring::Left).unwrap().is_writable());
    assert!(!c.ring_pages(Ring::Right).unwrap().is_writable());
    assert_eq!(c.ring_pages(Ring::Right).unwrap().size(), 65536);
    assert!(s.ring_pages(Ring::Right).unwrap().is_writable());
}

#[test]
fn xs_dir_removed_after_connect_keeping_busy_parent() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let mut cd = hub.domain(CLI);
    let (_s1, d1) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        513,
        1,
        1,
    )
    .unwrap();
    let (_s2, d2) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        514,
        1,
        1,
    )
    .unwrap();
    let _c = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 513).unwrap();
    d1.remove(&mut sd.store).unwrap();
    assert!(hub.node("/local/domain/5/data/vchan/7/513").is_none());
    assert!(
        hub.node("/local/domain/5/data/vchan/7").is_some(),
        "port 514 still there"
    );
    d2.remove(&mut sd.store).unwrap();
    assert!(hub.node("/local/domain/5/data/vchan/7").is_none());
    d2.remove(&mut sd.store).unwrap(); // idempotent
}

#[test]
fn client_before_server_is_enoent() {
    let hub = Hub::new();
    let mut cd = hub.domain(CLI);
    let e = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 513).unwrap_err();
    assert_eq!(e, SetupError::Store(StoreError::Xs(XsErrno::Enoent)));
}

#[test]
fn empty_xenstore_value_is_not_ready_not_malformed() {
    let base = "/local/domain/5/data/vchan/7/600";
    for (rref, port, key) in [
        ("", "3", "ring-ref"),
        ("12", "", "event-channel"),
        ("12", "\0", "event-channel"),
    ] {
        let hub = Hub::new();
        let mut cd = hub.domain(CLI);
        hub.set_node(&alloc::format!("{base}/ring-ref"), rref.as_bytes());
        hub.set_node(&alloc::format!("{base}/event-channel"), port.as_bytes());
        let e =
            client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 600).unwrap_err();
        assert_eq!(e, SetupError::NotReady { key }, "{rref:?}/{port:?}");
        assert!(e.is_not_ready());
    }
}

#[test]
fn missing_key_is_enoent_and_not_ready() {
    let hub = Hub::new();
    let mut cd = hub.domain(CLI);
    hub.set_node("/local/domain/5/data/vchan/7/600/ring-ref", b"12");
    let e = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 600).unwrap_err();
    assert_eq!(e, SetupError::Store(StoreError::Xs(XsErrno::Enoent)));
    assert!(e.is_not_ready());
    assert!(!SetupError::BadValue { key: "ring-ref" }.is_not_ready());
}

#[test]
fn loopback_refused() {
    let hub = Hub::new();
    let mut d = hub.domain(CLI);
    let e = client_init(&mut d.grants, &mut d.events, &mut d.store, dom(CLI), 1).unwrap_err();
    assert_eq!(e, SetupError::Loopback);
}

#[test]
fn zero_or_garbage_xenstore_values_refused() {
    let base = "/local/domain/5/data/vchan/7/600";
    for (rref, port, key) in [
        ("0", "3", "ring-ref"),
        ("12", "0", "event-channel"),
        ("x1", "3", "ring-ref"),
        ("12", "-1", "event-channel"),
        ("12", "99999", "event-channel"),
    ] {
        let hub = Hub::new();
        let mut cd = hub.domain(CLI);
        hub.set_node(&alloc::format!("{base}/ring-ref"), rref.as_bytes());
        hub.set_node(&alloc::format!("{base}/event-channel"), port.as_bytes());
        let e =
            client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 600).unwrap_err();
        assert_eq!(e, SetupError::BadValue { key }, "{rref}/{port}");
    }
}

#[test]
fn hostile_server_orders_refused_by_client_init() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let mut cd = hub.domain(CLI);
    let (s, _d) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        700,
        1,
        1,
    )
    .unwrap();
    s.control_page()
        .store_u16(16, 30, platform_api::Ordering::SeqCst)
        .unwrap();
    let e = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 700).unwrap_err();
    assert_eq!(
        e,
        SetupError::Layout(LayoutError::BadOrder {
            ring: Ring::Left,
            order: 30
        })
    );
}

#[test]
fn server_too_large_refused() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let e = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        1,
        2 << 20,
        1,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        SetupError::Layout(LayoutError::TooLarge { .. })
    ));
}

#[test]
fn blocking_helpers_over_the_hub() {
    let (_hub, mut sd, mut cd, mut s, mut c) = connect(1024, 2048);
    write_all_blocking(&mut c, &mut cd.events, b"ping", T).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        read_blocking(&mut s, &mut sd.events, &mut buf, T).unwrap(),
        4
    );
    assert_eq!(&buf[..4], b"ping");
    // Nothing more comes: a short timeout is a typed error, not a hang.
    assert_eq!(
        read_blocking(
            &mut s,
            &mut sd.events,
            &mut buf,
            Some(Duration::from_millis(20))
        ),
        Err(Error::Timeout)
    );
    c.close().unwrap();
    assert_eq!(
        read_blocking(&mut s, &mut sd.events, &mut buf, T).unwrap(),
        0,
        "EOF"
    );
}

#[test]
fn dropped_client_ends_a_blocked_read_with_eof() {
    let (_hub, mut sd, _cd, mut s, mut c) = connect(1024, 2048);
    assert_eq!(c.write(b"last").unwrap(), 4);
    drop(c);
    let mut buf = [0u8; 16];
    assert_eq!(
        read_blocking(&mut s, &mut sd.events, &mut buf, T).unwrap(),
        4
    );
    // Without the close on drop the live byte would stay 1 and this would time out.
    assert_eq!(
        read_blocking(
            &mut s,
            &mut sd.events,
            &mut buf,
            Some(Duration::from_secs(2))
        ),
        Ok(0),
        "EOF"
    );
}

fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h = (*h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
}

fn gen(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Full-duplex event-loop style transfer of `total` bytes each way; returns (sent, received)
/// checksums.
fn duplex<V: crate::setup::Stream, E: platform_api::Events>(
    v: &mut V,
    events: &mut E,
    total: u64,
) -> (u64, u64) {
    let (mut hs, mut hr) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut out = vec![0u8; 50_000];
    let mut inp = vec![0u8; 70_000];
    let mut pending = 0..0;
    while sent < total || got < total {
        let mut progress = false;
        if pending.is_empty() && sent < total {
            let n = (total - sent).min(out.len() as u64 - 123 * (sent % 7)) as usize;
            for (k, b) in out[..n].iter_mut().enumerate() {
                *b = gen(sent + k as u64);
            }
            pending = 0..n;
        }
        if !pending.is_empty() {
            let n = v.write(&out[pending.clone()]).unwrap();
            fnv(&mut hs, &out[pending.start..pending.start + n]);
            pending.start += n;
            sent += n as u64;
            progress |= n > 0;
        }
        if got < total {
            match v.read(&mut inp) {
                Ok(n) => {
                    fnv(&mut hr, &inp[..n]);
                    got += n as u64;
                    progress |= n > 0;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        if !progress {
            let interest = Interest {
                read: got < total,
                write: sent < total,
            };
            if v.prepare_wait(interest).unwrap() {
                let ports = events.wait(Some(Duration::from_secs(20))).unwrap();
                assert!(!ports.is_empty(), "stalled: sent {sent} got {got}");
            }
        }
    }
    (hs, hr)
}

fn threaded(total: u64, l: usize, r: usize) {
    let (_hub, mut sd, mut cd, mut s, mut c) = connect(l, r);
    let st = std::thread::spawn(move || duplex(&mut s, &mut sd.events, total));
    let (c_sent, c_got) = duplex(&mut c, &mut cd.events, total);
    let (s_sent, s_got) = st.join().unwrap();
    let mut expect = 0xcbf2_9ce4_8422_2325u64;
    let mut chunk = vec![0u8; 1 << 16];
    let mut i = 0u64;
    while i < total {
        let n = (total - i).min(chunk.len() as u64) as usize;
        for (k, b) in chunk[..n].iter_mut().enumerate() {
            *b = gen(i + k as u64);
        }
        fnv(&mut expect, &chunk[..n]);
        i += n as u64;
    }
    assert_eq!(c_sent, expect);
    assert_eq!(s_sent, expect);
    assert_eq!(s_got, c_sent, "client -> server");
    assert_eq!(c_got, s_sent, "server -> client");
}

/// 8 MiB each way at the qrexec data size (16/16), two threads, checksummed.
#[test]
fn threaded_8mib_each_way_64k_rings() {
    threaded(8 << 20, 65536, 65536);
}

/// 8 MiB each way through the in-page rings (10/11).
#[test]
fn threaded_8mib_each_way_in_page_rings() {
    threaded(8 << 20, 1024, 2048);
}

/// The big one for the lead: `cargo test -p vchan --release -- --ignored threaded_64mib`.
#[test]
#[ignore = "64 MiB each way; run with --release -- --ignored"]
fn threaded_64mib_each_way() {
    threaded(64 << 20, 65536, 65536);
    threaded(64 << 20, 1 << 20, 4096);
}

#[test]
fn hostile_grant_refs_in_control_page_refused_by_mapping() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let mut cd = hub.domain(CLI);
    let (s, _d) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        701,
        4096,
        4096,
    )
    .unwrap();
    // Point the left ring's grant at a ref that was never granted to the client.
    s.control_page()
        .store_u32(24, 0xDEAD, platform_api::Ordering::SeqCst)
        .unwrap();
    let e = client_init(&mut cd.grants, &mut cd.events, &mut cd.store, dom(SRV), 701).unwrap_err();
    assert_eq!(
        e,
        SetupError::Platform(platform_api::PlatformError::BadGrant(
            platform_api::GrantRef(0xDEAD)
        ))
    );
}

/// A hub store whose transactions conflict like xenstored's: `rm` inside a transaction waits
/// for the commit, and a commit fails with `EAGAIN` if another connection wrote meanwhile.
/// `race` runs once, right after the first `directory` call, as that other connection.
struct RacyStore<F: FnMut()> {
    inner: crate::test_utils::FakeStore,
    race: Option<F>,
    conflict: bool,
    deferred: alloc::vec::Vec<String>,
}

impl<F: FnMut()> Store for RacyStore<F> {
    fn read(&mut self, tx: Tx, path: &str) -> Result<alloc::vec::Vec<u8>, StoreError> {
        self.inner.read(tx, path)
    }
    fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.write(tx, path, value)
    }
    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        self.inner.mkdir(tx, path)
    }
    fn rm(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        if tx == Tx::NONE {
            return self.inner.rm(tx, path);
        }
        self.inner.get_perms(tx, path)?;
        self.deferred.push(String::from(path));
        Ok(())
    }
    fn directory(&mut self, tx: Tx, path: &str) -> Result<alloc::vec::Vec<String>, StoreError> {
        let seen = self.inner.directory(tx, path);
        if let Some(mut race) = self.race.take() {
            race();
            self.conflict = true;
        }
        seen
    }
    fn get_perms(&mut self, tx: Tx, path: &str) -> Result<alloc::vec::Vec<Perm>, StoreError> {
        self.inner.get_perms(tx, path)
    }
    fn set_perms(&mut self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        self.inner.set_perms(tx, path, perms)
    }
    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        self.conflict = false;
        self.deferred.clear();
        self.inner.transaction_start()
    }
    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), StoreError> {
        let deferred = core::mem::take(&mut self.deferred);
        if commit && core::mem::take(&mut self.conflict) {
            return Err(StoreError::Xs(XsErrno::Eagain));
        }
        if commit {
            for p in deferred {
                match self.inner.rm(Tx::NONE, &p) {
                    Ok(()) | Err(StoreError::Xs(XsErrno::Enoent)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.inner.transaction_end(tx, commit)
    }
}

#[test]
fn xs_dir_remove_keeps_a_neighbour_created_during_the_emptiness_check() {
    let hub = Hub::new();
    let mut sd = hub.domain(SRV);
    let (_s, dir) = server_init(
        &mut sd.grants,
        &mut sd.events,
        &mut sd.store,
        dom(CLI),
        513,
        1,
        1,
    )
    .unwrap();
    let neighbour = "/local/domain/5/data/vchan/7/514/ring-ref";
    let racer = hub.clone();
    let mut store = RacyStore {
        inner: hub.domain(SRV).store,
        race: Some(move || racer.set_node(neighbour, b"77")),
        conflict: false,
        deferred: alloc::vec::Vec::new(),
    };
    dir.remove(&mut store).unwrap();
    assert!(hub.node("/local/domain/5/data/vchan/7/513").is_none());
    assert_eq!(
        hub.node(neighbour).as_deref(),
        Some(&b"77"[..]),
        "a server that advertised while we checked keeps its keys"
    );
    assert!(hub.node("/local/domain/5/data/vchan/7").is_some());
}
