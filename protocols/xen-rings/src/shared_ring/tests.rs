use super::*;
use crate::netif::TxRequest;
use platform_api::{GrantRef, HeapMem};
use test_vectors::Vector;

fn header_bytes(mem: &HeapMem) -> [u8; RING_OFFSET] {
    let mut b = [0u8; RING_OFFSET];
    mem.read(0, &mut b).unwrap();
    b
}

fn layout_of(v: &Vector) -> (usize, u32) {
    let l = v.layout.as_ref().expect("layout");
    let get = |k: &str| l.get(k).and_then(|x| x.as_u64()).unwrap();
    (get("ring_offset") as usize, get("nr_ents") as u32)
}

#[test]
fn layout_constants_match_vectors() {
    let f = test_vectors::load("netif_blkif.json");
    for (name, layout) in [
        (
            "netif_tx_sring after SHARED_RING_INIT",
            SringLayout::NETIF_TX,
        ),
        (
            "netif_rx_sring after SHARED_RING_INIT",
            SringLayout::NETIF_RX,
        ),
        ("blkif_sring after SHARED_RING_INIT", SringLayout::BLKIF),
    ] {
        let v = f.get(name);
        let l = v.layout.as_ref().unwrap();
        let get = |k: &str| l.get(k).and_then(|x| x.as_u64()).unwrap();
        assert_eq!(get("ring_offset") as usize, RING_OFFSET, "{name}");
        assert_eq!(get("entry_size") as usize, layout.entry_size, "{name}");
        assert_eq!(get("nr_ents") as u32, layout.nr_ents, "{name}");
        assert_eq!(get("nr_ents_runtime") as u32, layout.nr_ents, "{name}");
        assert_eq!(get("page_size") as usize, PAGE_SIZE, "{name}");
    }
    assert_eq!(f.constant("sizeof(RING_IDX)"), 4);
    assert_eq!(
        f.constant("__CONST_RING_SIZE(netif_tx, 4096)"),
        i64::from(SringLayout::NETIF_TX.nr_ents)
    );
    assert_eq!(
        f.constant("__CONST_RING_SIZE(netif_rx, 4096)"),
        i64::from(SringLayout::NETIF_RX.nr_ents)
    );
    assert_eq!(
        f.constant("__CONST_RING_SIZE(blkif, 4096)"),
        i64::from(SringLayout::BLKIF.nr_ents)
    );
    for s in ["netif_tx_sring", "netif_rx_sring", "blkif_sring"] {
        assert_eq!(
            f.constant(&alloc::format!("offsetof(struct {s}, ring)")),
            RING_OFFSET as i64
        );
    }
    for (field, off) in [
        ("req_prod", REQ_PROD),
        ("req_event", REQ_EVENT),
        ("rsp_prod", RSP_PROD),
        ("rsp_event", RSP_EVENT),
        ("pvt", PVT),
    ] {
        let name = alloc::format!("offsetof(struct netif_tx_sring, {field})");
        assert_eq!(f.constant(&name), off as i64);
    }
    assert_eq!(
        f.constant("sizeof(union netif_tx_sring_entry)") as usize,
        SringLayout::NETIF_TX.entry_size
    );
    assert_eq!(
        f.constant("sizeof(union netif_rx_sring_entry)") as usize,
        SringLayout::NETIF_RX.entry_size
    );
    assert_eq!(
        f.constant("sizeof(union blkif_sring_entry)") as usize,
        SringLayout::BLKIF.entry_size
    );
}

#[test]
fn shared_ring_init_matches_vectors() {
    let f = test_vectors::load("netif_blkif.json");
    for name in [
        "netif_tx_sring after SHARED_RING_INIT",
        "netif_rx_sring after SHARED_RING_INIT",
        "blkif_sring after SHARED_RING_INIT",
    ] {
        let v = f.get(name);
        let mem = HeapMem::new(PAGE_SIZE);
        // Garbage first: SHARED_RING_INIT must clear the private and padding bytes too.
        mem.write(0, &[0xA5; RING_OFFSET]).unwrap();
        init(&mem).unwrap();
        assert_eq!(
            header_bytes(&mem).as_slice(),
            v.bytes().as_slice(),
            "{name}"
        );
        assert_eq!(
            u64::from(mem.load_u32(REQ_EVENT, Acquire).unwrap()),
            v.u64("req_event")
        );
    }
}

