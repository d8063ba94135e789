//! Our netfront against our netback in memory: packets both ways, wrap-around, notifications.
use super::*;
use crate::netif::wire::*;
use crate::netif::*;
use crate::shared_ring::{FrontRing, SringLayout, REQ_EVENT, RSP_EVENT};
use platform_api::{Ordering, SharedMem};
use proptest::prelude::*;

fn pair(start: u32) -> (Netfront<HeapMem>, Netback<HeapMem>, Pool, Copier) {
    let (tx, rx, table) = pages();
    let front = Netfront::new_at(tx.clone(), rx.clone(), NetfrontLimits::DEFAULT, start).unwrap();
    let back = Netback::new(tx, rx, NetbackLimits::DEFAULT).unwrap();
    let pool = Pool::new(&table, 1000, 400);
    let copier = Copier { table, fail: false };
    (front, back, pool, copier)
}

#[test]
fn packets_both_ways_across_index_wrap() {
    let (mut front, mut back, mut pool, mut copier) = pair(u32::MAX - 40);
    let mut buf = vec![0u8; MAX_TX_SIZE];
    let mut out = vec![0u8; MAX_TX_SIZE];
    assert!(front.post_rx(&mut pool).unwrap() > 0);
    // 700 packets of 1..=3 slots: every ring index wraps u32::MAX and the slots wrap many times.
    for i in 0..700usize {
        let len = [60, 1514, 4096, 4097, 9000][i % 5];
        let p = packet(len, i as u8);
        front.transmit(&mut pool, &p).unwrap();
        match back.poll_tx(&mut copier, &mut buf).unwrap() {
            TxEvent::Packet {
                len: got,
                csum_blank,
                gso,
            } => {
                assert_eq!(&buf[..got], p.as_slice(), "packet {i}");
                assert!(!csum_blank && gso.is_none());
            }
            e => panic!("packet {i}: {e:?}"),
        }
        assert_eq!(back.poll_tx(&mut copier, &mut buf).unwrap(), TxEvent::Idle);
        // And back the other way.
        back.queue_rx(&p).unwrap();
        assert_eq!(back.poll_rx(&mut copier).unwrap(), 1);
        assert_eq!(
            front.poll_rx(&mut pool, &mut out).unwrap(),
            RxEvent::Packet { len }
        );
        assert_eq!(&out[..len], p.as_slice(), "rx packet {i}");
        assert!(front.poll_tx_responses(&mut pool).unwrap() <= 3);
    }
    assert_eq!(front.tx_outstanding(), 0);
    assert_eq!(back.stats().tx_packets, 700);
    assert_eq!(front.stats().rx_packets, 700);
    assert!(back.error().is_none() && front.error().is_none());
}

#[test]
fn notifications_follow_req_event_and_rsp_event() {
    let (tx, rx, table) = pages();
    let mut front = Netfront::new(tx.clone(), rx.clone(), NetfrontLimits::DEFAULT).unwrap();
    let mut back = Netback::new(tx.clone(), rx, NetbackLimits::DEFAULT).unwrap();
    let mut pool = Pool::new(&table, 1, 16);
    let mut copier = Copier { table, fail: false };
    let mut buf = vec![0u8; MAX_TX_SIZE];
    // SHARED_RING_INIT sets req_event = 1: the first request notifies.
    front.transmit(&mut pool, &packet(60, 1)).unwrap();
    assert!(front.take_notify());
    // The backend has not re-armed: the second does not.
    front.transmit(&mut pool, &packet(60, 2)).unwrap();
    assert!(!front.take_notify());
    // The frontend armed rsp_event when it polled (nothing pending): first answer notifies.
    assert_eq!(front.poll_tx_responses(&mut pool).unwrap(), 0);
    assert_eq!(tx.load_u32(RSP_EVENT, Ordering::Acquire).unwrap(), 1);
    assert!(matches!(
        back.poll_tx(&mut copier, &mut buf).unwrap(),
        TxEvent::Packet { .. }
    ));
    assert!(back.take_notify());
    assert!(matches!(
        back.poll_tx(&mut copier, &mut buf).unwrap(),
        TxEvent::Packet { .. }
    ));
    assert!(!back.take_notify());
    // Idle re-arms req_event = req_cons + 1 (RING_FINAL_CHECK_FOR_REQUESTS).
    assert_eq!(back.poll_tx(&mut copier, &mut buf).unwrap(), TxEvent::Idle);
    assert_eq!(tx.load_u32(REQ_EVENT, Ordering::Acquire).unwrap(), 3);
    front.transmit(&mut pool, &packet(60, 3)).unwrap();
    assert!(front.take_notify());
}

