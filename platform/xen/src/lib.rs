//! The Xen backend of the platform boundary: a freestanding x86_64 image that boots as a PVH or a
//! classic PV domain, talks to Xen through hypercalls, and offers consoles, events and grants.
//!
//! Layer: platform (implements `platform-api`: `Events`, `Grants`, `Clock`, `Console`; the
//! xenstore ring is `xen-store`'s transport). Trust: the domain builder's boot structures are
//! parsed with bounds; every shared page is a peer's and is accessed only through `SharedMem`.
//! Unsafe: only in `boot`, `hypercall`, `mm`, `shared` and `heap`, all compiled for images only
//! (`--cfg xen_image`, set by `cargo xtask build`) except `heap`; every other module forbids it.
//! On the host the layouts and the logic (boot-info parsers, ELF notes, grant table, map window,
//! pending scan, PV clock, heap) build and are tested against the header vectors.
//! Limits: [`bootinfo::MAX_MEMMAP`], [`bootinfo::MAX_CMDLINE`], 2048 grant refs, 128 polled
//! ports, PV memory mapped up to 1 GiB, PVH RAM below 4 GiB and grant mappings at 4-5 GiB.
//!
//! Apps: `platform_xen::entry!(xen_main)`, then `platform_xen::env` and `XenPlatform`'s devices (netfront,
//! netback, blkfront). An app crate depends on this crate only for images, and on
//! platform-hosted otherwise, with `[target.'cfg(xen_image)'.dependencies]` and
//! `[target.'cfg(not(xen_image))'.dependencies]`, plus a build.rs printing
//! `cargo::rustc-check-cfg=cfg(xen_image)`. Cargo evaluates those cfgs with RUSTFLAGS when
//! `--target` is explicit, as `cargo xtask build` does: checked with `cargo tree` and an image
//! build (only platform-xen is compiled for the image, only platform-hosted for the host).
//! The app opts in to `cargo xtask build`/`boot-test` with an `image.toml` (`memory` in MiB,
//! `max_stripped_kib`) next to its Cargo.toml once its `#[cfg(xen_image)]` main builds.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod abi;
pub mod bootinfo;
pub mod console_ring;
pub mod frame;
pub mod grant_table;
pub mod heap;
pub mod map_window;
pub mod note;
pub mod pending;
pub mod time;

#[cfg(xen_image)]
mod blkfront;
#[cfg(xen_image)]
mod boot;
#[cfg(xen_image)]
mod events;
#[cfg(xen_image)]
mod grants;
#[cfg(xen_image)]
mod hypercall;
#[cfg(xen_image)]
mod mm;
#[cfg(xen_image)]
mod netback;
#[cfg(xen_image)]
mod netfront;
#[cfg(xen_image)]
mod platform;
#[cfg(xen_image)]
mod runtime;
#[cfg(xen_image)]
mod shared;
#[cfg(xen_image)]
mod store_ring;
#[cfg(xen_image)]
mod xenbus;

#[cfg(xen_image)]
pub use blkfront::XenBlkfront;
#[cfg(xen_image)]
pub use netback::{is_not_ready, NetbackDrops, XenNetback, BACKEND_MAC, FRONTEND_NOT_READY};
#[cfg(xen_image)]
pub use netfront::{NetfrontDrops, XenNetfront};
#[cfg(xen_image)]
pub use platform::{env, netback_wait, XenEntropy, XenNet, XenPlatform, XenStore};
#[cfg(xen_image)]
pub use runtime::*;
