//! `platform_api::Grants` on Xen: sharing heap pages through our grant table (ended on drop,
//! leaked if the peer still maps them) and mapping a peer's grants (unmapped on drop).
#![forbid(unsafe_code)]

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use platform_api::{DomId, GrantRef, Grants, Ordering, OutOfBounds, PlatformError, SharedMem};

use xen_rings::netif::{CopyFailed, GuestCopy};

use crate::abi::GnttabCopy;
use crate::grant_table::{GrantError, GrantTable};
use crate::hypercall;
use crate::map_window::MapWindow;
use crate::mm::{self, HeapPages};
use crate::shared::{GrantMapping, RawPages};

/// Most pages one `map` call takes (the vchan rings use at most 16 per direction).
pub const MAX_MAP_PAGES: usize = 128;

/// Our grant table and mapping window; clones share them.
#[derive(Debug, Clone)]
pub struct XenGrants {
    table: Rc<RefCell<GrantTable<RawPages>>>,
    /// PV: the p2m list (grant frames are MFNs, mappings replace heap PTEs); PVH: `None`.
    mfn_list: Option<u64>,
    /// PVH: free slots of the 4-5 GiB window.
    window: Rc<RefCell<MapWindow>>,
    /// Our domid, once the application has read it (see [`XenGrants::set_own_domid`]).
    own: Rc<Cell<Option<DomId>>>,
}

impl XenGrants {
    /// Over the frames `shared::grant_frames` set up. `window_free` says the PVH mapping window
    /// overlaps no RAM of ours (otherwise PVH cannot map grants).
    pub fn new(frames: RawPages, mfn_list: Option<u64>, window_free: bool) -> Self {
        let window = crate::boot::MAP_WINDOW;
        let pages = if mfn_list.is_none() && window_free {
            (window.end - window.start) / 4096
        } else {
            0
        };
        Self {
            table: Rc::new(RefCell::new(GrantTable::new(frames))),
            mfn_list,
            window: Rc::new(RefCell::new(MapWindow::new(pages))),
            own: Rc::new(Cell::new(None)),
        }
    }

    pub(crate) fn frame(&self, addr: usize) -> u64 {
        let pfn = addr as u64 >> 12;
        match self.mfn_list {
            Some(list) => mm::pv_pfn_to_mfn(list, pfn),
            None => pfn,
        }
    }

    /// Tells the grant layer our domid (read from xenstore), so that PVH can refuse to map
    /// our own grants: Xen then takes the frame away from its original guest-physical address
    /// (seen on Xen 4.17: writes there vanish, and the heap's free list in it broke), which
    /// would corrupt whatever lives there once the mapping ends.
    pub fn set_own_domid(&self, own: DomId) {
        self.own.set(Some(own));
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

#[derive(Debug)]
enum Inner {
    Shared {
        pages: Option<HeapPages>,
        refs: Vec<GrantRef>,
        table: Rc<RefCell<GrantTable<RawPages>>>,
    },
    Mapped(GrantMapping),
}

/// Pages we granted, or a peer's pages we mapped; released when dropped.
#[derive(Debug)]
pub struct GrantMem {
    inner: Inner,
}

impl GrantMem {
    /// The refs, in page order (empty for a mapping).
    pub fn refs(&self) -> &[GrantRef] {
        match &self.inner {
            Inner::Shared { refs, .. } => refs,
            Inner::Mapped(_) => &[],
        }
    }

    /// Ends the peer's access now (shared pages); `Err` if the peer still maps a page, which is
    /// then leaked. A mapping is simply unmapped.
    pub fn end_access(mut self) -> Result<(), PlatformError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), PlatformError> {
        let Inner::Shared { pages, refs, table } = &mut self.inner else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut table = table.borrow_mut();
        for r in refs.drain(..) {
            if let Err(e) = table.end_access(r) {
                result = Err(to_platform(e));
            }
        }
        if result.is_err() {
            // A peer may still write these pages: never give them back to the heap.
            core::mem::forget(pages.take());
        }
        result
    }

    fn mem(&self) -> Result<&RawPages, OutOfBounds> {
        match &self.inner {
            Inner::Shared { pages: Some(p), .. } => Ok(p.mem()),
            Inner::Shared { pages: None, .. } => Err(OutOfBounds {
                offset: 0,
                len: 0,
                size: 0,
            }),
            Inner::Mapped(m) => Ok(m.mem()),
        }
    }
}

impl Drop for GrantMem {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl SharedMem for GrantMem {
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
    type Mem = GrantMem;

    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(GrantMem, Vec<GrantRef>), PlatformError> {
        let mem = HeapPages::alloc(pages).ok_or(PlatformError::Full { what: "heap pages" })?;
        let addr = mem.addr();
        // Owned by `out` from here: a failure part-way ends what was granted, and a page a
        // peer grabbed meanwhile is leaked, not freed.
        let mut out = GrantMem {
            inner: Inner::Shared {
                pages: Some(mem),
                refs: Vec::with_capacity(pages),
                table: self.table.clone(),
            },
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
            if let Inner::Shared { refs, .. } = &mut out.inner {
                refs.push(r);
            }
        }
        let refs = out.refs().to_vec();
        Ok((out, refs))
    }

