//! A bounded map of QubesDB entries (path → value) with byte accounting, used for the VM's copy
//! and for dom0's untrusted area of VM writes.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Bound;

use super::wire::{QdbPath, PATH_FIELD_LEN};

/// Entries under a bound on count and on path-plus-value bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entries {
    map: BTreeMap<QdbPath, Vec<u8>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// The insert would exceed a bound; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full(pub &'static str);

impl Entries {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Entries {
            map: BTreeMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn cost(p: &QdbPath, v: &[u8]) -> usize {
        p.as_bytes().len() + v.len()
    }

    /// Sets `path` = `value`; returns whether the value changed.
    pub(crate) fn insert(&mut self, path: QdbPath, value: &[u8]) -> Result<bool, Full> {
        let old = self.map.get(&path).map(|v| Self::cost(&path, v));
        if old.is_none() && self.map.len() >= self.max_entries {
            return Err(Full("entries"));
        }
        let bytes = self.bytes - old.unwrap_or(0) + Self::cost(&path, value);
        if bytes > self.max_bytes {
            return Err(Full("bytes"));
        }
        if self.map.get(&path).is_some_and(|v| v == value) {
            return Ok(false);
        }
        self.bytes = bytes;
        self.map.insert(path, value.to_vec());
        Ok(true)
    }

    /// Removes one entry, or every entry under the path if it ends in `/`; returns how many.
    pub(crate) fn remove(&mut self, path: &QdbPath) -> usize {
        if !path.is_prefix() {
            return match self.map.remove(path) {
                Some(v) => {
                    self.bytes -= Self::cost(path, &v);
                    1
                }
                None => 0,
            };
        }
        let doomed: Vec<QdbPath> = self.under(path, None).map(|(p, _)| *p).collect();
        for p in &doomed {
            if let Some(v) = self.map.remove(p) {
                self.bytes -= Self::cost(p, &v);
            }
        }
        doomed.len()
    }

    pub(crate) fn get(&self, path: &QdbPath) -> Option<&[u8]> {
        self.map.get(path).map(Vec::as_slice)
    }

    /// Entries whose path starts with `prefix`, in sorted order, optionally only those before
    /// `before` (the dump walks backwards from there).
    pub(crate) fn under(
        &self,
        prefix: &QdbPath,
        before: Option<&QdbPath>,
    ) -> impl DoubleEndedIterator<Item = (&QdbPath, &[u8])> {
        let p = prefix.as_bytes();
        // Paths are ASCII, so bumping the last byte of the prefix gives the first path after
        // every path that starts with it.
        let mut upper = [0u8; PATH_FIELD_LEN];
        let hi = match p.split_last() {
            Some((last, head)) => {
                upper[..head.len()].copy_from_slice(head);
                upper[head.len()] = last + 1;
                Bound::Excluded(&upper[..p.len()])
            }
            None => Bound::Unbounded,
        };
        let hi = match (hi, before) {
            (Bound::Excluded(h), Some(b)) if b.as_bytes() < h => Bound::Excluded(b.as_bytes()),
            (Bound::Unbounded, Some(b)) => Bound::Excluded(b.as_bytes()),
            (hi, _) => hi,
        };
        let lo = Bound::Included(p);
        let range = if matches!(hi, Bound::Excluded(h) if h < p) {
            self.map
                .range::<[u8], _>((Bound::Included(p), Bound::Excluded(p)))
        } else {
            self.map.range::<[u8], _>((lo, hi))
        };
        range.map(|(k, v)| (k, v.as_slice()))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}
