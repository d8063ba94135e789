//! The one event loop of every unikernel (being written: see issue 4 and the runloop contract).
//! Single-threaded, woken by event channels, generic over `platform_api::Platform`.
#![no_std]
#![forbid(unsafe_code)]
