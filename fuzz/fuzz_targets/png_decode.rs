//! Fuzz the PNG decoder: any bytes are refused with an error or decoded within small budgets.
//! CRCs are not checked under cfg(fuzzing), so mutations reach IHDR, PLTE, tRNS and inflate.
#![no_main]

use fb_viewer::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (w, h) = match data.first() {
        Some(&b) => (u32::from(b % 64) + 1, u32::from(b / 4) + 1),
        None => (16, 16),
    };
    let limits = Limits {
        max_memory: 8 << 20,
        max_decoded_bytes: 16 << 20,
        max_ancillary_bytes: 1 << 20,
        max_chunk_len: 1 << 20,
        ..Limits::default()
    };
    if let Ok(c) = decode(data, &limits, w, h) {
        assert!(c.width <= w && c.height <= h);
        assert_eq!(c.pixels.len(), c.width as usize * c.height as usize * 4);
    }
});
