//! The xenstore ring as `xen-store`'s blocking transport: its `RingTransport` over the page Xen
//! gave us, notified through the store port and waiting with `SCHEDOP_poll` on it.
#![forbid(unsafe_code)]

use alloc::boxed::Box;

use platform_api::{Duration, Events, EvtchnPort, StoreError};
use xen_store::ring::{RingTransport, StoreRingError};

use crate::events::{XenEvents, XenPort};
use crate::shared::RawPages;

/// How the transport waits: poll the store port (or time out).
pub type StoreWait = Box<dyn FnMut(Option<Duration>) -> Result<(), StoreError>>;

/// Our end of the xenstore page, ready for `xen_store::blocking::BlockingStore::new`.
pub type StoreRing = RingTransport<RawPages, XenPort, StoreWait>;

/// Attaches to the page (its indices may not start at 0) with `events` watching `port`.
pub fn attach(
    page: RawPages,
    port: EvtchnPort,
    mut events: XenEvents,
) -> Result<StoreRing, StoreRingError> {
    events.watch(port);
    let wait: StoreWait = Box::new(move |timeout| {
        events
            .wait(timeout)
            .map(|_| ())
            .map_err(|_| StoreError::Disconnected)
    });
    RingTransport::new(page, XenPort::given(port), wait)
}
