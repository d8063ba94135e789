//! Builders for hostile and reference PNG files used by the integration tests.
#![allow(dead_code)]

use fb_viewer::{crc32, SIGNATURE};

/// One chunk with a correct CRC.
pub fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    c
}

pub fn ihdr(w: u32, h: u32, depth: u8, color: u8, interlace: u8) -> Vec<u8> {
    let mut d = w.to_be_bytes().to_vec();
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[depth, color, 0, 0, interlace]);
    chunk(b"IHDR", &d)
}

/// Signature + IHDR + `middle` chunks + IDAT chunks of at most 1 MiB holding `zlib` + IEND.
pub fn file(ihdr: &[u8], middle: &[Vec<u8>], zlib: &[u8]) -> Vec<u8> {
    let mut f = SIGNATURE.to_vec();
    f.extend_from_slice(ihdr);
    for c in middle {
        f.extend_from_slice(c);
    }
    for part in zlib.chunks(1 << 20) {
        f.extend_from_slice(&chunk(b"IDAT", part));
    }
    f.extend_from_slice(&chunk(b"IEND", &[]));
    f
}

/// A zlib stream inflating to `n` zero bytes, built by hand from fixed-Huffman length-258,
/// distance-1 copies (13 bits per 258 bytes) so even a gigabyte is cheap to make.
pub fn zlib_zeros(n: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, v: u64, len: u32) {
            self.acc |= v << self.n;
            self.n += len;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes are sent most-significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            let mut rev = 0;
            for i in 0..len {
                rev |= ((code >> i) & 1) << (len - 1 - i);
            }
            self.put(rev, len);
        }
    }
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // fixed Huffman
    let mut left = n;
    if left > 0 {
        b.code(0x30, 8); // literal 0
        left -= 1;
    }
    while left >= 258 {
        b.code(0b1100_0101, 8); // length code 285 = 258
        b.code(0, 5); // distance code 0 = 1
        left -= 258;
    }
    while left > 0 {
        b.code(0x30, 8);
        left -= 1;
    }
    b.code(0, 7); // end of block (256)
    if b.n > 0 {
        b.put(0, 8 - b.n);
    }
    let s2 = (n % 65521) as u32;
    b.out.extend_from_slice(&((s2 << 16) | 1).to_be_bytes());
    b.out
}

/// Encodes with the `png` crate (the reference encoder).
pub fn encode(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(color);
    e.set_depth(depth);
    e.write_header().unwrap().write_image_data(data).unwrap();
    out
}

/// Reference decode with the `png` crate, converted to BGRA8 the way fb-viewer converts.
pub fn reference(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), png::DecodingError> {
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (ct, bd) = (info.color_type, info.bit_depth);
    let bytes_per_sample = if bd == png::BitDepth::Sixteen { 2 } else { 1 };
    assert!(
        bd == png::BitDepth::Eight || bd == png::BitDepth::Sixteen,
        "EXPAND left {bd:?}"
    );
    let ch = ct.samples();
    let mut out = Vec::with_capacity((info.width * info.height * 4) as usize);
    for y in 0..info.height as usize {
        let row = &buf[y * info.line_size..][..info.line_size];
        for x in 0..info.width as usize {
            // High byte of each sample: the 16→8 conversion fb-viewer uses.
            let s = |k: usize| row[(x * ch + k) * bytes_per_sample];
            let [r, g, b, a] = match ct {
                png::ColorType::Grayscale => [s(0), s(0), s(0), 255],
                png::ColorType::GrayscaleAlpha => [s(0), s(0), s(0), s(1)],
                png::ColorType::Rgb => [s(0), s(1), s(2), 255],
                png::ColorType::Rgba => [s(0), s(1), s(2), s(3)],
                png::ColorType::Indexed => unreachable!("EXPAND removes indexed colour"),
            };
            out.extend_from_slice(&[b, g, r, a]);
        }
    }
    Ok((info.width, info.height, out))
}

/// Nearest-neighbour samples of a reference image at canvas size `ow` × `oh`.
pub fn sample_ref(r: &(u32, u32, Vec<u8>), ow: u32, oh: u32) -> Vec<u8> {
    let (w, h, px) = (u64::from(r.0), u64::from(r.1), &r.2);
    let mut out = Vec::new();
    for ty in 0..u64::from(oh) {
        for tx in 0..u64::from(ow) {
            let (sx, sy) = (tx * w / u64::from(ow), ty * h / u64::from(oh));
            let i = ((sy * w + sx) * 4) as usize;
            out.extend_from_slice(&px[i..i + 4]);
        }
    }
    out
}
