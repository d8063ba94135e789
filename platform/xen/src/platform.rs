//! `platform_api::Platform` on Xen: [`XenPlatform`], the [`env`] an app's Xen main builds, the
//! RDRAND entropy source, and the network device of either role.
#![forbid(unsafe_code)]

use alloc::string::String;

use platform_api::{
    DomId, Entropy, Env, EvtchnPort, NetDevice, Platform, PlatformError, Store, StoreError, Tx,
};
use xen_store::blocking::{BlockingStore, Transport};

use crate::blkfront::XenBlkfront;
use crate::netback::XenNetback;
use crate::netfront::XenNetfront;
use crate::{boot, StoreRing, Xen, XenClock, XenConsole, XenEvents, XenGrants};

/// The xenstore client over our ring.
pub type XenStore = BlockingStore<StoreRing>;

/// Random bytes from RDRAND. [`env`] refuses to start on a CPU without it.
#[derive(Debug)]
pub struct XenEntropy(());

/// RDRAND may come back empty while the generator reseeds; Intel's advice is 10 retries.
const RDRAND_RETRIES: u32 = 10;

impl XenEntropy {
    /// `None` when the CPU has no RDRAND or it yields nothing.
    pub fn new() -> Option<Self> {
        if !boot::has_rdrand() {
            return None;
        }
        draw().map(|_| Self(()))
    }
}

fn draw() -> Option<u64> {
    (0..RDRAND_RETRIES).find_map(|_| boot::rdrand64())
}

impl Entropy for XenEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // A generator that stays empty through every retry is broken hardware: stop
            // rather than hand out predictable bytes.
            let Some(v) = draw() else {
                panic!("RDRAND returned no data {RDRAND_RETRIES} times in a row");
            };
            let b = v.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// A network interface of either role.
#[derive(Debug)]
pub enum XenNet {
    /// Our link to our netvm.
    Front(XenNetfront),
    /// Serving one client's netfront.
    Back(XenNetback),
}

impl NetDevice for XenNet {
    fn mac(&self) -> [u8; 6] {
        match self {
            Self::Front(d) => d.mac(),
            Self::Back(d) => d.mac(),
        }
    }
    fn mtu(&self) -> usize {
        match self {
            Self::Front(d) => d.mtu(),
            Self::Back(d) => d.mtu(),
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        match self {
            Self::Front(d) => d.recv(buf),
            Self::Back(d) => d.recv(buf),
        }
    }
    fn send(&mut self, frame: &[u8]) -> Result<bool, PlatformError> {
        match self {
            Self::Front(d) => d.send(frame),
            Self::Back(d) => d.send(frame),
        }
    }
    fn port(&self) -> EvtchnPort {
        match self {
            Self::Front(d) => d.port(),
            Self::Back(d) => d.port(),
        }
    }
    fn is_up(&self) -> bool {
        match self {
            Self::Front(d) => d.is_up(),
            Self::Back(d) => d.is_up(),
        }
    }
}

/// The Xen backend as a [`Platform`].
#[derive(Debug)]
pub struct XenPlatform;

impl Platform for XenPlatform {
    type Grants = XenGrants;
    type Events = XenEvents;
    type Store = XenStore;
    type Clock = XenClock;
    type Entropy = XenEntropy;
    type Console = XenConsole;
    type Net = XenNet;
    type Block = XenBlkfront;

    fn netfront(env: &mut Env<Self>, devid: u32) -> Result<XenNet, PlatformError> {
        crate::netfront::connect(env, devid).map(XenNet::Front)
    }

    /// Does not wait: [`crate::netback::FRONTEND_NOT_READY`] until the frontend has published
    /// its rings (call again), so a netvm's loop goes on serving its other links meanwhile.
    fn netback(env: &mut Env<Self>, frontend: DomId, devid: u32) -> Result<XenNet, PlatformError> {
        crate::netback::connect(env, frontend, devid).map(XenNet::Back)
    }

    fn blkfront(env: &mut Env<Self>, devid: u32) -> Result<XenBlkfront, PlatformError> {
        crate::blkfront::connect(env, devid)
    }
}

/// [`Platform::netback`], waiting for the frontend (up to 10 minutes: its kernel may still be
/// booting) for a program that serves one vif and nothing else meanwhile.
pub fn netback_wait(
    env: &mut Env<XenPlatform>,
    frontend: DomId,
    devid: u32,
) -> Result<XenNet, PlatformError> {
    crate::netback::connect_wait(env, frontend, devid, crate::xenbus::FRONTEND_PATIENCE)
        .map(XenNet::Back)
}

fn text(v: alloc::vec::Vec<u8>) -> String {
    String::from_utf8_lossy(&v).trim().into()
}

/// Everything an app gets, from the running domain: our domid and name (xenstore `domid`,
/// `name`), the command line, grants, events, the store (with watches), clock, RDRAND
/// entropy (refused without it) and the console. Takes the store ring: call once.
///
/// `env.events` already waits on the store's port, and devices opened through
/// [`XenPlatform`] bind their ports in it, so one `env.events.wait` wakes for all of them.
/// The store client may read a watch event while waiting for a reply: drain
/// `Watches::poll_watch` until `None` before waiting.
pub fn env(xen: &mut Xen) -> Result<Env<XenPlatform>, PlatformError> {
    let entropy = XenEntropy::new().ok_or(PlatformError::Unsupported(
        "a CPU without RDRAND (no entropy source)",
    ))?;
    let grants = xen
        .grants()
        .ok_or(PlatformError::Unsupported("a domain without a grant table"))?;
    let ring = xen.take_store().ok_or(PlatformError::Unsupported(
        "a domain without a xenstore ring",
    ))?;
    let mut events = xen.events();
    if let Some(p) = ring.port() {
        events.watch(p);
    }
    let mut store = BlockingStore::new(ring);
    let domid = text(store.read(Tx::NONE, "domid")?);
    let domid = DomId::parse(&domid)
        .map_err(|_| PlatformError::Store(StoreError::BadReply("domid is not a domain id")))?;
    let name = text(store.read(Tx::NONE, "name")?);
    grants.set_own_domid(domid);
    Ok(Env {
        domid,
        name,
        cmdline: xen.cmdline().into(),
        grants,
        events,
        store,
        clock: xen.clock(),
        entropy,
        console: XenConsole,
    })
}
