//! Hostile peers: a fake frontend writes bad TX/RX requests and indices for our netback, and
//! a fake backend writes bad responses for our netfront. Each test is named after its rule.
use super::*;
use crate::netif::wire::*;
use crate::netif::*;
use crate::shared_ring::{
    self, BackRing, FrontRing, SharedRingError, SringLayout, REQ_PROD, RSP_PROD,
};
use platform_api::{Ordering, SharedMem};

/// Our netback facing a raw frontend ring; grants 1..=4 exist.
struct Bad {
    tx: HeapMem,
    ring: FrontRing,
    back: Netback<HeapMem>,
    copier: Copier,
    buf: Vec<u8>,
}

impl Bad {
    fn new() -> Self {
        let (tx, rx, table) = pages();
        shared_ring::init(&tx).unwrap();
        shared_ring::init(&rx).unwrap();
        for g in 1..=4 {
            table.borrow_mut().insert(g, packet(PAGE_SIZE, g as u8));
        }
        Self {
            ring: FrontRing::attach(&tx, SringLayout::NETIF_TX, 0).unwrap(),
            back: Netback::new(tx.clone(), rx, NetbackLimits::DEFAULT).unwrap(),
            tx,
            copier: Copier { table, fail: false },
            buf: vec![0u8; MAX_TX_SIZE],
        }
    }

    fn send(&mut self, slots: &[[u8; 12]]) {
        for s in slots {
            self.ring.push_request(&self.tx, s).unwrap();
        }
        let _ = self.ring.push_requests_and_check_notify(&self.tx).unwrap();
    }

    fn poll(&mut self) -> Result<TxEvent, NetError> {
        self.back.poll_tx(&mut self.copier, &mut self.buf)
    }

    fn responses(&mut self) -> Vec<TxResponse> {
        self.ring.poll_responses(&self.tx).unwrap();
        let mut r = [0u8; 4];
        let mut v = vec![];
        while self.ring.pop_response(&self.tx, &mut r).unwrap() {
            v.push(TxResponse::parse(&r));
        }
        v
    }
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> [u8; 12] {
    TxRequest {
        gref: GrantRef(gref),
        offset,
        flags,
        id,
        size,
    }
    .emit()
}

fn assert_disconnected(bad: &mut Bad, r: Result<TxEvent, NetError>, want: PeerError) {
    assert_eq!(r, Err(NetError::Peer(want)));
    assert!(r.unwrap_err().is_fatal());
    // Sticky: the ring is no longer served, whatever the frontend writes next.
    assert_eq!(bad.poll(), Err(NetError::Peer(want)));
    assert_eq!(bad.back.error(), Some(NetError::Peer(want)));
}

#[test]
fn netback_refuses_more_pending_than_ring() {
    let mut bad = Bad::new();
    bad.tx.store_u32(REQ_PROD, 257, Ordering::Release).unwrap();
    let r = bad.poll();
    assert_eq!(
        r,
        Err(NetError::Ring(SharedRingError::TooManyRequests {
            unanswered: 257,
            nr_ents: 256
        }))
    );
    assert!(r.unwrap_err().is_fatal());
    bad.tx.store_u32(REQ_PROD, 0, Ordering::Release).unwrap();
    assert!(bad.poll().is_err());
}

#[test]
fn netback_refuses_req_prod_garbage_at_wrap() {
    let mut bad = Bad::new();
    bad.tx
        .store_u32(REQ_PROD, u32::MAX, Ordering::Release)
        .unwrap();
    assert!(bad.poll().unwrap_err().is_fatal());
}

#[test]
fn netback_refuses_slot_crossing_page() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, NETTXF_MORE_DATA, 1, 300), req(2, 4000, 0, 2, 200)]);
    let r = bad.poll();
    assert_disconnected(
        &mut bad,
        r,
        PeerError::SlotCrossesPage {
            offset: 4000,
            size: 200,
        },
    );
}

#[test]
fn netback_refuses_first_slot_crossing_page() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 4090, 0, 1, 100)]);
    let r = bad.poll();
    assert_disconnected(
        &mut bad,
        r,
        PeerError::SlotCrossesPage {
            offset: 4090,
            size: 100,
        },
    );
}