#[test]
fn distinct_index_headers_parse_and_emit() {
    let f = test_vectors::load("netif_blkif.json");
    for name in [
        "netif_tx_sring distinctive indexes",
        "netif_rx_sring distinctive indexes",
        "blkif_sring distinctive indexes",
    ] {
        let v = f.get(name);
        let bytes = v.bytes();
        // Decode: the fields at the ring.h offsets.
        let mem = HeapMem::new(PAGE_SIZE);
        mem.write(0, &bytes).unwrap();
        for (field, off) in [
            ("req_prod", REQ_PROD),
            ("req_event", REQ_EVENT),
            ("rsp_prod", RSP_PROD),
            ("rsp_event", RSP_EVENT),
        ] {
            assert_eq!(
                u64::from(mem.load_u32(off, Acquire).unwrap()),
                v.u64(field),
                "{name} {field}"
            );
        }
        assert_eq!(
            u64::from(mem.load_u8(PVT, Acquire).unwrap()),
            v.array("pvt.pvt_pad")[0]
        );
        // Encode: init, then store each index and the pvt byte.
        let out = HeapMem::new(PAGE_SIZE);
        init(&out).unwrap();
        for (field, off) in [
            ("req_prod", REQ_PROD),
            ("req_event", REQ_EVENT),
            ("rsp_prod", RSP_PROD),
            ("rsp_event", RSP_EVENT),
        ] {
            out.store_u32(off, v.u64(field) as u32, Release).unwrap();
        }
        out.store_u8(PVT, v.array("pvt.pvt_pad")[0] as u8, Release)
            .unwrap();
        assert_eq!(header_bytes(&out).as_slice(), bytes.as_slice(), "{name}");
        let (ring_offset, _) = layout_of(v);
        assert_eq!(ring_offset, RING_OFFSET);
    }
}

/// The whole TX page: a backend that consumed and answered 255 requests, then the front end
/// pushes request 255 (slot 255) and 256 (slot 0) and publishes 257; it must notify.
#[test]
fn tx_page_two_requests_across_the_wrap() {
    let f = test_vectors::load("netif_blkif.json");
    let v = f.get("netif_tx_sring page with two requests across the wrap");
    let expected = v.bytes();
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let l = SringLayout::NETIF_TX;
    assert_eq!(layout_of_nr(v), l.nr_ents);
    // Front and back agree on index 255 with everything before it answered; the backend
    // asked to be woken at 256 (req_event) and the front at 256 (rsp_event).
    init_at(&mem, 255).unwrap();
    mem.store_u32(REQ_EVENT, 256, Release).unwrap();
    mem.store_u32(RSP_EVENT, 256, Release).unwrap();
    let mut front = FrontRing::attach(&mem, l, 255).unwrap();
    let first = TxRequest {
        gref: GrantRef(v.u64("ring[255].req.gref") as u32),
        offset: v.u64("ring[255].req.offset") as u16,
        flags: v.u64("ring[255].req.flags") as u16,
        id: v.u64("ring[255].req.id") as u16,
        size: v.u64("ring[255].req.size") as u16,
    };
    let second = TxRequest {
        gref: GrantRef(v.u64("ring[0].req.gref") as u32),
        offset: v.u64("ring[0].req.offset") as u16,
        flags: v.u64("ring[0].req.flags") as u16,
        id: v.u64("ring[0].req.id") as u16,
        size: v.u64("ring[0].req.size") as u16,
    };
    front.push_request(&mem, &first.emit()).unwrap();
    front.push_request(&mem, &second.emit()).unwrap();
    let notify = front.push_requests_and_check_notify(&mem).unwrap();
    let l_notify = v.layout.as_ref().unwrap().get("notify").unwrap().as_u64();
    assert_eq!(Some(u64::from(notify)), l_notify);
    let mut page = alloc::vec![0u8; PAGE_SIZE];
    mem.read(0, &mut page).unwrap();
    assert_eq!(page, expected);

    // Decode: a back end attached at 255 sees both requests, in order, with the listed fields.
    let mem2 = HeapMem::new(PAGE_SIZE);
    mem2.write(0, &expected).unwrap();
    let mut back = BackRing::attach(&mem2, l, 255).unwrap();
    assert_eq!(back.poll_requests(&mem2).unwrap(), 2);
    let mut e = [0u8; TxRequest::SIZE];
    assert!(back.pop_request(&mem2, &mut e).unwrap());
    assert_eq!(TxRequest::parse(&e), first);
    assert!(back.pop_request(&mem2, &mut e).unwrap());
    assert_eq!(TxRequest::parse(&e), second);
    assert!(!back.pop_request(&mem2, &mut e).unwrap());
}

fn layout_of_nr(v: &Vector) -> u32 {
    v.layout.as_ref().unwrap()["nr_ents"].as_u64().unwrap() as u32
}

