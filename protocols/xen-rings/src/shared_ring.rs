//! ring.h request/response rings over one shared page: the header, the front and back ends.
//! The peer's producer index is loaded once per poll and checked before any slot is read.

use core::fmt;

use platform_api::Ordering::{Acquire, Relaxed, Release, SeqCst};
use platform_api::{check_range, OutOfBounds, SharedMem, PAGE_SIZE};

/// Offset of `req_prod` in the shared-ring header.
pub const REQ_PROD: usize = 0;
/// Offset of `req_event`.
pub const REQ_EVENT: usize = 4;
/// Offset of `rsp_prod`.
pub const RSP_PROD: usize = 8;
/// Offset of `rsp_event`.
pub const RSP_EVENT: usize = 12;
/// Offset of the 4 private bytes (`pvt.pvt_pad`; netif's `smartpoll_active`).
pub const PVT: usize = 16;
/// Offset of `ring[0]`: the header is padded to 64 bytes.
pub const RING_OFFSET: usize = 64;

/// Geometry of one shared ring: entry size (the union of request and response) and
/// `nr_ents`, the largest power of two that fits after the header (`__RING_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SringLayout {
    /// Bytes per ring entry.
    pub entry_size: usize,
    /// Number of entries, a power of two.
    pub nr_ents: u32,
}

impl SringLayout {
    /// netif TX ring on one page: 12-byte entries, 256 of them.
    pub const NETIF_TX: Self = Self::for_region(PAGE_SIZE, 12);
    /// netif RX ring on one page: 8-byte entries, 256 of them.
    pub const NETIF_RX: Self = Self::for_region(PAGE_SIZE, 8);
    /// blkif ring on one page: 112-byte entries, 32 of them.
    pub const BLKIF: Self = Self::for_region(PAGE_SIZE, 112);

    /// `__RING_SIZE` for a region of `region` bytes: panics (at compile time when used in a
    /// const) if not even one entry fits.
    pub const fn for_region(region: usize, entry_size: usize) -> Self {
        assert!(entry_size > 0 && region > RING_OFFSET);
        let fit = (region - RING_OFFSET) / entry_size;
        assert!(fit > 0 && fit <= 1 << 31);
        let nr = 1usize << (usize::BITS - 1 - fit.leading_zeros());
        Self {
            entry_size,
            nr_ents: nr as u32,
        }
    }

    /// Bytes the header and entries occupy.
    pub const fn bytes(&self) -> usize {
        RING_OFFSET + self.entry_size * self.nr_ents as usize
    }

    /// Offset of the entry that index `idx` names (`idx & (nr_ents - 1)`).
    pub const fn slot_offset(&self, idx: u32) -> usize {
        RING_OFFSET + (idx & (self.nr_ents - 1)) as usize * self.entry_size
    }
}

/// Why a shared-ring operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRingError {
    /// The frontend's `req_prod` claims more unanswered requests than the ring holds
    /// (`req_prod - rsp_prod_pvt > nr_ents`): stop serving this ring.
    TooManyRequests {
        /// `req_prod - rsp_prod_pvt` as read.
        unanswered: u32,
        /// Ring size.
        nr_ents: u32,
    },
    /// The backend's `rsp_prod` claims responses to requests we never published.
    TooManyResponses {
        /// `rsp_prod - rsp_cons` as read.
        pending: u32,
        /// Requests published and not yet answered.
        outstanding: u32,
    },
    /// Our own bound: no free request slot (front) or no consumed request to answer (back).
    Full {
        /// What ran out.
        what: &'static str,
    },
    /// An entry larger than the ring's entry size was given.
    EntryTooLarge {
        /// Bytes given.
        len: usize,
        /// Entry size.
        entry_size: usize,
    },
    /// The shared memory is smaller than the ring or an access failed.
    Mem(OutOfBounds),
}

impl SharedRingError {
    /// True when the peer broke the ring protocol (disconnect it); false for our own bounds.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::TooManyRequests { .. } | Self::TooManyResponses { .. }
        )
    }

    fn is_sticky(&self) -> bool {
        self.is_peer_fault() || matches!(self, Self::Mem(_))
    }
}

