//! Our grant table (v1 entries in shared frames): handing out refs, granting a frame with the
//! flags written last, and ending access only when the peer no longer uses the page.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

use platform_api::{DomId, GrantRef, Ordering, SharedMem};

use crate::abi::gtf;

/// Refs 0..8 are the toolstack's (console, xenstore, ...).
pub const FIRST_FREE_REF: u32 = 8;
/// Bytes of one `grant_entry_v1`.
pub const ENTRY_SIZE: usize = 8;

/// Why a grant operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Every ref is in use (our bound: the frames we set up).
    Full {
        /// What ran out.
        what: &'static str,
    },
    /// The ref is not one we granted.
    NotGranted(GrantRef),
    /// The peer still maps or copies the page (`GTF_reading`/`GTF_writing`): the page must not
    /// be reused, and the ref stays retired.
    InUse(GrantRef),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { what } => write!(f, "no free {what} left"),
            Self::NotGranted(r) => write!(f, "grant ref {r} is not granted by us"),
            Self::InUse(r) => write!(f, "grant ref {r} is still in use by the peer"),
        }
    }
}

impl core::error::Error for GrantError {}

/// The table over its frames (any `SharedMem`: Xen's frames in an image, `HeapMem` in tests).
#[derive(Debug)]
pub struct GrantTable<M> {
    mem: M,
    free: Vec<u32>,
    granted: Vec<bool>,
}

impl<M: SharedMem> GrantTable<M> {
    /// A table over `mem` (whole entries only); refs below [`FIRST_FREE_REF`] are never used.
    pub fn new(mem: M) -> Self {
        let n = (mem.size() / ENTRY_SIZE) as u32;
        let free: Vec<u32> = (FIRST_FREE_REF..n).rev().collect();
        Self {
            mem,
            free,
            granted: alloc::vec![false; n as usize],
        }
    }

    /// Refs still available.
    pub fn free_refs(&self) -> usize {
        self.free.len()
    }

    /// Grants `frame` (a GFN on PVH, an MFN on PV) to `peer`. The domid and frame are written
    /// and fenced before the flags, so the peer never sees a permitted entry half-written.
    pub fn grant(
        &mut self,
        peer: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let r = self
            .free
            .pop()
            .ok_or(GrantError::Full { what: "grant refs" })?;
        let off = r as usize * ENTRY_SIZE;
        let mut entry = [0u8; 6];
        entry[..2].copy_from_slice(&peer.get().to_le_bytes());
        entry[2..].copy_from_slice(&frame.to_le_bytes());
        let flags = gtf::PERMIT_ACCESS | if readonly { gtf::READONLY } else { 0 };
        let done = self.mem.write(off + 2, &entry).and_then(|_| {
            self.mem.fence(Ordering::SeqCst);
            self.mem.store_u16(off, flags, Ordering::Release)
        });
        if done.is_err() {
            self.free.push(r);
            return Err(GrantError::NotGranted(GrantRef(r)));
        }
        self.granted[r as usize] = true;
        Ok(GrantRef(r))
    }

    /// Ends the peer's access. If the peer still uses the page the ref is retired for good and
    /// [`GrantError::InUse`] says the page must be leaked, never reused.
    pub fn end_access(&mut self, r: GrantRef) -> Result<(), GrantError> {
        let i = r.0 as usize;
        if !self.granted.get(i).copied().unwrap_or(false) {
            return Err(GrantError::NotGranted(r));
        }
        self.granted[i] = false;
        let off = i * ENTRY_SIZE;
        // Both busy bits live in the low byte of the little-endian flags.
        let busy = (gtf::READING | gtf::WRITING) as u8;
        let flags = self
            .mem
            .load_u8(off, Ordering::Acquire)
            .map_err(|_| GrantError::InUse(r))?;
        if flags & busy != 0 {
            return Err(GrantError::InUse(r));
        }
        // Clear the flags; if the peer mapped in between, its busy bits show in the old value
        // and the page stays the peer's.
        let old = self
            .mem
            .fetch_and_u8(off, 0, Ordering::SeqCst)
            .map_err(|_| GrantError::InUse(r))?;
        if old & busy != 0 {
            return Err(GrantError::InUse(r));
        }
        self.free.push(r.0);
        Ok(())
    }

