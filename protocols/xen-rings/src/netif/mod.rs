//! netif.h (PV network) rings: wire entries, [`Netback`] (serves a client's netfront) and
//! [`Netfront`] (our uplink); grants move through [`GuestCopy`]/[`FrontPages`], events via `take_notify`.

use core::fmt;

use platform_api::GrantRef;

use crate::shared_ring::SharedRingError;

pub mod back;
pub mod front;
pub mod wire;

pub use back::{Netback, NetbackLimits, TxDrop, TxEvent};
pub use front::{Netfront, NetfrontLimits, RxDrop, RxEvent};
pub use wire::{Extra, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse};

/// Ethernet header length: the least a first TX slot must carry (Linux netback's rule).
pub const ETH_HLEN: usize = 14;

/// A grant copy the platform could not perform (bad grant, peer gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFailed;

impl fmt::Display for CopyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("grant copy failed")
    }
}

impl core::error::Error for CopyFailed {}

/// The backend's access to the frontend's granted pages (one frontend domain).
///
/// Grant refs come from the frontend and are opaque here; the machine has already checked
/// `offset + len <= 4096`. A failure becomes a `NETIF_RSP_ERROR`, never a disconnect.
pub trait GuestCopy {
    /// Copies `dst.len()` bytes out of the frontend's page `gref` at `offset`.
    fn copy_from_guest(
        &mut self,
        gref: GrantRef,
        offset: u16,
        dst: &mut [u8],
    ) -> Result<(), CopyFailed>;
    /// Copies `src` into the frontend's page `gref` at `offset`.
    fn copy_to_guest(&mut self, gref: GrantRef, offset: u16, src: &[u8]) -> Result<(), CopyFailed>;
}

/// The frontend's own pool of pages granted to the backend.
pub trait FrontPages {
    /// A free page granted (read-only suffices) to the backend, holding a copy of `data`
    /// (at most 4096 bytes) at offset 0; `None` when the pool is empty.
    fn tx_page(&mut self, data: &[u8]) -> Option<GrantRef>;
    /// A free page granted writable to the backend for receiving; `None` when empty.
    fn rx_page(&mut self) -> Option<GrantRef>;
    /// Copies `dst.len()` received bytes out of our page `gref` at `offset` (checked to lie
    /// within the page).
    fn read_rx(&mut self, gref: GrantRef, offset: u16, dst: &mut [u8]) -> Result<(), CopyFailed>;
    /// The backend is done with `gref`: it returns to the pool.
    fn release(&mut self, gref: GrantRef);
}

/// A rule a netif peer broke; the ring is no longer served (disconnect that peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// A TX packet spans more slots than any frontend may use.
    TooManySlots {
        /// Slots counted so far.
        slots: usize,
    },
    /// A slot's `offset + size` runs past the end of its page.
    SlotCrossesPage {
        /// The slot's offset.
        offset: u16,
        /// Its size.
        size: u16,
    },
    /// The frontend published part of a packet (its last slot says more follows).
    TruncatedPacket,
    /// `NETTXF_extra_info` or `EXTRA_FLAG_MORE` promised an extra slot that is not there.
    MissingExtraInfo,
    /// An extra-info slot of type 0 or `>= XEN_NETIF_EXTRA_TYPE_MAX`.
    BadExtraType(u8),
    /// More extra-info slots than there are types.
    TooManyExtras,
    /// A GSO extra with size 0 or an unknown GSO type.
    BadGso {
        /// MSS given.
        size: u16,
        /// GSO type given.
        gso_type: u8,
    },
    /// A response names an id we have no request outstanding for.
    UnknownId(u16),
    /// An RX response's id is not the one posted in that ring slot.
    RxIdMismatch {
        /// Id expected for the slot.
        expected: u16,
        /// Id given.
        got: u16,
    },
    /// Every posted RX buffer was answered and the last still says more data follows.
    RxChainNeverEnds,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManySlots { slots } => write!(f, "packet uses more than {slots} slots"),
            Self::SlotCrossesPage { offset, size } => {
                write!(
                    f,
                    "slot of {size} bytes at offset {offset} crosses its page"
                )
            }
            Self::TruncatedPacket => f.write_str("frontend published part of a packet"),
            Self::MissingExtraInfo => f.write_str("promised extra-info slot is missing"),
            Self::BadExtraType(t) => write!(f, "invalid extra-info type {t}"),
            Self::TooManyExtras => f.write_str("more extra-info slots than types"),
            Self::BadGso { size, gso_type } => {
                write!(f, "invalid GSO extra (size {size}, type {gso_type})")
            }
            Self::UnknownId(id) => write!(f, "response for id {id}, which is not outstanding"),
            Self::RxIdMismatch { expected, got } => {
                write!(
                    f,
                    "rx response id {got} where slot id {expected} was posted"
                )
            }
            Self::RxChainNeverEnds => f.write_str("rx packet continues past every posted buffer"),
        }
    }
}

impl core::error::Error for PeerError {}

/// Why a netif machine call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The shared ring failed (peer index garbage, or memory): sticky, disconnect.
    Ring(SharedRingError),
    /// The peer broke a netif rule: sticky, disconnect.
    Peer(PeerError),
    /// The caller's packet buffer is smaller than the configured maximum packet.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A packet to send is empty or larger than the configured maximum.
    BadPacketSize(usize),
    /// No room now (ring slots, ids, pages or the queue): retry after the peer answers.
    Full {
        /// What ran out.
        what: &'static str,
    },
}

impl NetError {
    /// Whether the machine is stopped (the peer must be disconnected).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Ring(e) => e.is_peer_fault() || matches!(e, SharedRingError::Mem(_)),
            Self::Peer(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ring(e) => write!(f, "netif ring: {e}"),
            Self::Peer(e) => write!(f, "netif peer: {e}"),
            Self::BufferTooSmall { needed } => write!(f, "packet buffer needs {needed} bytes"),
            Self::BadPacketSize(n) => write!(f, "packet of {n} bytes cannot be sent"),
            Self::Full { what } => write!(f, "no free {what}"),
        }
    }
}

impl core::error::Error for NetError {}

impl From<SharedRingError> for NetError {
    fn from(e: SharedRingError) -> Self {
        Self::Ring(e)
    }
}

impl From<PeerError> for NetError {
    fn from(e: PeerError) -> Self {
        Self::Peer(e)
    }
}

/// Slots a packet of `len` bytes needs at one page per slot (at least one).
pub(crate) fn slots_for(len: usize) -> usize {
    len.div_ceil(platform_api::PAGE_SIZE).max(1)
}

#[cfg(test)]
mod tests;