#[test]
fn netback_disconnects_beyond_fatal_slot_count() {
    let mut bad = Bad::new();
    let slots: Vec<_> = (0..22)
        .map(|i| req(1, 0, NETTXF_MORE_DATA, i, 10))
        .collect();
    bad.send(&slots);
    let r = bad.poll();
    assert_disconnected(&mut bad, r, PeerError::TooManySlots { slots: 20 });
}

#[test]
fn netback_drops_packet_over_18_slots_with_error_per_slot() {
    let mut bad = Bad::new();
    // First slot + 19 more (legal for the ring, above XEN_NETIF_NR_SLOTS_MIN).
    let mut slots = vec![req(1, 0, NETTXF_MORE_DATA, 100, 20 * 100)];
    for i in 0..19 {
        let flags = if i < 18 { NETTXF_MORE_DATA } else { 0 };
        slots.push(req(2, 0, flags, i, 100));
    }
    bad.send(&slots);
    assert_eq!(bad.poll(), Ok(TxEvent::Dropped(TxDrop::TooManySlots)));
    let rsp = bad.responses();
    assert_eq!(rsp.len(), 20);
    assert!(rsp.iter().all(|r| r.status == NETIF_RSP_ERROR));
    assert_eq!(rsp[0].id, 100);
    // The frontend stays connected.
    bad.send(&[req(1, 0, 0, 5, 60)]);
    assert!(matches!(bad.poll(), Ok(TxEvent::Packet { len: 60, .. })));
}

#[test]
fn netback_drops_slot_larger_than_remaining() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, NETTXF_MORE_DATA, 1, 100), req(2, 0, 0, 2, 200)]);
    assert_eq!(
        bad.poll(),
        Ok(TxEvent::Dropped(TxDrop::SlotLargerThanRemaining))
    );
    assert_eq!(bad.responses().len(), 2);
}

#[test]
fn netback_drops_first_slot_shorter_than_ethernet_header() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, NETTXF_MORE_DATA, 1, 110), req(2, 0, 0, 2, 100)]);
    assert_eq!(bad.poll(), Ok(TxEvent::Dropped(TxDrop::FirstSlotTooSmall)));
    bad.send(&[req(1, 0, 0, 3, 0)]);
    assert_eq!(bad.poll(), Ok(TxEvent::Dropped(TxDrop::FirstSlotTooSmall)));
}

#[test]
fn netback_drops_packet_above_configured_maximum() {
    let (tx, rx, table) = pages();
    shared_ring::init(&tx).unwrap();
    shared_ring::init(&rx).unwrap();
    let limits = NetbackLimits {
        max_packet: 1514,
        ..NetbackLimits::DEFAULT
    };
    let mut back = Netback::new(tx.clone(), rx, limits).unwrap();
    let mut ring = FrontRing::attach(&tx, SringLayout::NETIF_TX, 0).unwrap();
    ring.push_request(&tx, &req(1, 0, NETTXF_MORE_DATA, 1, 3000))
        .unwrap();
    ring.push_request(&tx, &req(2, 0, 0, 2, 1486)).unwrap();
    let _ = ring.push_requests_and_check_notify(&tx).unwrap();
    let mut copier = Copier { table, fail: false };
    let mut small = vec![0u8; 1000];
    assert_eq!(
        back.poll_tx(&mut copier, &mut small),
        Err(NetError::BufferTooSmall { needed: 1514 })
    );
    let mut buf = vec![0u8; 1514];
    assert_eq!(
        back.poll_tx(&mut copier, &mut buf),
        Ok(TxEvent::Dropped(TxDrop::TooLarge))
    );
}

#[test]
fn netback_refuses_truncated_packet() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, NETTXF_MORE_DATA, 1, 300)]);
    let r = bad.poll();
    assert_disconnected(&mut bad, r, PeerError::TruncatedPacket);
}

#[test]
fn netback_refuses_missing_extra_info() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 60)]);
    let r = bad.poll();
    assert_disconnected(&mut bad, r, PeerError::MissingExtraInfo);
}

