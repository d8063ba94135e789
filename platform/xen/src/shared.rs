//! Memory shared with Xen or a peer domain, seen only through `SharedMem` (copies and atomics,
//! never a reference into it), and a spin cell for the image's few globals.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use platform_api::{check_range, OutOfBounds, SharedMem};

use alloc::rc::Rc;
use core::cell::RefCell;

use crate::boot;
use crate::hypercall::{self, XenErrno};
use crate::map_window::MapWindow;
use crate::mm;

/// Pages at a fixed address that another party may write at any time.
#[derive(Debug)]
pub struct RawPages {
    base: usize,
    size: usize,
}

impl RawPages {
    /// Wraps `size` bytes at `base`.
    ///
    /// # Safety
    /// 1. `[base, base + size)` is mapped readable and writable for as long as this value lives.
    /// 2. Rust holds no reference into it (others may write it; we only copy and use atomics).
    /// 3. `base` is 8-aligned.
    pub unsafe fn new(base: usize, size: usize) -> Self {
        Self { base, size }
    }

    /// The first byte's address.
    pub fn base(&self) -> usize {
        self.base
    }

    fn aligned(&self, offset: usize, len: usize) -> Result<usize, OutOfBounds> {
        check_range(offset, len, self.size)?;
        if !offset.is_multiple_of(len) {
            return Err(OutOfBounds {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(self.base + offset)
    }
}

fn load_order(o: Ordering) -> Ordering {
    match o {
        Ordering::Release => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

fn store_order(o: Ordering) -> Ordering {
    match o {
        Ordering::Acquire => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Release,
        o => o,
    }
}

impl SharedMem for RawPages {
    fn size(&self) -> usize {
        self.size
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(offset, buf.len(), self.size)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in range (checked) of memory mapped for our life (`new`'s contract);
            // volatile because the peer may change it under us.
            *b = unsafe { ptr::read_volatile((self.base + offset + i) as *const u8) };
        }
        Ok(())
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        check_range(offset, data.len(), self.size)?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { ptr::write_volatile((self.base + offset + i) as *mut u8, *b) };
        }
        Ok(())
    }
    fn load_u8(&self, offset: usize, o: Ordering) -> Result<u8, OutOfBounds> {
        let a = self.aligned(offset, 1)?;
        // SAFETY: in range and mapped (contract of `new`); all accesses to shared bytes are atomic or volatile.
        Ok(unsafe { AtomicU8::from_ptr(a as *mut u8) }.load(load_order(o)))
    }
    fn store_u8(&self, offset: usize, v: u8, o: Ordering) -> Result<(), OutOfBounds> {
        let a = self.aligned(offset, 1)?;
        // SAFETY: as in `load_u8`.
        unsafe { AtomicU8::from_ptr(a as *mut u8) }.store(v, store_order(o));
        Ok(())
    }
    fn load_u16(&self, offset: usize, o: Ordering) -> Result<u16, OutOfBounds> {
        let a = self.aligned(offset, 2)?;
        // SAFETY: in range, 2-aligned (base is 8-aligned, offset checked).
        Ok(unsafe { AtomicU16::from_ptr(a as *mut u16) }.load(load_order(o)))
    }
    fn store_u16(&self, offset: usize, v: u16, o: Ordering) -> Result<(), OutOfBounds> {
        let a = self.aligned(offset, 2)?;
        // SAFETY: as in `load_u16`.
        unsafe { AtomicU16::from_ptr(a as *mut u16) }.store(v, store_order(o));
        Ok(())
    }
    fn load_u32(&self, offset: usize, o: Ordering) -> Result<u32, OutOfBounds> {
        let a = self.aligned(offset, 4)?;
        // SAFETY: in range, 4-aligned.
        Ok(unsafe { AtomicU32::from_ptr(a as *mut u32) }.load(load_order(o)))
    }
    fn store_u32(&self, offset: usize, v: u32, o: Ordering) -> Result<(), OutOfBounds> {
        let a = self.aligned(offset, 4)?;
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(a as *mut u32) }.store(v, store_order(o));
        Ok(())
    }
    fn fetch_and_u8(&self, offset: usize, mask: u8, o: Ordering) -> Result<u8, OutOfBounds> {
        let a = self.aligned(offset, 1)?;
        // SAFETY: in range.
        Ok(unsafe { AtomicU8::from_ptr(a as *mut u8) }.fetch_and(mask, o))
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8, o: Ordering) -> Result<u8, OutOfBounds> {
        let a = self.aligned(offset, 1)?;
        // SAFETY: in range.
        Ok(unsafe { AtomicU8::from_ptr(a as *mut u8) }.fetch_or(bits, o))
    }
}

impl RawPages {
    /// Atomic 64-bit load (offset 8-aligned): the event bitmaps are u64 words.
    pub fn load_u64(&self, offset: usize, o: Ordering) -> Result<u64, OutOfBounds> {
        let a = self.aligned(offset, 8)?;
        // SAFETY: in range, 8-aligned.
        Ok(unsafe { AtomicU64::from_ptr(a as *mut u64) }.load(load_order(o)))
    }

    /// Atomically clears `bits` in a u64 word and returns the old value.
    pub fn fetch_and_u64(&self, offset: usize, mask: u64, o: Ordering) -> Result<u64, OutOfBounds> {
        let a = self.aligned(offset, 8)?;
        // SAFETY: in range, 8-aligned.
        Ok(unsafe { AtomicU64::from_ptr(a as *mut u64) }.fetch_and(mask, o))
    }

    /// Atomic compare-and-swap of a u16 (grant flags), returning the value found.
    pub fn cas_u16(&self, offset: usize, old: u16, new: u16) -> Result<u16, OutOfBounds> {
        let a = self.aligned(offset, 2)?;
        // SAFETY: in range, 2-aligned.
        let c = unsafe { AtomicU16::from_ptr(a as *mut u16) };
        Ok(
            match c.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }
}

/// A global behind a spin flag (one CPU, no interrupts: contention means re-entry, a bug).
#[derive(Debug)]
pub struct SpinCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through `with`, which holds `busy`.
unsafe impl<T: Send> Sync for SpinCell<T> {}

impl<T> SpinCell<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> Self {
        Self {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(v),
        }
    }

    /// Runs `f` on the value; `None` if the cell is already held (re-entry, e.g. a panic while
    /// printing), so a panic path can fall back instead of deadlocking.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: `busy` is held, so this is the only reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }
}

/// One page-aligned page inside the image (for shared_info, grant frames and page tables).
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct PageBuf(pub UnsafeCell<[u8; 4096]>);

// SAFETY: the contents are only reached through raw addresses handed to `RawPages` or Xen.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; 4096]))
    }

    /// Its address.
    pub fn addr(&self) -> usize {
        self.0.get() as usize
    }
}

/// The page shared_info is mapped over (PVH: its frame is replaced; PV: its mapping is).
static SHARED_INFO: PageBuf = PageBuf::new();

/// The pages Xen shares with us at boot, and their event channels.
#[derive(Debug)]
pub struct XenPages {
    /// `struct shared_info`.
    pub shared_info: RawPages,
    /// The PV console ring and its port.
    pub console: Option<(RawPages, u32)>,
    /// The xenstore ring and its port.
    pub store: Option<(RawPages, u32)>,
}

/// PVH: a ring page named by an HVM param pair (frame, port); `None` if Xen gives none.
fn hvm_ring(pfn_param: u32, port_param: u32) -> Result<Option<(RawPages, u32)>, XenErrno> {
    let pfn = hypercall::hvm_get_param(pfn_param)?;
    let port = hypercall::hvm_get_param(port_param)? as u32;
    let addr = match pfn.checked_mul(4096) {
        Some(a) if pfn != 0 && a < boot::IDENTITY_MAP_END => a,
        Some(_) if pfn == 0 => return Ok(None),
        _ => return Err(XenErrno(-22)),
    };
    // SAFETY: Xen names this frame as the ring shared with the backend; it is inside our
    // identity map, outside our RAM (a reserved region), and nothing in Rust references it.
    Ok(Some((unsafe { RawPages::new(addr as usize, 4096) }, port)))
}

/// PVH: maps shared_info and finds the console and xenstore rings.
pub fn discover_pvh() -> Result<XenPages, XenErrno> {
    // SAFETY: SHARED_INFO is a page of ours reserved for this; Rust never reads it except
    // through the RawPages below, so replacing its frame breaks nothing.
    unsafe {
        hypercall::add_to_physmap(
            crate::abi::XENMAPSPACE_SHARED_INFO,
            0,
            SHARED_INFO.addr() as u64 >> 12,
        )?
    };
    Ok(XenPages {
        // SAFETY: the page is mapped (our .bss) and now holds shared_info, which Xen writes.
        shared_info: unsafe { RawPages::new(SHARED_INFO.addr(), 4096) },
        console: hvm_ring(
            crate::abi::HVM_PARAM_CONSOLE_PFN,
            crate::abi::HVM_PARAM_CONSOLE_EVTCHN,
        )?,
        store: hvm_ring(
            crate::abi::HVM_PARAM_STORE_PFN,
            crate::abi::HVM_PARAM_STORE_EVTCHN,
        )?,
    })
}

/// PV: maps shared_info and finds the rings the builder mapped for us (start_info).
pub fn discover_pv(si: &crate::bootinfo::StartInfo) -> Result<XenPages, XenErrno> {
    // SAFETY: SHARED_INFO is ours and unused by Rust (see discover_pvh).
    unsafe { mm::pv_map_machine_page(SHARED_INFO.addr() as u64, si.shared_info)? };
    let ring = |mfn: u64, port: u32| {
        let va = mm::pv_mfn_to_pfn(mfn) << 12;
        // SAFETY: the builder maps the console and xenstore pages 1:1 (virtual = pfn << 12)
        // in the start-of-day area, read-write, for the guest to share with the backends.
        (unsafe { RawPages::new(va as usize, 4096) }, port)
    };
    Ok(XenPages {
        // SAFETY: mapped just above to shared_info's machine frame.
        shared_info: unsafe { RawPages::new(SHARED_INFO.addr(), 4096) },
        console: (si.console_mfn != 0).then(|| ring(si.console_mfn, si.console_evtchn)),
        store: (si.store_mfn != 0).then(|| ring(si.store_mfn, si.store_evtchn)),
    })
}

/// Frames of our grant table: 4 frames, 2048 v1 entries.
pub const GRANT_FRAMES: usize = 4;
static GRANT_TABLE: [PageBuf; GRANT_FRAMES] = [
    PageBuf::new(),
    PageBuf::new(),
    PageBuf::new(),
    PageBuf::new(),
];

/// Sets up our grant table frames and returns them as one region.
pub fn grant_frames(pv: bool) -> Result<RawPages, XenErrno> {
    let base = GRANT_TABLE[0].addr();
    if pv {
        let mut frames = [0u64; GRANT_FRAMES];
        let mut a = crate::abi::GnttabSetupTable {
            dom: crate::abi::DOMID_SELF,
            nr_frames: GRANT_FRAMES as u32,
            status: 0,
            frame_list: frames.as_mut_ptr() as u64,
        };
        // SAFETY: setup_table writes `nr_frames` u64s into `frames` and the status into `a`,
        // both ours and live across the call.
        let r = unsafe {
            hypercall::raw(
                crate::abi::hc::GRANT_TABLE_OP,
                u64::from(crate::abi::GNTTABOP_SETUP_TABLE),
                &mut a as *mut _ as u64,
                1,
                0,
                0,
            )
        };
        if r < 0 || a.status != 0 {
            return Err(XenErrno(if r < 0 { r } else { i64::from(a.status) }));
        }
        for (i, mfn) in frames.iter().enumerate() {
            // SAFETY: GRANT_TABLE is ours and Rust never reads it except through RawPages.
            unsafe { mm::pv_map_machine_page(GRANT_TABLE[i].addr() as u64, mfn << 12)? };
        }
    } else {
        for (i, f) in GRANT_TABLE.iter().enumerate() {
            // SAFETY: as above; Xen replaces the frame behind our page with grant frame i.
            unsafe {
                hypercall::add_to_physmap(
                    crate::abi::XENMAPSPACE_GRANT_TABLE,
                    i as u64,
                    f.addr() as u64 >> 12,
                )?
            };
        }
    }
    // SAFETY: the array is contiguous, page-aligned, ours, and now Xen's grant frames.
    Ok(unsafe { RawPages::new(base, GRANT_FRAMES * 4096) })
}

/// Why mapping a peer's grants failed: Xen's `GNTST_*` status (or a hypercall error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapError(pub i64);

/// Maps `refs` of `peer` at consecutive pages from `base`; returns the handles. All or nothing:
/// if any ref fails, the ones that mapped are unmapped again.
///
/// # Safety
/// `[base, base + refs.len() * 4096)` is reserved for this mapping: PVH, window slots no RAM or
/// other mapping uses; PV, heap pages whose contents Rust no longer uses.
unsafe fn map_grants(
    peer: u16,
    refs: &[u32],
    base: u64,
    readonly: bool,
) -> Result<alloc::vec::Vec<u32>, MapError> {
    use crate::abi::{GnttabMapGrantRef, GNTMAP_HOST_MAP, GNTMAP_READONLY};
    let flags = GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 };
    let mut ops: alloc::vec::Vec<GnttabMapGrantRef> = refs
        .iter()
        .enumerate()
        .map(|(i, &gref)| GnttabMapGrantRef {
            host_addr: base + i as u64 * 4096,
            flags,
            gref,
            dom: peer,
            ..Default::default()
        })
        .collect();
    // SAFETY: `ops` is a live array of `len` C-layout map ops that Xen reads and writes (status,
    // handle); the target pages are reserved by the caller (contract above).
    let r = unsafe {
        hypercall::raw(
            crate::abi::hc::GRANT_TABLE_OP,
            u64::from(crate::abi::GNTTABOP_MAP_GRANT_REF),
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            0,
            0,
        )
    };
    let failed = if r < 0 {
        Some(r)
    } else {
        ops.iter()
            .find(|o| o.status != 0)
            .map(|o| i64::from(o.status))
    };
    if let Some(e) = failed {
        for (i, o) in ops
            .iter()
            .enumerate()
            .filter(|(_, o)| r >= 0 && o.status == 0)
        {
            // SAFETY: undoes a mapping this call made at a page the caller reserved.
            let _ = unsafe { unmap_grants(base + i as u64 * 4096, &[o.handle]) };
        }
        return Err(MapError(e));
    }
    Ok(ops.iter().map(|o| o.handle).collect())
}

