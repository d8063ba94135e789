//! qubes-dom0d: dom0's daemons (QubesDB, qrexec control + dom0 → VM calls, GUI handshake) for
//! one domain, single-threaded and generic over `Platform` (hosted in tests, dom0 in the lab).
#![forbid(unsafe_code)]

pub mod args;
pub mod entries;
pub mod link;
pub mod png;
pub mod session;
