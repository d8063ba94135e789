//! Named records, the plaintext a vault stores: a canonical, bounded, length-prefixed encoding.
//! Encoding: u32 LE count, then per record (names strictly increasing) u8 name length, name, u32 LE value length, value.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Most records one vault holds.
pub const MAX_RECORDS: usize = 65536;
/// Longest record name, bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a record could not be stored or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsError {
    /// More than `MAX_RECORDS` records.
    TooMany,
    /// A name that is empty or longer than `MAX_NAME_LEN`.
    BadName,
    /// The encoding ends inside a field.
    Truncated,
    /// Bytes after the last record.
    TrailingBytes,
    /// Names not strictly increasing (a duplicate or an unsorted list).
    NotCanonical,
    /// A value longer than a u32 length can say.
    ValueTooLong,
}

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordsError::TooMany => "too many records",
            RecordsError::BadName => "record name empty or too long",
            RecordsError::Truncated => "records truncated",
            RecordsError::TrailingBytes => "bytes after the last record",
            RecordsError::NotCanonical => "record names not strictly increasing",
            RecordsError::ValueTooLong => "record value too long",
        })
    }
}

/// Opaque byte values keyed by name; values (and, on drop, names) are zeroized.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Records {
    map: BTreeMap<Vec<u8>, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Records {
    // Names and values may be secret: only the count is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("len", &self.map.len())
            .finish()
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        for (mut name, _value) in core::mem::take(&mut self.map) {
            name.zeroize();
        }
    }
}

fn check_name(name: &[u8]) -> Result<(), RecordsError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(RecordsError::BadName);
    }
    Ok(())
}

impl Records {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value stored under `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.map.get(name).map(|v| v.as_slice())
    }

    /// Stores `value` under `name`, replacing any earlier value.
    pub fn insert(&mut self, name: &[u8], value: &[u8]) -> Result<(), RecordsError> {
        check_name(name)?;
        if u32::try_from(value.len()).is_err() {
            return Err(RecordsError::ValueTooLong);
        }
        if let Some(old) = self.map.get_mut(name) {
            *old = Zeroizing::new(value.to_vec());
            return Ok(());
        }
        if self.map.len() >= MAX_RECORDS {
            return Err(RecordsError::TooMany);
        }
        self.map
            .insert(name.to_vec(), Zeroizing::new(value.to_vec()));
        Ok(())
    }

    /// Removes `name`; true if it was there.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        match self.map.remove_entry(name) {
            Some((mut n, _v)) => {
                n.zeroize();
                true
            }
            None => false,
        }
    }

    /// Records in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Bytes `encode` produces.
    pub fn encoded_len(&self) -> usize {
        self.map.iter().fold(4usize, |acc, (k, v)| {
            acc.saturating_add(5 + k.len() + v.len())
        })
    }

    /// The canonical encoding (zeroized on drop).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len()));
        // insert() bounds the count and every length, so these conversions never saturate.
        let count = u32::try_from(self.map.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for (k, v) in &self.map {
            out.push(u8::try_from(k.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(k);
            out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Decodes `encode`'s output; anything else is refused, never allocating past `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordsError> {
        let mut cur = Cursor(bytes);
        let count = u32::from_le_bytes(cur.array()?) as usize;
        if count > MAX_RECORDS {
            return Err(RecordsError::TooMany);
        }
        let mut records = Records::new();
        let mut prev: Option<&[u8]> = None;
        for _ in 0..count {
            let [name_len] = cur.array::<1>()?;
            let name = cur.take(usize::from(name_len))?;
            check_name(name)?;
            if prev.is_some_and(|p| p >= name) {
                return Err(RecordsError::NotCanonical);
            }
            prev = Some(name);
            let value_len = u32::from_le_bytes(cur.array()?) as usize;
            let value = cur.take(value_len)?;
            records
                .map
                .insert(name.to_vec(), Zeroizing::new(value.to_vec()));
        }
        if !cur.0.is_empty() {
            return Err(RecordsError::TrailingBytes);
        }
        Ok(records)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordsError> {
        if n > self.0.len() {
            return Err(RecordsError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordsError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_is_exactly_the_documented_bytes() {
        let mut r = Records::new();
        r.insert(b"b", b"xy").unwrap();
        r.insert(b"a", b"").unwrap();
        let bytes = r.encode();
        assert_eq!(
            &bytes[..],
            &[2, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 1, b'b', 2, 0, 0, 0, b'x', b'y'][..]
        );
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(Records::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn decode_refuses_unsorted_or_duplicate_names() {
        let dup = [2, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        assert_eq!(Records::decode(&dup), Err(RecordsError::NotCanonical));
        let unsorted = [2, 0, 0, 0, 1, b'b', 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        assert_eq!(Records::decode(&unsorted), Err(RecordsError::NotCanonical));
    }

    #[test]
    fn decode_checks_declared_lengths_before_allocating() {
        // A value length of 4 GiB in a 14-byte input: refused as truncated, nothing allocated for it.
        let huge = [1, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(Records::decode(&huge), Err(RecordsError::Truncated));
        let many = (MAX_RECORDS as u32 + 1).to_le_bytes();
        assert_eq!(Records::decode(&many), Err(RecordsError::TooMany));
        assert_eq!(Records::decode(&[0, 0]), Err(RecordsError::Truncated));
        assert_eq!(
            Records::decode(&[0, 0, 0, 0, 9]),
            Err(RecordsError::TrailingBytes)
        );
        assert_eq!(
            Records::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RecordsError::BadName)
        );
    }

    #[test]
    fn insert_enforces_bounds() {
        let mut r = Records::new();
        assert_eq!(r.insert(b"", b"x"), Err(RecordsError::BadName));
        assert_eq!(r.insert(&[b'n'; 256], b"x"), Err(RecordsError::BadName));
        for i in 0..MAX_RECORDS {
            r.insert(&(i as u32).to_be_bytes(), b"").unwrap();
        }
        assert_eq!(r.insert(b"one more", b""), Err(RecordsError::TooMany));
        // Replacing an existing name is still allowed when full.
        r.insert(&0u32.to_be_bytes(), b"new").unwrap();
        assert_eq!(r.get(&0u32.to_be_bytes()), Some(&b"new"[..]));
        assert!(r.remove(&0u32.to_be_bytes()));
        assert!(!r.remove(&0u32.to_be_bytes()));
    }

    #[test]
    fn debug_does_not_print_names_or_values() {
        let mut r = Records::new();
        r.insert(b"github", b"hunter2").unwrap();
        let s = alloc::format!("{r:?}");
        assert!(!s.contains("github") && !s.contains("hunter2"), "{s}");
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..=MAX_NAME_LEN),
                proptest::collection::vec(any::<u8>(), 0..64),
                0..24,
            )
        ) {
            let mut r = Records::new();
            for (k, v) in &entries {
                r.insert(k, v).unwrap();
            }
            let bytes = r.encode();
            prop_assert_eq!(bytes.len(), r.encoded_len());
            let back = Records::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &r);
            let got: Vec<(Vec<u8>, Vec<u8>)> =
                back.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = Records::decode(&bytes) {
                // Whatever decodes is canonical: it re-encodes to the same bytes.
                prop_assert_eq!(&r.encode()[..], &bytes[..]);
            }
        }
    }
}
