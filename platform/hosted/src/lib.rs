//! Hosted backend: one Linux process per simulated domain. Its domid comes from the
//! environment; grants are files in the run's directory that the peer maps; event channels are
//! Unix datagram sockets; the xenstore is a daemon speaking real xs_wire on a Unix socket;
//! network devices are TAP devices and block devices are files. [`Hosted`] bundles them.

pub mod alloc_meter;
pub mod block;
pub mod events;
pub mod grants;
pub mod net;
mod platform;
pub mod store;
mod sys;

pub use platform::{
    env_for, env_from_environment, run_dir_from_environment, Hosted, HostedClock, HostedConsole,
    HostedEntropy, ENV_CMDLINE, ENV_NAME,
};
