//! Netback: serves a client's netfront from our `backend/vif/<fe>/<devid>`; rings mapped, data by
//! grant copy, every request checked by xen-rings' [`Netback`] (bad refs answered with an error).
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{
    DomId, Env, Events, EvtchnPort, GrantRef, Grants, NetDevice, Notify, PlatformError, Port,
    Store, StoreError,
};
use xen_rings::netif::{NetError, Netback, NetbackLimits, TxEvent};

use crate::grants::{GrantCopier, GrantMem};
use crate::netfront::{net_error_name, MAX_FRAME, MTU};
use crate::platform::XenPlatform;
use crate::xenbus::{self, CONNECTED, INITIALISED, INIT_WAIT};
use crate::XenPort;

/// The MAC of our end of every vif, as Linux's netback and Qubes use it.
pub const BACKEND_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Counters of frames not delivered, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetbackDrops {
    /// TX requests the machine refused (`NETIF_RSP_ERROR`: bad sizes, slots, failed copies).
    pub tx_refused: u64,
    /// Frames longer than the caller's buffer.
    pub tx_too_long: u64,
    /// Frames for the frontend dropped because its queue was full.
    pub rx_full: u64,
    /// Blank checksums we could not fill (passed on as they were).
    pub csum_skipped: u64,
}

/// One served vif.
pub struct XenNetback {
    back: Netback<GrantMem>,
    copier: GrantCopier,
    port: XenPort,
    frontend: DomId,
    /// Our `backend/vif/<fe>/<devid>` and the frontend's directory.
    dir: String,
    fe_path: String,
    frame: Vec<u8>,
    drops: NetbackDrops,
    broken: Option<NetError>,
}

