//! The disposable PNG viewer: a bounded streaming PNG decoder (own inflater) scaled into a BGRX
//! canvas, and the run-loop app serving qubes.OpenInVM into a GUI window. Budgets come first.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
mod chunk;
mod decode;
mod error;
mod font;
mod header;
mod inflate;
pub mod openinvm;
pub mod rgba;
pub mod view;

pub use chunk::{crc32, crc32_update, Chunk, ChunkKind, Chunks, CRC_INIT, SIGNATURE};
pub use decode::{decode, fit, Canvas, Decoder, Limits, Plan};
pub use error::{Limit, PngError};
pub use header::{ColorType, Header};
