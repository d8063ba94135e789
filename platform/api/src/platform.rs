//! The whole platform a unikernel runs on, as one bundle of the traits above, plus the devices
//! (network interfaces, block devices) and xenstore watches the apps and the run loop need.
//!
//! A backend (`platform-xen`, `platform-hosted`) implements [`Platform`] once; `lib/runloop` and
//! the apps are generic over it, so the same app code runs in the sim and as a Xen image.

use alloc::string::String;

use crate::{
    Clock, Console, DomId, Entropy, Events, EvtchnPort, Grants, PlatformError, Store, StoreError,
};

/// A network interface carrying whole Ethernet frames: a netfront (our link to our netvm), a
/// netback vif (serving one client's netfront), or in hosted mode a TAP device.
/// Non-blocking: the run loop waits on [`NetDevice::port`] and then drains.
pub trait NetDevice {
    /// Our MAC address on this link.
    fn mac(&self) -> [u8; 6];
    /// Largest frame payload (without the 14-byte Ethernet header) the link carries.
    fn mtu(&self) -> usize;
    /// Takes one received frame into `buf`; `Ok(None)` when none is waiting. A frame longer
    /// than `buf` is dropped (counted by the backend), never truncated.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PlatformError>;
    /// Queues one frame for sending; `Ok(false)` when the transmit side is full (retry after
    /// the next wake-up). A frame longer than `mtu() + 14` is refused with an error.
    fn send(&mut self, frame: &[u8]) -> Result<bool, PlatformError>;
    /// The port whose events mean this device may have work (the run loop waits on it).
    fn port(&self) -> EvtchnPort;
    /// False once the peer has gone away (frontend closed, TAP removed): the owner drops it.
    fn is_up(&self) -> bool;
}

/// A block device of fixed-size sectors: blkfront on Xen, a file in hosted mode. Blocking.
/// After [`BlockDevice::flush`] returns, every write before it is durable (barrier + flush on
/// Xen, `fsync` in hosted mode).
pub trait BlockDevice {
    /// Bytes per sector (512 or 4096).
    fn sector_size(&self) -> usize;
    /// Number of sectors.
    fn sectors(&self) -> u64;
    /// Reads whole sectors from `lba` into `buf` (`buf.len()` a multiple of the sector size).
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), PlatformError>;
    /// Writes whole sectors at `lba` (`data.len()` a multiple of the sector size).
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), PlatformError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), PlatformError>;
}

/// A fired xenstore watch: the path that changed and the token given to [`Watches::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (or the watched node itself, once, when the watch is set).
    pub path: String,
    /// The caller's token.
    pub token: String,
}

/// Xenstore watches on top of [`Store`]: set, remove, and take fired events without blocking.
pub trait Watches {
    /// Watches `path` and everything below it; fires once at once.
    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError>;
    /// Removes a watch set with the same path and token.
    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError>;
    /// A fired watch, reading what has arrived from xenstored without waiting.
    fn poll_watch(&mut self) -> Result<Option<WatchEvent>, StoreError>;
    /// The port that signals xenstored has sent something (Xen: the store ring's event
    /// channel; hosted: the socket as a pseudo-port), or `None` if the loop must poll.
    fn port(&self) -> Option<EvtchnPort>;
}

/// Everything a unikernel gets from its backend, as fields so parts can be borrowed apart
/// (a vchan setup needs the grants, the events and the store at once).
pub struct Env<P: Platform> {
    /// Our domain id.
    pub domid: DomId,
    /// Our name (xenstore `name`).
    pub name: String,
    /// The kernel command line (Qubes' `kernelopts`; hosted: `QUBES_HOSTED_CMDLINE`).
    pub cmdline: String,
    /// Grant tables.
    pub grants: P::Grants,
    /// Event channels; [`Events::wait`] is the loop's only blocking point.
    pub events: P::Events,
    /// Our xenstore connection.
    pub store: P::Store,
    /// Monotonic time.
    pub clock: P::Clock,
    /// Random bytes.
    pub entropy: P::Entropy,
    /// Log lines.
    pub console: P::Console,
}

impl<P: Platform> core::fmt::Debug for Env<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Env")
            .field("domid", &self.domid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One backend, as a bundle of types plus device constructors. Devices are found the way Xen's
/// toolstack describes them in xenstore (`device/vif/<id>`, `backend/vif/<fe>/<id>`,
/// `device/vbd/<id>`); a backend that lacks a device kind returns `Unsupported`.
pub trait Platform: Sized {
    /// Grant tables.
    type Grants: Grants;
    /// Event channels.
    type Events: Events;
    /// The xenstore connection.
    type Store: Store + Watches;
    /// Monotonic clock.
    type Clock: Clock;
    /// Entropy source.
    type Entropy: Entropy;
    /// Console.
    type Console: Console;
    /// A network interface (either role).
    type Net: NetDevice;
    /// A block device.
    type Block: BlockDevice;

    /// Our netfront `device/vif/<devid>`: the link to our netvm.
    fn netfront(env: &mut Env<Self>, devid: u32) -> Result<Self::Net, PlatformError>;
    /// Serves the netfront of `frontend`'s vif `devid` that the toolstack put under our
    /// `backend/vif/<frontend>/<devid>`.
    fn netback(
        env: &mut Env<Self>,
        frontend: DomId,
        devid: u32,
    ) -> Result<Self::Net, PlatformError>;
    /// Our blkfront `device/vbd/<devid>`.
    fn blkfront(env: &mut Env<Self>, devid: u32) -> Result<Self::Block, PlatformError>;
}