/// Unmaps grants mapped by [`map_grants`] at consecutive pages from `base`.
///
/// # Safety
/// The pages are not accessed while or after they are unmapped (until remapped by the caller).
unsafe fn unmap_grants(base: u64, handles: &[u32]) -> Result<(), MapError> {
    use crate::abi::GnttabUnmapGrantRef;
    let mut ops: alloc::vec::Vec<GnttabUnmapGrantRef> = handles
        .iter()
        .enumerate()
        .map(|(i, &handle)| GnttabUnmapGrantRef {
            host_addr: base + i as u64 * 4096,
            dev_bus_addr: 0,
            handle,
            status: 0,
        })
        .collect();
    // SAFETY: `ops` is a live C-layout array Xen reads and writes; the caller no longer uses
    // the pages (contract above).
    let r = unsafe {
        hypercall::raw(
            crate::abi::hc::GRANT_TABLE_OP,
            u64::from(crate::abi::GNTTABOP_UNMAP_GRANT_REF),
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            0,
            0,
        )
    };
    match ops.iter().find(|o| o.status != 0) {
        _ if r < 0 => Err(MapError(r)),
        Some(o) => Err(MapError(i64::from(o.status))),
        None => Ok(()),
    }
}

/// Where a mapping lives, and how its pages are given back.
#[derive(Debug)]
enum Backing {
    /// PVH: slots of the window.
    Window {
        slot: u64,
        window: Rc<RefCell<MapWindow>>,
    },
    /// PV: heap pages whose PTEs the grants replaced; restored after unmapping.
    Heap {
        pages: Option<mm::HeapPages>,
        mfn_list: u64,
    },
}

