//! xen-smoke: the smallest unikernel on platform-xen. It prints, reads its name and domid from
//! xenstore, writes a key, checks events and the clock, and powers off when asked to.
//!
//! Built as an image only by `cargo xtask build` (`--cfg xen_image`); a host build is a stub.
#![cfg_attr(xen_image, no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(xen_image)]
mod blk;
mod cksum;
mod echo;
#[cfg(xen_image)]
mod net;
#[cfg(xen_image)]
mod smoke;
#[cfg(xen_image)]
mod vchan_check;

#[cfg(xen_image)]
platform_xen::entry!(smoke::main);

#[cfg(not(xen_image))]
fn main() {
    println!(
        "xen-smoke is a Xen image: `cargo xtask build` makes target/unikernels/xen-smoke/vmlinuz"
    );
}
