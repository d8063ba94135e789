//! qubes-dom0d: dom0's side for one unikernel domain (QubesDB daemon, qrexec control channel
//! with dom0 → VM calls, a GUI daemon handshake), generic over the platform backend.
//!
//! It runs on `platform-hosted` (tests, against the hosted unikernel binaries) and on
//! `platform-dom0` (the Xen lab's Linux dom0). Single-threaded: one loop pumps every vchan and
//! sleeps in `Events::wait`; every wait is bounded.
#![forbid(unsafe_code)]

pub mod args;
pub mod entries;
pub mod link;
pub mod png;
pub mod session;
