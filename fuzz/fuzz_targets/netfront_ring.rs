//! Netfront against a hostile backend: between calls the input writes arbitrary TX/RX
//! responses, response producers and bytes into both ring pages. Must never panic or hang,
//! never release a page twice or one it did not hand out, and keep every packet in bounds.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{GrantRef, HeapMem, Ordering, SharedMem, PAGE_SIZE};
use xen_rings::netif::wire::{RxRequest, RxResponse, TxRequest, TxResponse, NETRXF_MORE_DATA};
use xen_rings::netif::{CopyFailed, FrontPages, NetError, Netfront, NetfrontLimits, RxEvent};
use xen_rings::shared_ring::{SringLayout, RSP_PROD};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Page {
    Tx,
    Rx,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Transmit(u16),
    PostRx,
    PollRx,
    PollTx,
    /// A TX response at `rsp_prod + ahead`.
    TxRsp {
        ahead: u8,
        id: u16,
        status: i16,
    },
    /// An RX response at `rsp_prod + ahead`.
    RxRsp {
        ahead: u8,
        id: u16,
        offset: u16,
        flags: u8,
        status: i16,
    },
    /// Raw 8 bytes (extra-info, garbage) in the RX ring.
    RxRaw {
        ahead: u8,
        bytes: [u8; 8],
    },
    /// Moves `rsp_prod` forward by `by`.
    Publish {
        page: Page,
        by: u16,
    },
    RawRspProd {
        page: Page,
        value: u32,
    },
    Poke {
        page: Page,
        offset: u16,
        value: u8,
    },
    FailReads(bool),
    /// Answers the next `n` real TX requests with their ids, as a backend would.
    TxAnswer {
        n: u8,
        status: i8,
    },
    /// Answers the next RX buffers with real ids: one packet of `sizes` slots.
    RxAnswer {
        sizes: Vec<u16>,
        offset: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: u32,
    pool: u16,
    rx_buffers: u16,
    ops: Vec<Op>,
}

/// A page pool that checks the frontend's bookkeeping.
struct Pool {
    free: Vec<u32>,
    out: BTreeSet<u32>,
    fail_reads: bool,
}

impl FrontPages for Pool {
    fn tx_page(&mut self, data: &[u8]) -> Option<GrantRef> {
        assert!(data.len() <= PAGE_SIZE);
        let g = self.free.pop()?;
        self.out.insert(g);
        Some(GrantRef(g))
    }
    fn rx_page(&mut self) -> Option<GrantRef> {
        let g = self.free.pop()?;
        self.out.insert(g);
        Some(GrantRef(g))
    }
    fn read_rx(&mut self, gref: GrantRef, offset: u16, dst: &mut [u8]) -> Result<(), CopyFailed> {
        assert!(self.out.contains(&gref.0), "read of a page not posted");
        assert!(
            usize::from(offset) + dst.len() <= PAGE_SIZE,
            "read outside a page"
        );
        if self.fail_reads {
            return Err(CopyFailed);
        }
        dst.fill(gref.0 as u8);
        Ok(())
    }
    fn release(&mut self, gref: GrantRef) {
        assert!(
            self.out.remove(&gref.0),
            "page {} released but not handed out",
            gref.0
        );
        self.free.push(gref.0);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = arbitrary::Unstructured::new(data).arbitrary::<Input>() else {
        return;
    };
    let (tx, rx) = (HeapMem::new(PAGE_SIZE), HeapMem::new(PAGE_SIZE));
    let limits = NetfrontLimits {
        rx_buffers: usize::from(input.rx_buffers % 300),
        ..NetfrontLimits::DEFAULT
    };
    let mut front = Netfront::new_at(tx.clone(), rx.clone(), limits, input.start).unwrap();
    let total = u32::from(input.pool % 600);
    let mut pool = Pool {
        free: (0..total).collect(),
        out: BTreeSet::new(),
        fail_reads: false,
    };
    let mut out = vec![0u8; limits.max_packet];
    let mut stopped: Option<NetError> = None;
    let mem = |p: Page| if let Page::Tx = p { &tx } else { &rx };
    let slot = |p: Page, ahead: u8| {
        let m = mem(p);
        let l = if let Page::Tx = p {
            SringLayout::NETIF_TX
        } else {
            SringLayout::NETIF_RX
        };
        let prod = m.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
        l.slot_offset(prod.wrapping_add(u32::from(ahead)))
    };
    let note = |stopped: &mut Option<NetError>, r: Result<(), NetError>| {
        if let Err(e) = r {
            if e.is_fatal() {
                *stopped = Some(e);
            }
        }
    };
    for op in input.ops.iter().take(3000) {
        match *op {
            Op::Transmit(n) => {
                let p = vec![1u8; usize::from(n)];
                note(&mut stopped, front.transmit(&mut pool, &p));
            }
            Op::PostRx => note(
                &mut stopped,
                front.post_rx(&mut pool).map(|n| assert!(n <= 256)),
            ),
            Op::PollRx => note(
                &mut stopped,
                front.poll_rx(&mut pool, &mut out).map(|e| {
                    if let RxEvent::Packet { len } = e {
                        assert!(len <= limits.max_packet);
                    }
                }),
            ),
            Op::PollTx => note(
                &mut stopped,
                front
                    .poll_tx_responses(&mut pool)
                    .map(|n| assert!(n <= 256)),
            ),
            Op::TxRsp { ahead, id, status } => tx
                .write(slot(Page::Tx, ahead), &TxResponse { id, status }.emit())
                .unwrap(),
            Op::RxRsp {
                ahead,
                id,
                offset,
                flags,
                status,
            } => {
                let r = RxResponse {
                    id,
                    offset,
                    flags: u16::from(flags),
                    status,
                };
                rx.write(slot(Page::Rx, ahead), &r.emit()).unwrap()
            }
            Op::RxRaw { ahead, bytes } => rx.write(slot(Page::Rx, ahead), &bytes).unwrap(),
            Op::Publish { page, by } => {
                let m = mem(page);
                let p = m.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                m.store_u32(
                    RSP_PROD,
                    p.wrapping_add(u32::from(by % 300)),
                    Ordering::Release,
                )
                .unwrap();
            }
            Op::RawRspProd { page, value } => mem(page)
                .store_u32(RSP_PROD, value, Ordering::Release)
                .unwrap(),
            Op::Poke {
                page,
                offset,
                value,
            } => mem(page)
                .store_u8(usize::from(offset) % PAGE_SIZE, value, Ordering::SeqCst)
                .unwrap(),
            Op::FailReads(f) => pool.fail_reads = f,
            Op::TxAnswer { n, status } => {
                let prod = tx.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                for k in 0..u32::from(n % 32) {
                    let off = SringLayout::NETIF_TX.slot_offset(prod.wrapping_add(k));
                    let mut e = [0u8; 12];
                    tx.read(off, &mut e).unwrap();
                    let id = TxRequest::parse(&e).id;
                    tx.write(
                        off,
                        &TxResponse {
                            id,
                            status: i16::from(status),
                        }
                        .emit(),
                    )
                    .unwrap();
                }
                tx.store_u32(
                    RSP_PROD,
                    prod.wrapping_add(u32::from(n % 32)),
                    Ordering::Release,
                )
                .unwrap();
            }
            Op::RxAnswer { ref sizes, offset } => {
                let sizes = &sizes[..sizes.len().min(24)];
                let prod = rx.load_u32(RSP_PROD, Ordering::Acquire).unwrap();
                for (k, &size) in sizes.iter().enumerate() {
                    let off = SringLayout::NETIF_RX.slot_offset(prod.wrapping_add(k as u32));
                    let mut e = [0u8; 8];
                    rx.read(off, &mut e).unwrap();
                    let id = RxRequest::parse(&e).id;
                    let flags = if k + 1 < sizes.len() {
                        NETRXF_MORE_DATA
                    } else {
                        0
                    };
                    let r = RxResponse {
                        id,
                        offset: offset % 64,
                        flags,
                        status: (size % 4200) as i16,
                    };
                    rx.write(off, &r.emit()).unwrap();
                }
                rx.store_u32(
                    RSP_PROD,
                    prod.wrapping_add(sizes.len() as u32),
                    Ordering::Release,
                )
                .unwrap();
            }
        }
        if let Some(e) = stopped {
            assert_eq!(front.error(), Some(e));
        }
        // Pages are conserved: every page is free or handed out, never both.
        assert_eq!(pool.free.len() + pool.out.len(), total as usize);
        assert!(front.tx_outstanding() <= 256);
    }
    let _ = front.take_notify();
});
