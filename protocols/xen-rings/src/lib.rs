//! Rings in memory shared with another Xen domain: the byte rings of xenstore, the PV console
//! and vchan, validated once here so that `xen-store` and `vchan` add only their framing.
//!
//! Layer: protocols (sans-IO, no_std + alloc). Trust: every index written by the peer is hostile
//! and is checked (`prod - cons <= size`) before any copy. Unsafe: none. Limits: ring sizes are
//! powers of two up to 2^31.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate alloc;

pub mod blkif;
pub mod byte_ring;
pub mod netif;
pub mod shared_ring;

pub use byte_ring::{ByteRing, Layout, RingError, Role};
pub use shared_ring::{BackRing, FrontRing, SharedRingError, SringLayout};
