//! Blkfront: submits block requests on one blkif ring and checks every response against the
//! request outstanding under its id (known, answered once, same operation).

// The crate root links `alloc` only for tests; the id table needs it.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use platform_api::SharedMem;

use super::wire::*;
use crate::shared_ring::{self, FrontRing, SharedRingError, SringLayout};

const NR: usize = SringLayout::BLKIF.nr_ents as usize;
/// Low bits of an id name the table slot; the rest is a generation, so a stale or repeated
/// answer never matches a newer request in the same slot.
const SLOT_BITS: u32 = 8;

/// One request to submit; segments name our own granted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkOp<'a> {
    /// Read sectors into the segments' pages.
    Read {
        /// First 512-byte sector.
        sector: u64,
        /// 1..=11 segments.
        segments: &'a [Segment],
    },
    /// Write the segments' pages to disk.
    Write {
        /// First sector.
        sector: u64,
        /// 1..=11 segments.
        segments: &'a [Segment],
    },
    /// A write ordered after every earlier one (`BLKIF_OP_WRITE_BARRIER`).
    WriteBarrier {
        /// First sector.
        sector: u64,
        /// 1..=11 segments.
        segments: &'a [Segment],
    },
    /// `BLKIF_OP_FLUSH_DISKCACHE`.
    Flush,
    /// `BLKIF_OP_DISCARD`.
    Discard {
        /// First sector.
        sector: u64,
        /// Sectors (at least one).
        nr_sectors: u64,
        /// Securely erase.
        secure: bool,
    },
}

/// How the backend completed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkStatus {
    /// `BLKIF_RSP_OKAY`.
    Okay,
    /// `BLKIF_RSP_ERROR`.
    Error,
    /// `BLKIF_RSP_EOPNOTSUPP`.
    NotSupported,
    /// Any other value; treat as an error.
    Unknown(i16),
}

impl BlkStatus {
    fn from_wire(s: i16) -> Self {
        match s {
            RSP_OKAY => Self::Okay,
            RSP_ERROR => Self::Error,
            RSP_EOPNOTSUPP => Self::NotSupported,
            other => Self::Unknown(other),
        }
    }
}

/// A finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Blkfront::submit`] returned.
    pub id: u64,
    /// Its `BLKIF_OP_*`.
    pub operation: u8,
    /// The outcome.
    pub status: BlkStatus,
}

/// A rule the block backend broke; the ring is no longer served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkPeerError {
    /// A response for an id not outstanding (unknown, stale or already answered).
    UnknownId(u64),
    /// A response whose operation differs from the request's.
    OperationMismatch {
        /// The id.
        id: u64,
        /// Operation requested.
        expected: u8,
        /// Operation answered.
        got: u8,
    },
}

/// Why a blkfront call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkError {
    /// The shared ring failed (garbage `rsp_prod`, memory): sticky.
    Ring(SharedRingError),
    /// The backend broke a rule: sticky.
    Peer(BlkPeerError),
    /// No free ring slot or id: retry after completions.
    Full {
        /// What ran out.
        what: &'static str,
    },
    /// Segment count outside the operation's range.
    BadSegmentCount(usize),
    /// A segment whose sectors are not `first <= last <= 7`.
    BadSegment {
        /// Its index.
        index: usize,
    },
    /// The sector range overflows or is empty.
    BadSectorRange,
}

impl BlkError {
    /// Whether the frontend is stopped (reconnect the device).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Ring(e) => e.is_peer_fault() || matches!(e, SharedRingError::Mem(_)),
            Self::Peer(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ring(e) => write!(f, "blkif ring: {e}"),
            Self::Peer(BlkPeerError::UnknownId(id)) => {
                write!(f, "blkif response for id {id:#x}, which is not outstanding")
            }
            Self::Peer(BlkPeerError::OperationMismatch { id, expected, got }) => write!(
                f,
                "blkif response for id {id:#x} has operation {got}, request had {expected}"
            ),
            Self::Full { what } => write!(f, "no free {what}"),
            Self::BadSegmentCount(n) => write!(f, "{n} segments is not allowed here"),
            Self::BadSegment { index } => write!(f, "segment {index} has an invalid sector range"),
            Self::BadSectorRange => f.write_str("sector range is empty or overflows"),
        }
    }
}

impl core::error::Error for BlkError {}

impl From<SharedRingError> for BlkError {
    fn from(e: SharedRingError) -> Self {
        Self::Ring(e)
    }
}

/// The frontend of one virtual block device (one ring page).
#[derive(Debug)]
pub struct Blkfront<M: SharedMem> {
    mem: M,
    ring: FrontRing,
    handle: u16,
    /// Full id and operation outstanding in each slot.
    shadow: Vec<Option<(u64, u8)>>,
    free: Vec<u8>,
    generation: u64,
    notify: bool,
    error: Option<BlkError>,
}

impl<M: SharedMem> Blkfront<M> {
    /// Initialises the ring page (`SHARED_RING_INIT`) for device `handle`.
    pub fn new(mem: M, handle: u16) -> Result<Self, BlkError> {
        Self::new_at(mem, handle, 0)
    }

    /// As [`Blkfront::new`] with the indices starting at `start` (wrap-around tests).
    pub fn new_at(mem: M, handle: u16, start: u32) -> Result<Self, BlkError> {
        let ring = FrontRing::attach(&mem, SringLayout::BLKIF, start)?;
        shared_ring::init_at(&mem, start).map_err(SharedRingError::Mem)?;
        Ok(Self {
            mem,
            ring,
            handle,
            shadow: vec![None; NR],
            free: (0..NR as u8).rev().collect(),
            generation: 0,
            notify: false,
            error: None,
        })
    }