impl fmt::Display for SharedRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRequests {
                unanswered,
                nr_ents,
            } => write!(
                f,
                "frontend's req_prod claims {unanswered} unanswered requests in a {nr_ents}-entry ring"
            ),
            Self::TooManyResponses {
                pending,
                outstanding,
            } => write!(
                f,
                "backend's rsp_prod claims {pending} responses for {outstanding} outstanding requests"
            ),
            Self::Full { what } => write!(f, "no free {what}"),
            Self::EntryTooLarge { len, entry_size } => {
                write!(f, "{len}-byte entry does not fit a {entry_size}-byte slot")
            }
            Self::Mem(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for SharedRingError {}

impl From<OutOfBounds> for SharedRingError {
    fn from(e: OutOfBounds) -> Self {
        Self::Mem(e)
    }
}

/// `SHARED_RING_INIT`: zero producers, events at 1, private and padding bytes zeroed.
pub fn init<M: SharedMem + ?Sized>(mem: &M) -> Result<(), OutOfBounds> {
    init_at(mem, 0)
}

/// `SHARED_RING_INIT` with both producers at `start` (tests and reconnection start near
/// `u32::MAX` to exercise wrap-around); events at `start + 1`.
pub fn init_at<M: SharedMem + ?Sized>(mem: &M, start: u32) -> Result<(), OutOfBounds> {
    mem.write(PVT, &[0u8; RING_OFFSET - PVT])?;
    mem.store_u32(REQ_EVENT, start.wrapping_add(1), Relaxed)?;
    mem.store_u32(RSP_EVENT, start.wrapping_add(1), Relaxed)?;
    mem.store_u32(REQ_PROD, start, Relaxed)?;
    mem.store_u32(RSP_PROD, start, Release)?;
    Ok(())
}

/// ring.h's notification rule: notify when the event index lies in `(old, new]`.
pub fn need_notify(new: u32, old: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Publishes a producer index after the entries, then reads the peer's event index: the common
/// half of `RING_PUSH_{REQUESTS,RESPONSES}_AND_CHECK_NOTIFY`.
fn publish_and_read_event<M: SharedMem + ?Sized>(
    mem: &M,
    prod_off: usize,
    event_off: usize,
    new: u32,
) -> Result<u32, OutOfBounds> {
    mem.store_u32(prod_off, new, Release)?;
    mem.fence(SeqCst);
    mem.load_u32(event_off, Acquire)
}

fn write_slot<M: SharedMem + ?Sized>(
    mem: &M,
    layout: SringLayout,
    idx: u32,
    entry: &[u8],
) -> Result<(), SharedRingError> {
    if entry.len() > layout.entry_size {
        return Err(SharedRingError::EntryTooLarge {
            len: entry.len(),
            entry_size: layout.entry_size,
        });
    }
    mem.write(layout.slot_offset(idx), entry)?;
    Ok(())
}

fn read_slot<M: SharedMem + ?Sized>(
    mem: &M,
    layout: SringLayout,
    idx: u32,
    out: &mut [u8],
) -> Result<(), SharedRingError> {
    if out.len() > layout.entry_size {
        return Err(SharedRingError::EntryTooLarge {
            len: out.len(),
            entry_size: layout.entry_size,
        });
    }
    // One copy of the whole entry: the caller validates this copy and never re-reads.
    mem.read(layout.slot_offset(idx), out)?;
    Ok(())
}

/// The frontend's end (`struct *_front_ring`): produces requests, consumes responses.
#[derive(Debug, Clone)]
pub struct FrontRing {
    layout: SringLayout,
    req_prod_pvt: u32,
    /// Our last published `req_prod`; the shared copy is never read back.
    req_prod: u32,
    rsp_cons: u32,
    /// End of the responses validated by the last [`FrontRing::poll_responses`].
    rsp_seen: u32,
    broken: Option<SharedRingError>,
}

impl FrontRing {
    /// `FRONT_RING_ATTACH` at index `start` (0 after [`init`]); checks the memory size.
    pub fn attach<M: SharedMem + ?Sized>(
        mem: &M,
        layout: SringLayout,
        start: u32,
    ) -> Result<Self, SharedRingError> {
        check_range(0, layout.bytes(), mem.size())?;
        Ok(Self {
            layout,
            req_prod_pvt: start,
            req_prod: start,
            rsp_cons: start,
            rsp_seen: start,
            broken: None,
        })
    }

    /// The geometry.
    pub fn layout(&self) -> SringLayout {
        self.layout
    }

    /// The sticky error that stopped this ring, if any.
    pub fn broken(&self) -> Option<SharedRingError> {
        self.broken
    }

    /// Private request producer (requests pushed, published or not).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Response consumer.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// `RING_FREE_REQUESTS`.
    pub fn free_requests(&self) -> u32 {
        self.layout.nr_ents - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    fn check(&self) -> Result<(), SharedRingError> {
        self.broken.map_or(Ok(()), Err)
    }

    fn fail(&mut self, e: SharedRingError) -> SharedRingError {
        if e.is_sticky() {
            self.broken = Some(e);
        }
        e
    }

    /// Writes a request into the next free slot (not yet visible to the backend).
    pub fn push_request<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        entry: &[u8],
    ) -> Result<(), SharedRingError> {
        self.check()?;
        if self.free_requests() == 0 {
            return Err(SharedRingError::Full {
                what: "request slot",
            });
        }
        write_slot(mem, self.layout, self.req_prod_pvt, entry).map_err(|e| self.fail(e))?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes `req_prod` after the entries and says
    /// whether the backend asked to be notified (its `req_event` lies in the new range).
    pub fn push_requests_and_check_notify<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        let (old, new) = (self.req_prod, self.req_prod_pvt);
        let event = publish_and_read_event(mem, REQ_PROD, REQ_EVENT, new)
            .map_err(|e| self.fail(e.into()))?;
        self.req_prod = new;
        Ok(need_notify(new, old, event))
    }

    /// Loads `rsp_prod` once, checks it against the requests we published and returns how
    /// many responses are ready. A bad value stops the ring (sticky).
    pub fn poll_responses<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<u32, SharedRingError> {
        self.check()?;
        let prod = mem
            .load_u32(RSP_PROD, Acquire)
            .map_err(|e| self.fail(e.into()))?;
        let pending = prod.wrapping_sub(self.rsp_cons);
        let outstanding = self.req_prod.wrapping_sub(self.rsp_cons);
        if pending > outstanding {
            return Err(self.fail(SharedRingError::TooManyResponses {
                pending,
                outstanding,
            }));
        }
        self.rsp_seen = prod;
        Ok(pending)
    }

    /// Copies the next validated response into `out` (at most one entry) and consumes it;
    /// `false` when the responses seen by the last poll are all consumed.
    pub fn pop_response<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        out: &mut [u8],
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        if self.rsp_cons == self.rsp_seen {
            return Ok(false);
        }
        read_slot(mem, self.layout, self.rsp_cons, out).map_err(|e| self.fail(e))?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(true)
    }

    /// Responses validated by the last poll and not yet consumed.
    pub fn ready(&self) -> u32 {
        self.rsp_seen.wrapping_sub(self.rsp_cons)
    }

    /// Requests published and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_prod.wrapping_sub(self.rsp_cons)
    }

    /// Copies the response `ahead` slots past the consumer without consuming it; `false`
    /// when the last poll did not validate that far.
    pub fn peek_response<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        ahead: u32,
        out: &mut [u8],
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        if ahead >= self.ready() {
            return Ok(false);
        }
        let idx = self.rsp_cons.wrapping_add(ahead);
        read_slot(mem, self.layout, idx, out).map_err(|e| self.fail(e))?;
        Ok(true)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: when nothing is pending, sets `rsp_event` to ask
    /// for a notification on the next response, then looks once more (closing the race).
    pub fn final_check_for_responses<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, SharedRingError> {
        if self.poll_responses(mem)? > 0 {
            return Ok(true);
        }
        let r = mem.store_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1), Release);
        r.map_err(|e| self.fail(e.into()))?;
        mem.fence(SeqCst);
        Ok(self.poll_responses(mem)? > 0)
    }
}

