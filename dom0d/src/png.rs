//! Screenshots as PNG: the shared writer (`png-write`), re-exported where dom0d's users and
//! tests have always found it.

pub use png_write::{encode_bgrx, MAX_SIDE};
