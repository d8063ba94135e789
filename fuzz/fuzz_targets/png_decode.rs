//! Fuzz the PNG decoder: any bytes are refused with an error or decoded within small budgets,
//! and pushing the file in pieces gives the same result. CRCs are not checked under cfg(fuzzing).
#![no_main]

use fb_viewer::{decode, Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (w, h, piece) = match data.first() {
        Some(&b) => (u32::from(b % 64) + 1, u32::from(b / 4) + 1, usize::from(b % 13) + 1),
        None => (16, 16, 1),
    };
    let limits = Limits {
        max_memory: 8 << 20,
        max_decoded_bytes: 16 << 20,
        max_ancillary_bytes: 1 << 20,
        max_chunk_len: 1 << 20,
        ..Limits::default()
    };
    let whole = decode(data, &limits, w, h);
    if let Ok(c) = &whole {
        assert!(c.width <= w && c.height <= h);
        assert_eq!(c.pixels.len(), c.width as usize * c.height as usize * 4);
    }
    let mut d = Decoder::new(limits, w, h);
    let pieces = data.chunks(piece).try_for_each(|p| d.push(p)).and_then(|()| d.finish());
    assert_eq!(pieces, whole);
});
