//! Property tests: arbitrary bytes never panic; images from the reference encoder decode to the
//! reference decoder's pixels, at full size and downscaled.

mod common;

use common::{chunk, encode, ihdr, reference, sample_ref};
use fb_viewer::{decode, Decoder, Limits, SIGNATURE};
use proptest::prelude::*;

fn small_limits() -> Limits {
    Limits {
        max_memory: 4 << 20,
        max_decoded_bytes: 4 << 20,
        ..Limits::default()
    }
}

/// (colour type, bit depth) pairs PNG allows.
fn format() -> impl Strategy<Value = (png::ColorType, png::BitDepth)> {
    use png::BitDepth::*;
    use png::ColorType::*;
    prop_oneof![
        Just((Grayscale, One)),
        Just((Grayscale, Two)),
        Just((Grayscale, Four)),
        Just((Grayscale, Eight)),
        Just((Grayscale, Sixteen)),
        Just((Rgb, Eight)),
        Just((Rgb, Sixteen)),
        Just((GrayscaleAlpha, Eight)),
        Just((GrayscaleAlpha, Sixteen)),
        Just((Rgba, Eight)),
        Just((Rgba, Sixteen)),
    ]
}

fn image() -> impl Strategy<Value = (u32, u32, png::ColorType, png::BitDepth, Vec<u8>)> {
    (1u32..48, 1u32..48, format()).prop_flat_map(|(w, h, (c, d))| {
        let bits = c.samples() * d as usize;
        let len = (w as usize * bits).div_ceil(8) * h as usize;
        (
            Just(w),
            Just(h),
            Just(c),
            Just(d),
            proptest::collection::vec(any::<u8>(), len),
        )
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, &small_limits(), 64, 64);
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&bytes);
        let _ = decode(&f, &small_limits(), 64, 64);
    }

    #[test]
    fn chunk_soup_with_valid_crcs_never_panics(
        w in 1u32..300, h in 1u32..300, depth in prop::sample::select(vec![1u8, 2, 4, 8, 16]),
        color in prop::sample::select(vec![0u8, 2, 3, 4, 6]), interlace in 0u8..2,
        chunks in proptest::collection::vec(
            (prop::sample::select(vec![*b"PLTE", *b"tRNS", *b"IDAT", *b"tEXt", *b"IEND", *b"ABCD"]),
             proptest::collection::vec(any::<u8>(), 0..600)), 0..8),
    ) {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&ihdr(w, h, depth, color, interlace));
        for (kind, data) in &chunks {
            f.extend_from_slice(&chunk(kind, data));
        }
        let _ = decode(&f, &small_limits(), 64, 64);
    }

    #[test]
    fn reference_encoded_images_decode_to_reference_pixels((w, h, c, d, data) in image()) {
        let f = encode(w, h, c, d, &data);
        let want = reference(&f).unwrap();
        let got = decode(&f, &small_limits(), 1024, 1024).unwrap();
        prop_assert_eq!((got.width, got.height), (w, h));
        prop_assert_eq!(got.pixels, want.2);
    }

    #[test]
    fn downscaled_images_are_nearest_samples_of_reference(
        (w, h, c, d, data) in image(), mw in 1u32..20, mh in 1u32..20,
    ) {
        let f = encode(w, h, c, d, &data);
        let want = reference(&f).unwrap();
        let got = decode(&f, &small_limits(), mw, mh).unwrap();
        prop_assert!(got.width <= mw && got.height <= mh && got.width <= w && got.height <= h);
        prop_assert_eq!(got.pixels, sample_ref(&want, got.width, got.height));
    }

    #[test]
    fn pushing_in_pieces_gives_the_same_result_as_whole(
        (w, h, c, d, data) in image(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        damage in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let mut f = encode(w, h, c, d, &data);
        if let Some((at, x)) = damage {
            let i = at.index(f.len());
            f[i] ^= x;
        }
        let whole = decode(&f, &small_limits(), 20, 20);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(f.len() + 1)).collect();
        cuts.push(0);
        cuts.push(f.len());
        cuts.sort_unstable();
        let mut dec = Decoder::new(small_limits(), 20, 20);
        let mut r = Ok(());
        for pair in cuts.windows(2) {
            r = dec.push(&f[pair[0]..pair[1]]);
            if r.is_err() {
                break;
            }
        }
        let pieces = r.and_then(|()| dec.finish());
        prop_assert_eq!(pieces, whole);
    }
}

/// Found by fuzzing: a zlib stream that fails early; the result must not depend on where the
/// file is split.
#[test]
fn stream_error_after_last_scanline_does_not_depend_on_split() {
    let idat = [
        0x78, 0x9c, 0x63, 0x62, 0x1e, 0x00, 0x02, 0xfb, 0xff, 0x0c, 0x5d, 0x0c, 0x56, 0xab, 0x19,
        0x18, 0x2c, 0xa3, 0x81, 0x58, 0x1a, 0x42, 0xc3, 0x29, 0x6a, 0x43, 0x7f, 0x00, 0x00, 0x00,
        0x4b,
    ];
    let plte = [
        0x00, 0x27, 0x00, 0x00, 0x77, 0xff, 0xff, 0x00, 0xff, 0xff, 0x77, 0x00,
    ];
    let f = common::file(
        &common::ihdr(9, 16, 2, 3, 0),
        &[common::chunk(b"PLTE", &plte)],
        &idat,
    );
    let whole = decode(&f, &small_limits(), 8, 8);
    for piece in 1..f.len() {
        let mut d = Decoder::new(small_limits(), 8, 8);
        let r = f
            .chunks(piece)
            .try_for_each(|p| d.push(p))
            .and_then(|()| d.finish());
        assert_eq!(r, whole, "piece size {piece}");
    }
    // The stream's third symbol copies from before its start ("invalid distance too far back"
    // in zlib); the own inflater refuses it wherever the file is split.
    assert_eq!(whole, Err(fb_viewer::PngError::Inflate));
}