    /// Requests awaiting a response.
    pub fn outstanding(&self) -> usize {
        NR - self.free.len()
    }

    /// The error that stopped this frontend, if any.
    pub fn error(&self) -> Option<BlkError> {
        self.error
    }

    /// Whether requests were published that the backend asked to hear of; clears it.
    #[must_use]
    pub fn take_notify(&mut self) -> bool {
        core::mem::take(&mut self.notify)
    }

    fn check(&self) -> Result<(), BlkError> {
        self.error.map_or(Ok(()), Err)
    }

    fn fail<E: Into<BlkError>>(&mut self, e: E) -> BlkError {
        let e = e.into();
        if e.is_fatal() {
            self.error = Some(e);
        }
        e
    }

    /// Validates and queues one request, publishes it and returns its id.
    pub fn submit(&mut self, op: BlkOp<'_>) -> Result<u64, BlkError> {
        self.check()?;
        let (operation, sector, segments) = match op {
            BlkOp::Read { sector, segments } => (OP_READ, sector, segments),
            BlkOp::Write { sector, segments } => (OP_WRITE, sector, segments),
            BlkOp::WriteBarrier { sector, segments } => (OP_WRITE_BARRIER, sector, segments),
            BlkOp::Flush => (OP_FLUSH_DISKCACHE, 0, &[][..]),
            BlkOp::Discard { .. } => (OP_DISCARD, 0, &[][..]),
        };
        if operation != OP_FLUSH_DISKCACHE && operation != OP_DISCARD {
            if segments.is_empty() || segments.len() > MAX_SEGMENTS {
                return Err(BlkError::BadSegmentCount(segments.len()));
            }
            let mut sectors = 0u64;
            for (index, s) in segments.iter().enumerate() {
                if !s.is_valid() {
                    return Err(BlkError::BadSegment { index });
                }
                sectors += u64::from(s.sectors());
            }
            if sector.checked_add(sectors).is_none() {
                return Err(BlkError::BadSectorRange);
            }
        }
        if let BlkOp::Discard {
            sector, nr_sectors, ..
        } = op
        {
            if nr_sectors == 0 || sector.checked_add(nr_sectors).is_none() {
                return Err(BlkError::BadSectorRange);
            }
        }
        if self.ring.free_requests() == 0 {
            return Err(BlkError::Full { what: "ring slot" });
        }
        let Some(&slot) = self.free.last() else {
            return Err(BlkError::Full { what: "request id" });
        };
        self.generation = self.generation.wrapping_add(1) & (u64::MAX >> SLOT_BITS);
        let id = (self.generation << SLOT_BITS) | u64::from(slot);
        let req = match op {
            BlkOp::Discard {
                sector,
                nr_sectors,
                secure,
            } => Request::Discard(DiscardRequest {
                flag: if secure { DISCARD_SECURE } else { 0 },
                handle: self.handle,
                id,
                sector_number: sector,
                nr_sectors,
            }),
            _ => {
                let mut seg = [Segment::EMPTY; MAX_SEGMENTS];
                seg[..segments.len()].copy_from_slice(segments);
                Request::Direct(DirectRequest {
                    operation,
                    nr_segments: segments.len() as u8,
                    handle: self.handle,
                    id,
                    sector_number: sector,
                    seg,
                })
            }
        };
        let r = self.ring.push_request(&self.mem, &req.emit());
        r.map_err(|e| self.fail(e))?;
        self.free.pop();
        self.shadow[usize::from(slot)] = Some((id, operation));
        let r = self.ring.push_requests_and_check_notify(&self.mem);
        self.notify |= r.map_err(|e| self.fail(e))?;
        Ok(id)
    }

    /// The next completion, after checking its id and operation; `None` when no response
    /// is waiting (then `rsp_event` is armed).
    pub fn poll(&mut self) -> Result<Option<Completion>, BlkError> {
        self.check()?;
        if self.ring.ready() == 0 {
            let r = self.ring.poll_responses(&self.mem);
            if r.map_err(|e| self.fail(e))? == 0 {
                let r = self.ring.final_check_for_responses(&self.mem);
                if !r.map_err(|e| self.fail(e))? {
                    return Ok(None);
                }
            }
        }
        let mut raw = [0u8; Response::SIZE];
        let r = self.ring.pop_response(&self.mem, &mut raw);
        if !r.map_err(|e| self.fail(e))? {
            return Ok(None);
        }
        let rsp = Response::parse(&raw);
        let slot = (rsp.id & ((1 << SLOT_BITS) - 1)) as usize;
        let entry = self.shadow.get(slot).copied().flatten();
        let Some((id, operation)) = entry.filter(|(id, _)| *id == rsp.id) else {
            return Err(self.fail(BlkError::Peer(BlkPeerError::UnknownId(rsp.id))));
        };
        if rsp.operation != operation {
            return Err(self.fail(BlkError::Peer(BlkPeerError::OperationMismatch {
                id,
                expected: operation,
                got: rsp.operation,
            })));
        }
        self.shadow[slot] = None;
        self.free.push(slot as u8);
        Ok(Some(Completion {
            id,
            operation,
            status: BlkStatus::from_wire(rsp.status),
        }))
    }
}
