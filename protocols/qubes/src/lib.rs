//! The Qubes protocols over vchan, each sans-IO: qrexec (agent and daemon sides), QubesDB (VM
//! copy and dom0 daemon side), the GUI protocol (agent and daemon decoder), and the qrexec
//! policy (R4.1+ `policy.d` format) that dom0 evaluates.
//!
//! Layer: protocols (no_std + alloc). Trust: everything from the peer is hostile; lengths are
//! capped by [`framing`] before allocation. Unsafe: none.
//! Each protocol module has `wire` (views and reprs, byte-exact with `reference/vectors/`) and
//! the machines of each side.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod bounded;
pub mod framing;
pub mod gui;
pub mod policy;
pub mod qrexec;
pub mod qubesdb;
