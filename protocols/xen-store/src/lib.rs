//! xen-store: the xenstore protocol (xs_wire) as sans-IO pieces: the wire codec, a client
//! machine, a ring transport over the shared page, and a xenstored core for the hosted backend.
//!
//! Layer: protocols (no_std + alloc). [`wire`] turns bytes into typed requests and replies;
//! [`client`] tracks request ids, watch events and transactions; [`blocking`] drives it over any
//! [`blocking::Transport`] as a `platform_api::Store`; [`ring`] carries the bytes over the shared
//! `xenstore_domain_interface` page; [`server`] is the daemon core.
//! Trust: everything from the peer is hostile: replies and events from xenstored (client side),
//! requests from any domain (server side). Declared lengths are checked against
//! `XENSTORE_PAYLOAD_MAX` before any allocation; a broken peer gets a typed error, never a panic.
//! Unsafe: none. Limits: [`client::Limits`] (outstanding requests, queued events) and
//! [`server::Limits`] (connections, nodes per domain, value size, permissions, watches,
//! transactions and the nodes each may touch, queued output per connection).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blocking;
pub mod client;
pub mod ring;
pub mod server;
pub mod wire;
