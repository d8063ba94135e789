//! Netfront: our end of a vif whose backend runs in another domain (the firewall's uplink).
//! Responses are checked against what we have outstanding before any page is read.

use alloc::vec;
use alloc::vec::Vec;

use platform_api::{GrantRef, SharedMem, PAGE_SIZE};

use super::wire::*;
use super::{slots_for, FrontPages, NetError, PeerError};
use crate::shared_ring::{self, FrontRing, SringLayout};

/// Bounds of one netfront.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetfrontLimits {
    /// Largest packet sent or received (at most 65535).
    pub max_packet: usize,
    /// Data slots an RX packet may use before it is dropped.
    pub max_rx_slots: usize,
    /// RX buffers kept posted (at most 256).
    pub rx_buffers: usize,
}

impl NetfrontLimits {
    /// 65535-byte packets, 18 RX slots, 256 posted buffers.
    pub const DEFAULT: Self = Self {
        max_packet: MAX_TX_SIZE,
        max_rx_slots: NR_SLOTS_MIN,
        rx_buffers: 256,
    };
}

impl Default for NetfrontLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a received packet was dropped (its buffers are recycled; the link stays up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// The backend answered a slot with a negative status.
    ErrorStatus(i16),
    /// A slot's `offset + status` runs past its page.
    SlotCrossesPage,
    /// More than `max_rx_slots` data slots.
    TooManySlots,
    /// Larger than `max_packet`.
    TooLarge,
    /// Reading our own page failed.
    CopyFailed,
}

/// What one [`Netfront::poll_rx`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RxEvent {
    /// A packet is in `out[..len]`.
    Packet {
        /// Bytes.
        len: usize,
    },
    /// A packet was dropped.
    Dropped(RxDrop),
    /// No complete packet is waiting; `rsp_event` is armed.
    Idle,
}

/// Counters for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetfrontStats {
    /// TX packets queued on the ring.
    pub tx_packets: u64,
    /// TX slots the backend answered with an error or drop.
    pub tx_errors: u64,
    /// RX packets received.
    pub rx_packets: u64,
    /// RX packets dropped.
    pub rx_dropped: u64,
}

const NR: usize = SringLayout::NETIF_TX.nr_ents as usize;

/// The frontend end of one netif (one vif, one queue).
#[derive(Debug)]
pub struct Netfront<M: SharedMem> {
    tx_mem: M,
    rx_mem: M,
    tx: FrontRing,
    rx: FrontRing,
    /// Page of each outstanding TX id.
    tx_pages: Vec<Option<GrantRef>>,
    tx_free: Vec<u16>,
    /// Page posted in each RX ring slot (the request id is the slot number).
    rx_pages: Vec<Option<GrantRef>>,
    limits: NetfrontLimits,
    notify: bool,
    error: Option<NetError>,
    stats: NetfrontStats,
}

impl<M: SharedMem> Netfront<M> {
    /// Initialises both ring pages (`SHARED_RING_INIT`) and attaches to them.
    pub fn new(tx_mem: M, rx_mem: M, limits: NetfrontLimits) -> Result<Self, NetError> {
        Self::new_at(tx_mem, rx_mem, limits, 0)
    }