/// The backend's end (`struct *_back_ring`): consumes requests, produces responses.
#[derive(Debug, Clone)]
pub struct BackRing {
    layout: SringLayout,
    req_cons: u32,
    /// End of the requests validated by the last [`BackRing::poll_requests`].
    req_seen: u32,
    rsp_prod_pvt: u32,
    /// Our last published `rsp_prod`.
    rsp_prod: u32,
    broken: Option<SharedRingError>,
}

impl BackRing {
    /// `BACK_RING_ATTACH` at index `start`; checks the memory size.
    pub fn attach<M: SharedMem + ?Sized>(
        mem: &M,
        layout: SringLayout,
        start: u32,
    ) -> Result<Self, SharedRingError> {
        check_range(0, layout.bytes(), mem.size())?;
        Ok(Self {
            layout,
            req_cons: start,
            req_seen: start,
            rsp_prod_pvt: start,
            rsp_prod: start,
            broken: None,
        })
    }

    /// The geometry.
    pub fn layout(&self) -> SringLayout {
        self.layout
    }

    /// The sticky error that stopped this ring, if any.
    pub fn broken(&self) -> Option<SharedRingError> {
        self.broken
    }

    /// Request consumer.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Private response producer.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Requests consumed and not yet answered.
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    fn check(&self) -> Result<(), SharedRingError> {
        self.broken.map_or(Ok(()), Err)
    }