/// A peer's pages mapped into ours, unmapped on drop. If Xen refuses the unmap, the address
/// range is leaked (never reused), not handed out again.
#[derive(Debug)]
pub struct GrantMapping {
    mem: RawPages,
    handles: alloc::vec::Vec<u32>,
    backing: Backing,
}

impl GrantMapping {
    /// PVH: maps `refs` of `peer` into free window slots.
    pub fn map_pvh(
        window: &Rc<RefCell<MapWindow>>,
        peer: u16,
        refs: &[u32],
        readonly: bool,
    ) -> Result<Self, MapError> {
        let n = refs.len() as u64;
        let slot = window.borrow_mut().alloc(n).ok_or(MapError(-13))?;
        let base = boot::MAP_WINDOW.start + slot * 4096;
        // SAFETY: the slots were free in the window (no RAM, no other mapping) and are now ours.
        match unsafe { map_grants(peer, refs, base, readonly) } {
            Ok(handles) => Ok(Self {
                mem: {
                    mm::pvh_flush_tlb();
                    // SAFETY: the window is identity-mapped by the boot page tables and now
                    // backed by the peer's frames until `drop` unmaps them.
                    unsafe { RawPages::new(base as usize, refs.len() * 4096) }
                },
                handles,
                backing: Backing::Window {
                    slot,
                    window: window.clone(),
                },
            }),
            Err(e) => {
                window.borrow_mut().free(slot, n);
                Err(e)
            }
        }
    }

