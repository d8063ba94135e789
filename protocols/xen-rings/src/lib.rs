//! Rings in memory shared with another Xen domain: the byte rings of xenstore, the PV console
//! and vchan ([`byte_ring`]), and ring.h's request/response rings ([`shared_ring`]) with the
//! netif and blkif formats and their sans-IO machines (Netback, Netfront, Blkfront).
//!
//! Layer: protocols (sans-IO, no_std + alloc). Trust: every index and entry written by the peer
//! is hostile: indices are checked (`prod - cons <= size`) before any copy, entries are copied
//! out once and validated. Unsafe: none; grant copies and mappings are the caller's, through
//! small traits. Limits: byte rings are powers of two up to 2^31; ring.h rings fit one page.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blkif;
pub mod byte_ring;
pub mod netif;
pub mod shared_ring;

pub use byte_ring::{ByteRing, Layout, RingError, Role};
pub use shared_ring::{BackRing, FrontRing, SharedRingError, SringLayout};
