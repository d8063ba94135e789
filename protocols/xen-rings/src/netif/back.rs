//! Netback: serves one client's netfront over its TX and RX rings (the firewall's downstream).
//! Every slot is copied once, checked against Linux netback's rules, then acted on.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use platform_api::Ordering::Acquire;
use platform_api::{SharedMem, PAGE_SIZE};

use super::wire::*;
use super::{slots_for, GuestCopy, NetError, PeerError, ETH_HLEN};
use crate::shared_ring::{BackRing, SharedRingError, SringLayout, RSP_PROD};

/// Bounds of one netback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetbackLimits {
    /// Largest TX packet accepted (bigger ones are answered `NETIF_RSP_ERROR`); at most 65535.
    pub max_packet: usize,
    /// Slots after the first from which a packet is dropped (`XEN_NETBK_LEGACY_SLOTS_MAX`).
    pub drop_slots: usize,
    /// Slots after the first from which the frontend is disconnected (`fatal_skb_slots`).
    pub fatal_slots: usize,
    /// Packets waiting for RX buffers; a new packet is dropped when the queue is full.
    pub rx_queue: usize,
    /// Packets delivered per [`Netback::poll_rx`] call.
    pub rx_budget: usize,
}

impl NetbackLimits {
    /// Linux netback's defaults, 64 queued RX packets.
    pub const DEFAULT: Self = Self {
        max_packet: MAX_TX_SIZE,
        drop_slots: NR_SLOTS_MIN,
        fatal_slots: 20,
        rx_queue: 64,
        rx_budget: 64,
    };
}

impl Default for NetbackLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a TX packet was refused with `NETIF_RSP_ERROR` (the frontend stays connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDrop {
    /// More than `drop_slots` slots after the first.
    TooManySlots,
    /// A later slot is larger than what the first slot's size leaves.
    SlotLargerThanRemaining,
    /// The first slot carries fewer than 14 bytes.
    FirstSlotTooSmall,
    /// The packet exceeds `max_packet`.
    TooLarge,
    /// The caller's grant copy failed.
    CopyFailed,
}

/// What one [`Netback::poll_tx`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum TxEvent {
    /// A packet from the frontend is in `buf[..len]`.
    Packet {
        /// Bytes.
        len: usize,
        /// The frontend left the checksum blank (`NETTXF_csum_blank`).
        csum_blank: bool,
        /// GSO requested: MSS and type.
        gso: Option<(u16, u8)>,
    },
    /// A packet was refused and answered with `NETIF_RSP_ERROR`.
    Dropped(TxDrop),
    /// No request is waiting; `req_event` is armed.
    Idle,
}

/// Counters for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetbackStats {
    /// TX packets handed to the caller.
    pub tx_packets: u64,
    /// TX packets answered with an error.
    pub tx_dropped: u64,
    /// RX packets delivered.
    pub rx_packets: u64,
    /// RX packets dropped because the queue was full.
    pub rx_queue_full: u64,
    /// RX packets whose copy failed (answered with an error).
    pub rx_copy_failed: u64,
}

/// Extra-info slots one TX packet may carry: one per type.
const MAX_EXTRAS: usize = (EXTRA_TYPE_MAX - 1) as usize;
/// Hard cap on `fatal_slots`: the slots after the first that one call holds on its stack.
const MAX_REST: usize = 32;

/// The backend end of one netif (one client vif, one queue).
#[derive(Debug)]
pub struct Netback<M: SharedMem> {
    tx_mem: M,
    rx_mem: M,
    tx: BackRing,
    rx: BackRing,
    limits: NetbackLimits,
    rx_queue: VecDeque<Vec<u8>>,
    notify: bool,
    error: Option<NetError>,
    stats: NetbackStats,
}

