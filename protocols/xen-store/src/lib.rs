//! xen-store: work in progress (see issue 2).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
