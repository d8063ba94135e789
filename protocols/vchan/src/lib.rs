//! vchan: a libxenvchan-compatible byte stream between two Xen domains (server and client),
//! byte-for-byte the shared page layout, ring placement and notify protocol of Xen's C library.
//!
//! Modules: [`layout`] (the `vchan_interface` page, ring orders, the server's size choice),
//! [`Server`]/[`Client`] (non-blocking endpoints over any [`platform_api::SharedMem`] and
//! [`platform_api::Notify`]), [`setup`] (blocking xenstore/grant/event handshakes and blocking
//! helpers over the platform traits), and `test_utils` (feature `test-utils`: in-memory fakes).
//!
//! Layer: protocols (sans-IO core, no_std + alloc); it talks to the store only through
//! [`platform_api::Store`]. Trust: the peer can write any byte of the control page and ring pages
//! at any time; orders are read once and validated, `prod - cons` is checked on every access
//! (by `xen_rings::ByteRing`), a live byte other than 0/1/2 is refused, and a broken peer leaves
//! the endpoint in a sticky typed error, never a panic. Unsafe: none.
//! Limits: rings of 1 KiB to 1 MiB each (orders 10..=20); at most 512 grant refs per channel.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "test-utils"))]
extern crate std;

mod endpoint;
mod error;
mod joined;
pub mod layout;
pub mod setup;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use endpoint::{grant_list, Client, Interest, PeerState, Server};
pub use error::{Error, LayoutError, PeerError, SetupError};
pub use layout::{Geometry, Offer, Placement, Ring};

#[cfg(test)]
mod tests;
