//! The page transport against a simulated xenstored (the server core on the daemon side of
//! the same HeapMem): streaming past the ring size, wrap-around, hostile indices, reconnection.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use platform_api::{DomId, HeapMem, PlatformError, Store, Tx, XsErrno};

use super::*;
use crate::blocking::BlockingStore;
use crate::client::Limits as ClientLimits;
use crate::server::{ConnId, Limits, Server};
use crate::wire::{Reply, Request, XsPath};

struct SimXenstored {
    mem: HeapMem,
    ring: StoreRing,
    server: Server,
    conn: ConnId,
    leftover: Vec<u8>,
    notified: usize,
}

impl SimXenstored {
    fn new(mem: &HeapMem) -> Self {
        let mut server = Server::new(Limits::DEFAULT);
        let dom = DomId::new(5).unwrap();
        server.introduce_domain(dom);
        let conn = server.connect(dom).unwrap();
        let ring = StoreRing::attach(mem, Side::Daemon).unwrap();
        Self {
            mem: mem.clone(),
            ring,
            server,
            conn,
            leftover: Vec::new(),
            notified: 0,
        }
    }

    /// Moves bytes until nothing moves; returns whether anything did.
    fn step(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut moved = false;
            let mut buf = [0u8; 1024];
            if self.leftover.is_empty() {
                let n = self.ring.read(&self.mem, &mut buf).unwrap();
                self.leftover.extend_from_slice(&buf[..n]);
                moved |= n > 0;
            }
            let k = self.server.handle_input(self.conn, &self.leftover).unwrap();
            self.leftover.drain(..k);
            let room = self.ring.writable(&self.mem).unwrap();
            if room > 0 {
                if let Some(n) = self.server.poll_transmit(self.conn, &mut buf[..room]) {
                    assert_eq!(self.ring.write(&self.mem, &buf[..n]).unwrap(), n);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
            any = true;
            self.notified += 1;
        }
        any
    }
}

fn page_with_indices(start: u32) -> HeapMem {
    let mem = HeapMem::new(4096);
    for off in [REQ.cons, REQ.prod, RSP.cons, RSP.prod] {
        mem.store_u32(off, start, Ordering::Release).unwrap();
    }
    mem
}

fn p(s: &str) -> XsPath {
    XsPath::new(s).unwrap()
}

/// Drives guest and daemon until the reply to `id` arrives.
fn round_trip(
    mem: &HeapMem,
    guest: &mut StoreRing,
    client: &mut Client,
    sim: &mut SimXenstored,
    id: crate::client::ReqId,
) -> Result<Reply, platform_api::StoreError> {
    for _ in 0..1000 {
        let _ = guest.pump(mem, client).unwrap();
        sim.step();
        if let Some(r) = client.take_reply(id) {
            return r;
        }
    }
    panic!("no reply");
}

#[test]
fn messages_larger_than_the_ring_stream_across_wrap_near_u32_max() {
    let mem = page_with_indices(u32::MAX - 100);
    let mut sim = SimXenstored::new(&mem);
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    let mut client = Client::new(ClientLimits::DEFAULT);
    let value: Vec<u8> = (0..2048u32).map(|i| b'a' + (i % 26) as u8).collect();
    for key in ["big", "big2", "big3"] {
        let id = client
            .send(
                Tx::NONE,
                Request::Write {
                    path: p(key),
                    value: value.clone(),
                },
            )
            .unwrap();
        assert!(round_trip(&mem, &mut guest, &mut client, &mut sim, id).is_ok());
        let id = client.send(Tx::NONE, Request::Read(p(key))).unwrap();
        let r = round_trip(&mem, &mut guest, &mut client, &mut sim, id);
        assert_eq!(r, Ok(Reply::Read(value.clone())));
    }
    // The indices wrapped past u32::MAX.
    assert!(mem.load_u32(REQ.prod, Ordering::Acquire).unwrap() < 1 << 20);
    assert!(mem.load_u32(RSP.prod, Ordering::Acquire).unwrap() < 1 << 20);
}

#[test]
fn pump_reports_when_to_notify() {
    let mem = page_with_indices(7);
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    let mut client = Client::default();
    assert!(!guest.pump(&mem, &mut client).unwrap().notify());
    client.send(Tx::NONE, Request::Read(p("domid"))).unwrap();
    let pump = guest.pump(&mem, &mut client).unwrap();
    assert_eq!(
        pump,
        Pump {
            sent: 22,
            received: 0
        }
    );
    assert!(pump.notify());
    let mut sim = SimXenstored::new(&mem);
    assert!(sim.step());
    let pump = guest.pump(&mem, &mut client).unwrap();
    assert_eq!(pump.received, 17);
}

#[test]
fn hostile_rsp_prod_beyond_ring_refused_and_sticky() {
    let mem = page_with_indices(100);
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    mem.store_u32(RSP.prod, 100 + RING_SIZE + 1, Ordering::Release)
        .unwrap();
    let mut buf = [0u8; 16];
    let e = guest.read(&mem, &mut buf).unwrap_err();
    assert_eq!(
        e,
        StoreRingError::Ring(RingError::BadIndex {
            in_flight: 1025,
            size: 1024
        })
    );
    // Repairing the index does not revive a broken ring.
    mem.store_u32(RSP.prod, 100, Ordering::Release).unwrap();
    assert_eq!(guest.read(&mem, &mut buf), Err(e));
    assert_eq!(guest.write(&mem, b"x"), Err(e));
    let mut client = Client::default();
    assert_eq!(guest.pump(&mem, &mut client), Err(e));
}

#[test]
fn hostile_req_cons_ahead_of_prod_refused() {
    let mem = page_with_indices(0);
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    mem.store_u32(REQ.cons, 5, Ordering::Release).unwrap();
    assert!(matches!(
        guest.write(&mem, b"abc"),
        Err(StoreRingError::Ring(RingError::BadIndex { .. }))
    ));
}

#[test]
fn hostile_req_prod_refused_by_daemon_side() {
    let mem = page_with_indices(u32::MAX);
    let mut daemon = StoreRing::attach(&mem, Side::Daemon).unwrap();
    mem.store_u32(REQ.prod, u32::MAX.wrapping_add(2000), Ordering::Release)
        .unwrap();
    let mut buf = [0u8; 8];
    assert!(daemon.read(&mem, &mut buf).is_err());
}

#[test]
fn page_smaller_than_the_interface_refused() {
    let mem = HeapMem::new(INTERFACE_SIZE - 4);
    assert!(StoreRing::attach(&mem, Side::Guest).is_err());
}

#[test]
fn reconnect_only_with_feature_bit0() {
    let mem = page_with_indices(300);
    assert_eq!(
        StoreRing::start_reconnect(&mem),
        Err(StoreRingError::NoReconnect { features: 0 })
    );
    assert_eq!(
        mem.load_u32(CONNECTION, Ordering::Acquire).unwrap(),
        CONNECTED
    );
    mem.store_u32(
        SERVER_FEATURES,
        FEATURE_RECONNECTION | FEATURE_ERROR,
        Ordering::Release,
    )
    .unwrap();
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    let mut client = Client::default();
    let lost = client.send(Tx::NONE, Request::Read(p("domid"))).unwrap();
    let _ = guest.pump(&mem, &mut client).unwrap();
    StoreRing::start_reconnect(&mem).unwrap();
    assert!(!StoreRing::reconnect_done(&mem).unwrap());
    assert!(StoreRing::reconnect_requested(&mem).unwrap());
    let mut daemon = StoreRing::complete_reconnect(&mem).unwrap();
    assert!(StoreRing::reconnect_done(&mem).unwrap());
    let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
    client.reset();
    assert_eq!(
        client.take_reply(lost),
        Some(Err(platform_api::StoreError::Disconnected))
    );
    assert_eq!(guest.write(&mem, b"hi").unwrap(), 2);
    let mut buf = [0u8; 4];
    assert_eq!(daemon.read(&mem, &mut buf).unwrap(), 2);
    assert_eq!(mem.load_u32(REQ.prod, Ordering::Acquire).unwrap(), 2);
}

struct CountNotify(Rc<Cell<usize>>);

impl Notify for CountNotify {
    fn notify(&self) -> Result<(), PlatformError> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

#[test]
fn blocking_store_over_the_ring() {
    let mem = page_with_indices(u32::MAX - 3);
    let sim = Rc::new(RefCell::new(SimXenstored::new(&mem)));
    let kicks = Rc::new(Cell::new(0));
    let s2 = sim.clone();
    // "Waiting" runs the simulated xenstored, as the event channel would wake it.
    let wait = move |_t: Option<Duration>| {
        s2.borrow_mut().step();
        Ok(())
    };
    let t = RingTransport::new(mem.clone(), CountNotify(kicks.clone()), wait).unwrap();
    let mut store = BlockingStore::new(t);
    assert_eq!(store.read(Tx::NONE, "domid").unwrap(), b"5");
    let big = vec![b'z'; 2048];
    store.write(Tx::NONE, "data/big", &big).unwrap();
    assert_eq!(store.read(Tx::NONE, "data/big").unwrap(), big);
    assert_eq!(
        store.read(Tx::NONE, "/local/domain"),
        Err(platform_api::StoreError::Xs(XsErrno::Eacces))
    );
    store.watch("data", "w").unwrap();
    assert_eq!(store.wait_watch(None).unwrap().unwrap().path, "data");
    assert!(
        kicks.get() >= 8,
        "every index update is notified: {}",
        kicks.get()
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any starting index, any write/read split: the bytes arrive in order and intact,
        /// and in-flight never exceeds the ring.
        #[test]
        fn stream_roundtrip_at_any_start(
            start: u32,
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            wchunks in proptest::collection::vec(1usize..1500, 1..8),
            rchunks in proptest::collection::vec(1usize..1500, 1..8),
        ) {
            let mem = page_with_indices(start);
            let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
            let mut daemon = StoreRing::attach(&mem, Side::Daemon).unwrap();
            let mut got = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while got.len() < data.len() {
                let w = wchunks[i % wchunks.len()].min(data.len() - at);
                at += guest.write(&mem, &data[at..at + w]).unwrap();
                let in_flight = mem.load_u32(REQ.prod, Ordering::Acquire).unwrap()
                    .wrapping_sub(mem.load_u32(REQ.cons, Ordering::Acquire).unwrap());
                prop_assert!(in_flight <= RING_SIZE);
                let mut buf = vec![0u8; rchunks[i % rchunks.len()]];
                let n = daemon.read(&mem, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                i += 1;
                prop_assert!(i < 100_000);
            }
            prop_assert_eq!(got, data);
            prop_assert_eq!(
                mem.load_u32(REQ.cons, Ordering::Acquire).unwrap(),
                start.wrapping_add(at as u32)
            );
        }

        /// Any peer index is either served or refused; never a panic or an over-read.
        #[test]
        fn any_peer_index_is_validated(start: u32, peer: u32) {
            let mem = page_with_indices(start);
            let mut guest = StoreRing::attach(&mem, Side::Guest).unwrap();
            mem.store_u32(RSP.prod, peer, Ordering::Release).unwrap();
            let mut buf = [0u8; 2048];
            match guest.read(&mem, &mut buf) {
                Ok(n) => prop_assert_eq!(n as u32, peer.wrapping_sub(start)),
                Err(_) => prop_assert!(peer.wrapping_sub(start) > RING_SIZE),
            }
        }
    }
}

#[test]
fn layout_and_constants_match_headers() {
    let vf = test_vectors::load("xs_wire.json");
    let v = vf.get("xenstore_domain_interface with a wrapped READ request");
    assert_eq!(v.field("req").offset, REQ.data);
    assert_eq!(v.field("rsp").offset, RSP.data);
    assert_eq!(v.field("req").size as u32, RING_SIZE);
    assert_eq!(v.field("req_cons").offset, REQ.cons);
    assert_eq!(v.field("req_prod").offset, REQ.prod);
    assert_eq!(v.field("rsp_cons").offset, RSP.cons);
    assert_eq!(v.field("rsp_prod").offset, RSP.prod);
    assert_eq!(v.field("server_features").offset, SERVER_FEATURES);
    assert_eq!(v.field("connection").offset, CONNECTION);
    assert_eq!(v.field("error").offset, ERROR);
    assert_eq!(v.field("evtchn_port").offset, EVTCHN_PORT);
    let c = |n: &str| vf.constant(n) as u32;
    assert_eq!(
        c("sizeof(struct xenstore_domain_interface)") as usize,
        INTERFACE_SIZE
    );
    assert_eq!(c("XENSTORE_RING_SIZE"), RING_SIZE);
    assert_eq!(
        c("XENSTORE_SERVER_FEATURE_RECONNECTION"),
        FEATURE_RECONNECTION
    );
    assert_eq!(c("XENSTORE_SERVER_FEATURE_ERROR"), FEATURE_ERROR);
    assert_eq!(c("XENSTORE_SERVER_FEATURE_WATCHDEPTH"), FEATURE_WATCHDEPTH);
    assert_eq!(c("XENSTORE_SERVER_FEATURE_DOMID_ANY"), FEATURE_DOMID_ANY);
    assert_eq!(c("XENSTORE_CONNECTED"), CONNECTED);
    assert_eq!(c("XENSTORE_RECONNECT"), RECONNECT);
}