    /// PV: maps `refs` of `peer` over fresh heap pages (Xen replaces their PTEs).
    pub fn map_pv(
        mfn_list: u64,
        peer: u16,
        refs: &[u32],
        readonly: bool,
    ) -> Result<Self, MapError> {
        let pages = mm::HeapPages::alloc(refs.len()).ok_or(MapError(-13))?;
        let base = pages.addr() as u64;
        // SAFETY: the heap pages are ours and unused; Rust reaches them only through the
        // RawPages built below.
        let handles = unsafe { map_grants(peer, refs, base, readonly)? };
        // Xen changed the PTEs behind our back: drop the stale translations of these pages.
        mm::pv_flush_tlb();
        Ok(Self {
            // SAFETY: mapped to the peer's frames at these addresses until `drop`.
            mem: unsafe { RawPages::new(base as usize, refs.len() * 4096) },
            handles,
            backing: Backing::Heap {
                pages: Some(pages),
                mfn_list,
            },
        })
    }

    /// The mapped memory.
    pub fn mem(&self) -> &RawPages {
        &self.mem
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        let base = self.mem.base() as u64;
        // SAFETY: the mapping is ours and nothing uses it after this drop.
        let unmapped = unsafe { unmap_grants(base, &self.handles) }.is_ok();
        match &mut self.backing {
            Backing::Window { slot, window } => {
                if unmapped {
                    window.borrow_mut().free(*slot, self.handles.len() as u64);
                }
            }
            Backing::Heap { pages, mfn_list } => {
                let mut restored = unmapped;
                for i in 0..self.handles.len() as u64 {
                    let va = base + i * 4096;
                    let mfn = mm::pv_pfn_to_mfn(*mfn_list, va >> 12);
                    // SAFETY: the grant mapping at `va` is gone; this maps our own frame back.
                    restored &=
                        unmapped && unsafe { mm::pv_map_machine_page(va, mfn << 12) }.is_ok();
                }
                if !restored {
                    // Never give the heap pages whose mapping we could not restore.
                    core::mem::forget(pages.take());
                }
            }
        }
    }
}