#[test]
fn notify_rule_is_ring_h() {
    // The event index inside (old, new] notifies; outside does not; wraps at u32::MAX.
    assert!(need_notify(257, 255, 256));
    assert!(need_notify(257, 255, 257));
    assert!(!need_notify(257, 255, 255));
    assert!(!need_notify(257, 255, 258));
    assert!(need_notify(1, u32::MAX - 1, 0));
    assert!(need_notify(1, u32::MAX - 1, u32::MAX));
    assert!(!need_notify(1, u32::MAX - 1, 2));
    assert!(!need_notify(5, 5, 5));
}

#[test]
fn final_check_sets_event_to_cons_plus_one() {
    let mem = HeapMem::new(PAGE_SIZE);
    init_at(&mem, u32::MAX - 1).unwrap();
    let l = SringLayout::NETIF_RX;
    let mut front = FrontRing::attach(&mem, l, u32::MAX - 1).unwrap();
    let mut back = BackRing::attach(&mem, l, u32::MAX - 1).unwrap();
    assert!(!back.final_check_for_requests(&mem).unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT, Acquire).unwrap(), u32::MAX);
    front.push_request(&mem, &[1; 8]).unwrap();
    // The backend asked for an event at the next request: the push must notify.
    assert!(front.push_requests_and_check_notify(&mem).unwrap());
    front.push_request(&mem, &[2; 8]).unwrap();
    // Not again until the backend re-arms.
    assert!(!front.push_requests_and_check_notify(&mem).unwrap());
    assert!(back.final_check_for_requests(&mem).unwrap());
    let mut e = [0u8; 8];
    assert!(back.pop_request(&mem, &mut e).unwrap());
    assert!(back.pop_request(&mem, &mut e).unwrap());
    assert_eq!(e, [2; 8]);
    assert!(!front.final_check_for_responses(&mem).unwrap());
    assert_eq!(mem.load_u32(RSP_EVENT, Acquire).unwrap(), u32::MAX);
    back.push_response(&mem, &[3; 8]).unwrap();
    back.push_response(&mem, &[4; 8]).unwrap();
    assert!(back.push_responses_and_check_notify(&mem).unwrap());
    assert_eq!(front.poll_responses(&mem).unwrap(), 2);
    assert!(front.pop_response(&mem, &mut e).unwrap());
    assert_eq!(e, [3; 8]);
    // Started at u32::MAX - 1, two requests later the index has wrapped to 0.
    assert_eq!(back.req_cons(), 0);
}

#[test]
fn back_refuses_more_pending_than_ring() {
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let mut back = BackRing::attach(&mem, SringLayout::BLKIF, 0).unwrap();
    mem.store_u32(REQ_PROD, 33, Release).unwrap();
    let e = back.poll_requests(&mem).unwrap_err();
    assert_eq!(
        e,
        SharedRingError::TooManyRequests {
            unanswered: 33,
            nr_ents: 32
        }
    );
    assert!(e.is_peer_fault());
    // Sticky: a later honest value does not revive the ring.
    mem.store_u32(REQ_PROD, 1, Release).unwrap();
    assert_eq!(back.poll_requests(&mem), Err(e));
}

#[test]
fn back_refuses_req_prod_moving_backwards() {
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let mut back = BackRing::attach(&mem, SringLayout::BLKIF, 0).unwrap();
    mem.store_u32(REQ_PROD, 4, Release).unwrap();
    assert_eq!(back.poll_requests(&mem).unwrap(), 4);
    let mut e = [0u8; 16];
    for _ in 0..4 {
        assert!(back.pop_request(&mem, &mut e).unwrap());
    }
    mem.store_u32(REQ_PROD, 2, Release).unwrap();
    assert!(back.poll_requests(&mem).unwrap_err().is_peer_fault());
}

#[test]
fn back_refuses_requests_into_unanswered_slots() {
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let mut back = BackRing::attach(&mem, SringLayout::BLKIF, 0).unwrap();
    mem.store_u32(REQ_PROD, 32, Release).unwrap();
    assert_eq!(back.poll_requests(&mem).unwrap(), 32);
    let mut e = [0u8; 16];
    assert!(back.pop_request(&mem, &mut e).unwrap());
    // One consumed and unanswered: the frontend cannot have produced index 32 yet.
    mem.store_u32(REQ_PROD, 33, Release).unwrap();
    assert!(back.poll_requests(&mem).unwrap_err().is_peer_fault());
}

#[test]
fn front_refuses_responses_beyond_requests() {
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let mut front = FrontRing::attach(&mem, SringLayout::NETIF_TX, 0).unwrap();
    front.push_request(&mem, &[0; 12]).unwrap();
    // Pushed but not published: no response may exist yet.
    mem.store_u32(RSP_PROD, 1, Release).unwrap();
    assert_eq!(
        front.poll_responses(&mem),
        Err(SharedRingError::TooManyResponses {
            pending: 1,
            outstanding: 0
        })
    );
    let mut e = [0u8; 4];
    assert!(front.pop_response(&mem, &mut e).is_err());
}

