//! vault-store: work in progress (issues 6 and 7).
#![no_std]
#![forbid(unsafe_code)]
