//! netif.h (PV network) rings: wire entries, the backend that serves a client's netfront and
//! the frontend of our own uplink; both are sans-IO over two shared ring pages.

pub mod wire;

pub use wire::{Extra, ExtraInfo, RxRequest, RxResponse, TxRequest, TxResponse};

#[cfg(test)]
mod tests;