#[test]
fn rx_waits_for_buffers_and_queue_is_bounded() {
    let (tx, rx, table) = pages();
    let mut front = Netfront::new(tx.clone(), rx.clone(), NetfrontLimits::DEFAULT).unwrap();
    let limits = NetbackLimits {
        rx_queue: 2,
        ..NetbackLimits::DEFAULT
    };
    let mut back = Netback::new(tx, rx.clone(), limits).unwrap();
    let mut pool = Pool::new(&table, 1, 8);
    let mut copier = Copier { table, fail: false };
    back.queue_rx(&packet(100, 1)).unwrap();
    back.queue_rx(&packet(9000, 2)).unwrap();
    assert_eq!(
        back.queue_rx(&packet(100, 3)),
        Err(NetError::Full { what: "rx queue" })
    );
    assert_eq!(back.stats().rx_queue_full, 1);
    // No buffers posted: nothing moves, and req_event asks for one more request.
    assert_eq!(back.poll_rx(&mut copier).unwrap(), 0);
    assert_eq!(rx.load_u32(REQ_EVENT, Ordering::Acquire).unwrap(), 1);
    // Two buffers: the first packet goes, the 3-slot second waits and asks for 3.
    pool.free.truncate(2);
    assert_eq!(front.post_rx(&mut pool).unwrap(), 2);
    assert!(front.take_notify());
    assert_eq!(back.poll_rx(&mut copier).unwrap(), 1);
    assert_eq!(back.rx_queued(), 1);
    assert_eq!(rx.load_u32(REQ_EVENT, Ordering::Acquire).unwrap(), 1 + 3);
    let mut out = vec![0u8; MAX_TX_SIZE];
    assert_eq!(
        front.poll_rx(&mut pool, &mut out).unwrap(),
        RxEvent::Packet { len: 100 }
    );
    assert_eq!(&out[..100], packet(100, 1).as_slice());
    // poll_rx reposted what it could (the page just released plus one more): give it more.
    pool.free.extend(100..104);
    for g in 100..104 {
        pool.table.borrow_mut().insert(g, vec![0; PAGE_SIZE]);
    }
    front.post_rx(&mut pool).unwrap();
    assert_eq!(back.poll_rx(&mut copier).unwrap(), 1);
    assert_eq!(
        front.poll_rx(&mut pool, &mut out).unwrap(),
        RxEvent::Packet { len: 9000 }
    );
    assert_eq!(&out[..9000], packet(9000, 2).as_slice());
}

