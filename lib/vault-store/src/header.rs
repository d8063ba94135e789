//! The slot header: fixed offsets (see the crate docs' table), encode/parse, checksum and MAC.
//! Parsing checks every field; the checksum and MAC are checked by the caller.

use blake2::digest::consts::U32;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2b, Blake2b512, Blake2bMac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::kdf::{KdfParams, KEY_LEN};

/// Magic at offset 0 of each slot.
pub const MAGIC: [u8; 8] = *b"QVAULTST";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the slot header; the body follows it directly.
pub const HEADER_LEN: usize = 248;

pub(crate) const SALT_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const HASH_LEN: usize = 32;

/// End of the bytes the key wrap authenticates (magic .. salt).
pub(crate) const WRAP_AD_END: usize = 56;
/// End of the bytes the body AEAD authenticates (magic, version).
pub(crate) const BODY_AD_END: usize = 10;
/// End of the bytes the header MAC covers.
pub(crate) const MAC_START: usize = 184;
/// Where the checksum starts (it covers everything before it and the body).
pub(crate) const CHECKSUM_START: usize = 216;

type Blake2b256 = Blake2b<U32>;

/// The wrapped data key and how to unwrap it: changes only with the passphrase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrap {
    pub kdf: KdfParams,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub wrapped_key: [u8; KEY_LEN],
    pub tag: [u8; TAG_LEN],
}

/// One slot's header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub wrap: Wrap,
    pub sequence: u64,
    pub body_len: u32,
    pub body_nonce: [u8; NONCE_LEN],
    pub body_tag: [u8; TAG_LEN],
    pub mac: [u8; HASH_LEN],
    pub checksum: [u8; HASH_LEN],
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    NoMagic,
    Version(u16),
    Malformed,
}

fn field<const N: usize>(b: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    // Offsets are constants inside HEADER_LEN, so this slice is always in range.
    a.copy_from_slice(&b[off..off + N]);
    a
}

impl Header {
    /// Encodes every field; `mac` and `checksum` are copied as they are.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let (id, a, x, c) = self.wrap.kdf.to_raw();
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = id;
        b[12..16].copy_from_slice(&a.to_le_bytes());
        b[16..20].copy_from_slice(&x.to_le_bytes());
        b[20..24].copy_from_slice(&c.to_le_bytes());
        b[24..56].copy_from_slice(&self.wrap.salt);
        b[56..80].copy_from_slice(&self.wrap.nonce);
        b[80..112].copy_from_slice(&self.wrap.wrapped_key);
        b[112..128].copy_from_slice(&self.wrap.tag);
        b[128..136].copy_from_slice(&self.sequence.to_le_bytes());
        b[136..140].copy_from_slice(&self.body_len.to_le_bytes());
        b[144..168].copy_from_slice(&self.body_nonce);
        b[168..184].copy_from_slice(&self.body_tag);
        b[MAC_START..CHECKSUM_START].copy_from_slice(&self.mac);
        b[CHECKSUM_START..HEADER_LEN].copy_from_slice(&self.checksum);
        b
    }

    /// Parses and range-checks every field (not the checksum or MAC).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if field::<8>(b, 0) != MAGIC {
            return Err(HeaderError::NoMagic);
        }
        let version = u16::from_le_bytes(field(b, 8));
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let reserved_zero = b[11] == 0 && field::<4>(b, 140) == [0; 4];
        let kdf = KdfParams::from_raw(
            b[10],
            u32::from_le_bytes(field(b, 12)),
            u32::from_le_bytes(field(b, 16)),
            u32::from_le_bytes(field(b, 20)),
        );
        let (Some(kdf), true) = (kdf, reserved_zero) else {
            return Err(HeaderError::Malformed);
        };
        Ok(Header {
            wrap: Wrap {
                kdf,
                salt: field(b, 24),
                nonce: field(b, 56),
                wrapped_key: field(b, 80),
                tag: field(b, 112),
            },
            sequence: u64::from_le_bytes(field(b, 128)),
            body_len: u32::from_le_bytes(field(b, 136)),
            body_nonce: field(b, 144),
            body_tag: field(b, 168),
            mac: field(b, MAC_START),
            checksum: field(b, CHECKSUM_START),
        })
    }
}

