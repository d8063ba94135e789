//! Hostile files: dimension, zlib and chunk-length bombs, truncation and CRC damage. Each is
//! refused or downscaled within the budgets, quickly, and never panics.

mod common;

use common::{chunk, encode, file, ihdr, zlib_zeros};
use fb_viewer::{decode, Limit, Limits, PngError};
use std::time::{Duration, Instant};

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    r
}

#[test]
fn zlib_helper_inflates_to_zeros() {
    let z = zlib_zeros(100_000);
    let v = miniz_oxide::inflate::decompress_to_vec_zlib(&z).unwrap();
    assert_eq!(v.len(), 100_000);
    assert!(v.iter().all(|&b| b == 0));
}

#[test]
fn huge_dimensions_with_tiny_idat_are_refused_before_allocating() {
    let f = file(&ihdr(100_000, 100_000, 8, 6, 0), &[], &zlib_zeros(1000));
    let r = timed(|| decode(&f, &Limits::default(), 1920, 1080));
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::Pixels | Limit::DecodedBytes,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn huge_one_bit_image_beyond_decode_budget_is_refused() {
    let f = file(&ihdr(100_000, 100_000, 1, 0, 0), &[], &zlib_zeros(1000));
    let limits = Limits {
        max_pixels: u64::MAX,
        ..Limits::default()
    };
    let r = decode(&f, &limits, 1920, 1080);
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::DecodedBytes,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn large_image_within_budget_is_downscaled_into_the_window() {
    // 16000 x 16000 one-bit grey: 32 MB of scanlines, shown at 1024 x 1024.
    let (w, h) = (16_000u32, 16_000u32);
    let raw = u64::from(h) * (u64::from(w).div_ceil(8) + 1);
    let f = file(&ihdr(w, h, 1, 0, 0), &[], &zlib_zeros(raw));
    let c = timed(|| decode(&f, &Limits::default(), 1024, 768)).unwrap();
    assert_eq!((c.width, c.height), (768, 768));
    assert!(c.pixels.chunks_exact(4).all(|p| p == [0, 0, 0, 255]));
}

#[test]
fn zlib_bomb_of_one_gigabyte_stops_at_the_last_scanline() {
    let z = zlib_zeros(1 << 30);
    let f = file(&ihdr(1, 1, 8, 0, 0), &[], &z);
    let c = timed(|| decode(&f, &Limits::default(), 64, 64)).unwrap();
    assert_eq!(
        (c.width, c.height, c.pixels.as_slice()),
        (1, 1, &[0, 0, 0, 255][..])
    );
}

#[test]
fn zlib_bomb_behind_a_large_header_is_refused_before_inflating() {
    let z = zlib_zeros(1 << 30);
    let f = file(&ihdr(16_384, 16_384, 8, 6, 0), &[], &z);
    let r = timed(|| decode(&f, &Limits::default(), 1920, 1080));
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::DecodedBytes,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn short_zlib_stream_is_refused() {
    let f = file(&ihdr(100, 100, 8, 0, 0), &[], &zlib_zeros(5000));
    assert_eq!(
        decode(&f, &Limits::default(), 100, 100),
        Err(PngError::ImageDataShort)
    );
}

#[test]
fn ztxt_declaring_100_mb_is_refused_by_chunk_cap() {
    let mut f = fb_viewer::SIGNATURE.to_vec();
    f.extend_from_slice(&ihdr(1, 1, 8, 0, 0));
    f.extend_from_slice(&100_000_000u32.to_be_bytes());
    f.extend_from_slice(b"zTXt");
    f.extend_from_slice(b"Comment\0\0");
    let r = decode(&f, &Limits::default(), 64, 64);
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::ChunkLength,
                needed: 100_000_000,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn iccp_of_100_mb_present_in_the_file_is_refused_without_reading_it() {
    let mut big = b"icc\0\0".to_vec();
    big.resize(100_000_000, 0x55);
    let f = file(
        &ihdr(1, 1, 8, 0, 0),
        &[chunk(b"iCCP", &big)],
        &zlib_zeros(2),
    );
    let r = timed(|| decode(&f, &Limits::default(), 64, 64));
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::ChunkLength,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn many_ancillary_chunks_beyond_total_cap_are_refused() {
    let text = vec![b'a'; 1 << 20];
    let many: Vec<_> = (0..40).map(|_| chunk(b"tEXt", &text)).collect();
    let f = file(&ihdr(1, 1, 8, 0, 0), &many, &zlib_zeros(2));
    let r = decode(&f, &Limits::default(), 64, 64);
    assert!(
        matches!(
            r,
            Err(PngError::TooLarge {
                what: Limit::AncillaryBytes,
                ..
            })
        ),
        "{r:?}"
    );
}

fn sample_png() -> Vec<u8> {
    let data: Vec<u8> = (0..40 * 30 * 4).map(|i| (i * 7 % 251) as u8).collect();
    encode(40, 30, png::ColorType::Rgba, png::BitDepth::Eight, &data)
}

#[test]
fn every_truncation_is_refused() {
    let f = sample_png();
    assert!(decode(&f, &Limits::default(), 64, 64).is_ok());
    for len in 0..f.len() {
        let r = decode(&f[..len], &Limits::default(), 64, 64);
        assert!(r.is_err(), "prefix of {len} bytes accepted");
    }
}

#[test]
fn wrong_crc_in_any_chunk_is_refused() {
    let f = sample_png();
    let mut pos = 8;
    let mut checked = 0;
    while pos < f.len() {
        let len = u32::from_be_bytes(f[pos..pos + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = f[pos + 4..pos + 8].try_into().unwrap();
        let crc_at = pos + 8 + len;
        let mut bad = f.clone();
        bad[crc_at] ^= 1;
        assert_eq!(
            decode(&bad, &Limits::default(), 64, 64),
            Err(PngError::BadCrc { kind })
        );
        if len > 0 {
            let mut bad = f.clone();
            bad[pos + 8] ^= 0x10;
            let r = decode(&bad, &Limits::default(), 64, 64);
            if &kind == b"IDAT" {
                // IDAT is inflated as it streams in, so damage may surface as a zlib error first.
                assert!(r.is_err(), "damaged IDAT accepted");
            } else {
                assert_eq!(r, Err(PngError::BadCrc { kind }));
            }
        }
        checked += 1;
        pos = crc_at + 4;
    }
    assert!(checked >= 3);
}

#[test]
fn errors_display_on_one_line() {
    let e = PngError::TooLarge {
        what: Limit::Pixels,
        needed: 10,
        max: 5,
    };
    let s = e.to_string();
    assert!(!s.contains('\n') && s.contains("Pixels"), "{s}");
}

#[test]
fn apng_shows_its_default_image() {
    let (w, h) = (8u32, 4u32);
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.set_animated(2, 0).unwrap();
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(&[10u8; 8 * 4 * 3]).unwrap();
        wr.write_image_data(&[200u8; 8 * 4 * 3]).unwrap();
        wr.finish().unwrap();
    }
    assert!(
        out.windows(4).any(|k| k == b"fdAT"),
        "second frame not written as fdAT"
    );
    let c = decode(&out, &Limits::default(), 64, 64).unwrap();
    assert!(c.pixels.chunks_exact(4).all(|p| p == [10, 10, 10, 255]));
}

#[test]
fn unknown_critical_chunk_is_refused() {
    let f = file(&ihdr(1, 1, 8, 0, 0), &[chunk(b"ABCD", &[])], &zlib_zeros(2));
    assert_eq!(
        decode(&f, &Limits::default(), 8, 8),
        Err(PngError::UnknownCritical { kind: *b"ABCD" })
    );
}

#[test]
fn indexed_image_without_palette_is_refused() {
    let f = file(&ihdr(1, 1, 8, 3, 0), &[], &zlib_zeros(2));
    assert_eq!(
        decode(&f, &Limits::default(), 8, 8),
        Err(PngError::MissingPalette)
    );
}
