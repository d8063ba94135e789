//! [`Dom0`]: this backend as one `platform_api::Platform`, and [`env_from_system`], which
//! finds the domain's id and name through xenstore. Devices are Linux's own job here.
#![forbid(unsafe_code)]

use platform_api::{
    BlockDevice, DomId, Env, EvtchnPort, NetDevice, Platform, PlatformError, Store, StoreError, Tx,
    XsErrno,
};
use platform_hosted::{HostedClock, HostedConsole, HostedEntropy};

use crate::events::DomEvents;
use crate::grants::DomGrants;
use crate::store::{open_xenbus, DomStore};

/// Environment variable holding the command line handed to the program (Qubes' `kernelopts`
/// has no meaning for a Linux process; the lab harness passes settings here).
pub const ENV_CMDLINE: &str = "QUBES_DOM0_CMDLINE";

/// The name used for domain 0 when xenstore has no `name` for it.
pub const DOM0_NAME: &str = "dom0";

/// Linux user space on a real Xen domain: dom0's daemons, or commands in a Linux domU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dom0;

/// No network device: in a Linux domain the kernel's netfront/netback do that job.
#[derive(Debug)]
pub enum NoNet {}

/// No block device: in a Linux domain the kernel's blkfront does that job.
#[derive(Debug)]
pub enum NoBlock {}

impl NetDevice for NoNet {
    fn mac(&self) -> [u8; 6] {
        match *self {}
    }
    fn mtu(&self) -> usize {
        match *self {}
    }
    fn recv(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        match *self {}
    }
    fn send(&mut self, _frame: &[u8]) -> Result<bool, PlatformError> {
        match *self {}
    }
    fn port(&self) -> EvtchnPort {
        match *self {}
    }
    fn is_up(&self) -> bool {
        match *self {}
    }
}

impl BlockDevice for NoBlock {
    fn sector_size(&self) -> usize {
        match *self {}
    }
    fn sectors(&self) -> u64 {
        match *self {}
    }
    fn read(&mut self, _lba: u64, _buf: &mut [u8]) -> Result<(), PlatformError> {
        match *self {}
    }
    fn write(&mut self, _lba: u64, _data: &[u8]) -> Result<(), PlatformError> {
        match *self {}
    }
    fn flush(&mut self) -> Result<(), PlatformError> {
        match *self {}
    }
}

impl Platform for Dom0 {
    type Grants = DomGrants;
    type Events = DomEvents;
    type Store = DomStore;
    type Clock = HostedClock;
    type Entropy = HostedEntropy;
    type Console = HostedConsole;
    type Net = NoNet;
    type Block = NoBlock;

    fn netfront(_env: &mut Env<Self>, _devid: u32) -> Result<NoNet, PlatformError> {
        Err(PlatformError::Unsupported(
            "netfront in a Linux domain (the kernel's driver does it)",
        ))
    }

    fn netback(
        _env: &mut Env<Self>,
        _frontend: DomId,
        _devid: u32,
    ) -> Result<NoNet, PlatformError> {
        Err(PlatformError::Unsupported(
            "netback in a Linux domain (the kernel's driver does it)",
        ))
    }

    fn blkfront(_env: &mut Env<Self>, _devid: u32) -> Result<NoBlock, PlatformError> {
        Err(PlatformError::Unsupported(
            "blkfront in a Linux domain (the kernel's driver does it)",
        ))
    }
}

/// Our domid and name from xenstore: `domid` and `name` relative to our own home (the store
/// resolves them under `/local/domain/<us>`). Dom0 without a `name` node is [`DOM0_NAME`].
pub fn identify(store: &mut impl Store) -> Result<(DomId, String), PlatformError> {
    let raw = store.read(Tx::NONE, "domid")?;
    let text = std::str::from_utf8(&raw).map_err(|_| StoreError::BadReply("domid is not UTF-8"))?;
    let domid = DomId::parse(text.trim_end_matches('\0'))
        .map_err(|_| StoreError::BadReply("domid is not a domain id"))?;
    let name = match store.read(Tx::NONE, "name") {
        Ok(v) => String::from_utf8(v).map_err(|_| StoreError::BadReply("name is not UTF-8"))?,
        Err(StoreError::Xs(XsErrno::Enoent)) if domid == DomId::DOM0 => DOM0_NAME.to_string(),
        Err(e) => return Err(e.into()),
    };
    Ok((domid, name))
}

/// The environment of this Linux domain: `/dev/xen/{evtchn,xenbus,gntdev,gntalloc}` opened,
/// domid and name read from xenstore, the command line from [`ENV_CMDLINE`] (else empty).
/// Refuses to start when a device is missing (one line naming its module) or getrandom(2)
/// does not work.
pub fn env_from_system() -> Result<Env<Dom0>, PlatformError> {
    let entropy = HostedEntropy::new()?;
    let events = DomEvents::open()?;
    let mut store = open_xenbus(&events)?;
    let grants = DomGrants::open()?;
    let (domid, name) = identify(&mut store)?;
    Ok(Env {
        domid,
        name,
        cmdline: std::env::var(ENV_CMDLINE).unwrap_or_default(),
        grants,
        events,
        store,
        clock: HostedClock,
        entropy,
        console: HostedConsole::default(),
    })
}
