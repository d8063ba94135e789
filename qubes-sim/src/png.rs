//! A minimal PNG writer for screenshots: 8-bit RGB, filter 0, zlib with stored (uncompressed)
//! deflate blocks, so it needs nothing beyond std and stays easy to check.

/// CRC-32 (ISO-HDLC), as PNG chunks use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
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
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes `width`×`height` pixels given as `rgb` (3 bytes each, rows top to bottom).
/// `None` if `rgb` has the wrong length.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Option<Vec<u8>> {
    let row = (width as usize).checked_mul(3)?;
    if rgb.len() != row.checked_mul(height as usize)? {
        return None;
    }
    let mut raw = Vec::with_capacity(rgb.len() + height as usize);
    for r in rgb.chunks(row.max(1)).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65535).peekable();
    if blocks.peek().is_none() {
        z.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(b) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = b.len() as u16;
        z.push(last);
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
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    Some(out)
}

/// BGRX (X8R8G8B8 little-endian, as GUI dumps hold) to RGB; `None` if `bgrx` is too short.
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

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
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
        assert!(encode_rgb(2, 2, &[0; 6]).is_none());
    }

    #[test]
    fn bgrx_becomes_rgb() {
        assert_eq!(
            bgrx_to_rgb(2, 1, &[1, 2, 3, 0, 4, 5, 6, 0xff]).unwrap(),
            [3, 2, 1, 6, 5, 4]
        );
        assert!(bgrx_to_rgb(2, 1, &[0; 7]).is_none());
    }
}
