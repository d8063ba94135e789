//! Screenshots as PNG: the shared writer (`png-write`), re-exported where the sim's users and
//! tests have always found it.

pub use png_write::{adler32, bgrx_to_rgb, crc32, encode_bgrx, encode_rgb};
