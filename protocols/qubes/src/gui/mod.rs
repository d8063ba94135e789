//! The Qubes GUI protocol over vchan port 6000: the wire format, the VM's agent ([`Agent`]) and
//! the daemon half (`Daemon`, for the simulator's GUI daemon).

pub mod wire;
