//! Netback against a hostile frontend: between polls the input writes arbitrary TX/RX
//! requests, producer indices and bytes into both ring pages. Must never panic, hang, copy
//! outside a page or hold more than its bounded queue; a stopped backend stays stopped.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{GrantRef, HeapMem, Ordering, SharedMem, PAGE_SIZE};
use xen_rings::netif::wire::{RxRequest, TxRequest, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA};
use xen_rings::netif::{CopyFailed, GuestCopy, NetError, Netback, NetbackLimits, TxEvent};
use xen_rings::shared_ring::{self, SringLayout, REQ_PROD, RSP_PROD};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Page {
    Tx,
    Rx,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A TX request in the slot of ring index `req_prod + ahead`.
    TxReq {
        ahead: u8,
        gref: u8,
        offset: u16,
        flags: u8,
        id: u16,
        size: u16,
    },
    /// Raw 12 bytes (extra-info slots, garbage) at `req_prod + ahead`.
    TxRaw {
        ahead: u8,
        bytes: [u8; 12],
    },
    /// An RX request at `req_prod + ahead`.
    RxReq {
        ahead: u8,
        id: u16,
        gref: u8,
    },
    /// Moves `req_prod` forward by `by` (a legal-looking publish).
    Publish {
        page: Page,
        by: u16,
    },
    /// Writes any value into `req_prod`.
    RawReqProd {
        page: Page,
        value: u32,
    },
    /// Any byte of either page.
    Poke {
        page: Page,
        offset: u16,
        value: u8,
    },
    /// A plausible packet written and published at once: first slot, optional extra-info
    /// slot, then the rest (the last one still saying more data when `last_more`).
    TxChain {
        first_size: u16,
        rest: Vec<(u16, u16)>,
        extra: Option<[u8; 8]>,
        last_more: bool,
    },
    /// `n` RX buffers posted and published.
    RxPost(u8),
    PollTx,
    QueueRx(u16),
    PollRx,
    CopyFails(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: u32,
    max_packet: u16,
    rx_queue: u8,
    ops: Vec<Op>,
}

struct Copier {
    fail: bool,
    copies: usize,
}

impl Copier {
    fn check(&mut self, gref: GrantRef, offset: u16, len: usize) -> Result<(), CopyFailed> {
        assert!(
            usize::from(offset) + len <= PAGE_SIZE,
            "copy outside a page"
        );
        self.copies += 1;
        if self.fail || gref.0 > 8 {
            return Err(CopyFailed);
        }
        Ok(())
    }
}

impl GuestCopy for Copier {
    fn copy_from_guest(
        &mut self,
        gref: GrantRef,
        offset: u16,
        dst: &mut [u8],
    ) -> Result<(), CopyFailed> {
        self.check(gref, offset, dst.len())?;
        dst.fill(gref.0 as u8);
        Ok(())
    }
    fn copy_to_guest(&mut self, gref: GrantRef, offset: u16, src: &[u8]) -> Result<(), CopyFailed> {
        self.check(gref, offset, src.len())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = arbitrary::Unstructured::new(data).arbitrary::<Input>() else {
        return;
    };
    let (tx, rx) = (HeapMem::new(PAGE_SIZE), HeapMem::new(PAGE_SIZE));
    shared_ring::init_at(&tx, input.start).unwrap();
    shared_ring::init_at(&rx, input.start).unwrap();
    let limits = NetbackLimits {
        max_packet: usize::from(input.max_packet).max(64),
        rx_queue: usize::from(input.rx_queue % 16) + 1,
        ..NetbackLimits::DEFAULT
    };
    let mut back = Netback::new(tx.clone(), rx.clone(), limits).unwrap();
    let limits = back.limits();
    let mut copier = Copier {
        fail: false,
        copies: 0,
    };
    let mut buf = vec![0u8; limits.max_packet];
    let mut stopped: Option<NetError> = None;
    let mem = |p: Page| if let Page::Tx = p { &tx } else { &rx };
    let slot = |p: Page, ahead: u8| {
        let m = mem(p);
        let l = if let Page::Tx = p {
            SringLayout::NETIF_TX
        } else {
            SringLayout::NETIF_RX
        };
        let prod = m.load_u32(REQ_PROD, Ordering::Acquire).unwrap();
        l.slot_offset(prod.wrapping_add(u32::from(ahead)))
    };
    for op in input.ops.iter().take(3000) {
        match *op {
            Op::TxReq {
                ahead,
                gref,
                offset,
                flags,
                id,
                size,
            } => {
                let r = TxRequest {
                    gref: GrantRef(u32::from(gref)),
                    offset,
                    flags: u16::from(flags),
                    id,
                    size,
                };
                tx.write(slot(Page::Tx, ahead), &r.emit()).unwrap();
            }
            Op::TxRaw { ahead, bytes } => tx.write(slot(Page::Tx, ahead), &bytes).unwrap(),
            Op::RxReq { ahead, id, gref } => {
                let r = RxRequest {
                    id,
                    gref: GrantRef(u32::from(gref)),
                };
                rx.write(slot(Page::Rx, ahead), &r.emit()).unwrap();
            }
            Op::Publish { page, by } => {
                let m = mem(page);
                let p = m.load_u32(REQ_PROD, Ordering::Acquire).unwrap();
                m.store_u32(
                    REQ_PROD,
                    p.wrapping_add(u32::from(by % 300)),
                    Ordering::Release,
                )
                .unwrap();
            }
            Op::RawReqProd { page, value } => mem(page)
                .store_u32(REQ_PROD, value, Ordering::Release)
                .unwrap(),
            Op::Poke {
                page,
                offset,
                value,
            } => mem(page)
                .store_u8(usize::from(offset) % PAGE_SIZE, value, Ordering::SeqCst)
                .unwrap(),
            Op::TxChain {
                first_size,
                ref rest,
                extra,
                last_more,
            } => {
                let rest = &rest[..rest.len().min(24)];
                let prod = tx.load_u32(REQ_PROD, Ordering::Acquire).unwrap();
                let mut at = prod;
                let mut put = |b: &[u8]| {
                    tx.write(SringLayout::NETIF_TX.slot_offset(at), b).unwrap();
                    at = at.wrapping_add(1);
                };
                let more = if rest.is_empty() { 0 } else { NETTXF_MORE_DATA };
                let ext = if extra.is_some() {
                    NETTXF_EXTRA_INFO
                } else {
                    0
                };
                put(&TxRequest {
                    gref: GrantRef(1),
                    offset: 0,
                    flags: more | ext,
                    id: 1,
                    size: first_size,
                }
                .emit());
                if let Some(e) = extra {
                    put(&e);
                }
                for (i, &(offset, size)) in rest.iter().enumerate() {
                    let m = if i + 1 < rest.len() || last_more {
                        NETTXF_MORE_DATA
                    } else {
                        0
                    };
                    put(&TxRequest {
                        gref: GrantRef(2),
                        offset,
                        flags: m,
                        id: 2 + i as u16,
                        size,
                    }
                    .emit());
                }
                tx.store_u32(REQ_PROD, at, Ordering::Release).unwrap();
            }
            Op::RxPost(n) => {
                let prod = rx.load_u32(REQ_PROD, Ordering::Acquire).unwrap();
                for k in 0..u32::from(n) {
                    let r = RxRequest {
                        id: k as u16,
                        gref: GrantRef(k % 10),
                    };
                    rx.write(
                        SringLayout::NETIF_RX.slot_offset(prod.wrapping_add(k)),
                        &r.emit(),
                    )
                    .unwrap();
                }
                rx.store_u32(REQ_PROD, prod.wrapping_add(u32::from(n)), Ordering::Release)
                    .unwrap();
            }
            Op::PollTx => {
                let before = copier.copies;
                match back.poll_tx(&mut copier, &mut buf) {
                    Ok(TxEvent::Packet { len, .. }) => assert!(len <= limits.max_packet),
                    Ok(TxEvent::Idle) => assert_eq!(copier.copies, before),
                    Ok(TxEvent::Dropped(_)) => {}
                    Err(e) => {
                        assert!(e.is_fatal(), "{e}");
                        if let Some(s) = stopped {
                            assert_eq!(s, e, "sticky error changed");
                        }
                        stopped = Some(e);
                    }
                }
                // Bounded work: one packet is at most 1 + 4 extras + fatal_slots slots.
                assert!(copier.copies - before <= 1 + limits.fatal_slots);
            }
            Op::QueueRx(n) => {
                let p = vec![0xabu8; usize::from(n)];
                let _ = back.queue_rx(&p);
                assert!(back.rx_queued() <= limits.rx_queue);
            }
            Op::PollRx => match back.poll_rx(&mut copier) {
                Ok(n) => assert!(n <= limits.rx_budget),
                Err(e) => {
                    assert!(e.is_fatal(), "{e}");
                    stopped = Some(e);
                }
            },
            Op::CopyFails(f) => copier.fail = f,
        }
        if let Some(e) = stopped {
            assert_eq!(back.error(), Some(e));
        }
        // Responses never overtake what the frontend could have published.
        let _ = tx.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
    }
    let _ = back.take_notify();
});
