//! Every vector of `vchan.json`, both directions: emit == hex, parse == fields.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{GrantRef, HeapMem, Ordering, SharedMem, PAGE_SIZE};
use test_vectors::Vector;
use xen_rings::{ByteRing, Role};

use crate::layout::{field, Geometry, Offer, Repr, RingIndexes, VchanInterface, HEADER_LEN};
use crate::test_utils::TestNotify;
use crate::{Client, Ring, Server};

const PAGE_VECTOR: &str = "orders 10/11 whole page with ring data";

fn grants_of(v: &Vector) -> Vec<GrantRef> {
    let mut g = Vec::new();
    for name in ["grants[left]", "grants[right]"] {
        if v.has(name) {
            g.extend(v.array(name).into_iter().map(|x| GrantRef(x as u32)));
        }
    }
    g
}

fn repr_from_fields(v: &Vector) -> Repr {
    Repr {
        left: RingIndexes {
            cons: v.u64("left.cons") as u32,
            prod: v.u64("left.prod") as u32,
        },
        right: RingIndexes {
            cons: v.u64("right.cons") as u32,
            prod: v.u64("right.prod") as u32,
        },
        geometry: Geometry::new(v.u64("left_order") as u16, v.u64("right_order") as u16).unwrap(),
        cli_live: v.u64("cli_live") as u8,
        srv_live: v.u64("srv_live") as u8,
        cli_notify: v.u64("cli_notify") as u8,
        srv_notify: v.u64("srv_notify") as u8,
        grants: grants_of(v),
    }
}

#[test]
fn constants_match_header() {
    let f = test_vectors::load("vchan.json");
    assert_eq!(
        f.constant("VCHAN_NOTIFY_WRITE"),
        i64::from(crate::layout::NOTIFY_WRITE)
    );
    assert_eq!(
        f.constant("VCHAN_NOTIFY_READ"),
        i64::from(crate::layout::NOTIFY_READ)
    );
    assert_eq!(
        f.constant("sizeof(struct vchan_interface)"),
        HEADER_LEN as i64
    );
    let off = |n: &str| f.constant(&format!("offsetof(struct vchan_interface, {n})")) as usize;
    assert_eq!(off("left"), field::LEFT_CONS.start);
    assert_eq!(off("right"), field::RIGHT_CONS.start);
    assert_eq!(off("left_order"), field::LEFT_ORDER.start);
    assert_eq!(off("right_order"), field::RIGHT_ORDER.start);
    assert_eq!(off("cli_live"), field::CLI_LIVE);
    assert_eq!(off("srv_live"), field::SRV_LIVE);
    assert_eq!(off("cli_notify"), field::CLI_NOTIFY);
    assert_eq!(off("srv_notify"), field::SRV_NOTIFY);
    assert_eq!(off("grants"), field::GRANTS);
}

#[test]
fn every_vector_parses_to_its_fields() {
    let f = test_vectors::load("vchan.json");
    assert_eq!(f.vectors.len(), 7);
    for v in &f.vectors {
        let bytes = v.bytes();
        let view = VchanInterface::new_checked(&bytes[..]).unwrap();
        let repr = Repr::parse(&view).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(repr, repr_from_fields(v), "{}", v.name);
        if let Some(l) = &v.layout {
            let g = repr.geometry;
            if let Some(n) = l.get("left_ring_bytes") {
                assert_eq!(
                    u64::from(g.size(Ring::Left)),
                    n.as_u64().unwrap(),
                    "{}",
                    v.name
                );
                assert_eq!(
                    u64::from(g.size(Ring::Right)),
                    l["right_ring_bytes"].as_u64().unwrap()
                );
                assert_eq!(
                    g.pages(Ring::Left) as u64,
                    l["left_grant_count"].as_u64().unwrap()
                );
                assert_eq!(
                    g.pages(Ring::Right) as u64,
                    l["right_grant_count"].as_u64().unwrap()
                );
            }
            if let Some(off) = l.get("left_ring_offset") {
                assert_eq!(g.ring_layout(Ring::Left).data as u64, off.as_u64().unwrap());
                assert_eq!(
                    g.ring_layout(Ring::Right).data as u64,
                    l["right_ring_offset"].as_u64().unwrap()
                );
            }
        }
    }
}

