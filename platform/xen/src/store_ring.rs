//! The xenstore ring as `xen-store`'s blocking transport: its `RingTransport` over the page Xen
//! gave us, notified through the store port and waiting with `SCHEDOP_poll` on it.
#![forbid(unsafe_code)]

use alloc::boxed::Box;

use platform_api::{Duration, Events, EvtchnPort, StoreError};
use xen_store::blocking::Transport;
use xen_store::ring::{RingTransport, StoreRingError};

use crate::events::{XenEvents, XenPort};
use crate::shared::RawPages;

/// How the transport waits: poll the store port (or time out).
pub type StoreWait = Box<dyn FnMut(Option<Duration>) -> Result<(), StoreError>>;

/// Our end of the xenstore page, ready for `xen_store::blocking::BlockingStore::new`; its
/// [`Transport::port`] is the store's event channel, so a run loop can wait on it.
pub struct StoreRing {
    ring: RingTransport<RawPages, XenPort, StoreWait>,
    port: EvtchnPort,
}

impl core::fmt::Debug for StoreRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreRing")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Transport for StoreRing {
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        self.ring.send(data)
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError> {
        self.ring.recv(buf, timeout)
    }
    fn port(&self) -> Option<EvtchnPort> {
        Some(self.port)
    }
}

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
    Ok(StoreRing {
        ring: RingTransport::new(page, XenPort::given(port), wait)?,
        port,
    })
}