    fn map(
        &mut self,
        peer: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMem, PlatformError> {
        if refs.is_empty() || refs.len() > MAX_MAP_PAGES {
            return Err(PlatformError::Full {
                what: "pages in one grant mapping",
            });
        }
        if self.mfn_list.is_none() && self.own.get() == Some(peer) {
            return Err(PlatformError::Unsupported(
                "PVH mapping a grant of our own domain",
            ));
        }
        let raw: Vec<u32> = refs.iter().map(|r| r.0).collect();
        let mapped = match self.mfn_list {
            Some(list) => GrantMapping::map_pv(list, peer.get(), &raw, !writable),
            None => GrantMapping::map_pvh(&self.window, peer.get(), &raw, !writable),
        };
        // Xen's status says which ref failed only in aggregate: report the first.
        let m = mapped.map_err(|_| PlatformError::BadGrant(refs[0]))?;
        Ok(GrantMem {
            inner: Inner::Mapped(m),
        })
    }
}

/// Copies between one peer's granted pages and ours with `GNTTABOP_copy` (netback's data path:
/// the frontend's pages are never mapped). Each copy goes through one bounce page of ours.
#[derive(Debug)]
pub struct GrantCopier {
    peer: DomId,
    bounce: HeapPages,
    frame: u64,
}

impl GrantCopier {
    /// A copier for `peer`'s grants.
    pub fn new(grants: &XenGrants, peer: DomId) -> Result<Self, PlatformError> {
        let bounce = HeapPages::alloc(1).ok_or(PlatformError::Full { what: "heap pages" })?;
        let frame = grants.frame(bounce.addr());
        Ok(Self {
            peer,
            bounce,
            frame,
        })
    }

    fn op(&self, gref: GrantRef, offset: u16, len: usize, to_guest: bool) -> GnttabCopy {
        let (ours_lo, ours_hi) = (self.frame as u32, (self.frame >> 32) as u32);
        let len = len as u16;
        if to_guest {
            GnttabCopy {
                src_ref: ours_lo,
                src_pad: ours_hi,
                src_dom: crate::abi::DOMID_SELF,
                src_offset: 0,
                dst_gmfn: u64::from(gref.0),
                dst_dom: self.peer.get(),
                dst_offset: offset,
                len,
                flags: hypercall::GNTCOPY_DEST_GREF,
                ..GnttabCopy::default()
            }
        } else {
            GnttabCopy {
                src_ref: gref.0,
                src_dom: self.peer.get(),
                src_offset: offset,
                dst_gmfn: self.frame,
                dst_dom: crate::abi::DOMID_SELF,
                dst_offset: 0,
                len,
                flags: hypercall::GNTCOPY_SOURCE_GREF,
                ..GnttabCopy::default()
            }
        }
    }
}

/// The peer's `offset + len` must stay inside its page (the ring machines check this too;
/// checked again because Xen would refuse it only after a hypercall).
fn in_page(offset: u16, len: usize) -> Result<(), CopyFailed> {
    platform_api::check_range(usize::from(offset), len, platform_api::PAGE_SIZE)
        .map_err(|_| CopyFailed)
}

impl GuestCopy for GrantCopier {
    fn copy_from_guest(
        &mut self,
        gref: GrantRef,
        offset: u16,
        dst: &mut [u8],
    ) -> Result<(), CopyFailed> {
        in_page(offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let mut op = self.op(gref, offset, dst.len(), false);
        hypercall::grant_copy(&mut op).map_err(|_| CopyFailed)?;
        self.bounce.mem().read(0, dst).map_err(|_| CopyFailed)
    }

    fn copy_to_guest(&mut self, gref: GrantRef, offset: u16, src: &[u8]) -> Result<(), CopyFailed> {
        in_page(offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.bounce.mem().write(0, src).map_err(|_| CopyFailed)?;
        let mut op = self.op(gref, offset, src.len(), true);
        hypercall::grant_copy(&mut op).map_err(|_| CopyFailed)
    }
}