impl core::fmt::Debug for XenNetback {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenNetback")
            .field("frontend", &self.frontend)
            .field("port", &self.port)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn bad_key(what: &'static str) -> PlatformError {
    PlatformError::Store(StoreError::BadReply(what))
}

/// What [`connect`] answers while the frontend has not published its rings yet: not a failure,
/// call [`connect`] again later (the firewall does, once a second and on `backend/vif` watches).
pub const FRONTEND_NOT_READY: PlatformError =
    PlatformError::Unsupported("serving a frontend that has not connected yet");

/// Whether `e` is [`FRONTEND_NOT_READY`].
pub fn is_not_ready(e: &PlatformError) -> bool {
    *e == FRONTEND_NOT_READY
}

/// Serves `frontend`'s vif `devid` that the toolstack put under our `backend/vif/...`, without
/// waiting: the first call says InitWait, and each call while the frontend is still booting
/// returns [`FRONTEND_NOT_READY`] (writing nothing, so a watch on our backend directory does not
/// fire again). A frontend that closes instead is [`PlatformError::NoSuchDomain`].
pub fn connect(
    env: &mut Env<XenPlatform>,
    frontend: DomId,
    devid: u32,
) -> Result<XenNetback, PlatformError> {
    let dir = format!("backend/vif/{}/{devid}", frontend.get());
    let fe_path = xenbus::read_text(&mut env.store, &format!("{dir}/frontend"))?;
    let fe_id: u16 = xenbus::read_num(&mut env.store, &format!("{dir}/frontend-id"))?;
    if fe_id != frontend.get() {
        return Err(bad_key("frontend-id is not the vif's domain"));
    }
    if xenbus::state(&mut env.store, &format!("{dir}/state")) != INIT_WAIT {
        // What we can do: copying receive, one slot per frame, checksums filled by us.
        let features = [
            ("feature-rx-copy", String::from("1")),
            ("feature-rx-flip", "0".into()),
            ("feature-sg", "0".into()),
            ("feature-gso-tcpv4", "0".into()),
            ("feature-gso-tcpv6", "0".into()),
            ("feature-ipv6-csum-offload", "0".into()),
            ("feature-split-event-channels", "0".into()),
            ("hotplug-status", "connected".into()),
            ("state", format!("{INIT_WAIT}")),
        ];
        xenbus::write_keys(&mut env.store, &dir, &features)?;
    }
    match xenbus::state(&mut env.store, &format!("{fe_path}/state")) {
        INITIALISED | CONNECTED => {}
        xenbus::CLOSING | xenbus::CLOSED => return Err(PlatformError::NoSuchDomain(frontend)),
        _ => return Err(FRONTEND_NOT_READY),
    }
    finish(env, frontend, dir, fe_path)
}

/// [`connect`], waiting up to `patience` for the frontend (a program that serves one vif and
/// nothing else meanwhile, as xen-smoke).
pub fn connect_wait(
    env: &mut Env<XenPlatform>,
    frontend: DomId,
    devid: u32,
    patience: platform_api::Duration,
) -> Result<XenNetback, PlatformError> {
    use platform_api::Clock;
    let t0 = env.clock.now();
    let mut waiter = env.events.sibling();
    loop {
        match connect(env, frontend, devid) {
            Err(e) if is_not_ready(&e) => {}
            other => return other,
        }
        if env.clock.now().saturating_duration_since(t0) > patience {
            return Err(PlatformError::NoSuchDomain(frontend));
        }
        waiter.wait(Some(platform_api::Duration::from_millis(50)))?;
    }
}

/// Maps the rings of a frontend that published them, binds its port and says Connected.
fn finish(
    env: &mut Env<XenPlatform>,
    frontend: DomId,
    dir: String,
    fe_path: String,
) -> Result<XenNetback, PlatformError> {
    let key = |k: &str| format!("{fe_path}/{k}");
    let tx_ref: u32 = xenbus::read_num(&mut env.store, &key("tx-ring-ref"))?;
    let rx_ref: u32 = xenbus::read_num(&mut env.store, &key("rx-ring-ref"))?;
    let remote_port: u32 = xenbus::read_num(&mut env.store, &key("event-channel"))?;
    let rx_copy: u32 = xenbus::read_num(&mut env.store, &key("request-rx-copy")).unwrap_or(0);
    if rx_copy != 1 {
        return Err(PlatformError::Unsupported(
            "a netfront without request-rx-copy",
        ));
    }
    let remote_port = EvtchnPort::new(remote_port).map_err(|_| bad_key("event-channel"))?;
    let tx_mem = env.grants.map(frontend, &[GrantRef(tx_ref)], true)?;
    let rx_mem = env.grants.map(frontend, &[GrantRef(rx_ref)], true)?;
    let limits = NetbackLimits {
        max_packet: MAX_FRAME,
        ..NetbackLimits::DEFAULT
    };
    let back = Netback::new(tx_mem, rx_mem, limits)
        .map_err(|e| PlatformError::Unsupported(net_error_name(&e)))?;
    // Bound through the loop's event set: the run loop's wait wakes for this vif.
    let port = env.events.bind_interdomain(frontend, remote_port)?;
    let copier = GrantCopier::new(&env.grants, frontend)?;
    env.store
        .write(
            platform_api::Tx::NONE,
            &format!("{dir}/state"),
            format!("{CONNECTED}").as_bytes(),
        )
        .map_err(PlatformError::Store)?;
    // Kick once: the frontend may have queued requests before we bound the port.
    port.notify()?;
    Ok(XenNetback {
        back,
        copier,
        port,
        frontend,
        dir,
        fe_path,
        frame: vec![0; MAX_FRAME],
        drops: NetbackDrops::default(),
        broken: None,
    })
}

impl XenNetback {
    /// Drop counters.
    pub fn drops(&self) -> NetbackDrops {
        self.drops
    }

    /// The error that stopped this vif, if any.
    pub fn error(&self) -> Option<NetError> {
        self.broken
    }

    /// The frontend's domain.
    pub fn frontend(&self) -> DomId {
        self.frontend
    }

    /// Whether the toolstack is removing the vif (our state set to Closing) or the frontend
    /// is closing: then [`XenNetback::close`] it.
    pub fn peer_closing<S: Store + ?Sized>(&self, store: &mut S) -> bool {
        let ours = xenbus::state(store, &format!("{}/state", self.dir));
        let theirs = xenbus::state(store, &format!("{}/state", self.fe_path));
        ours >= xenbus::CLOSING || theirs >= xenbus::CLOSING || theirs == 0
    }

