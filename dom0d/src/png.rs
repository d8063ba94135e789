//! A window's framebuffer (BGRX, as the GUI agent shares it) as an 8-bit RGB PNG: stored
//! (uncompressed) deflate blocks, so the encoder is a few checksums and no compression code.

/// Largest side accepted (the GUI protocol's own bound is far below).
pub const MAX_SIDE: u32 = 16384;

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut table = [0u32; 256];
    for (n, e) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    let mut c = 0xffff_ffffu32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        c = table[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xffff_ffff
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for x in chunk {
            a += u32::from(*x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    // Callers keep chunks far below 2^31 bytes (bounded sides), as PNG requires.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[ty, data]).to_be_bytes());
}

/// Encodes `width`×`height` BGRX pixels (4 bytes each, row after row) as a PNG; `None` when
/// a side is 0 or above [`MAX_SIDE`] or `bgrx` is shorter than the image.
pub fn encode_bgrx(width: u32, height: u32, bgrx: &[u8]) -> Option<Vec<u8>> {
    if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
        return None;
    }
    let (w, h) = (width as usize, height as usize);
    let src = bgrx.get(..w * h * 4)?;
    let mut raw = Vec::with_capacity(h * (1 + w * 3));
    for row in src.chunks_exact(w * 4) {
        raw.push(0); // filter: none
        for px in row.chunks_exact(4) {
            raw.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65535).peekable();
    while let Some(b) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // IDAT chunks of at most 1 MiB each.
    for part in z.chunks(1 << 20) {
        chunk(&mut out, b"IDAT", part);
    }
    chunk(&mut out, b"IEND", &[]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn known_checksums() {
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn refuses_empty_huge_or_short_images() {
        assert_eq!(encode_bgrx(0, 1, &[]), None);
        assert_eq!(encode_bgrx(MAX_SIDE + 1, 1, &vec![0; 4 * 16385]), None);
        assert_eq!(encode_bgrx(2, 2, &[0; 15]), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        /// The `png` crate decodes what we wrote to the same pixels, including images whose
        /// stream spans several stored blocks.
        #[test]
        fn png_crate_decodes_our_output_to_the_same_pixels(
            w in 1u32..200, h in 1u32..120, seed in proptest::num::u8::ANY,
        ) {
            let bgrx: Vec<u8> = (0..w * h * 4).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let (dw, dh, rgb) = decode(&encode_bgrx(w, h, &bgrx).unwrap());
            proptest::prop_assert_eq!((dw, dh), (w, h));
            let want: Vec<u8> = bgrx.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
            proptest::prop_assert_eq!(rgb, want);
        }
    }
}
