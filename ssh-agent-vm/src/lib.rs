//! ssh-agent-vm unikernel (being written).
#![forbid(unsafe_code)]