#[test]
fn every_header_vector_emits_its_bytes() {
    let f = test_vectors::load("vchan.json");
    for v in f.vectors.iter().filter(|v| v.name != PAGE_VECTOR) {
        let repr = repr_from_fields(v);
        assert_eq!(repr.buffer_len(), v.size, "{}", v.name);
        let mut out = vec![0u8; v.size];
        repr.emit(&mut VchanInterface::new_unchecked(&mut out[..]));
        assert_eq!(out, v.bytes(), "{}", v.name);
    }
}

/// Server init writes exactly the "just after server init" headers, grants included.
#[test]
fn server_init_emits_init_vectors() {
    let f = test_vectors::load("vchan.json");
    for name in [
        "orders 10/11 just after server init",
        "orders 12/12 (4096/4096 as qrexec control, QubesDB, GUI)",
        "orders 11/13",
    ] {
        let v = f.get(name);
        let g = repr_from_fields(v).geometry;
        let pages = |r| (g.pages(r) > 0).then(|| HeapMem::new(g.size(r) as usize));
        let ctrl = HeapMem::new(PAGE_SIZE);
        ctrl.write(0, &[0xAA; PAGE_SIZE]).unwrap(); // init must zero the page
        let _s = Server::new(
            ctrl.clone(),
            g,
            pages(Ring::Left),
            pages(Ring::Right),
            &grants_of(v),
            TestNotify::new(),
        )
        .unwrap();
        let mut out = vec![0u8; PAGE_SIZE];
        ctrl.read(0, &mut out).unwrap();
        assert_eq!(&out[..v.size], &v.bytes()[..], "{name}");
        assert!(
            out[v.size..].iter().all(|&b| b == 0),
            "{name}: rest of page not zeroed"
        );
    }
}

/// The whole page: a client writing ABCDEFGH across the left ring's wrap and a server
/// writing "hello" into the right ring produce exactly the vector's 4096 bytes.
#[test]
fn page_vector_emitted_by_endpoints() {
    let f = test_vectors::load("vchan.json");
    let v = f.get(PAGE_VECTOR);
    let ctrl = HeapMem::new(PAGE_SIZE);
    let start = Repr {
        left: RingIndexes {
            cons: 1020,
            prod: 1020,
        },
        right: RingIndexes {
            cons: 65536,
            prod: 65536,
        },
        geometry: Geometry::new(10, 11).unwrap(),
        cli_live: 2,
        srv_live: 1,
        cli_notify: 0,
        srv_notify: 0,
        grants: Vec::new(),
    };
    let mut hdr = [0u8; HEADER_LEN];
    start.emit(&mut VchanInterface::new_unchecked(&mut hdr[..]));
    ctrl.write(0, &hdr).unwrap();
    let offer = Offer::read(&ctrl).unwrap();
    let n = TestNotify::new();
    let mut client = Client::attach(ctrl.clone(), &offer, None, None, n.clone()).unwrap();
    assert_eq!(n.take(), 1, "client notifies on attach");
    assert_eq!(client.write(b"ABCDEFGH").unwrap(), 8);
    let mut right = ByteRing::attach(
        &ctrl,
        offer.geometry.ring_layout(Ring::Right),
        Role::Producer,
    )
    .unwrap();
    assert_eq!(right.write(&ctrl, b"hello").unwrap(), 5);
    let mut out = vec![0u8; PAGE_SIZE];
    ctrl.read(0, &mut out).unwrap();
    assert_eq!(out, v.bytes());
}

/// The whole page read back: the client reads "hello", the server's ring ABCDEFGH.
#[test]
fn page_vector_read_by_endpoints() {
    let f = test_vectors::load("vchan.json");
    let v = f.get(PAGE_VECTOR);
    let ctrl = HeapMem::new(PAGE_SIZE);
    ctrl.write(0, &v.bytes()).unwrap();
    let offer = Offer::read(&ctrl).unwrap();
    assert_eq!(offer.geometry, Geometry::new(10, 11).unwrap());
    assert!(offer.left_grants.is_empty() && offer.right_grants.is_empty());
    let mut left = ByteRing::attach(
        &ctrl,
        offer.geometry.ring_layout(Ring::Left),
        Role::Consumer,
    )
    .unwrap();
    let mut client = Client::attach(ctrl.clone(), &offer, None, None, TestNotify::new()).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(left.read(&ctrl, &mut buf).unwrap(), 8);
    assert_eq!(&buf[..8], b"ABCDEFGH");
    assert_eq!(
        ctrl.load_u32(field::RIGHT_CONS.start, Ordering::Acquire)
            .unwrap(),
        65541
    );
}