    /// As [`Netfront::new`] with every index starting at `start` (wrap-around tests).
    pub fn new_at(
        tx_mem: M,
        rx_mem: M,
        limits: NetfrontLimits,
        start: u32,
    ) -> Result<Self, NetError> {
        let limits = NetfrontLimits {
            max_packet: limits.max_packet.min(MAX_TX_SIZE),
            rx_buffers: limits.rx_buffers.min(NR),
            ..limits
        };
        let tx = FrontRing::attach(&tx_mem, SringLayout::NETIF_TX, start)?;
        let rx = FrontRing::attach(&rx_mem, SringLayout::NETIF_RX, start)?;
        shared_ring::init_at(&tx_mem, start).map_err(crate::SharedRingError::Mem)?;
        shared_ring::init_at(&rx_mem, start).map_err(crate::SharedRingError::Mem)?;
        Ok(Self {
            tx_mem,
            rx_mem,
            tx,
            rx,
            tx_pages: vec![None; NR],
            tx_free: (0..NR as u16).rev().collect(),
            rx_pages: vec![None; NR],
            limits,
            notify: false,
            error: None,
            stats: NetfrontStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> NetfrontStats {
        self.stats
    }

    /// The error that stopped this frontend, if any.
    pub fn error(&self) -> Option<NetError> {
        self.error
    }

    /// Whether requests were published that the backend asked to hear of; clears it.
    #[must_use]
    pub fn take_notify(&mut self) -> bool {
        core::mem::take(&mut self.notify)
    }

    /// TX ids awaiting an answer.
    pub fn tx_outstanding(&self) -> usize {
        NR - self.tx_free.len()
    }

    fn check(&self) -> Result<(), NetError> {
        self.error.map_or(Ok(()), Err)
    }

    fn fail<E: Into<NetError>>(&mut self, e: E) -> NetError {
        let e = e.into();
        if e.is_fatal() {
            self.error = Some(e);
        }
        e
    }

    /// Queues one packet, one page per slot (first slot's size = the whole packet). `Full`
    /// when ring slots, ids or pages are short: nothing is queued then.
    pub fn transmit<P: FrontPages + ?Sized>(
        &mut self,
        pages: &mut P,
        packet: &[u8],
    ) -> Result<(), NetError> {
        self.check()?;
        if packet.is_empty() || packet.len() > self.limits.max_packet {
            return Err(NetError::BadPacketSize(packet.len()));
        }
        let n = slots_for(packet.len());
        if (self.tx.free_requests() as usize) < n || self.tx_free.len() < n {
            self.poll_tx_responses(pages)?;
        }
        if (self.tx.free_requests() as usize) < n || self.tx_free.len() < n {
            return Err(NetError::Full { what: "tx slot" });
        }
        let mut grefs = [GrantRef(0); MAX_TX_SIZE / PAGE_SIZE + 1];
        for (i, chunk) in packet.chunks(PAGE_SIZE).enumerate() {
            match pages.tx_page(chunk) {
                Some(g) => grefs[i] = g,
                None => {
                    grefs[..i].iter().for_each(|g| pages.release(*g));
                    return Err(NetError::Full { what: "tx page" });
                }
            }
        }
        for (i, chunk) in packet.chunks(PAGE_SIZE).enumerate() {
            let Some(id) = self.tx_free.pop() else {
                return Err(NetError::Full { what: "tx id" });
            };
            self.tx_pages[usize::from(id)] = Some(grefs[i]);
            let req = TxRequest {
                gref: grefs[i],
                offset: 0,
                flags: if i + 1 < n { NETTXF_MORE_DATA } else { 0 },
                id,
                size: if i == 0 {
                    packet.len() as u16
                } else {
                    chunk.len() as u16
                },
            };
            let r = self.tx.push_request(&self.tx_mem, &req.emit());
            r.map_err(|e| self.fail(e))?;
        }
        let r = self.tx.push_requests_and_check_notify(&self.tx_mem);
        self.notify |= r.map_err(|e| self.fail(e))?;
        self.stats.tx_packets += 1;
        Ok(())
    }

    /// Consumes TX responses: each must name an outstanding id (answered once); its page
    /// goes back to the pool. Returns how many ids completed and arms `rsp_event`.
    pub fn poll_tx_responses<P: FrontPages + ?Sized>(
        &mut self,
        pages: &mut P,
    ) -> Result<usize, NetError> {
        self.check()?;
        let mut done = 0;
        loop {
            let r = self.tx.poll_responses(&self.tx_mem);
            if r.map_err(|e| self.fail(e))? == 0 {
                let r = self.tx.final_check_for_responses(&self.tx_mem);
                if !r.map_err(|e| self.fail(e))? {
                    return Ok(done);
                }
            }
            let mut raw = [0u8; TxResponse::SIZE];
            while self.pop_tx(&mut raw)? {
                let rsp = TxResponse::parse(&raw);
                // NULL answers extra-info slots, which carry no id of ours.
                if rsp.status == NETIF_RSP_NULL {
                    continue;
                }
                let slot = self.tx_pages.get_mut(usize::from(rsp.id));
                let Some(gref) = slot.and_then(Option::take) else {
                    return Err(self.fail(PeerError::UnknownId(rsp.id)));
                };
                pages.release(gref);
                self.tx_free.push(rsp.id);
                if rsp.status != NETIF_RSP_OKAY {
                    self.stats.tx_errors += 1;
                }
                done += 1;
            }
        }
    }

    fn pop_tx(&mut self, raw: &mut [u8]) -> Result<bool, NetError> {
        let r = self.tx.pop_response(&self.tx_mem, raw);
        r.map_err(|e| self.fail(e))
    }

    /// Posts empty pages from the pool into free RX slots, up to `rx_buffers` in flight.
    pub fn post_rx<P: FrontPages + ?Sized>(&mut self, pages: &mut P) -> Result<usize, NetError> {
        self.check()?;
        let mut posted = 0;
        while (self.rx.outstanding() as usize + posted) < self.limits.rx_buffers
            && self.rx.free_requests() > 0
        {
            let id = (self.rx.req_prod_pvt() & (SringLayout::NETIF_RX.nr_ents - 1)) as u16;
            if self.rx_pages[usize::from(id)].is_some() {
                break;
            }
            let Some(gref) = pages.rx_page() else {
                break;
            };
            self.rx_pages[usize::from(id)] = Some(gref);
            let req = RxRequest { id, gref };
            let r = self.rx.push_request(&self.rx_mem, &req.emit());
            r.map_err(|e| self.fail(e))?;
            posted += 1;
        }
        if posted > 0 {
            let r = self.rx.push_requests_and_check_notify(&self.rx_mem);
            self.notify |= r.map_err(|e| self.fail(e))?;
        }
        Ok(posted)
    }

    /// Slots of the next complete packet among the validated responses, or `None` if it is
    /// not all published yet.
    fn rx_packet_slots(&mut self) -> Result<Option<u32>, NetError> {
        let (mut i, mut expect_extra, mut data_more) = (0u32, false, false);
        loop {
            if i >= self.rx.ready() {
                let r = self.rx.poll_responses(&self.rx_mem);
                r.map_err(|e| self.fail(e))?;
                if i >= self.rx.ready() {
                    if i > 0 && self.rx.ready() == self.rx.outstanding() {
                        return Err(self.fail(PeerError::RxChainNeverEnds));
                    }
                    return Ok(None);
                }
            }
            let mut raw = [0u8; RxResponse::SIZE];
            let r = self.rx.peek_response(&self.rx_mem, i, &mut raw);
            r.map_err(|e| self.fail(e))?;
            if expect_extra {
                expect_extra = ExtraInfo::parse(&raw).more();
            } else {
                let rsp = RxResponse::parse(&raw);
                expect_extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
                data_more = rsp.flags & NETRXF_MORE_DATA != 0;
            }
            i += 1;
            if !expect_extra && !data_more {
                return Ok(Some(i));
            }
        }
    }

    /// Takes the next complete received packet into `out` (which must hold `max_packet`
    /// bytes), then reposts buffers from `pages`.
    pub fn poll_rx<P: FrontPages + ?Sized>(
        &mut self,
        pages: &mut P,
        out: &mut [u8],
    ) -> Result<RxEvent, NetError> {
        self.check()?;
        if out.len() < self.limits.max_packet {
            return Err(NetError::BufferTooSmall {
                needed: self.limits.max_packet,
            });
        }
        let mut n = self.rx_packet_slots()?;
        if n.is_none() {
            let r = self.rx.final_check_for_responses(&self.rx_mem);
            if r.map_err(|e| self.fail(e))? {
                n = self.rx_packet_slots()?;
            }
        }
        let Some(n) = n else {
            self.post_rx(pages)?;
            return Ok(RxEvent::Idle);
        };
        let (mut len, mut data_slots, mut drop) = (0usize, 0usize, None);
        let mut expect_extra = false;
        for _ in 0..n {
            let slot = (self.rx.rsp_cons() & (SringLayout::NETIF_RX.nr_ents - 1)) as u16;
            let mut raw = [0u8; RxResponse::SIZE];
            let r = self.rx.pop_response(&self.rx_mem, &mut raw);
            r.map_err(|e| self.fail(e))?;
            let Some(gref) = self.rx_pages[usize::from(slot)].take() else {
                return Err(self.fail(PeerError::UnknownId(slot)));
            };
            if expect_extra {
                // We never ask for GSO, so extras carry nothing we use.
                expect_extra = ExtraInfo::parse(&raw).more();
                pages.release(gref);
                continue;
            }
            let rsp = RxResponse::parse(&raw);
            expect_extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
            if rsp.id != slot {
                return Err(self.fail(PeerError::RxIdMismatch {
                    expected: slot,
                    got: rsp.id,
                }));
            }
            data_slots += 1;
            if drop.is_none() {
                drop = self
                    .rx_slot(pages, gref, &rsp, data_slots, &mut len, out)
                    .err();
            }
            pages.release(gref);
        }
        self.post_rx(pages)?;
        Ok(match drop {
            Some(d) => {
                self.stats.rx_dropped += 1;
                RxEvent::Dropped(d)
            }
            None => {
                self.stats.rx_packets += 1;
                RxEvent::Packet { len }
            }
        })
    }

    /// Checks one data slot and appends its bytes to `out[..len]`.
    fn rx_slot<P: FrontPages + ?Sized>(
        &self,
        pages: &mut P,
        gref: GrantRef,
        rsp: &RxResponse,
        data_slots: usize,
        len: &mut usize,
        out: &mut [u8],
    ) -> Result<(), RxDrop> {
        if rsp.status < 0 {
            return Err(RxDrop::ErrorStatus(rsp.status));
        }
        let size = rsp.status as usize;
        if usize::from(rsp.offset) + size > PAGE_SIZE {
            return Err(RxDrop::SlotCrossesPage);
        }
        if data_slots > self.limits.max_rx_slots {
            return Err(RxDrop::TooManySlots);
        }
        let end = *len + size;
        if end > self.limits.max_packet {
            return Err(RxDrop::TooLarge);
        }
        let dst = out.get_mut(*len..end).ok_or(RxDrop::TooLarge)?;
        pages
            .read_rx(gref, rsp.offset, dst)
            .map_err(|_| RxDrop::CopyFailed)?;
        *len = end;
        Ok(())
    }
}
