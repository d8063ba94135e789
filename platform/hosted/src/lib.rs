//! Hosted backend: one Linux process per simulated domain. Its domid comes from the
//! environment; grants are files in the run's directory that the peer maps; event channels are
//! Unix datagram sockets; the xenstore is a daemon speaking real xs_wire on a Unix socket.

pub mod alloc_meter;
pub mod events;
pub mod grants;
pub mod store;
