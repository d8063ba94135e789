//! Netfront on `device/vif/<devid>`: the frontend half of the xenbus handshake with our netvm's
//! netback, a pool of granted pages for xen-rings' [`Netfront`], and [`NetDevice`] on top.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{
    DomId, Env, Events, EvtchnPort, GrantRef, Grants, NetDevice, Notify, PlatformError, Port,
    SharedMem,
};
use xen_rings::netif::{CopyFailed, FrontPages, NetError, Netfront, NetfrontLimits, RxEvent};

use crate::grants::{GrantMem, XenGrants};
use crate::platform::XenPlatform;
use crate::xenbus::{self, CONNECTED, INIT_WAIT};
use crate::XenPort;

/// Largest frame: one MTU frame, no scatter-gather, no GSO.
pub const MAX_FRAME: usize = 1536;
/// The MTU we ask for (Ethernet).
pub const MTU: usize = 1500;
const RX_BUFFERS: usize = 64;
const TX_PAGES: usize = 64;

/// Our pages granted to the backend: a free list for sending and one for receiving.
struct Pool {
    pages: BTreeMap<u32, (GrantMem, bool)>,
    free_tx: Vec<GrantRef>,
    free_rx: Vec<GrantRef>,
}

impl Pool {
    fn new(g: &mut XenGrants, backend: DomId) -> Result<Self, PlatformError> {
        let mut pool = Self {
            pages: BTreeMap::new(),
            free_tx: Vec::new(),
            free_rx: Vec::new(),
        };
        for i in 0..TX_PAGES + RX_BUFFERS {
            let rx = i >= TX_PAGES;
            let (mem, refs) = g.share(backend, 1, rx)?;
            let r = *refs
                .first()
                .ok_or(PlatformError::Full { what: "grant refs" })?;
            pool.pages.insert(r.0, (mem, rx));
            if rx {
                pool.free_rx.push(r);
            } else {
                pool.free_tx.push(r);
            }
        }
        Ok(pool)
    }
}

impl FrontPages for Pool {
    fn tx_page(&mut self, data: &[u8]) -> Option<GrantRef> {
        let r = self.free_tx.pop()?;
        match self.pages.get(&r.0) {
            Some((mem, _)) if mem.write(0, data).is_ok() => Some(r),
            _ => {
                self.free_tx.push(r);
                None
            }
        }
    }
    fn rx_page(&mut self) -> Option<GrantRef> {
        self.free_rx.pop()
    }
    fn read_rx(&mut self, gref: GrantRef, offset: u16, dst: &mut [u8]) -> Result<(), CopyFailed> {
        let (mem, _) = self.pages.get(&gref.0).ok_or(CopyFailed)?;
        mem.read(usize::from(offset), dst).map_err(|_| CopyFailed)
    }
    fn release(&mut self, gref: GrantRef) {
        match self.pages.get(&gref.0) {
            Some((_, true)) => self.free_rx.push(gref),
            Some((_, false)) => self.free_tx.push(gref),
            None => {}
        }
    }
}

/// Counters of frames not delivered, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetfrontDrops {
    /// Frames the ring machine dropped (bad status, too many slots, too large).
    pub rx_dropped: u64,
    /// Frames longer than the caller's buffer.
    pub rx_too_long: u64,
    /// Sends refused because the TX ring or the page pool was full.
    pub tx_full: u64,
}

/// A connected netfront.
pub struct XenNetfront {
    front: Netfront<GrantMem>,
    pool: Pool,
    port: XenPort,
    backend: DomId,
    mac: [u8; 6],
    frame: Vec<u8>,
    drops: NetfrontDrops,
    broken: Option<NetError>,
}

impl core::fmt::Debug for XenNetfront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenNetfront")
            .field("backend", &self.backend)
            .field("port", &self.port)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Connects `device/vif/<devid>` (frontend handshake, xenstore.md §5-6).
