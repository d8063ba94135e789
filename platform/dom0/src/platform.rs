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

/// Whether this kernel runs in the control domain (`/proc/xen/capabilities` says `control_d`).
pub fn is_control_domain() -> bool {
    std::fs::read_to_string("/proc/xen/capabilities").is_ok_and(|c| c.contains("control_d"))
}

/// Our domid and name from xenstore: `domid` and `name` relative to our own home (the store
/// resolves them under `/local/domain/<us>`). In the control domain a missing `domid` means
/// 0 and a missing `name` means [`DOM0_NAME`] (xen-init-dom0 may not have written them yet).
pub fn identify(
    store: &mut impl Store,
    control_domain: bool,
) -> Result<(DomId, String), PlatformError> {
    let domid = match store.read(Tx::NONE, "domid") {
        Ok(raw) => {
            let text = std::str::from_utf8(&raw)
                .map_err(|_| StoreError::BadReply("domid is not UTF-8"))?;
            DomId::parse(text.trim_end_matches('\0'))
                .map_err(|_| StoreError::BadReply("domid is not a domain id"))?
        }
        Err(StoreError::Xs(XsErrno::Enoent)) if control_domain => DomId::DOM0,
        Err(e) => return Err(e.into()),
    };
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
    let (domid, name) = identify(&mut store, is_control_domain())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::Xenstored;
    use crate::store::FdTransport;
    use xen_store::blocking::BlockingStore;

    fn dom(d: u32) -> DomId {
        DomId::new(d).unwrap()
    }

    #[test]
    fn a_domu_learns_its_domid_and_name_from_its_own_home() {
        let mut xs = Xenstored::new(&[dom(7)]);
        let mut d0 = BlockingStore::new(FdTransport::new(xs.connect(dom(0))).unwrap());
        d0.write(Tx::NONE, "/local/domain/7/name", b"work").unwrap();
        let mut s = BlockingStore::new(FdTransport::new(xs.connect(dom(7))).unwrap());
        assert_eq!(
            identify(&mut s, false).unwrap(),
            (dom(7), "work".to_string())
        );
        // The control domain before xen-init-dom0 wrote `domid` and `name` is still dom0.
        assert_eq!(
            identify(&mut d0, true).unwrap(),
            (dom(0), DOM0_NAME.to_string())
        );
        d0.write(Tx::NONE, "/local/domain/0/domid", b"0").unwrap();
        d0.write(Tx::NONE, "/local/domain/0/name", b"Domain-0")
            .unwrap();
        assert_eq!(
            identify(&mut d0, true).unwrap(),
            (dom(0), "Domain-0".to_string())
        );
    }

    #[test]
    fn a_domu_without_a_name_or_with_a_bad_domid_is_refused() {
        let mut xs = Xenstored::new(&[dom(7)]);
        let mut s = BlockingStore::new(FdTransport::new(xs.connect(dom(7))).unwrap());
        assert_eq!(
            identify(&mut s, false).unwrap_err(),
            PlatformError::Store(StoreError::Xs(XsErrno::Enoent)),
            "only dom0 gets a default name"
        );
        let mut d0 = BlockingStore::new(FdTransport::new(xs.connect(dom(0))).unwrap());
        assert_eq!(
            identify(&mut d0, false).unwrap_err(),
            PlatformError::Store(StoreError::Xs(XsErrno::Enoent)),
            "no domid and not the control domain"
        );
        d0.write(Tx::NONE, "/local/domain/0/domid", b"0x7").unwrap();
        assert!(matches!(
            identify(&mut d0, true).unwrap_err(),
            PlatformError::Store(StoreError::BadReply(_))
        ));
    }

    #[test]
    fn netfront_netback_and_blkfront_are_the_kernel_drivers_job() {
        let mut xs = Xenstored::new(&[dom(7)]);
        let events = DomEvents::fd_only();
        let store = BlockingStore::new(FdTransport::new(xs.connect(dom(7))).unwrap());
        let mut env: Env<Dom0> = Env {
            domid: dom(7),
            name: "work".into(),
            cmdline: String::new(),
            grants: DomGrants::stand_in(),
            events,
            store,
            clock: HostedClock,
            entropy: HostedEntropy::new().unwrap(),
            console: HostedConsole::default(),
        };
        assert!(matches!(
            Dom0::netfront(&mut env, 0),
            Err(PlatformError::Unsupported(_))
        ));
        assert!(matches!(
            Dom0::netback(&mut env, dom(9), 0),
            Err(PlatformError::Unsupported(_))
        ));
        assert!(matches!(
            Dom0::blkfront(&mut env, 51712),
            Err(PlatformError::Unsupported(_))
        ));
    }
}