#[test]
fn netback_refuses_bad_extra_type() {
    for kind in [0u8, EXTRA_TYPE_MAX, 0xff] {
        let mut bad = Bad::new();
        let mut extra = [0u8; 12];
        extra[0] = kind;
        bad.send(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 60), extra]);
        let r = bad.poll();
        assert_disconnected(&mut bad, r, PeerError::BadExtraType(kind));
    }
}

#[test]
fn netback_refuses_endless_extra_chain() {
    let mut bad = Bad::new();
    let mut slots = vec![req(1, 0, NETTXF_EXTRA_INFO, 1, 60)];
    let mut extra = [0u8; 12];
    extra[..8].copy_from_slice(
        &ExtraInfo {
            flags: EXTRA_FLAG_MORE,
            body: Extra::McastAdd([1; 6]),
        }
        .emit(),
    );
    slots.extend(core::iter::repeat_n(extra, 10));
    bad.send(&slots);
    let r = bad.poll();
    assert_disconnected(&mut bad, r, PeerError::TooManyExtras);
}

#[test]
fn netback_refuses_zero_gso_size() {
    let mut bad = Bad::new();
    let mut extra = [0u8; 12];
    extra[..8].copy_from_slice(
        &ExtraInfo {
            flags: 0,
            body: Extra::Gso {
                size: 0,
                gso_type: GSO_TYPE_TCPV4,
                features: 0,
            },
        }
        .emit(),
    );
    bad.send(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 60), extra]);
    let r = bad.poll();
    assert_disconnected(
        &mut bad,
        r,
        PeerError::BadGso {
            size: 0,
            gso_type: GSO_TYPE_TCPV4,
        },
    );
}

#[test]
fn netback_answers_failed_copy_with_error_and_stays_up() {
    let mut bad = Bad::new();
    // Grant 99 does not exist: the copier fails, as GNTTABOP_copy would.
    bad.send(&[req(99, 0, 0, 7, 60)]);
    assert_eq!(bad.poll(), Ok(TxEvent::Dropped(TxDrop::CopyFailed)));
    assert_eq!(
        bad.responses(),
        vec![TxResponse {
            id: 7,
            status: NETIF_RSP_ERROR
        }]
    );
    bad.send(&[req(1, 0, 0, 7, 60)]);
    assert!(matches!(bad.poll(), Ok(TxEvent::Packet { len: 60, .. })));
}

#[test]
fn netback_echoes_ids_without_trusting_them() {
    let mut bad = Bad::new();
    bad.send(&[req(1, 0, 0, 0xffff, 60), req(1, 0, 0, 0xffff, 60)]);
    assert!(matches!(bad.poll(), Ok(TxEvent::Packet { .. })));
    assert!(matches!(bad.poll(), Ok(TxEvent::Packet { .. })));
    assert_eq!(bad.responses().iter().filter(|r| r.id == 0xffff).count(), 2);
}

#[test]
fn netback_rx_refuses_garbage_rx_req_prod() {
    let (tx, rx, table) = pages();
    shared_ring::init(&tx).unwrap();
    shared_ring::init(&rx).unwrap();
    let mut back = Netback::new(tx, rx.clone(), NetbackLimits::DEFAULT).unwrap();
    let mut copier = Copier { table, fail: false };
    back.queue_rx(&packet(60, 1)).unwrap();
    rx.store_u32(REQ_PROD, 1000, Ordering::Release).unwrap();
    assert!(back.poll_rx(&mut copier).unwrap_err().is_fatal());
    assert!(back.queue_rx(&packet(60, 1)).is_err());
}