/// BLAKE2b-256 over the header before the checksum, then the body.
pub(crate) fn checksum(header: &[u8; HEADER_LEN], body: &[u8]) -> [u8; HASH_LEN] {
    Blake2b256::new()
        .chain_update(&header[..CHECKSUM_START])
        .chain_update(body)
        .finalize()
        .into()
}

/// Keyed BLAKE2b-256 over the header before the MAC, under the data key's MAC subkey.
pub(crate) fn header_mac(data_key: &[u8; KEY_LEN], header: &[u8; HEADER_LEN]) -> [u8; HASH_LEN] {
    let mut key = Zeroizing::new([0u8; 64]);
    key.copy_from_slice(
        &Blake2b512::new()
            .chain_update(b"vault-store v1 header mac")
            .chain_update(data_key)
            .finalize(),
    );
    let mut mac = <Blake2bMac<U32> as KeyInit>::new(&(*key).into());
    mac.update(&header[..MAC_START]);
    mac.finalize().into_bytes().into()
}

/// The body AEAD key, separate from the MAC key though both come from the data key.
pub(crate) fn body_key(data_key: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    Zeroizing::new(
        Blake2b256::new()
            .chain_update(b"vault-store v1 body key")
            .chain_update(data_key)
            .finalize()
            .into(),
    )
}

/// Constant-time equality of two hashes or tags.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            wrap: Wrap {
                kdf: KdfParams::Scrypt {
                    log_n: 15,
                    r: 8,
                    p: 1,
                },
                salt: [1; 32],
                nonce: [2; 24],
                wrapped_key: [3; 32],
                tag: [4; 16],
            },
            sequence: 0x0102_0304_0506_0708,
            body_len: 0x1122_3344,
            body_nonce: [5; 24],
            body_tag: [6; 16],
            mac: [7; 32],
            checksum: [8; 32],
        }
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let b = sample().encode();
        assert_eq!(&b[0..8], b"QVAULTST");
        assert_eq!(&b[8..12], &[1, 0, 2, 0]);
        assert_eq!(&b[12..24], &[15, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[24..56], &[1; 32]);
        assert_eq!(&b[56..80], &[2; 24]);
        assert_eq!(&b[80..112], &[3; 32]);
        assert_eq!(&b[112..128], &[4; 16]);
        assert_eq!(&b[128..136], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[136..144], &[0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0]);
        assert_eq!(&b[144..168], &[5; 24]);
        assert_eq!(&b[168..184], &[6; 16]);
        assert_eq!(&b[184..216], &[7; 32]);
        assert_eq!(&b[216..248], &[8; 32]);
    }

    #[test]
    fn parse_of_encode_is_identity() {
        let h = sample();
        assert!(Header::parse(&h.encode()) == Ok(h));
    }

    #[test]
    fn parse_refuses_bad_magic_version_reserved_and_kdf() {
        let good = sample().encode();
        let mut b = good;
        b[0] ^= 1;
        assert!(Header::parse(&b) == Err(HeaderError::NoMagic));
        let mut b = good;
        b[8] = 2;
        assert!(Header::parse(&b) == Err(HeaderError::Version(2)));
        for off in [10, 11, 140, 143] {
            let mut b = good;
            b[off] = 0x77;
            assert!(
                Header::parse(&b) == Err(HeaderError::Malformed),
                "offset {off}"
            );
        }
    }

    #[test]
    fn mac_and_checksum_cover_their_ranges() {
        let key = [9u8; 32];
        let b = sample().encode();
        let (m, c) = (header_mac(&key, &b), checksum(&b, b"body"));
        let mut b2 = b;
        b2[MAC_START - 1] ^= 1;
        assert_ne!(header_mac(&key, &b2), m);
        assert_ne!(checksum(&b2, b"body"), c);
        assert_ne!(checksum(&b, b"bodY"), c);
        assert_ne!(header_mac(&[8u8; 32], &b), m);
        // The MAC does not cover the checksum, the checksum does not cover itself.
        let mut b3 = b;
        b3[HEADER_LEN - 1] ^= 1;
        assert_eq!(header_mac(&key, &b3), m);
        assert_eq!(checksum(&b3, b"body"), c);
        assert_ne!(*body_key(&key), key);
    }
}
