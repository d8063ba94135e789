//! Errors, sorted by blame: a bad control page ([`LayoutError`]), a peer breaking the ring
//! rules at run time ([`PeerError`]), and what an endpoint call reports ([`Error`]).

use core::fmt;

use platform_api::{OutOfBounds, PlatformError, StoreError, XsErrno};

use crate::layout::Ring;

/// The control page or the memory handed in does not describe a valid vchan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// A ring order outside 10..=20.
    BadOrder {
        /// Which ring.
        ring: Ring,
        /// The order found.
        order: u16,
    },
    /// Both rings claim the same in-page slot (equal orders below 12).
    SameInPageOrder {
        /// The order both rings have.
        order: u16,
    },
    /// The rings need more grant refs than fit before the first in-page ring.
    TooManyGrants {
        /// Grants the orders call for.
        needed: usize,
        /// Slots available.
        slots: usize,
    },
    /// A server was asked for a ring larger than 1 MiB.
    TooLarge {
        /// Which ring.
        ring: Ring,
        /// Bytes requested.
        requested: usize,
    },
    /// The control page memory is smaller than a page.
    ControlPageTooSmall {
        /// Its size.
        size: usize,
    },
    /// A page ring was given no memory, or an in-page ring was given some.
    RingMem {
        /// Which ring.
        ring: Ring,
        /// Bytes the ring needs in separate pages (0 for an in-page ring).
        needed: usize,
        /// Bytes given (0 for none).
        given: usize,
    },
    /// The grant list does not match the ring pages.
    GrantCount {
        /// Grants given.
        given: usize,
        /// Grants the orders call for.
        needed: usize,
    },
    /// A byte buffer is shorter than the structure it should hold.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// A shared-memory access failed.
    Mem(OutOfBounds),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOrder { ring, order } => {
                write!(f, "{ring:?} ring order {order} is outside 10..=20")
            }
            Self::SameInPageOrder { order } => write!(f, "both rings have in-page order {order}"),
            Self::TooManyGrants { needed, slots } => {
                write!(
                    f,
                    "rings need {needed} grants but the control page has {slots} slots"
                )
            }
            Self::TooLarge { ring, requested } => {
                write!(
                    f,
                    "{ring:?} ring of {requested} bytes exceeds the 1 MiB maximum"
                )
            }
            Self::ControlPageTooSmall { size } => {
                write!(f, "control page of {size} bytes is smaller than a page")
            }
            Self::RingMem {
                ring,
                needed,
                given,
            } => {
                write!(
                    f,
                    "{ring:?} ring needs {needed} bytes of ring pages, {given} given"
                )
            }
            Self::GrantCount { given, needed } => {
                write!(f, "{given} grants given, {needed} needed")
            }
            Self::Truncated { needed, len } => write!(f, "{len}-byte buffer, {needed} needed"),
            Self::Mem(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for LayoutError {}

impl From<OutOfBounds> for LayoutError {
    fn from(e: OutOfBounds) -> Self {
        Self::Mem(e)
    }
}

/// The peer broke a ring rule while connected. Sticky: the endpoint stays broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// `prod - cons` exceeds the ring size.
    BadIndex {
        /// Which ring.
        ring: Ring,
        /// `prod - cons` as found.
        in_flight: u32,
        /// The ring size.
        size: u32,
    },
    /// The peer's live byte is not 0, 1 or 2.
    BadLive {
        /// The value found.
        value: u8,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadIndex {
                ring,
                in_flight,
                size,
            } => {
                write!(
                    f,
                    "peer claims {in_flight} bytes in flight in the {size}-byte {ring:?} ring"
                )
            }
            Self::BadLive { value } => write!(f, "peer's live byte is {value}, not 0, 1 or 2"),
        }
    }
}

impl core::error::Error for PeerError {}

/// Why an endpoint call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The peer broke the protocol (sticky).
    Peer(PeerError),
    /// The peer closed and every byte it sent has been read: end of stream.
    PeerClosed,
    /// We closed this endpoint.
    Closed,
    /// Signalling the event channel failed (sticky).
    Notify(PlatformError),
    /// A shared-memory access failed (sticky; the memory is smaller than the layout says).
    Mem(OutOfBounds),
    /// A blocking helper saw no event within its timeout.
    Timeout,
    /// Waiting for events failed.
    Wait(PlatformError),
    /// The memories handed to the endpoint do not match the ring orders.
    Layout(LayoutError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(e) => e.fmt(f),
            Self::PeerClosed => f.write_str("peer closed the vchan"),
            Self::Closed => f.write_str("vchan endpoint is closed"),
            Self::Notify(e) => write!(f, "event channel notify failed: {e}"),
            Self::Mem(e) => e.fmt(f),
            Self::Timeout => f.write_str("timed out waiting for the vchan peer"),
            Self::Wait(e) => write!(f, "waiting for events failed: {e}"),
            Self::Layout(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for Error {}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Self::Peer(e)
    }
}

impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Self {
        Self::Layout(e)
    }
}

impl From<OutOfBounds> for Error {
    fn from(e: OutOfBounds) -> Self {
        Self::Mem(e)
    }
}

/// Why setting a vchan up over the platform failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// Grants or event channels failed.
    Platform(PlatformError),
    /// The xenstore failed.
    Store(StoreError),
    /// The control page is invalid (client) or the sizes are (server).
    Layout(LayoutError),
    /// The endpoint failed right after setup.
    Endpoint(Error),
    /// A xenstore value is not the decimal number it should be, or is 0.
    BadValue {
        /// Which key.
        key: &'static str,
    },
    /// A client asked to connect to its own domain.
    Loopback,
    /// A xenstore key the server writes is still empty: the server is not ready, retry (as
    /// libxenvchan's and Qubes' clients keep waiting). A key still missing is
    /// `Store(Xs(Enoent))`; [`is_not_ready`](Self::is_not_ready) covers both.
    NotReady {
        /// Which key.
        key: &'static str,
    },
}

impl SetupError {
    /// Whether the server has not (fully) advertised the vchan yet: a key is missing or
    /// empty. A client should wait and retry; every other error is final.
    pub fn is_not_ready(&self) -> bool {
        matches!(
            self,
            Self::NotReady { .. } | Self::Store(StoreError::Xs(XsErrno::Enoent))
        )
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform(e) => e.fmt(f),
            Self::Store(e) => write!(f, "xenstore: {e}"),
            Self::Layout(e) => e.fmt(f),
            Self::Endpoint(e) => e.fmt(f),
            Self::BadValue { key } => {
                write!(f, "xenstore key {key} is not a valid non-zero number")
            }
            Self::Loopback => f.write_str("refusing a vchan to our own domain"),
            Self::NotReady { key } => write!(f, "xenstore key {key} is still empty"),
        }
    }
}

impl core::error::Error for SetupError {}

impl From<PlatformError> for SetupError {
    fn from(e: PlatformError) -> Self {
        Self::Platform(e)
    }
}

impl From<StoreError> for SetupError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<LayoutError> for SetupError {
    fn from(e: LayoutError) -> Self {
        Self::Layout(e)
    }
}

impl From<Error> for SetupError {
    fn from(e: Error) -> Self {
        Self::Endpoint(e)
    }
}
