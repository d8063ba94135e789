//! blkif.h (PV block) ring: wire entries and the frontend machine that submits requests and
//! validates the backend's responses.

pub mod wire;

pub use wire::{DirectRequest, DiscardRequest, IndirectRequest, Request, Response, Segment};

#[cfg(test)]
mod tests;
