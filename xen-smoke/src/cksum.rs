//! POSIX `cksum` (CRC-32, polynomial 0x04C11DB7, length appended) and the xorshift stream the
//! vchan checks send: dom0 compares both with coreutils' `cksum` of what it sent and received.
#![forbid(unsafe_code)]
#![cfg_attr(not(xen_image), allow(dead_code))]

/// A running POSIX `cksum`.
#[derive(Debug, Clone)]
pub struct Cksum {
    table: [u32; 256],
    crc: u32,
    len: u64,
}

impl Cksum {
    /// An empty sum.
    pub fn new() -> Self {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = (i as u32) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04C1_1DB7
                } else {
                    c << 1
                };
            }
            *t = c;
        }
        Self {
            table,
            crc: 0,
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        self.crc = (self.crc << 8) ^ self.table[((self.crc >> 24) as u8 ^ b) as usize];
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.byte(b);
        }
        self.len += data.len() as u64;
    }

    /// Bytes summed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The value `cksum` prints first (the length is folded in, least significant byte first).
    pub fn finish(&self) -> u32 {
        let mut s = self.clone();
        let mut n = self.len;
        while n != 0 {
            s.byte(n as u8);
            n >>= 8;
        }
        !s.crc
    }
}

/// A deterministic byte stream (xorshift64), so the sender needs no buffer of what it sent.
#[derive(Debug, Clone)]
pub struct Stream(u64);

impl Stream {
    /// A stream from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coreutils_cksum() {
        // `printf 123456789 | cksum` and `printf '' | cksum`, from GNU coreutils.
        let mut c = Cksum::new();
        c.update(b"12345");
        c.update(b"6789");
        assert_eq!((c.finish(), c.len()), (930_766_865, 9));
        assert_eq!(Cksum::new().finish(), 4_294_967_295);
    }

    #[test]
    fn stream_is_deterministic_across_chunkings() {
        let (mut a, mut b) = (Stream::new(7), Stream::new(7));
        let mut one = [0u8; 24];
        a.fill(&mut one);
        let mut two = [0u8; 24];
        b.fill(&mut two[..8]);
        b.fill(&mut two[8..]);
        assert_eq!(one, two);
        assert_ne!(one[..8], one[8..16]);
    }
}
