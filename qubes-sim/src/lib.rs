//! qubes-sim: dom0 in a process. The hosted xenstored, one qrexec daemon per running qube with
//! the policy evaluator, the qvm-* tools over a JSON registry, and the VM-side qrexec agent.
//!
//! Qubes run as Linux processes on the hosted backend (`QUBES_HOSTED_DOMID`,
//! `QUBES_HOSTED_DIR`) and reach dom0 only through xs_wire, vchan and qrexec messages; the
//! admin socket is dom0-internal (tools to daemon), as qubesd's is.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod chan;
pub mod cli;
pub mod client_vm;
pub mod daemon;
pub mod dom0call;
pub mod local;
pub mod policy;
pub mod pump;
pub mod qrexecd;
pub mod registry;
