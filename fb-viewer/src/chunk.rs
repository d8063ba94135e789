//! PNG chunk framing: a borrowed view over length, type, data and CRC, checked before use.
//! Lengths are validated against the remaining input and a caller cap before any CRC work.

use crate::error::{Limit, PngError};

/// The 8 bytes every PNG file starts with.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// A chunk type: four ASCII letters.
pub type ChunkKind = [u8; 4];

/// One chunk whose CRC has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub kind: ChunkKind,
    pub data: &'a [u8],
}

impl Chunk<'_> {
    /// Critical chunks have an upper-case first letter; an unknown one must stop decoding.
    pub fn is_critical(&self) -> bool {
        self.kind[0] & 0x20 == 0
    }
}

/// Iterator-like reader over the chunks after the signature.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
}

/// Slicing-by-16 tables: CRC_TABLES[k][b] is the CRC of byte b followed by k zero bytes.
const CRC_TABLES: [[u32; 256]; 16] = {
    let mut t = [[0u32; 256]; 16];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][n] = c;
        n += 1;
    }
    let mut k = 1;
    while k < 16 {
        let mut n = 0;
        while n < 256 {
            let prev = t[k - 1][n];
            t[k][n] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            n += 1;
        }
        k += 1;
    }
    t
};

/// CRC-32 (ISO 3309) over the concatenation of `parts`, as PNG chunks use it.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = CRC_INIT;
    for part in parts {
        c = crc32_update(c, part);
    }
    c ^ 0xffff_ffff
}

/// Running CRC state before any byte; the final CRC is the state XOR 0xffff_ffff.
pub const CRC_INIT: u32 = 0xffff_ffff;

/// Advances a running CRC state over `part`.
pub fn crc32_update(mut c: u32, part: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut blocks = part.chunks_exact(16);
    for b in &mut blocks {
        let w = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = t[15][(w & 0xff) as usize]
            ^ t[14][((w >> 8) & 0xff) as usize]
            ^ t[13][((w >> 16) & 0xff) as usize]
            ^ t[12][(w >> 24) as usize]
            ^ t[11][usize::from(b[4])]
            ^ t[10][usize::from(b[5])]
            ^ t[9][usize::from(b[6])]
            ^ t[8][usize::from(b[7])]
            ^ t[7][usize::from(b[8])]
            ^ t[6][usize::from(b[9])]
            ^ t[5][usize::from(b[10])]
            ^ t[4][usize::from(b[11])]
            ^ t[3][usize::from(b[12])]
            ^ t[2][usize::from(b[13])]
            ^ t[1][usize::from(b[14])]
            ^ t[0][usize::from(b[15])];
    }
    for &b in blocks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

impl<'a> Chunks<'a> {
    /// Checks the signature and returns a reader positioned at the first chunk.
    pub fn new(file: &'a [u8]) -> Result<Self, PngError> {
        match file.split_first_chunk::<8>() {
            Some((sig, rest)) if *sig == SIGNATURE => Ok(Self { rest }),
            _ => Err(PngError::BadSignature),
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Reads the next chunk; `max_len` caps the declared length of chunks other than IDAT.
    pub fn next_chunk(&mut self, max_len: u32) -> Result<Chunk<'a>, PngError> {
        let (head, body) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or(PngError::Truncated)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind: ChunkKind = [head[4], head[5], head[6], head[7]];
        if len > 0x7fff_ffff {
            return Err(PngError::BadChunkLength { kind });
        }
        if &kind != b"IDAT" && len > max_len {
            return Err(PngError::TooLarge {
                what: Limit::ChunkLength,
                needed: u64::from(len),
                max: u64::from(max_len),
            });
        }
        let len = len as usize;
        if body.len() < len.saturating_add(4) {
            return Err(PngError::Truncated);
        }
        let (data, tail) = body.split_at(len);
        let (crc, rest) = tail.split_first_chunk::<4>().ok_or(PngError::Truncated)?;
        // Fuzzers cannot forge CRCs, so under cfg(fuzzing) the check is skipped to reach deeper code.
        if !cfg!(fuzzing) && crc32(&[&kind, data]) != u32::from_be_bytes(*crc) {
            return Err(PngError::BadCrc { kind });
        }
        self.rest = rest;
        Ok(Chunk { kind, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_iend_matches_the_spec_constant() {
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
        // The standard check value, split so both the 8-byte path and the tail run.
        assert_eq!(crc32(&[b"12345678", b"9"]), 0xcbf4_3926);
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
    }

    proptest::proptest! {
        /// The table-driven CRC over any split equals the bit-at-a-time definition.
        #[test]
        fn crc_matches_bitwise_definition(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            cut in 0usize..200,
        ) {
            let mut want = 0xffff_ffffu32;
            for &b in &data {
                want ^= u32::from(b);
                for _ in 0..8 {
                    want = if want & 1 != 0 { 0xedb8_8320 ^ (want >> 1) } else { want >> 1 };
                }
            }
            let (a, b) = data.split_at(cut.min(data.len()));
            proptest::prop_assert_eq!(crc32(&[a, b]), want ^ 0xffff_ffff);
        }
    }

    #[test]
    fn declared_length_above_cap_is_refused_before_crc() {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&100_000_000u32.to_be_bytes());
        f.extend_from_slice(b"zTXt");
        let mut c = Chunks::new(&f).unwrap();
        assert!(matches!(
            c.next_chunk(1 << 20),
            Err(PngError::TooLarge {
                what: Limit::ChunkLength,
                ..
            })
        ));
    }

    #[test]
    fn length_beyond_file_is_truncated() {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&10u32.to_be_bytes());
        f.extend_from_slice(b"tEXt abc");
        let mut c = Chunks::new(&f).unwrap();
        assert_eq!(c.next_chunk(1 << 20), Err(PngError::Truncated));
    }
}
