//! qrexec for several domains over any `Platform`: dom0's routing daemon ([`dom0`]), the Linux
//! VM's agent ([`vm`]), the local socket of their commands ([`local`]) and the forwarder.
#![forbid(unsafe_code)]

pub mod dom0;
pub mod forward;
pub mod local;
pub mod relay;
pub mod vm;