impl<M: SharedMem> Netback<M> {
    /// Attaches to the frontend's mapped TX and RX ring pages at their current `rsp_prod`
    /// (as Linux does), so a reconnecting frontend keeps its indices.
    pub fn new(tx_mem: M, rx_mem: M, limits: NetbackLimits) -> Result<Self, NetError> {
        let limits = NetbackLimits {
            max_packet: limits.max_packet.min(MAX_TX_SIZE),
            fatal_slots: limits.fatal_slots.min(MAX_REST),
            drop_slots: limits.drop_slots.min(limits.fatal_slots).min(MAX_REST),
            ..limits
        };
        let start = |m: &M| m.load_u32(RSP_PROD, Acquire).map_err(SharedRingError::Mem);
        let tx = BackRing::attach(&tx_mem, SringLayout::NETIF_TX, start(&tx_mem)?)?;
        let rx = BackRing::attach(&rx_mem, SringLayout::NETIF_RX, start(&rx_mem)?)?;
        Ok(Self {
            tx_mem,
            rx_mem,
            tx,
            rx,
            limits,
            rx_queue: VecDeque::new(),
            notify: false,
            error: None,
            stats: NetbackStats::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> NetbackLimits {
        self.limits
    }

    /// Counters.
    pub fn stats(&self) -> NetbackStats {
        self.stats
    }

    /// The error that stopped this backend, if any (then disconnect the frontend).
    pub fn error(&self) -> Option<NetError> {
        self.error
    }

    /// Whether responses were published that the frontend asked to be notified of; clears it.
    #[must_use]
    pub fn take_notify(&mut self) -> bool {
        core::mem::take(&mut self.notify)
    }

    /// Packets waiting for RX buffers.
    pub fn rx_queued(&self) -> usize {
        self.rx_queue.len()
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

    /// Ensures `n` requests are validated, polling `req_prod` once more if needed.
    fn tx_have(&mut self, n: usize) -> Result<bool, NetError> {
        if (self.tx.ready() as usize) < n {
            let r = self.tx.poll_requests(&self.tx_mem);
            r.map_err(|e| self.fail(e))?;
        }
        Ok(self.tx.ready() as usize >= n)
    }

    fn tx_peek(&mut self, ahead: usize) -> Result<[u8; TxRequest::SIZE], NetError> {
        let mut raw = [0u8; TxRequest::SIZE];
        let r = self.tx.peek_request(&self.tx_mem, ahead as u32, &mut raw);
        match r.map_err(|e| self.fail(e))? {
            true => Ok(raw),
            false => Err(self.fail(PeerError::TruncatedPacket)),
        }
    }

    /// Takes at most one packet off the TX ring: copies it into `buf` through `copier`, or
    /// answers it with `NETIF_RSP_ERROR`. `buf` must hold `limits().max_packet` bytes.
    pub fn poll_tx<C: GuestCopy + ?Sized>(
        &mut self,
        copier: &mut C,
        buf: &mut [u8],
    ) -> Result<TxEvent, NetError> {
        self.check()?;
        if buf.len() < self.limits.max_packet {
            return Err(NetError::BufferTooSmall {
                needed: self.limits.max_packet,
            });
        }
        if !self.tx_have(1)? {
            let r = self.tx.final_check_for_requests(&self.tx_mem);
            if !r.map_err(|e| self.fail(e))? {
                return Ok(TxEvent::Idle);
            }
        }
        let first = TxRequest::parse(&self.tx_peek(0)?);
        let mut ahead = 1usize;
        let mut gso = None;
        let mut extra_ids = [0u16; MAX_EXTRAS];
        let mut n_extras = 0;
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            loop {
                if n_extras == MAX_EXTRAS {
                    return Err(self.fail(PeerError::TooManyExtras));
                }
                if !self.tx_have(ahead + 1)? {
                    return Err(self.fail(PeerError::MissingExtraInfo));
                }
                let raw = self.tx_peek(ahead)?;
                let mut e8 = [0u8; ExtraInfo::SIZE];
                e8.copy_from_slice(&raw[..ExtraInfo::SIZE]);
                let extra = ExtraInfo::parse(&e8);
                // The slot's id field lies past the 8 extra bytes; echo it in the NULL answer.
                extra_ids[n_extras] = TxRequest::parse(&raw).id;
                n_extras += 1;
                ahead += 1;
                match extra.body {
                    Extra::Unknown { kind, .. } => {
                        return Err(self.fail(PeerError::BadExtraType(kind)))
                    }
                    Extra::Gso { size, gso_type, .. } => {
                        if size == 0 || !(gso_type == GSO_TYPE_TCPV4 || gso_type == GSO_TYPE_TCPV6)
                        {
                            return Err(self.fail(PeerError::BadGso { size, gso_type }));
                        }
                        gso = Some((size, gso_type));
                    }
                    // Multicast filters and hash values are advice we do not act on.
                    Extra::McastAdd(_) | Extra::McastDel(_) | Extra::Hash { .. } => {}
                }
                if !extra.more() {
                    break;
                }
            }
        }
        // The rest of the packet (xenvif_count_requests): first.size is the whole packet.
        let mut rest = [first; MAX_REST];
        let mut n_rest = 0usize;
        let mut remaining = usize::from(first.size);
        let mut drop = None;
        let mut more = first.flags & NETTXF_MORE_DATA != 0;
        while more {
            if n_rest >= self.limits.fatal_slots {
                return Err(self.fail(PeerError::TooManySlots {
                    slots: self.limits.fatal_slots,
                }));
            }
            if drop.is_none() && n_rest >= self.limits.drop_slots {
                drop = Some(TxDrop::TooManySlots);
            }
            if !self.tx_have(ahead + n_rest + 1)? {
                return Err(self.fail(PeerError::TruncatedPacket));
            }
            let txp = TxRequest::parse(&self.tx_peek(ahead + n_rest)?);
            if drop.is_none() && usize::from(txp.size) > remaining {
                drop = Some(TxDrop::SlotLargerThanRemaining);
            }
            remaining = remaining.saturating_sub(usize::from(txp.size));
            if usize::from(txp.offset) + usize::from(txp.size) > PAGE_SIZE {
                return Err(self.fail(PeerError::SlotCrossesPage {
                    offset: txp.offset,
                    size: txp.size,
                }));
            }
            more = txp.flags & NETTXF_MORE_DATA != 0;
            if let Some(slot) = rest.get_mut(n_rest) {
                *slot = txp;
            }
            n_rest += 1;
        }
        let first_len = remaining;
        if drop.is_none() && first_len < ETH_HLEN {
            drop = Some(TxDrop::FirstSlotTooSmall);
        }
        if drop.is_none() && usize::from(first.offset) + first_len > PAGE_SIZE {
            return Err(self.fail(PeerError::SlotCrossesPage {
                offset: first.offset,
                size: first_len as u16,
            }));
        }
        let total = usize::from(first.size);
        if drop.is_none() && total > self.limits.max_packet {
            drop = Some(TxDrop::TooLarge);
        }
        if drop.is_none() {
            drop = copy_packet(copier, buf, &first, first_len, &rest[..n_rest]).err();
        }
        // Answer every slot: the first, NULL for each extra, then each later slot.
        let status = if drop.is_some() {
            NETIF_RSP_ERROR
        } else {
            NETIF_RSP_OKAY
        };
        let consumed = (ahead + n_rest) as u32;
        self.tx.consume(consumed).map_err(|e| self.fail(e))?;
        let mut rsp = [TxResponse {
            id: first.id,
            status,
        }]
        .into_iter()
        .chain(extra_ids[..n_extras].iter().map(|&id| TxResponse {
            id,
            status: NETIF_RSP_NULL,
        }))
        .chain(
            rest[..n_rest]
                .iter()
                .map(|r| TxResponse { id: r.id, status }),
        );
        for r in &mut rsp {
            let w = self.tx.push_response(&self.tx_mem, &r.emit());
            w.map_err(|e| self.fail(e))?;
        }
        let n = self.tx.push_responses_and_check_notify(&self.tx_mem);
        self.notify |= n.map_err(|e| self.fail(e))?;
        Ok(match drop {
            Some(d) => {
                self.stats.tx_dropped += 1;
                TxEvent::Dropped(d)
            }
            None => {
                self.stats.tx_packets += 1;
                TxEvent::Packet {
                    len: total,
                    csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
                    gso,
                }
            }
        })
    }

    /// Queues a packet for the frontend. When the queue is full the packet is dropped
    /// (counted) and `Full` returned; an empty or oversized packet is refused.
    pub fn queue_rx(&mut self, packet: &[u8]) -> Result<(), NetError> {
        self.check()?;
        if packet.is_empty() || packet.len() > self.limits.max_packet {
            return Err(NetError::BadPacketSize(packet.len()));
        }
        if self.rx_queue.len() >= self.limits.rx_queue {
            self.stats.rx_queue_full += 1;
            return Err(NetError::Full { what: "rx queue" });
        }
        self.rx_queue.push_back(packet.to_vec());
        Ok(())
    }

    /// Delivers queued packets into the buffers the frontend posted (one page per slot, at
    /// offset 0), up to `rx_budget`; returns how many were delivered. A packet waits when
    /// too few buffers are posted, and `req_event` is set to wake us when enough are.
    pub fn poll_rx<C: GuestCopy + ?Sized>(&mut self, copier: &mut C) -> Result<usize, NetError> {
        self.check()?;
        let mut delivered = 0;
        while delivered < self.limits.rx_budget {
            let Some(len) = self.rx_queue.front().map(Vec::len) else {
                break;
            };
            let need = slots_for(len) as u32;
            if self.rx.ready() < need {
                let r = self.rx.poll_requests(&self.rx_mem);
                r.map_err(|e| self.fail(e))?;
            }
            if self.rx.ready() < need {
                let r = self.rx.request_event_after(&self.rx_mem, need);
                if r.map_err(|e| self.fail(e))? < need {
                    break;
                }
            }
            let Some(packet) = self.rx_queue.pop_front() else {
                break;
            };
            self.deliver(copier, packet.as_slice())?;
            delivered += 1;
        }
        if delivered > 0 {
            let n = self.rx.push_responses_and_check_notify(&self.rx_mem);
            self.notify |= n.map_err(|e| self.fail(e))?;
        }
        Ok(delivered)
    }

    fn deliver<C: GuestCopy + ?Sized>(
        &mut self,
        copier: &mut C,
        packet: &[u8],
    ) -> Result<(), NetError> {
        let mut reqs = [RxRequest {
            id: 0,
            gref: platform_api::GrantRef(0),
        }; MAX_TX_SIZE / PAGE_SIZE + 1];
        let chunks = packet.chunks(PAGE_SIZE);
        let n = chunks.len();
        let mut ok = true;
        for (req, chunk) in reqs.iter_mut().zip(chunks) {
            let mut raw = [0u8; RxRequest::SIZE];
            let r = self.rx.pop_request(&self.rx_mem, &mut raw);
            r.map_err(|e| self.fail(e))?;
            *req = RxRequest::parse(&raw);
            // The id and gref are the frontend's business: echoed and handed over unchecked.
            ok &= copier.copy_to_guest(req.gref, 0, chunk).is_ok();
        }
        for (i, (req, chunk)) in reqs.iter().zip(packet.chunks(PAGE_SIZE)).enumerate() {
            let rsp = RxResponse {
                id: req.id,
                offset: 0,
                flags: if i + 1 < n { NETRXF_MORE_DATA } else { 0 },
                status: if ok {
                    chunk.len() as i16
                } else {
                    NETIF_RSP_ERROR
                },
            };
            let w = self.rx.push_response(&self.rx_mem, &rsp.emit());
            w.map_err(|e| self.fail(e))?;
        }
        if ok {
            self.stats.rx_packets += 1;
        } else {
            self.stats.rx_copy_failed += 1;
        }
        Ok(())
    }
}

/// Copies the first slot's own bytes and each later slot, in ring order, into `buf`.
fn copy_packet<C: GuestCopy + ?Sized>(
    copier: &mut C,
    buf: &mut [u8],
    first: &TxRequest,
    first_len: usize,
    rest: &[TxRequest],
) -> Result<(), TxDrop> {
    let mut at = 0usize;
    let mut one = |gref, offset, len: usize| {
        let dst = buf.get_mut(at..at + len).ok_or(TxDrop::TooLarge)?;
        copier
            .copy_from_guest(gref, offset, dst)
            .map_err(|_| TxDrop::CopyFailed)?;
        at += len;
        Ok(())
    };
    one(first.gref, first.offset, first_len)?;
    for r in rest {
        one(r.gref, r.offset, usize::from(r.size))?;
    }
    Ok(())
}