#[test]
fn local_bounds_are_not_sticky() {
    let mem = HeapMem::new(PAGE_SIZE);
    init(&mem).unwrap();
    let l = SringLayout::BLKIF;
    let mut front = FrontRing::attach(&mem, l, 0).unwrap();
    let mut back = BackRing::attach(&mem, l, 0).unwrap();
    assert!(matches!(
        back.push_response(&mem, &[0; 16]),
        Err(SharedRingError::Full { .. })
    ));
    for _ in 0..32 {
        front.push_request(&mem, &[0; 112]).unwrap();
    }
    assert!(matches!(
        front.push_request(&mem, &[0; 112]),
        Err(SharedRingError::Full { .. })
    ));
    assert!(matches!(
        front.push_request(&mem, &[0; 113]),
        Err(SharedRingError::Full { .. }) | Err(SharedRingError::EntryTooLarge { .. })
    ));
    assert!(front.broken().is_none() && back.broken().is_none());
    assert!(FrontRing::attach(&HeapMem::new(1024), l, 0).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of pushes, publishes, consumes and answers from any start index keeps
        /// every count within the ring and delivers entries in order, both ways.
        #[test]
        fn any_sequence_keeps_pending_within_ring(
            start in prop_oneof![Just(u32::MAX - 5), Just(0u32), any::<u32>()],
            ops in proptest::collection::vec(0u8..6, 1..300),
        ) {
            let l = SringLayout::BLKIF;
            let mem = HeapMem::new(PAGE_SIZE);
            init_at(&mem, start).unwrap();
            let mut front = FrontRing::attach(&mem, l, start).unwrap();
            let mut back = BackRing::attach(&mem, l, start).unwrap();
            let (mut next_req, mut want_req, mut next_rsp, mut want_rsp) = (0u32, 0u32, 0u32, 0u32);
            let mut e = [0u8; 4];
            for op in ops {
                match op {
                    0 => if front.push_request(&mem, &next_req.to_le_bytes()).is_ok() {
                        next_req += 1;
                    },
                    1 => { let _ = front.push_requests_and_check_notify(&mem).unwrap(); }
                    2 => {
                        let n = back.poll_requests(&mem).unwrap();
                        prop_assert!(n <= l.nr_ents);
                        while back.pop_request(&mem, &mut e).unwrap() {
                            prop_assert_eq!(u32::from_le_bytes(e), want_req);
                            want_req += 1;
                        }
                    }
                    3 => if back.push_response(&mem, &next_rsp.to_le_bytes()).is_ok() {
                        next_rsp += 1;
                    },
                    4 => { let _ = back.push_responses_and_check_notify(&mem).unwrap(); }
                    _ => {
                        let n = front.poll_responses(&mem).unwrap();
                        prop_assert!(n <= l.nr_ents);
                        while front.pop_response(&mem, &mut e).unwrap() {
                            prop_assert_eq!(u32::from_le_bytes(e), want_rsp);
                            want_rsp += 1;
                        }
                    }
                }
                prop_assert!(front.free_requests() <= l.nr_ents);
                prop_assert!(back.unanswered() <= l.nr_ents);
                prop_assert!(next_req - next_rsp <= l.nr_ents);
            }
        }

        /// ring.h's `(new - event) < (new - old)` is "the event index lies in (old, new]",
        /// modulo 2^32, for any old, any batch size up to the ring and any event index.
        #[test]
        fn notify_iff_event_in_published_range(
            old in any::<u32>(),
            n in 0u32..=256,
            near in 0u32..300,
            far in any::<u32>(),
            pick_near in any::<bool>(),
        ) {
            let new = old.wrapping_add(n);
            let event = if pick_near { old.wrapping_add(near) } else { far };
            let inside = (1..=n).any(|k| old.wrapping_add(k) == event);
            prop_assert_eq!(need_notify(new, old, event), inside);
        }

        /// Slot arithmetic: every index maps into the entry area, and consecutive indices at
        /// the u32 wrap land in consecutive slots modulo nr_ents.
        #[test]
        fn slot_offset_wraps(idx in any::<u32>()) {
            for l in [SringLayout::NETIF_TX, SringLayout::NETIF_RX, SringLayout::BLKIF] {
                let off = l.slot_offset(idx);
                prop_assert!(off >= RING_OFFSET && off + l.entry_size <= l.bytes());
                prop_assert!(l.bytes() <= PAGE_SIZE);
                let next = l.slot_offset(idx.wrapping_add(1));
                let expect = if off + l.entry_size == l.bytes() { RING_OFFSET } else { off + l.entry_size };
                prop_assert_eq!(next, expect);
            }
        }
    }
}
