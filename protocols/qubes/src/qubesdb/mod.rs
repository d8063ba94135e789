//! QubesDB over vchan port 111: the wire format, the VM's local copy ([`Agent`]) and dom0's
//! per-VM daemon side ([`Daemon`], for the simulator). No watches on the wire; they are local.

pub mod wire;
