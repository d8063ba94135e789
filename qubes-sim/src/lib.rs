//! qubes-sim: dom0 in a process (hosted xenstored, a qrexec daemon, a QubesDB daemon and a GUI
//! daemon per qube, qvm-* tools over a JSON registry) and the Linux qube's side of each protocol.
//!
//! Layer: a std application above `qubes`, `vchan` and `platform-hosted`; a qube is a process
//! (`QUBES_HOSTED_DOMID`, `QUBES_HOSTED_DIR`). Trust: every byte from a qube (xenstore, control
//! and data vchans, QubesDB and GUI messages, dumped framebuffers, open-in-vm names) is hostile
//! and goes through the sans-IO machines or a checked parser; the admin socket and the
//! qube-local agent socket belong to dom0 and to the qube itself. Unsafe: none. Limits: 8
//! channels per agent, 16 routed calls per qube, 64 admin connections, 256 data ports per qube,
//! 16 QubesDB connections per qube, every queue between threads bounded (by size or by its
//! producers' limits), a deadline on every wait except a running call's, which ends when either
//! side or its domain goes.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod capture;
pub mod chan;
pub mod cli;
pub mod client_vm;
pub mod daemon;
pub mod devices;
pub mod dom0call;
pub mod firewall;
pub mod gui;
pub mod gui_vm;
pub mod helpers;
pub mod local;
pub mod netns;
pub mod openinvm;
pub mod png;
pub mod policy;
pub mod pump;
pub mod qdb;
pub mod qdb_vm;
pub mod qrexecd;
pub mod registry;
pub mod server;
pub mod xwindow;

/// The tools a Linux qube finds on its `PATH` (links to the sim's binary).
pub const VM_TOOLS: [&str; 9] = [
    "qrexec-client-vm",
    "qvm-open-in-vm",
    "qvm-open-in-dvm",
    "qubesdb-read",
    "qubesdb-list",
    "qubesdb-write",
    "qubesdb-rm",
    "qubesdb-multiread",
    "qubesdb-watch",
];
