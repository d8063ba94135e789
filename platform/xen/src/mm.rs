//! Memory: the global heap over the domain's RAM, the stack guard page (PVH page tables or a PV
//! `update_va_mapping`), and PV machine-to-physical lookups.

use core::alloc::Layout;
use core::arch::asm;

use core::sync::atomic::{AtomicBool, Ordering};

use crate::boot;
use crate::bootinfo::Memmap;
use crate::heap::Heap;
use crate::hypercall;
use crate::shared::{PageBuf, RawPages};

#[global_allocator]
static HEAP: Heap = Heap::new();

/// Bytes free and managed by the heap.
pub fn heap_stats() -> (usize, usize) {
    HEAP.with(|l| l.stats())
}

/// Gives the largest RAM range of `memmap` above the image to the heap; returns it.
/// Called once, after `boot` copied the boot structures (command line, memory map) out.
pub fn init_heap_from(memmap: &Memmap) -> Option<(u64, u64)> {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return None;
    }
    let (start, end) = memmap.heap_range(boot::image_end(), boot::IDENTITY_MAP_END)?;
    // SAFETY: the range is RAM per the builder's map (PV: the part of the bootstrap mapping
    // past the bootstrap stack), lies above our image (so clear of code, data, stack and the
    // page tables in .data) and below the end of what we map; Xen's rings and shared_info are
    // not RAM entries (PVH) or lie before it (PV); boot data in it was copied out already; and
    // `DONE` makes this the only hand-over.
    HEAP.with(|l| unsafe { l.add_region(start as usize, (end - start) as usize) });
    Some((start, end))
}

/// The 4 KiB page table that replaces the 2 MiB page holding the stack guard (PVH).
static GUARD_PT: PageBuf = PageBuf::new();

unsafe extern "C" {
    static mut boot_pd: [u64; 2048];
}

/// PVH: unmaps the stack's guard page by splitting its 2 MiB page into 4 KiB pages.
pub fn guard_stack_pvh() {
    let guard = boot::stack_guard();
    let big = guard & !0x1f_ffff;
    let pt = GUARD_PT.addr() as *mut u64;
    for i in 0..512u64 {
        let page = big + i * 4096;
        let pte = if page == guard { 0 } else { page | 0x3 };
        // SAFETY: `pt` is our own page-aligned 4 KiB table in .bss, not yet in use by the MMU.
        unsafe { pt.add(i as usize).write_volatile(pte) };
    }
    let idx = (guard >> 21) as usize;
    // SAFETY: boot_pd is the live page directory of the identity map, written only here after
    // entry.S; the new entry maps the same addresses (minus the guard page) with 4 KiB pages.
    // Reloading CR3 then drops the old 2 MiB translation.
    unsafe {
        core::ptr::addr_of_mut!(boot_pd[idx]).write_volatile(GUARD_PT.addr() as u64 | 0x3);
        asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
    }
}

/// PV: unmaps the stack's guard page through Xen.
pub fn guard_stack_pv() -> Result<(), hypercall::XenErrno> {
    // SAFETY: the guard page is never used by Rust; a PTE of 0 unmaps it.
    unsafe { hypercall::update_va_mapping(boot::stack_guard(), 0) }
}

/// PV: the pseudo-physical frame of machine frame `mfn`, from Xen's read-only m2p table.
pub fn pv_mfn_to_pfn(mfn: u64) -> u64 {
    const M2P: u64 = 0xFFFF_8000_0000_0000;
    // SAFETY: Xen maps the machine-to-physical table read-only at this address in every PV
    // guest; an index for a frame we own lies inside it.
    unsafe { ((M2P + mfn * 8) as *const u64).read_volatile() }
}

/// PV: maps machine address `ma` (one page) at our page `va` (read-write).
///
/// # Safety
/// `va` is a page of ours whose previous contents Rust no longer uses.
pub unsafe fn pv_map_machine_page(va: u64, ma: u64) -> Result<(), hypercall::XenErrno> {
    // P | RW | A | D: Xen adds what a ring-3 kernel mapping needs.
    // SAFETY: the caller vouches for `va` (contract above).
    unsafe { hypercall::update_va_mapping(va, (ma & !0xfff) | 0x63) }
}

/// Whole pages from the heap, zeroed, that we may share with a peer; freed on drop.
#[derive(Debug)]
pub struct HeapPages {
    raw: RawPages,
    pages: usize,
}

impl HeapPages {
    /// `pages` zeroed, page-aligned pages; `None` when the heap cannot supply them.
    pub fn alloc(pages: usize) -> Option<Self> {
        let layout = Layout::from_size_align(pages.checked_mul(4096)?, 4096).ok()?;
        if pages == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return None;
        }
        // SAFETY: the block is ours alone, mapped (heap memory), page-aligned, and Rust keeps no
        // reference into it: all access goes through RawPages.
        let raw = unsafe { RawPages::new(p as usize, pages * 4096) };
        Some(Self { raw, pages })
    }

    /// Address of the first page (PVH: also its guest-physical address).
    pub fn addr(&self) -> usize {
        self.raw.base()
    }

    /// The memory.
    pub fn mem(&self) -> &RawPages {
        &self.raw
    }
}

impl Drop for HeapPages {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.pages * 4096, 4096).expect("valid when allocated");
        // SAFETY: allocated in `alloc` with this layout; callers forget (leak) a HeapPages a
        // peer may still map, so dropping means nobody else uses the pages.
        unsafe { alloc::alloc::dealloc(self.raw.base() as *mut u8, layout) };
    }
}

/// PV: the machine frame of pseudo-physical frame `pfn`, from the builder's p2m list.
pub fn pv_pfn_to_mfn(mfn_list: u64, pfn: u64) -> u64 {
    // SAFETY: the p2m list is mapped read-write at `mfn_list` (start_info) for all our pages,
    // and `pfn` is one of ours (a heap page).
    unsafe { ((mfn_list + pfn * 8) as *const u64).read_volatile() }
}
