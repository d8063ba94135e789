//! blkif.h (PV block) ring: wire entries and the frontend machine that submits requests and
//! validates the backend's responses.

pub mod front;
pub mod wire;

pub use front::{BlkError, BlkOp, BlkPeerError, BlkStatus, Blkfront, Completion};
pub use wire::{DirectRequest, DiscardRequest, IndirectRequest, Request, Response, Segment};

#[cfg(test)]
mod tests;
