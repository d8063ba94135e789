//! Blkfront against a hostile block backend: between calls the input writes arbitrary
//! responses (often reusing real ids), producer values and bytes into the ring page. Must
//! never panic or hang, and must complete only ids it issued, each exactly once.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{GrantRef, HeapMem, Ordering, SharedMem, PAGE_SIZE};
use xen_rings::blkif::wire::{Request, Response, Segment};
use xen_rings::blkif::{BlkError, BlkOp, Blkfront};
use xen_rings::shared_ring::{SringLayout, RSP_PROD};

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        sector: u64,
        segs: Vec<(u8, u8, u8)>,
    },
    Write {
        sector: u64,
        segs: Vec<(u8, u8, u8)>,
    },
    Flush,
    Discard {
        sector: u64,
        nr: u64,
        secure: bool,
    },
    /// A response at `rsp_prod + ahead`; `id_pick` selects an issued id (or raw when None).
    Rsp {
        ahead: u8,
        id_pick: Option<u8>,
        raw_id: u64,
        operation: u8,
        status: i16,
    },
    Publish(u8),
    RawRspProd(u32),
    Poke {
        offset: u16,
        value: u8,
    },
    Poll,
    /// Answers the next `n` real requests with their ids and operations.
    Answer {
        n: u8,
        status: i8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: u32,
    ops: Vec<Op>,
}

fn segments(v: &[(u8, u8, u8)]) -> Vec<Segment> {
    v.iter()
        .map(|&(g, f, l)| Segment {
            gref: GrantRef(u32::from(g)),
            first_sect: f % 9,
            last_sect: l % 9,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = arbitrary::Unstructured::new(data).arbitrary::<Input>() else {
        return;
    };
    let mem = HeapMem::new(PAGE_SIZE);
    let mut front = Blkfront::new_at(mem.clone(), 51, input.start).unwrap();
    let mut issued: Vec<u64> = Vec::new();
    let mut live: BTreeSet<u64> = BTreeSet::new();
    let mut stopped: Option<BlkError> = None;
    let submit = |front: &mut Blkfront<HeapMem>,
                  op: BlkOp<'_>,
                  issued: &mut Vec<u64>,
                  live: &mut BTreeSet<u64>| {
        match front.submit(op) {
            Ok(id) => {
                assert!(live.insert(id), "id {id:#x} issued twice while outstanding");
                issued.push(id);
                None
            }
            Err(e) => e.is_fatal().then_some(e),
        }
    };
    for op in input.ops.iter().take(3000) {
        let err = match op {
            Op::Read { sector, segs } => {
                let s = segments(segs);
                submit(
                    &mut front,
                    BlkOp::Read {
                        sector: *sector,
                        segments: &s,
                    },
                    &mut issued,
                    &mut live,
                )
            }
            Op::Write { sector, segs } => {
                let s = segments(segs);
                submit(
                    &mut front,
                    BlkOp::Write {
                        sector: *sector,
                        segments: &s,
                    },
                    &mut issued,
                    &mut live,
                )
            }
            Op::Flush => submit(&mut front, BlkOp::Flush, &mut issued, &mut live),
            Op::Discard { sector, nr, secure } => submit(
                &mut front,
                BlkOp::Discard {
                    sector: *sector,
                    nr_sectors: *nr,
                    secure: *secure,
                },
                &mut issued,
                &mut live,
            ),
            Op::Rsp {
                ahead,
                id_pick,
                raw_id,
                operation,
                status,
            } => {
                let id = match id_pick {
                    Some(i) if !issued.is_empty() => issued[usize::from(*i) % issued.len()],
                    _ => *raw_id,
                };
                let prod = mem.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                let off = SringLayout::BLKIF.slot_offset(prod.wrapping_add(u32::from(*ahead)));
                let r = Response {
                    id,
                    operation: *operation,
                    status: *status,
                };
                mem.write(off, &r.emit()).unwrap();
                None
            }
            Op::Publish(by) => {
                let p = mem.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                mem.store_u32(
                    RSP_PROD,
                    p.wrapping_add(u32::from(*by % 40)),
                    Ordering::Release,
                )
                .unwrap();
                None
            }
            Op::RawRspProd(v) => {
                mem.store_u32(RSP_PROD, *v, Ordering::Release).unwrap();
                None
            }
            Op::Poke { offset, value } => {
                mem.store_u8(usize::from(*offset) % PAGE_SIZE, *value, Ordering::SeqCst)
                    .unwrap();
                None
            }
            Op::Answer { n, status } => {
                let prod = mem.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                for k in 0..u32::from(n % 33) {
                    let off = SringLayout::BLKIF.slot_offset(prod.wrapping_add(k));
                    let mut e = [0u8; Request::ENTRY_SIZE];
                    mem.read(off, &mut e).unwrap();
                    if let Ok(req) = Request::parse(&e) {
                        let r = Response {
                            id: req.id(),
                            operation: req.operation(),
                            status: i16::from(*status),
                        };
                        mem.write(off, &r.emit()).unwrap();
                    }
                }
                mem.store_u32(
                    RSP_PROD,
                    prod.wrapping_add(u32::from(n % 33)),
                    Ordering::Release,
                )
                .unwrap();
                None
            }
            Op::Poll => {
                let mut err = None;
                // Bounded: at most a ring's worth of completions per wake-up.
                for _ in 0..40 {
                    match front.poll() {
                        Ok(Some(c)) => assert!(
                            live.remove(&c.id),
                            "completion for id {:#x} not outstanding",
                            c.id
                        ),
                        Ok(None) => break,
                        Err(e) => {
                            assert!(e.is_fatal(), "{e}");
                            err = Some(e);
                            break;
                        }
                    }
                }
                err
            }
        };
        if let Some(e) = err {
            if let Some(s) = stopped {
                assert_eq!(s, e, "sticky error changed");
            }
            stopped = Some(e);
        }
        if let Some(e) = stopped {
            assert_eq!(front.error(), Some(e));
        }
        assert_eq!(front.outstanding(), live.len());
        assert!(live.len() <= 32);
        if issued.len() > 4096 {
            issued.drain(..2048);
        }
    }
    let _ = front.take_notify();
});
