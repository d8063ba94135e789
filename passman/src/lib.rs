//! passman unikernel (being written).
#![forbid(unsafe_code)]