    /// Unmaps the frontend's rings, closes the port, and says Closed (the toolstack waits
    /// for that before it removes the device; the frontend's domain can then go away).
    pub fn close<S: Store + ?Sized>(self, store: &mut S) -> Result<(), PlatformError> {
        let dir = self.dir.clone();
        drop(self);
        let path = format!("{dir}/state");
        // A toolstack that already removed the directory waits for nothing; writing would
        // bring the node back.
        if xenbus::state(store, &path) == 0 {
            return Ok(());
        }
        let state = format!("{}", xenbus::CLOSED);
        store.write(platform_api::Tx::NONE, &path, state.as_bytes())?;
        // `online = 0` is libxl removing the device: in a driver domain the backend then
        // removes its directory (what `xl devd` does), which is what libxl waits for.
        let online: u32 = xenbus::read_num(store, &format!("{dir}/online")).unwrap_or(1);
        if online == 0 {
            store.rm(platform_api::Tx::NONE, &dir)?;
        }
        Ok(())
    }

    fn fatal(&mut self, e: NetError) -> PlatformError {
        self.broken = Some(e);
        PlatformError::NoSuchDomain(self.frontend)
    }

    fn kick(&mut self) -> Result<(), PlatformError> {
        if self.back.take_notify() {
            self.port.notify()?;
        }
        Ok(())
    }

    /// Moves queued frames into the buffers the frontend posted.
    fn deliver(&mut self) -> Result<(), PlatformError> {
        match self.back.poll_rx(&mut self.copier) {
            Ok(_) => Ok(()),
            Err(e) if e.is_fatal() => Err(self.fatal(e)),
            Err(_) => Ok(()),
        }
    }
}

impl NetDevice for XenNetback {
    fn mac(&self) -> [u8; 6] {
        BACKEND_MAC
    }

    fn mtu(&self) -> usize {
        MTU
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        if self.broken.is_some() {
            return Err(PlatformError::NoSuchDomain(self.frontend));
        }
        // Each wake-up may also mean the frontend posted RX buffers.
        self.deliver()?;
        loop {
            let ev = match self.back.poll_tx(&mut self.copier, &mut self.frame) {
                Ok(ev) => ev,
                Err(e) if e.is_fatal() => return Err(self.fatal(e)),
                Err(_) => TxEvent::Idle,
            };
            match ev {
                TxEvent::Packet {
                    len, csum_blank, ..
                } => {
                    let frame = self.frame.get_mut(..len).unwrap_or(&mut []);
                    if csum_blank && crate::frame::fill_l4_checksum(frame).is_err() {
                        self.drops.csum_skipped += 1;
                    }
                    match buf.get_mut(..len) {
                        Some(dst) => {
                            dst.copy_from_slice(frame);
                            self.kick()?;
                            return Ok(Some(len));
                        }
                        None => self.drops.tx_too_long += 1,
                    }
                }
                TxEvent::Dropped(_) => self.drops.tx_refused += 1,
                TxEvent::Idle => {
                    self.kick()?;
                    return Ok(None);
                }
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<bool, PlatformError> {
        if self.broken.is_some() {
            return Err(PlatformError::NoSuchDomain(self.frontend));
        }
        if frame.is_empty() || frame.len() > MTU + 14 {
            return Err(PlatformError::Unsupported("frames longer than the MTU"));
        }
        let queued = match self.back.queue_rx(frame) {
            Ok(()) => true,
            Err(e) if e.is_fatal() => return Err(self.fatal(e)),
            Err(_) => {
                self.drops.rx_full += 1;
                false
            }
        };
        self.deliver()?;
        self.kick()?;
        Ok(queued)
    }

    fn port(&self) -> EvtchnPort {
        self.port.port()
    }

    fn is_up(&self) -> bool {
        self.broken.is_none()
    }
}