pub fn connect(env: &mut Env<XenPlatform>, devid: u32) -> Result<XenNetfront, PlatformError> {
    let dev = format!("device/vif/{devid}");
    let backend = xenbus::read_text(&mut env.store, &format!("{dev}/backend"))?;
    let backend_id: DomId = DomId::parse(&xenbus::read_text(
        &mut env.store,
        &format!("{dev}/backend-id"),
    )?)
    .map_err(|_| PlatformError::Store(platform_api::StoreError::BadReply("backend-id")))?;
    let mac = xenbus::read_text(&mut env.store, &format!("{dev}/mac"))?;
    let mac = crate::frame::parse_mac(&mac).ok_or(PlatformError::Store(
        platform_api::StoreError::BadReply("mac"),
    ))?;
    let mut waiter = env.events.sibling();
    xenbus::wait_state(
        &mut env.store,
        &mut waiter,
        &env.clock,
        backend_id,
        &format!("{backend}/state"),
        &[INIT_WAIT],
        xenbus::PATIENCE,
    )?;
    let (tx_mem, tx_refs) = env.grants.share(backend_id, 1, true)?;
    let (rx_mem, rx_refs) = env.grants.share(backend_id, 1, true)?;
    let limits = NetfrontLimits {
        max_packet: MAX_FRAME,
        rx_buffers: RX_BUFFERS,
        ..NetfrontLimits::DEFAULT
    };
    let bad = |e: NetError| PlatformError::Unsupported(net_error_name(&e));
    let mut front = Netfront::new(tx_mem, rx_mem, limits).map_err(bad)?;
    let mut pool = Pool::new(&mut env.grants, backend_id)?;
    // Bound through the loop's event set: the run loop's wait wakes for this device.
    let port = env.events.alloc_unbound(backend_id)?;
    let keys = [
        ("tx-ring-ref", format!("{}", tx_refs[0])),
        ("rx-ring-ref", format!("{}", rx_refs[0])),
        ("event-channel", format!("{}", port.port())),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
        ("feature-sg", "0".into()),
        ("feature-gso-tcpv4", "0".into()),
        // Complete checksums from the backend: apps answer from what they receive.
        ("feature-no-csum-offload", "1".into()),
        ("state", format!("{CONNECTED}")),
    ];
    xenbus::write_keys(&mut env.store, &dev, &keys)?;
    xenbus::wait_state(
        &mut env.store,
        &mut waiter,
        &env.clock,
        backend_id,
        &format!("{backend}/state"),
        &[CONNECTED],
        xenbus::PATIENCE,
    )?;
    front.post_rx(&mut pool).map_err(bad)?;
    if front.take_notify() {
        port.notify()?;
    }
    Ok(XenNetfront {
        front,
        pool,
        port,
        backend: backend_id,
        mac,
        frame: vec![0; MAX_FRAME],
        drops: NetfrontDrops::default(),
        broken: None,
    })
}

/// A static name for a ring error (`PlatformError` carries no strings).
pub(crate) fn net_error_name(e: &NetError) -> &'static str {
    match e {
        NetError::Ring(_) => "netif ring broken by the peer",
        NetError::Peer(_) => "netif peer broke the protocol",
        NetError::BufferTooSmall { .. } => "netif buffer too small",
        NetError::BadPacketSize(_) => "netif frame size",
        NetError::Full { .. } => "netif ring full",
    }
}

impl XenNetfront {
    /// Drop counters.
    pub fn drops(&self) -> NetfrontDrops {
        self.drops
    }

    /// The error that stopped this device, if any.
    pub fn error(&self) -> Option<NetError> {
        self.broken
    }

    fn fatal(&mut self, e: NetError) -> PlatformError {
        self.broken = Some(e);
        PlatformError::NoSuchDomain(self.backend)
    }

    fn kick(&mut self) -> Result<(), PlatformError> {
        if self.front.take_notify() {
            self.port.notify()?;
        }
        Ok(())
    }
}

impl NetDevice for XenNetfront {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        if self.broken.is_some() {
            return Err(PlatformError::NoSuchDomain(self.backend));
        }
        loop {
            let ev = self.front.poll_rx(&mut self.pool, &mut self.frame);
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) if e.is_fatal() => return Err(self.fatal(e)),
                Err(_) => RxEvent::Idle,
            };
            match ev {
                RxEvent::Packet { len } => {
                    let src = self.frame.get(..len).unwrap_or(&[]);
                    match buf.get_mut(..len) {
                        Some(dst) => {
                            dst.copy_from_slice(src);
                            self.kick()?;
                            return Ok(Some(len));
                        }
                        None => self.drops.rx_too_long += 1,
                    }
                }
                RxEvent::Dropped(_) => self.drops.rx_dropped += 1,
                RxEvent::Idle => {
                    // Reclaim sent pages so a quiet receive side never starves sending.
                    if let Err(e) = self.front.poll_tx_responses(&mut self.pool) {
                        if e.is_fatal() {
                            return Err(self.fatal(e));
                        }
                    }
                    self.kick()?;
                    return Ok(None);
                }
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<bool, PlatformError> {
        if self.broken.is_some() {
            return Err(PlatformError::NoSuchDomain(self.backend));
        }
        if frame.is_empty() || frame.len() > MTU + 14 {
            return Err(PlatformError::Unsupported("frames longer than the MTU"));
        }
        match self.front.transmit(&mut self.pool, frame) {
            Ok(()) => {
                self.kick()?;
                Ok(true)
            }
            Err(e) if e.is_fatal() => Err(self.fatal(e)),
            Err(_) => {
                self.drops.tx_full += 1;
                Ok(false)
            }
        }
    }

    fn port(&self) -> EvtchnPort {
        self.port.port()
    }

    fn is_up(&self) -> bool {
        self.broken.is_none()
    }
}
