//! Sharing our pages with a peer through the grant table (`platform_api::Grants`): heap pages,
//! one v1 entry each; dropping the share ends access, and leaks pages a peer still maps.
#![forbid(unsafe_code)]

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use platform_api::{DomId, GrantRef, Grants, Ordering, OutOfBounds, PlatformError, SharedMem};

use crate::grant_table::{GrantError, GrantTable};
use crate::mm::{self, HeapPages};
use crate::shared::RawPages;

/// Our grant table, shared by every [`GrantedPages`] it made.
#[derive(Debug, Clone)]
pub struct XenGrants {
    table: Rc<RefCell<GrantTable<RawPages>>>,
    /// PV: the p2m list (frames in grant entries are MFNs); PVH: `None` (GFNs).
    mfn_list: Option<u64>,
}

impl XenGrants {
    /// Over the frames `shared::grant_frames` set up.
    pub fn new(frames: RawPages, mfn_list: Option<u64>) -> Self {
        Self {
            table: Rc::new(RefCell::new(GrantTable::new(frames))),
            mfn_list,
        }
    }

    fn frame(&self, addr: usize) -> u64 {
        let pfn = addr as u64 >> 12;
        match self.mfn_list {
            Some(list) => mm::pv_pfn_to_mfn(list, pfn),
            None => pfn,
        }
    }

    /// Refs still free.
    pub fn free_refs(&self) -> usize {
        self.table.borrow().free_refs()
    }
}

fn to_platform(e: GrantError) -> PlatformError {
    match e {
        GrantError::Full { what } => PlatformError::Full { what },
        GrantError::NotGranted(r) | GrantError::InUse(r) => PlatformError::BadGrant(r),
    }
}

/// Pages we granted; access ends when dropped.
#[derive(Debug)]
pub struct GrantedPages {
    pages: Option<HeapPages>,
    refs: Vec<GrantRef>,
    table: Rc<RefCell<GrantTable<RawPages>>>,
}

impl GrantedPages {
    /// The refs, in page order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// Ends access now; `Err` if the peer still uses a page (those pages are then leaked).
    pub fn end_access(mut self) -> Result<(), PlatformError> {
        self.revoke()
    }

    fn revoke(&mut self) -> Result<(), PlatformError> {
        let mut result = Ok(());
        let mut table = self.table.borrow_mut();
        for r in self.refs.drain(..) {
            if let Err(e) = table.end_access(r) {
                result = Err(to_platform(e));
            }
        }
        if result.is_err() {
            // A peer may still write these pages: never give them back to the heap.
            core::mem::forget(self.pages.take());
        }
        result
    }

    fn mem(&self) -> Result<&RawPages, OutOfBounds> {
        self.pages.as_ref().map(HeapPages::mem).ok_or(OutOfBounds {
            offset: 0,
            len: 0,
            size: 0,
        })
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        let _ = self.revoke();
    }
}

impl SharedMem for GrantedPages {
    fn size(&self) -> usize {
        self.mem().map(|m| m.size()).unwrap_or(0)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.mem()?.read(offset, buf)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.mem()?.write(offset, data)
    }
    fn load_u8(&self, offset: usize, o: Ordering) -> Result<u8, OutOfBounds> {
        self.mem()?.load_u8(offset, o)
    }
    fn store_u8(&self, offset: usize, v: u8, o: Ordering) -> Result<(), OutOfBounds> {
        self.mem()?.store_u8(offset, v, o)
    }
    fn load_u16(&self, offset: usize, o: Ordering) -> Result<u16, OutOfBounds> {
        self.mem()?.load_u16(offset, o)
    }
    fn store_u16(&self, offset: usize, v: u16, o: Ordering) -> Result<(), OutOfBounds> {
        self.mem()?.store_u16(offset, v, o)
    }
    fn load_u32(&self, offset: usize, o: Ordering) -> Result<u32, OutOfBounds> {
        self.mem()?.load_u32(offset, o)
    }
    fn store_u32(&self, offset: usize, v: u32, o: Ordering) -> Result<(), OutOfBounds> {
        self.mem()?.store_u32(offset, v, o)
    }
    fn fetch_and_u8(&self, offset: usize, mask: u8, o: Ordering) -> Result<u8, OutOfBounds> {
        self.mem()?.fetch_and_u8(offset, mask, o)
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8, o: Ordering) -> Result<u8, OutOfBounds> {
        self.mem()?.fetch_or_u8(offset, bits, o)
    }
}

impl Grants for XenGrants {
    type Mem = GrantedPages;

    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(GrantedPages, Vec<GrantRef>), PlatformError> {
        let mem = HeapPages::alloc(pages).ok_or(PlatformError::Full { what: "heap pages" })?;
        let addr = mem.addr();
        // Owned by `out` from here: a failure part-way ends what was granted, and a page a
        // peer grabbed meanwhile is leaked, not freed.
        let mut out = GrantedPages {
            pages: Some(mem),
            refs: Vec::with_capacity(pages),
            table: self.table.clone(),
        };
        for i in 0..pages {
            let frame = self.frame(addr + i * 4096);
            let frame = u32::try_from(frame)
                .map_err(|_| PlatformError::Unsupported("frames above 16 TiB"))?;
            let r = self
                .table
                .borrow_mut()
                .grant(peer, frame, !writable)
                .map_err(to_platform)?;
            out.refs.push(r);
        }
        let refs = out.refs.clone();
        Ok((out, refs))
    }

    fn map(
        &mut self,
        _peer: DomId,
        _refs: &[GrantRef],
        _writable: bool,
    ) -> Result<GrantedPages, PlatformError> {
        Err(PlatformError::Unsupported(
            "mapping a peer's grants (not yet in platform-xen)",
        ))
    }
}