    /// The table's memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{GrantEntryV1, Wire};
    use platform_api::HeapMem;
    use proptest::prelude::*;

    fn entry(t: &GrantTable<HeapMem>, r: GrantRef) -> GrantEntryV1 {
        let mut b = [0u8; 8];
        t.mem().read(r.0 as usize * 8, &mut b).unwrap();
        GrantEntryV1::decode(&b).unwrap()
    }

    #[test]
    fn grant_writes_the_v1_entry_and_skips_reserved_refs() {
        let mut t = GrantTable::new(HeapMem::new(4096));
        assert_eq!(t.free_refs(), 512 - 8);
        let r = t.grant(DomId::new(7).unwrap(), 0x1234, true).unwrap();
        assert_eq!(r, GrantRef(8));
        assert_eq!(
            entry(&t, r),
            GrantEntryV1 {
                flags: gtf::PERMIT_ACCESS | gtf::READONLY,
                domid: 7,
                frame: 0x1234
            }
        );
        let w = t.grant(DomId::DOM0, 9, false).unwrap();
        assert_eq!(entry(&t, w).flags, gtf::PERMIT_ACCESS);
        t.end_access(r).unwrap();
        assert_eq!(entry(&t, r).flags, 0);
        assert_eq!(
            t.end_access(r),
            Err(GrantError::NotGranted(r)),
            "ending twice is refused"
        );
    }

    #[test]
    fn hostile_peer_still_mapping_keeps_the_page() {
        let mut t = GrantTable::new(HeapMem::new(4096));
        let r = t.grant(DomId::DOM0, 1, false).unwrap();
        // The peer (Xen on its behalf) marks the entry in use.
        t.mem()
            .fetch_or_u8(r.0 as usize * 8, gtf::WRITING as u8, Ordering::SeqCst)
            .unwrap();
        let before = t.free_refs();
        assert_eq!(t.end_access(r), Err(GrantError::InUse(r)));
        assert_eq!(
            t.free_refs(),
            before,
            "an in-use ref is retired, not reused"
        );
        assert_eq!(
            t.end_access(GrantRef(3)),
            Err(GrantError::NotGranted(GrantRef(3))),
            "reserved refs are not ours"
        );
        assert_eq!(
            t.end_access(GrantRef(100_000)),
            Err(GrantError::NotGranted(GrantRef(100_000)))
        );
    }

    #[test]
    fn full_is_an_answer() {
        let mut t = GrantTable::new(HeapMem::new(10 * 8));
        assert!(t.grant(DomId::DOM0, 1, false).is_ok());
        assert!(t.grant(DomId::DOM0, 2, false).is_ok());
        assert_eq!(
            t.grant(DomId::DOM0, 3, false),
            Err(GrantError::Full { what: "grant refs" })
        );
    }

    proptest! {
        #[test]
        fn refs_are_unique_while_granted(ops in proptest::collection::vec(any::<bool>(), 1..300)) {
            let mut t = GrantTable::new(HeapMem::new(64 * 8));
            let mut live: Vec<GrantRef> = Vec::new();
            for grant in ops {
                if grant || live.is_empty() {
                    if let Ok(r) = t.grant(DomId::DOM0, 5, false) {
                        prop_assert!(!live.contains(&r) && r.0 >= FIRST_FREE_REF);
                        live.push(r);
                    }
                } else {
                    let r = live.remove(0);
                    prop_assert!(t.end_access(r).is_ok());
                }
            }
            prop_assert_eq!(t.free_refs() + live.len(), 64 - 8);
        }
    }
}