#[test]
fn netback_rx_copy_failure_is_an_error_response() {
    let (tx, rx, table) = pages();
    shared_ring::init(&tx).unwrap();
    shared_ring::init(&rx).unwrap();
    let mut back = Netback::new(tx, rx.clone(), NetbackLimits::DEFAULT).unwrap();
    let mut copier = Copier { table, fail: false };
    let mut ring = FrontRing::attach(&rx, SringLayout::NETIF_RX, 0).unwrap();
    ring.push_request(
        &rx,
        &RxRequest {
            id: 9,
            gref: GrantRef(555),
        }
        .emit(),
    )
    .unwrap();
    let _ = ring.push_requests_and_check_notify(&rx).unwrap();
    back.queue_rx(&packet(60, 1)).unwrap();
    assert_eq!(back.poll_rx(&mut copier).unwrap(), 1);
    assert_eq!(ring.poll_responses(&rx).unwrap(), 1);
    let mut r = [0u8; 8];
    assert!(ring.pop_response(&rx, &mut r).unwrap());
    assert_eq!(
        RxResponse::parse(&r),
        RxResponse {
            id: 9,
            offset: 0,
            flags: 0,
            status: NETIF_RSP_ERROR
        }
    );
    assert_eq!(back.stats().rx_copy_failed, 1);
}

/// Our netfront facing a raw backend ring.
struct BadBack {
    tx: HeapMem,
    rx: HeapMem,
    front: Netfront<HeapMem>,
    pool: Pool,
    txr: BackRing,
    rxr: BackRing,
    out: Vec<u8>,
}

impl BadBack {
    fn new() -> Self {
        let (tx, rx, table) = pages();
        let front = Netfront::new(
            tx.clone(),
            rx.clone(),
            NetfrontLimits {
                rx_buffers: 4,
                ..NetfrontLimits::DEFAULT
            },
        )
        .unwrap();
        Self {
            txr: BackRing::attach(&tx, SringLayout::NETIF_TX, 0).unwrap(),
            rxr: BackRing::attach(&rx, SringLayout::NETIF_RX, 0).unwrap(),
            tx,
            rx,
            front,
            pool: Pool::new(&table, 1, 16),
            out: vec![0u8; MAX_TX_SIZE],
        }
    }

    fn answer_tx(&mut self, rsps: &[TxResponse]) {
        self.txr.poll_requests(&self.tx).unwrap();
        let mut e = [0u8; 12];
        for r in rsps {
            let _ = self.txr.pop_request(&self.tx, &mut e).unwrap();
            self.txr.push_response(&self.tx, &r.emit()).unwrap();
        }
        let _ = self.txr.push_responses_and_check_notify(&self.tx).unwrap();
    }

    fn answer_rx(&mut self, rsps: &[[u8; 8]]) {
        self.rxr.poll_requests(&self.rx).unwrap();
        let mut e = [0u8; 8];
        for r in rsps {
            assert!(self.rxr.pop_request(&self.rx, &mut e).unwrap());
            self.rxr.push_response(&self.rx, r).unwrap();
        }
        let _ = self.rxr.push_responses_and_check_notify(&self.rx).unwrap();
    }

    fn poll_rx(&mut self) -> Result<RxEvent, NetError> {
        self.front.poll_rx(&mut self.pool, &mut self.out)
    }
}

fn rx(id: u16, offset: u16, flags: u16, status: i16) -> [u8; 8] {
    RxResponse {
        id,
        offset,
        flags,
        status,
    }
    .emit()
}

#[test]
fn netfront_refuses_unknown_tx_id() {
    let mut b = BadBack::new();
    b.front.transmit(&mut b.pool, &packet(60, 1)).unwrap();
    b.answer_tx(&[TxResponse {
        id: 200,
        status: NETIF_RSP_OKAY,
    }]);
    let r = b.front.poll_tx_responses(&mut b.pool);
    assert_eq!(r, Err(NetError::Peer(PeerError::UnknownId(200))));
    assert!(b
        .front
        .transmit(&mut b.pool, &packet(60, 1))
        .unwrap_err()
        .is_fatal());
}

#[test]
fn netfront_refuses_second_answer_for_one_id() {
    let mut b = BadBack::new();
    b.front.transmit(&mut b.pool, &packet(60, 1)).unwrap();
    b.front.transmit(&mut b.pool, &packet(60, 2)).unwrap();
    // Both slots answered with the first id (0): the second answer is a duplicate.
    b.answer_tx(&[
        TxResponse { id: 0, status: 0 },
        TxResponse { id: 0, status: 0 },
    ]);
    assert_eq!(
        b.front.poll_tx_responses(&mut b.pool),
        Err(NetError::Peer(PeerError::UnknownId(0)))
    );
}

