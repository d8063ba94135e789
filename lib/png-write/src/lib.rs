//! A minimal PNG writer for screenshots: 8-bit RGB, filter 0, zlib with stored (uncompressed)
//! deflate blocks, so it is a few checksums and no compression code, easy to check.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

/// Largest side accepted (the GUI protocol's own bound is far below); 0 is refused too.
pub const MAX_SIDE: u32 = 16384;

/// CRC-32 (ISO-HDLC) of the parts one after another, as PNG chunks use.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Adler-32, as zlib streams end with.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the longest run whose sums cannot overflow a u32 before the reduction.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Callers keep chunks at most 1 MiB (PNG allows up to 2^31 - 1).
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

fn side_ok(side: u32) -> bool {
    (1..=MAX_SIDE).contains(&side)
}

/// The PNG around `raw` (scanlines, each a filter byte and `width` RGB pixels).
fn wrap(width: u32, height: u32, raw: &[u8]) -> Vec<u8> {
    let mut z = alloc::vec![0x78, 0x01];
    let mut blocks = raw.chunks(65535).peekable();
    while let Some(b) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        // chunks(65535): the length fits a u16.
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    for part in z.chunks(1 << 20) {
        chunk(&mut out, b"IDAT", part);
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Encodes `width`×`height` pixels given as `rgb` (3 bytes each, rows top to bottom).
/// `None` if a side is 0 or above [`MAX_SIDE`], or `rgb` has the wrong length.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Option<Vec<u8>> {
    if !side_ok(width) || !side_ok(height) {
        return None;
    }
    let row = width as usize * 3;
    if rgb.len() != row * height as usize {
        return None;
    }
    let mut raw = Vec::with_capacity(rgb.len() + height as usize);
    for r in rgb.chunks_exact(row) {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    Some(wrap(width, height, &raw))
}

/// Encodes `width`×`height` BGRX pixels (X8R8G8B8 little-endian, 4 bytes each, as GUI dumps
/// hold them) as RGB; `None` if a side is 0 or above [`MAX_SIDE`], or `bgrx` is too short.
pub fn encode_bgrx(width: u32, height: u32, bgrx: &[u8]) -> Option<Vec<u8>> {
    if !side_ok(width) || !side_ok(height) {
        return None;
    }
    let row = width as usize * 4;
    let src = bgrx.get(..row * height as usize)?;
    let mut raw = Vec::with_capacity(height as usize * (1 + width as usize * 3));
    for r in src.chunks_exact(row) {
        raw.push(0);
        raw.extend(r.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]));
    }
    Some(wrap(width, height, &raw))
}

/// BGRX to RGB; `None` if `bgrx` is too short.
pub fn bgrx_to_rgb(width: u32, height: u32, bgrx: &[u8]) -> Option<Vec<u8>> {
    let n = (width as usize).checked_mul(height as usize)?;
    let src = bgrx.get(..n.checked_mul(4)?)?;
    Some(
        src.chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(png_bytes);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn encoding_has_the_png_layout() {
        let png = encode_rgb(2, 1, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 2, 0, 0, 0, 1]);
        assert_eq!(&png[png.len() - 12..], b"\0\0\0\0IEND\xaeB`\x82");
        // The raw scanline (filter 0 + pixels) sits in one stored block.
        assert!(png.windows(7).any(|w| w == [0, 1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn refuses_empty_huge_or_wrongly_sized_images() {
        assert_eq!(encode_rgb(0, 1, &[]), None);
        assert_eq!(encode_rgb(1, 0, &[]), None);
        assert_eq!(encode_rgb(2, 2, &[0; 6]), None);
        assert_eq!(encode_rgb(1, 1, &[0; 4]), None, "too long");
        assert_eq!(encode_bgrx(0, 1, &[]), None);
        assert_eq!(encode_bgrx(MAX_SIDE + 1, 1, &vec![0; 4 * 16385]), None);
        assert_eq!(encode_bgrx(2, 2, &[0; 15]), None);
    }

    #[test]
    fn bgrx_becomes_rgb() {
        assert_eq!(
            bgrx_to_rgb(2, 1, &[1, 2, 3, 0, 4, 5, 6, 0xff]).unwrap(),
            [3, 2, 1, 6, 5, 4]
        );
        assert!(bgrx_to_rgb(2, 1, &[0; 7]).is_none());
    }

    #[test]
    fn large_image_spans_several_blocks_and_idat_chunks() {
        // 700 × 600 RGB is 1.26 MB of scanlines: 20 stored blocks, two IDAT chunks.
        let (w, h) = (700u32, 600u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let png = encode_rgb(w, h, &rgb).unwrap();
        assert_eq!(png.windows(4).filter(|c| c == b"IDAT").count(), 2);
        assert_eq!(decode(&png), (w, h, rgb));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        /// The `png` crate decodes what we wrote to the same pixels, from either input format,
        /// including images whose stream spans several stored blocks.
        #[test]
        fn png_crate_decodes_our_output_to_the_same_pixels(
            w in 1u32..200, h in 1u32..120, seed in proptest::num::u8::ANY,
        ) {
            let bgrx: Vec<u8> = (0..w * h * 4).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            // BGRX is little-endian X8R8G8B8: blue first.
            let rgb: Vec<u8> = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
            proptest::prop_assert_eq!(&bgrx_to_rgb(w, h, &bgrx).unwrap(), &rgb);
            let from_bgrx = encode_bgrx(w, h, &bgrx).unwrap();
            proptest::prop_assert_eq!(&from_bgrx, &encode_rgb(w, h, &rgb).unwrap());
            let (dw, dh, got) = decode(&from_bgrx);
            proptest::prop_assert_eq!((dw, dh), (w, h));
            proptest::prop_assert_eq!(got, rgb);
        }
    }
}
