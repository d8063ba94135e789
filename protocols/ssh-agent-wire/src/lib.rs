//! ssh-agent-wire: work in progress (issue 6).
#![no_std]
#![forbid(unsafe_code)]