#[test]
fn netback_answers_each_slot_and_null_for_extras() {
    let (tx, rx, table) = pages();
    let mut ring = FrontRing::attach(&tx, SringLayout::NETIF_TX, 0).unwrap();
    crate::shared_ring::init(&tx).unwrap();
    crate::shared_ring::init(&rx).unwrap();
    let mut back = Netback::new(tx.clone(), rx, NetbackLimits::DEFAULT).unwrap();
    let mut copier = Copier {
        table: table.clone(),
        fail: false,
    };
    table.borrow_mut().insert(7, packet(PAGE_SIZE, 9));
    table.borrow_mut().insert(8, packet(PAGE_SIZE, 10));
    let first = TxRequest {
        gref: GrantRef(7),
        offset: 100,
        flags: NETTXF_MORE_DATA | NETTXF_EXTRA_INFO | NETTXF_CSUM_BLANK,
        id: 40,
        size: 1000,
    };
    let gso = ExtraInfo {
        flags: 0,
        body: Extra::Gso {
            size: 1448,
            gso_type: GSO_TYPE_TCPV4,
            features: 0,
        },
    };
    let mut extra_slot = [0u8; 12];
    extra_slot[..8].copy_from_slice(&gso.emit());
    extra_slot[8..10].copy_from_slice(&77u16.to_le_bytes());
    let second = TxRequest {
        gref: GrantRef(8),
        offset: 0,
        flags: 0,
        id: 41,
        size: 400,
    };
    ring.push_request(&tx, &first.emit()).unwrap();
    ring.push_request(&tx, &extra_slot).unwrap();
    ring.push_request(&tx, &second.emit()).unwrap();
    assert!(ring.push_requests_and_check_notify(&tx).unwrap());
    let mut buf = vec![0u8; MAX_TX_SIZE];
    assert_eq!(
        back.poll_tx(&mut copier, &mut buf).unwrap(),
        TxEvent::Packet {
            len: 1000,
            csum_blank: true,
            gso: Some((1448, GSO_TYPE_TCPV4))
        }
    );
    let t = table.borrow();
    assert_eq!(&buf[..600], &t[&7][100..700]);
    assert_eq!(&buf[600..1000], &t[&8][..400]);
    assert_eq!(ring.poll_responses(&tx).unwrap(), 3);
    let mut r = [0u8; 4];
    let mut got = vec![];
    while ring.pop_response(&tx, &mut r).unwrap() {
        got.push(TxResponse::parse(&r));
    }
    assert_eq!(
        got,
        vec![
            TxResponse {
                id: 40,
                status: NETIF_RSP_OKAY
            },
            TxResponse {
                id: 77,
                status: NETIF_RSP_NULL
            },
            TxResponse {
                id: 41,
                status: NETIF_RSP_OKAY
            },
        ]
    );
}

proptest! {
    /// Any interleaving of sends each way, with any sizes and from any start index, delivers
    /// every packet intact and in order, and never leaves an id or a page behind.
    #[test]
    fn any_interleaving_delivers_in_order(
        start in prop_oneof![Just(u32::MAX - 7), any::<u32>()],
        ops in proptest::collection::vec((0u8..5, ETH_HLEN..12000), 1..120),
    ) {
        let (mut front, mut back, mut pool, mut copier) = pair(start);
        let mut buf = vec![0u8; MAX_TX_SIZE];
        let mut out = vec![0u8; MAX_TX_SIZE];
        let (mut up_sent, mut up_got) = (vec![], 0usize);
        let (mut down_sent, mut down_got) = (vec![], 0usize);
        for (op, len) in ops {
            match op {
                0 => {
                    let p = packet(len, up_sent.len() as u8);
                    if front.transmit(&mut pool, &p).is_ok() { up_sent.push(p); }
                }
                1 => if let TxEvent::Packet { len, .. } = back.poll_tx(&mut copier, &mut buf).unwrap() {
                    prop_assert_eq!(&buf[..len], up_sent[up_got].as_slice());
                    up_got += 1;
                },
                2 => {
                    let p = packet(len, 100 + down_sent.len() as u8);
                    if back.queue_rx(&p).is_ok() { down_sent.push(p); }
                }
                3 => { back.poll_rx(&mut copier).unwrap(); }
                _ => {
                    front.post_rx(&mut pool).unwrap();
                    if let RxEvent::Packet { len } = front.poll_rx(&mut pool, &mut out).unwrap() {
                        prop_assert_eq!(&out[..len], down_sent[down_got].as_slice());
                        down_got += 1;
                    }
                }
            }
        }
        // Drain.
        while let TxEvent::Packet { len, .. } = back.poll_tx(&mut copier, &mut buf).unwrap() {
            prop_assert_eq!(&buf[..len], up_sent[up_got].as_slice());
            up_got += 1;
        }
        prop_assert_eq!(up_got, up_sent.len());
        front.poll_tx_responses(&mut pool).unwrap();
        prop_assert_eq!(front.tx_outstanding(), 0);
        for _ in 0..200 {
            back.poll_rx(&mut copier).unwrap();
            match front.poll_rx(&mut pool, &mut out).unwrap() {
                RxEvent::Packet { len } => {
                    prop_assert_eq!(&out[..len], down_sent[down_got].as_slice());
                    down_got += 1;
                }
                RxEvent::Idle if back.rx_queued() == 0 => break,
                _ => {}
            }
        }
        prop_assert_eq!(down_got, down_sent.len());
    }
}
