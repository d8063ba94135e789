//! Blkfront against a fake backend writing responses straight into the ring page.
use alloc::vec;
use alloc::vec::Vec;

use crate::blkif::wire::*;
use crate::blkif::*;
use crate::shared_ring::{BackRing, SharedRingError, SringLayout, RSP_PROD};
use platform_api::{GrantRef, HeapMem, Ordering, SharedMem, PAGE_SIZE};
use proptest::prelude::*;

struct Fake {
    mem: HeapMem,
    front: Blkfront<HeapMem>,
    back: BackRing,
}

impl Fake {
    fn new(start: u32) -> Self {
        let mem = HeapMem::new(PAGE_SIZE);
        let front = Blkfront::new_at(mem.clone(), 51, start).unwrap();
        let back = BackRing::attach(&mem, SringLayout::BLKIF, start).unwrap();
        Self { mem, front, back }
    }

    /// Takes every published request.
    fn requests(&mut self) -> Vec<Request> {
        self.back.poll_requests(&self.mem).unwrap();
        let mut e = [0u8; Request::ENTRY_SIZE];
        let mut v = vec![];
        while self.back.pop_request(&self.mem, &mut e).unwrap() {
            v.push(Request::parse(&e).unwrap());
        }
        v
    }

    fn answer(&mut self, rsps: &[Response]) -> bool {
        for r in rsps {
            self.back.push_response(&self.mem, &r.emit()).unwrap();
        }
        self.back
            .push_responses_and_check_notify(&self.mem)
            .unwrap()
    }
}

fn seg(gref: u32, first: u8, last: u8) -> Segment {
    Segment {
        gref: GrantRef(gref),
        first_sect: first,
        last_sect: last,
    }
}

fn okay(req: &Request) -> Response {
    Response {
        id: req.id(),
        operation: req.operation(),
        status: RSP_OKAY,
    }
}

#[test]
fn read_write_flush_discard_round_trip() {
    let mut f = Fake::new(0);
    let segs = [seg(2561, 0, 7), seg(2562, 1, 3)];
    let r = f
        .front
        .submit(BlkOp::Read {
            sector: 0x1_0000_0800,
            segments: &segs,
        })
        .unwrap();
    assert!(f.front.take_notify());
    let w = f
        .front
        .submit(BlkOp::Write {
            sector: 8,
            segments: &segs[..1],
        })
        .unwrap();
    let fl = f.front.submit(BlkOp::Flush).unwrap();
    let d = f
        .front
        .submit(BlkOp::Discard {
            sector: 1 << 20,
            nr_sectors: 2048,
            secure: true,
        })
        .unwrap();
    assert_eq!(f.front.outstanding(), 4);
    let reqs = f.requests();
    assert_eq!(reqs.len(), 4);
    match reqs[0] {
        Request::Direct(ref x) => {
            assert_eq!(
                (x.operation, x.handle, x.id, x.sector_number),
                (OP_READ, 51, r, 0x1_0000_0800)
            );
            assert_eq!(x.segments(), &segs);
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(reqs[1].id(), w);
    assert_eq!(reqs[2].operation(), OP_FLUSH_DISKCACHE);
    assert_eq!(
        reqs[3],
        Request::Discard(DiscardRequest {
            flag: DISCARD_SECURE,
            handle: 51,
            id: d,
            sector_number: 1 << 20,
            nr_sectors: 2048
        })
    );
    // Answer out of order; the frontend asked for an event when it first polled.
    assert_eq!(f.front.poll(), Ok(None));
    let mut notsup = okay(&reqs[2]);
    notsup.status = RSP_EOPNOTSUPP;
    assert!(f.answer(&[okay(&reqs[1]), notsup, okay(&reqs[0])]));
    let mut got = vec![];
    while let Some(c) = f.front.poll().unwrap() {
        got.push(c);
    }
    assert_eq!(
        got,
        vec![
            Completion {
                id: w,
                operation: OP_WRITE,
                status: BlkStatus::Okay
            },
            Completion {
                id: fl,
                operation: OP_FLUSH_DISKCACHE,
                status: BlkStatus::NotSupported
            },
            Completion {
                id: r,
                operation: OP_READ,
                status: BlkStatus::Okay
            },
        ]
    );
    assert_eq!(f.front.outstanding(), 1);
}

#[test]
fn submit_refuses_bad_segments() {
    let mut f = Fake::new(0);
    let twelve = [seg(1, 0, 7); 12];
    assert_eq!(
        f.front.submit(BlkOp::Read {
            sector: 0,
            segments: &twelve
        }),
        Err(BlkError::BadSegmentCount(12))
    );
    assert_eq!(
        f.front.submit(BlkOp::Write {
            sector: 0,
            segments: &[]
        }),
        Err(BlkError::BadSegmentCount(0))
    );
    assert_eq!(
        f.front.submit(BlkOp::Read {
            sector: 0,
            segments: &[seg(1, 0, 7), seg(1, 3, 2)]
        }),
        Err(BlkError::BadSegment { index: 1 })
    );
    assert_eq!(
        f.front.submit(BlkOp::Read {
            sector: 0,
            segments: &[seg(1, 0, 8)]
        }),
        Err(BlkError::BadSegment { index: 0 })
    );
    assert_eq!(
        f.front.submit(BlkOp::Read {
            sector: u64::MAX - 3,
            segments: &[seg(1, 0, 7)]
        }),
        Err(BlkError::BadSectorRange)
    );
    assert_eq!(
        f.front.submit(BlkOp::Discard {
            sector: 0,
            nr_sectors: 0,
            secure: false
        }),
        Err(BlkError::BadSectorRange)
    );
    assert_eq!(f.front.outstanding(), 0);
    assert!(f.requests().is_empty());
}

#[test]
fn submit_full_ring_is_an_answer() {
    let mut f = Fake::new(0);
    for _ in 0..32 {
        f.front.submit(BlkOp::Flush).unwrap();
    }
    assert!(matches!(
        f.front.submit(BlkOp::Flush),
        Err(BlkError::Full { .. })
    ));
    assert!(f.front.error().is_none());
}

#[test]
fn blkfront_refuses_unknown_id() {
    let mut f = Fake::new(0);
    let id = f.front.submit(BlkOp::Flush).unwrap();
    let reqs = f.requests();
    let mut r = okay(&reqs[0]);
    r.id = id ^ (1 << 40);
    f.answer(&[r]);
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Peer(BlkPeerError::UnknownId(id ^ (1 << 40))))
    );
    assert!(f.front.submit(BlkOp::Flush).unwrap_err().is_fatal());
}