#[test]
fn netfront_refuses_responses_beyond_requests() {
    let mut b = BadBack::new();
    b.front.transmit(&mut b.pool, &packet(60, 1)).unwrap();
    b.tx.store_u32(RSP_PROD, 5, Ordering::Release).unwrap();
    let r = b.front.poll_tx_responses(&mut b.pool);
    assert_eq!(
        r,
        Err(NetError::Ring(SharedRingError::TooManyResponses {
            pending: 5,
            outstanding: 1
        }))
    );
    assert!(r.unwrap_err().is_fatal());
}

#[test]
fn netfront_counts_error_status_and_frees_the_page() {
    let mut b = BadBack::new();
    let free = b.pool.free.len();
    b.front.transmit(&mut b.pool, &packet(60, 1)).unwrap();
    b.answer_tx(&[TxResponse {
        id: 0,
        status: NETIF_RSP_DROPPED,
    }]);
    assert_eq!(b.front.poll_tx_responses(&mut b.pool), Ok(1));
    assert_eq!(b.front.stats().tx_errors, 1);
    assert_eq!(b.pool.free.len(), free);
}

#[test]
fn netfront_drops_rx_slot_crossing_page() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    b.answer_rx(&[rx(0, 4000, 0, 200)]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Dropped(RxDrop::SlotCrossesPage)));
    // The buffer went back and was reposted: still 4 outstanding, link up.
    assert!(b.front.error().is_none());
    b.answer_rx(&[rx(1, 0, 0, 60)]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Packet { len: 60 }));
}

#[test]
fn netfront_drops_rx_error_status_and_consumes_the_whole_packet() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    b.answer_rx(&[
        rx(0, 0, NETRXF_MORE_DATA, NETIF_RSP_ERROR),
        rx(1, 0, 0, 100),
    ]);
    assert_eq!(
        b.poll_rx(),
        Ok(RxEvent::Dropped(RxDrop::ErrorStatus(NETIF_RSP_ERROR)))
    );
    assert_eq!(b.poll_rx(), Ok(RxEvent::Idle));
}

#[test]
fn netfront_skips_rx_extra_info_slots() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    let gso = ExtraInfo {
        flags: 0,
        body: Extra::Gso {
            size: 1448,
            gso_type: 1,
            features: 0,
        },
    }
    .emit();
    b.answer_rx(&[
        rx(0, 0, NETRXF_EXTRA_INFO | NETRXF_MORE_DATA, 100),
        gso,
        rx(2, 0, 0, 50),
    ]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Packet { len: 150 }));
}

#[test]
fn netfront_refuses_rx_id_mismatch() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    b.answer_rx(&[rx(3, 0, 0, 60)]);
    assert_eq!(
        b.poll_rx(),
        Err(NetError::Peer(PeerError::RxIdMismatch {
            expected: 0,
            got: 3
        }))
    );
}

#[test]
fn netfront_refuses_rx_chain_that_never_ends() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    let all: Vec<_> = (0..4).map(|i| rx(i, 0, NETRXF_MORE_DATA, 10)).collect();
    b.answer_rx(&all);
    assert_eq!(
        b.poll_rx(),
        Err(NetError::Peer(PeerError::RxChainNeverEnds))
    );
}

#[test]
fn netfront_waits_for_the_rest_of_a_partly_published_packet() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    b.answer_rx(&[rx(0, 0, NETRXF_MORE_DATA, 10)]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Idle));
    b.answer_rx(&[rx(1, 0, 0, 20)]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Packet { len: 30 }));
}

#[test]
fn netfront_drops_rx_read_failure() {
    let mut b = BadBack::new();
    b.front.post_rx(&mut b.pool).unwrap();
    b.pool.fail_reads = true;
    b.answer_rx(&[rx(0, 0, 0, 60)]);
    assert_eq!(b.poll_rx(), Ok(RxEvent::Dropped(RxDrop::CopyFailed)));
}
