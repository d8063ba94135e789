//! Dom0 backend: Linux user space on a real Xen domain (dom0, or a Linux domU), over
//! `/dev/xen/{gntalloc,gntdev,evtchn,xenbus}`. [`Dom0`] bundles it for the run loop.
//!
//! Shared pages are device mmaps touched only through `SharedMem`'s atomic accessors; the
//! ioctl layouts are checked against the installed kernel headers by the `abi` tests.

mod abi;
pub mod events;
pub mod grants;
pub mod mem;
mod platform;
pub mod store;
mod sys;

pub use events::{DomEvents, DomPort, FdPort, FIRST_PSEUDO_PORT};
pub use grants::{DomGrants, DomMem, UnmapNotify, MAX_PAGES};
pub use mem::Region;
pub use platform::{
    env_from_system, identify, is_control_domain, Dom0, NoBlock, NoNet, DOM0_NAME, ENV_CMDLINE,
};
pub use store::{open_xenbus, DomStore, FdTransport, ENV_XENSTORED_PATH};
pub use sys::{Device, EVTCHN, GNTALLOC, GNTDEV, XENBUS};
