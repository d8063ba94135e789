//! Every netif vector both ways: emit == hex, parse == fields; plus the flag/status constants.
use crate::netif::wire::*;
use alloc::vec;
use alloc::vec::Vec;
use platform_api::GrantRef;
use proptest::prelude::*;
use test_vectors::{Vector, VectorFile};

fn file() -> VectorFile {
    test_vectors::load("netif_blkif.json")
}

fn arr<const N: usize>(v: &Vector, name: &str) -> [u8; N] {
    let a: Vec<u8> = v.array(name).into_iter().map(|x| x as u8).collect();
    a.try_into().unwrap()
}

fn bytes<const N: usize>(v: &Vector) -> [u8; N] {
    v.bytes().try_into().unwrap()
}

#[test]
fn constants_match_header() {
    let f = file();
    for (name, val) in [
        ("NETTXF_csum_blank", NETTXF_CSUM_BLANK),
        ("NETTXF_data_validated", NETTXF_DATA_VALIDATED),
        ("NETTXF_more_data", NETTXF_MORE_DATA),
        ("NETTXF_extra_info", NETTXF_EXTRA_INFO),
        ("NETRXF_data_validated", NETRXF_DATA_VALIDATED),
        ("NETRXF_csum_blank", NETRXF_CSUM_BLANK),
        ("NETRXF_more_data", NETRXF_MORE_DATA),
        ("NETRXF_extra_info", NETRXF_EXTRA_INFO),
        ("NETRXF_gso_prefix", NETRXF_GSO_PREFIX),
    ] {
        assert_eq!(f.constant(name), i64::from(val), "{name}");
    }
    for (name, val) in [
        ("NETIF_RSP_DROPPED", NETIF_RSP_DROPPED),
        ("NETIF_RSP_ERROR", NETIF_RSP_ERROR),
        ("NETIF_RSP_OKAY", NETIF_RSP_OKAY),
        ("NETIF_RSP_NULL", NETIF_RSP_NULL),
    ] {
        assert_eq!(f.constant(name), i64::from(val), "{name}");
    }
    for (name, val) in [
        ("XEN_NETIF_EXTRA_TYPE_NONE", 0),
        ("XEN_NETIF_EXTRA_TYPE_GSO", EXTRA_TYPE_GSO),
        ("XEN_NETIF_EXTRA_TYPE_MCAST_ADD", EXTRA_TYPE_MCAST_ADD),
        ("XEN_NETIF_EXTRA_TYPE_MCAST_DEL", EXTRA_TYPE_MCAST_DEL),
        ("XEN_NETIF_EXTRA_TYPE_HASH", EXTRA_TYPE_HASH),
        ("XEN_NETIF_EXTRA_TYPE_MAX", EXTRA_TYPE_MAX),
        ("XEN_NETIF_EXTRA_FLAG_MORE", EXTRA_FLAG_MORE),
        ("XEN_NETIF_GSO_TYPE_NONE", 0),
        ("XEN_NETIF_GSO_TYPE_TCPV4", GSO_TYPE_TCPV4),
        ("XEN_NETIF_GSO_TYPE_TCPV6", GSO_TYPE_TCPV6),
    ] {
        assert_eq!(f.constant(name), i64::from(val), "{name}");
    }
    assert_eq!(f.constant("XEN_NETIF_NR_SLOTS_MIN"), NR_SLOTS_MIN as i64);
    assert_eq!(f.constant("XEN_NETIF_MAX_TX_SIZE"), MAX_TX_SIZE as i64);
    assert_eq!(
        f.constant("sizeof(struct netif_tx_request)"),
        TxRequest::SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct netif_tx_response)"),
        TxResponse::SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct netif_rx_request)"),
        RxRequest::SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct netif_rx_response)"),
        RxResponse::SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct netif_extra_info)"),
        ExtraInfo::SIZE as i64
    );
}

