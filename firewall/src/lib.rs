//! The decisions of the Qubes firewall netvm: rule parsing, packet classification, NAT and a DNS
//! cache, as pure functions and bounded tables that return verdicts and never do I/O ("decide vs do").
//!
//! * **Layer**: app logic (DESIGN.md); devices, QubesDB sessions and the run loop live elsewhere.
//! * **Trust**: every frame (clients and uplink), every DNS answer and every QubesDB value is hostile:
//!   parse errors are typed, nothing panics, a bad rule set becomes deny-all, tables are bounded.
//! * **Unsafe**: none (`forbid(unsafe_code)`).
//! * **Limits**: [`Limits`] bounds the NAT table (full: evict the least recently used flow), the
//!   DNS cache (full: expired records, then the one closest to expiry) and the client count;
//!   [`rules::MAX_RULES`] per client. IPv4 fragments and IPv6 extension headers are dropped.
//!
//! Modules: [`rules`] rule text -> `Rule`; [`config`] QubesDB keys -> `NetConfig`; [`packet`]
//! frame parse and in-place rewrites; [`classify`] frame -> `Verdict`; [`nat`] bounded
//! translation/conntrack table; [`dns`] resolver cache.
//!
//! Frames are read through `smoltcp::wire` (not etherparse): its checked views over `&mut [u8]`
//! let NAT rewrite addresses, ports and checksums in place, and STYLE.md takes its view/Repr shape.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod app;
pub mod bench;
pub mod classify;
pub mod config;
pub mod dns;
pub mod nat;
pub mod packet;
pub mod resolve;
pub mod router;
pub mod rules;
pub mod ruleset;

pub use classify::{ClientAddrs, ClientId, DropReason, Firewall, Limits, RejectReason, Verdict};
pub use config::NetConfig;
pub use rules::{Rule, RuleSet};
