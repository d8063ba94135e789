//! The xenstore ring (`struct xenstore_domain_interface`, io/xs_wire.h [X]) as a byte
//! transport for `xen-store`'s blocking client: two `xen-rings` byte rings plus the event port.
#![forbid(unsafe_code)]

use platform_api::{Duration, Events, EvtchnPort, Notify, StoreError};
use xen_rings::{ByteRing, Layout, RingError, Role};
use xen_store::blocking::Transport;

use crate::events::{XenEvents, XenPort};
use crate::shared::RawPages;

/// `req[1024]`: guest to xenstored.
pub fn req_layout() -> Layout {
    Layout {
        data: 0,
        size: 1024,
        cons: 2048,
        prod: 2052,
    }
}

/// `rsp[1024]`: xenstored to guest.
pub fn rsp_layout() -> Layout {
    Layout {
        data: 1024,
        size: 1024,
        cons: 2056,
        prod: 2060,
    }
}

/// Our end of the xenstore page.
#[derive(Debug)]
pub struct StoreRing {
    page: RawPages,
    port: XenPort,
    req: ByteRing,
    rsp: ByteRing,
    events: XenEvents,
}

fn broken(_: RingError) -> StoreError {
    // Indices xenstored could never have written: treat the store as gone.
    StoreError::Disconnected
}

impl StoreRing {
    /// Attaches to the page (the indices may not start at 0: another kernel may have used it).
    pub fn attach(
        page: RawPages,
        port: EvtchnPort,
        mut events: XenEvents,
    ) -> Result<Self, RingError> {
        let req = ByteRing::attach(&page, req_layout(), Role::Producer)?;
        let rsp = ByteRing::attach(&page, rsp_layout(), Role::Consumer)?;
        events.watch(port);
        Ok(Self {
            page,
            port: XenPort::given(port),
            req,
            rsp,
            events,
        })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), StoreError> {
        self.events
            .wait(timeout)
            .map(|_| ())
            .map_err(|_| StoreError::Disconnected)
    }
}

impl Transport for StoreRing {
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        loop {
            let n = self.req.write(&self.page, data).map_err(broken)?;
            let _ = self.port.notify();
            if n > 0 || data.is_empty() {
                return Ok(n);
            }
            self.wait(Some(Duration::from_millis(100)))?;
        }
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError> {
        let clock = self.events.clock();
        let deadline = timeout.map(|t| platform_api::Clock::now(&clock).saturating_add(t));
        loop {
            let n = self.rsp.read(&self.page, buf).map_err(broken)?;
            if n > 0 {
                // xenstored may be waiting for room in rsp[].
                let _ = self.port.notify();
                return Ok(n);
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(platform_api::Clock::now(&clock));
                    if left.is_zero() {
                        return Ok(0);
                    }
                    Some(left)
                }
                None => None,
            };
            self.wait(left)?;
        }
    }
}