    fn fail(&mut self, e: SharedRingError) -> SharedRingError {
        if e.is_sticky() {
            self.broken = Some(e);
        }
        e
    }

    /// Loads `req_prod` once, checks it (`req_prod - rsp_prod_pvt <= nr_ents`, which also
    /// bounds `req_prod - req_cons`) and returns how many requests are ready. Sticky on error.
    pub fn poll_requests<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<u32, SharedRingError> {
        self.check()?;
        let prod = mem
            .load_u32(REQ_PROD, Acquire)
            .map_err(|e| self.fail(e.into()))?;
        // A frontend can only produce into slots we answered: anything beyond is garbage.
        let unanswered = prod.wrapping_sub(self.rsp_prod_pvt);
        if unanswered > self.layout.nr_ents {
            return Err(self.fail(SharedRingError::TooManyRequests {
                unanswered,
                nr_ents: self.layout.nr_ents,
            }));
        }
        let pending = prod.wrapping_sub(self.req_cons);
        if pending > unanswered {
            // req_prod moved backwards past what we already consumed.
            return Err(self.fail(SharedRingError::TooManyRequests {
                unanswered: pending,
                nr_ents: self.layout.nr_ents,
            }));
        }
        self.req_seen = prod;
        Ok(pending)
    }

    /// Requests validated by the last poll and not yet consumed.
    pub fn ready(&self) -> u32 {
        self.req_seen.wrapping_sub(self.req_cons)
    }

    /// Copies the next validated request into `out` and consumes it; `false` when none.
    pub fn pop_request<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        out: &mut [u8],
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        if self.req_cons == self.req_seen {
            return Ok(false);
        }
        read_slot(mem, self.layout, self.req_cons, out).map_err(|e| self.fail(e))?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(true)
    }

    /// Copies the request `ahead` slots past the consumer without consuming it; `false` when
    /// the last poll did not validate that far.
    pub fn peek_request<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        ahead: u32,
        out: &mut [u8],
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        if ahead >= self.ready() {
            return Ok(false);
        }
        let idx = self.req_cons.wrapping_add(ahead);
        read_slot(mem, self.layout, idx, out).map_err(|e| self.fail(e))?;
        Ok(true)
    }

    /// Consumes `n` requests already read with [`BackRing::peek_request`]; refuses to pass
    /// what the last poll validated.
    pub fn consume(&mut self, n: u32) -> Result<(), SharedRingError> {
        self.check()?;
        if n > self.ready() {
            return Err(SharedRingError::Full {
                what: "validated request to consume",
            });
        }
        self.req_cons = self.req_cons.wrapping_add(n);
        Ok(())
    }

    /// Asks for a notification once the frontend has produced `count` more requests than
    /// we consumed (`req_event = req_cons + count`), then polls once more.
    pub fn request_event_after<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        count: u32,
    ) -> Result<u32, SharedRingError> {
        self.check()?;
        let r = mem.store_u32(REQ_EVENT, self.req_cons.wrapping_add(count.max(1)), Release);
        r.map_err(|e| self.fail(e.into()))?;
        mem.fence(SeqCst);
        self.poll_requests(mem)
    }

    /// Writes a response into the next slot (not yet visible); each consumed request is
    /// answered at most once.
    pub fn push_response<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        entry: &[u8],
    ) -> Result<(), SharedRingError> {
        self.check()?;
        if self.unanswered() == 0 {
            return Err(SharedRingError::Full {
                what: "consumed request to answer",
            });
        }
        write_slot(mem, self.layout, self.rsp_prod_pvt, entry).map_err(|e| self.fail(e))?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes `rsp_prod` after the entries and says
    /// whether the frontend's `rsp_event` asks for a notification.
    pub fn push_responses_and_check_notify<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, SharedRingError> {
        self.check()?;
        let (old, new) = (self.rsp_prod, self.rsp_prod_pvt);
        let event = publish_and_read_event(mem, RSP_PROD, RSP_EVENT, new)
            .map_err(|e| self.fail(e.into()))?;
        self.rsp_prod = new;
        Ok(need_notify(new, old, event))
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: when nothing is pending, sets `req_event` to ask for
    /// a notification on the next request, then looks once more.
    pub fn final_check_for_requests<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, SharedRingError> {
        if self.poll_requests(mem)? > 0 {
            return Ok(true);
        }
        let r = mem.store_u32(REQ_EVENT, self.req_cons.wrapping_add(1), Release);
        r.map_err(|e| self.fail(e.into()))?;
        mem.fence(SeqCst);
        Ok(self.poll_requests(mem)? > 0)
    }
}

#[cfg(test)]
mod tests;
