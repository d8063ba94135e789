//! Logic of the disposable PNG viewer: a bounded, streaming PNG decoder that scales rows into a
//! window-sized BGRX canvas. No I/O; budgets are checked before anything is allocated.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
mod chunk;
mod decode;
mod error;
mod font;
mod header;
pub mod openinvm;
pub mod view;

pub use chunk::{crc32, crc32_update, Chunk, ChunkKind, Chunks, CRC_INIT, SIGNATURE};
pub use decode::{decode, fit, Canvas, Decoder, Limits, Plan};
pub use error::{Limit, PngError};
pub use header::{ColorType, Header};