#[test]
fn blkfront_refuses_slot_beyond_table() {
    let mut f = Fake::new(0);
    f.front.submit(BlkOp::Flush).unwrap();
    f.requests();
    f.answer(&[Response {
        id: 0xff,
        operation: OP_FLUSH_DISKCACHE,
        status: 0,
    }]);
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Peer(BlkPeerError::UnknownId(0xff)))
    );
}

#[test]
fn blkfront_refuses_second_answer_for_one_request() {
    let mut f = Fake::new(0);
    f.front.submit(BlkOp::Flush).unwrap();
    f.front.submit(BlkOp::Flush).unwrap();
    let reqs = f.requests();
    f.answer(&[okay(&reqs[0]), okay(&reqs[0])]);
    assert!(f.front.poll().unwrap().is_some());
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Peer(BlkPeerError::UnknownId(reqs[0].id())))
    );
}

#[test]
fn blkfront_refuses_stale_id_after_slot_reuse() {
    let mut f = Fake::new(0);
    f.front.submit(BlkOp::Flush).unwrap();
    let old = f.requests();
    f.answer(&[okay(&old[0])]);
    assert!(f.front.poll().unwrap().is_some());
    // Same slot, new generation: an answer carrying the old id is refused.
    f.front.submit(BlkOp::Flush).unwrap();
    let new = f.requests();
    assert_eq!(new[0].id() & 0xff, old[0].id() & 0xff);
    assert_ne!(new[0].id(), old[0].id());
    f.answer(&[okay(&old[0])]);
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Peer(BlkPeerError::UnknownId(old[0].id())))
    );
}

#[test]
fn blkfront_refuses_operation_mismatch() {
    let mut f = Fake::new(0);
    let id = f.front.submit(BlkOp::Flush).unwrap();
    f.requests();
    f.answer(&[Response {
        id,
        operation: OP_WRITE,
        status: 0,
    }]);
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Peer(BlkPeerError::OperationMismatch {
            id,
            expected: OP_FLUSH_DISKCACHE,
            got: OP_WRITE
        }))
    );
}

#[test]
fn blkfront_refuses_responses_beyond_requests() {
    let mut f = Fake::new(0);
    f.front.submit(BlkOp::Flush).unwrap();
    f.mem.store_u32(RSP_PROD, 2, Ordering::Release).unwrap();
    assert_eq!(
        f.front.poll(),
        Err(BlkError::Ring(SharedRingError::TooManyResponses {
            pending: 2,
            outstanding: 1
        }))
    );
}

#[test]
fn unknown_status_is_reported_not_trusted() {
    let mut f = Fake::new(0);
    let id = f.front.submit(BlkOp::Flush).unwrap();
    f.requests();
    f.answer(&[Response {
        id,
        operation: OP_FLUSH_DISKCACHE,
        status: 77,
    }]);
    assert_eq!(
        f.front.poll().unwrap().unwrap().status,
        BlkStatus::Unknown(77)
    );
}

proptest! {
    /// From any start index, any pattern of submits and (reordered) answers completes each
    /// request exactly once and never exceeds the ring.
    #[test]
    fn every_request_completes_once(
        start in prop_oneof![Just(u32::MAX - 10), any::<u32>()],
        ops in proptest::collection::vec((0u8..3, any::<u8>()), 1..300),
    ) {
        let mut f = Fake::new(start);
        let mut pending: Vec<Request> = vec![];
        let mut live = alloc::collections::BTreeSet::new();
        for (op, x) in ops {
            match op {
                0 => {
                    let segs = [seg(u32::from(x), x % 8, 7)];
                    if let Ok(id) = f.front.submit(BlkOp::Write { sector: u64::from(x), segments: &segs }) {
                        prop_assert!(live.insert(id));
                    }
                }
                1 => {
                    pending.extend(f.requests());
                    if !pending.is_empty() {
                        let r = pending.remove(usize::from(x) % pending.len());
                        f.answer(&[okay(&r)]);
                    }
                }
                _ => while let Some(c) = f.front.poll().unwrap() {
                    prop_assert!(live.remove(&c.id));
                }
            }
            prop_assert!(f.front.outstanding() <= 32);
            prop_assert_eq!(f.front.outstanding(), live.len());
        }
    }
}