#[test]
fn tx_requests_both_ways() {
    let f = file();
    for name in [
        "netif_tx_request distinctive",
        "netif_tx_request small frame",
    ] {
        let v = f.get(name);
        let r = TxRequest {
            gref: GrantRef(v.u64("gref") as u32),
            offset: v.u64("offset") as u16,
            flags: v.u64("flags") as u16,
            id: v.u64("id") as u16,
            size: v.u64("size") as u16,
        };
        assert_eq!(r.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(TxRequest::parse(&bytes(v)), r, "{name}");
    }
}

#[test]
fn tx_responses_both_ways() {
    let f = file();
    for name in [
        "netif_tx_response OKAY",
        "netif_tx_response DROPPED",
        "netif_tx_response NULL (for an extra-info slot)",
    ] {
        let v = f.get(name);
        let r = TxResponse {
            id: v.u64("id") as u16,
            status: v.i64("status") as i16,
        };
        assert_eq!(r.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(TxResponse::parse(&bytes(v)), r, "{name}");
    }
}

#[test]
fn rx_request_both_ways() {
    let f = file();
    let v = f.get("netif_rx_request");
    let r = RxRequest {
        id: v.u64("id") as u16,
        gref: GrantRef(v.u64("gref") as u32),
    };
    assert_eq!(v.u64("pad"), 0);
    assert_eq!(r.emit().as_slice(), v.bytes().as_slice());
    assert_eq!(RxRequest::parse(&bytes(v)), r);
}

#[test]
fn rx_responses_both_ways() {
    let f = file();
    for name in ["netif_rx_response 1514 bytes", "netif_rx_response ERROR"] {
        let v = f.get(name);
        let r = RxResponse {
            id: v.u64("id") as u16,
            offset: v.u64("offset") as u16,
            flags: v.u64("flags") as u16,
            status: v.i64("status") as i16,
        };
        assert_eq!(r.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(RxResponse::parse(&bytes(v)), r, "{name}");
    }
}

#[test]
fn extra_info_both_ways() {
    let f = file();
    let v = f.get("netif_extra_info GSO");
    assert_eq!(v.u64("u.gso.pad"), 0);
    let gso = ExtraInfo {
        flags: v.u64("flags") as u8,
        body: Extra::Gso {
            size: v.u64("u.gso.size") as u16,
            gso_type: v.u64("u.gso.type") as u8,
            features: v.u64("u.gso.features") as u16,
        },
    };
    assert_eq!(u64::from(gso.kind()), v.u64("type"));
    let v = f.get("netif_extra_info MCAST_ADD");
    let mcast = ExtraInfo {
        flags: v.u64("flags") as u8,
        body: Extra::McastAdd(arr(v, "u.mcast.addr")),
    };
    assert_eq!(u64::from(mcast.kind()), v.u64("type"));
    assert!(mcast.more());
    let v = f.get("netif_extra_info HASH");
    let hash = ExtraInfo {
        flags: v.u64("flags") as u8,
        body: Extra::Hash {
            hash_type: v.u64("u.hash.type") as u8,
            algorithm: v.u64("u.hash.algorithm") as u8,
            value: arr(v, "u.hash.value"),
        },
    };
    assert_eq!(u64::from(hash.kind()), v.u64("type"));
    for (name, x) in [
        ("netif_extra_info GSO", gso),
        ("netif_extra_info MCAST_ADD", mcast),
        ("netif_extra_info HASH", hash),
    ] {
        let v = f.get(name);
        assert_eq!(x.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(ExtraInfo::parse(&bytes(v)), x, "{name}");
    }
}

#[test]
fn extra_info_unknown_type_is_a_value() {
    let b = [0u8, 1, 2, 3, 4, 5, 6, 7];
    let x = ExtraInfo::parse(&b);
    assert_eq!(
        x.body,
        Extra::Unknown {
            kind: 0,
            raw: [2, 3, 4, 5, 6, 7]
        }
    );
    assert_eq!(x.emit(), b);
    let b = [9u8, 0, 0, 0, 0, 0, 0, 0xff];
    assert_eq!(ExtraInfo::parse(&b).emit(), b);
}

proptest! {
    #[test]
    fn tx_request_roundtrip(b in any::<[u8; 12]>()) {
        prop_assert_eq!(TxRequest::parse(&b).emit(), b);
    }

    #[test]
    fn rx_response_roundtrip(b in any::<[u8; 8]>()) {
        prop_assert_eq!(RxResponse::parse(&b).emit(), b);
    }

    #[test]
    fn tx_response_roundtrip(b in any::<[u8; 4]>()) {
        prop_assert_eq!(TxResponse::parse(&b).emit(), b);
    }

    #[test]
    fn rx_request_parse_emit(id in any::<u16>(), gref in any::<u32>()) {
        let r = RxRequest { id, gref: GrantRef(gref) };
        prop_assert_eq!(RxRequest::parse(&r.emit()), r);
    }

    #[test]
    fn extra_info_parse_emit(b in any::<[u8; 8]>()) {
        let x = ExtraInfo::parse(&b);
        prop_assert_eq!(ExtraInfo::parse(&x.emit()), x);
    }
}

/// The vector TX page served by our netback: the two slots across the wrap make one 1514-byte
/// packet (1014 bytes from gref 2049 at offset 16, then 500 from gref 2050), answered in
/// slots 255 and 0.
#[test]
fn netback_serves_the_vector_tx_page() {
    use crate::netif::tests::{packet, Copier, Table};
    use crate::netif::{Netback, NetbackLimits, TxEvent};
    use crate::shared_ring::{FrontRing, SringLayout};
    use platform_api::{HeapMem, SharedMem, PAGE_SIZE};
    let f = file();
    let v = f.get("netif_tx_sring page with two requests across the wrap");
    let (tx, rx) = (HeapMem::new(PAGE_SIZE), HeapMem::new(PAGE_SIZE));
    tx.write(0, &v.bytes()).unwrap();
    crate::shared_ring::init(&rx).unwrap();
    let table = Table::default();
    table.borrow_mut().insert(2049, packet(PAGE_SIZE, 1));
    table.borrow_mut().insert(2050, packet(PAGE_SIZE, 2));
    let mut back = Netback::new(tx.clone(), rx, NetbackLimits::DEFAULT).unwrap();
    let mut copier = Copier {
        table: table.clone(),
        fail: false,
    };
    let mut buf = vec![0u8; MAX_TX_SIZE];
    let ev = back.poll_tx(&mut copier, &mut buf).unwrap();
    assert_eq!(
        ev,
        TxEvent::Packet {
            len: 1514,
            csum_blank: true,
            gso: None
        }
    );
    let t = table.borrow();
    assert_eq!(&buf[..1014], &t[&2049][16..1030]);
    assert_eq!(&buf[1014..1514], &t[&2050][..500]);
    // rsp_event was 256: publishing responses 255 and 256 must notify.
    assert!(back.take_notify());
    let mut front = FrontRing::attach(&tx, SringLayout::NETIF_TX, 255).unwrap();
    // Our ring copy thinks nothing was published; tell it what the vector's front pushed.
    for _ in 0..2 {
        front.push_request(&tx, &[]).unwrap();
    }
    let _ = front.push_requests_and_check_notify(&tx).unwrap();
    assert_eq!(front.poll_responses(&tx).unwrap(), 2);
    let mut r = [0u8; TxResponse::SIZE];
    assert!(front.pop_response(&tx, &mut r).unwrap());
    assert_eq!(
        TxResponse::parse(&r),
        TxResponse {
            id: 255,
            status: NETIF_RSP_OKAY
        }
    );
    assert!(front.pop_response(&tx, &mut r).unwrap());
    assert_eq!(
        TxResponse::parse(&r),
        TxResponse {
            id: 0,
            status: NETIF_RSP_OKAY
        }
    );
}
