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

/// PV: the 1:1 virtual window we extend the bootstrap mapping into (one L2 table: 1 GiB).
const PV_MAP_LIMIT: u64 = 1 << 30;

/// PV: the table a page-table entry points to, as a readable address (1:1 window), and its MFN.
fn pv_next_table(entry: u64) -> Option<(u64, u64)> {
    if entry & 1 == 0 {
        return None;
    }
    let mfn = (entry & 0x000f_ffff_ffff_f000) >> 12;
    let va = pv_mfn_to_pfn(mfn) << 12;
    (va < PV_MAP_LIMIT).then_some((va, mfn))
}

/// PV: maps pseudo-physical pages `[from_pfn, to_pfn)` at `pfn << 12` (creating L1 tables from
/// the heap as needed) and gives them to the heap chunk by chunk, so later tables can come from
/// earlier chunks. The bootstrap mapping covers only the image, the start-of-day pages and
/// 512 KiB; this makes the rest of the domain's memory usable. Returns the range added; stops at
/// the first page it cannot map (no L2 table, the 1 GiB window, a refused update).
pub fn pv_extend_heap(
    pt_base: u64,
    mfn_list: u64,
    from_pfn: u64,
    to_pfn: u64,
) -> Option<(u64, u64)> {
    let to_pfn = to_pfn.min(PV_MAP_LIMIT >> 12);
    // SAFETY: pt_base is the L4 table Xen built and maps read-only for us (start_info); reading
    // its entries is allowed.
    let l4e = unsafe { (pt_base as *const u64).read_volatile() };
    let (l3_va, _) = pv_next_table(l4e)?;
    // SAFETY: a page table of ours inside the bootstrap mapping (read-only, readable).
    let l3e = unsafe { (l3_va as *const u64).read_volatile() };
    let (l2_va, l2_mfn) = pv_next_table(l3e)?;
    let mut pfn = from_pfn;
    while pfn < to_pfn {
        let chunk_start = pfn;
        let l2i = (pfn >> 9) & 511;
        // SAFETY: as above, the L2 table is ours and readable.
        let l2e = unsafe { ((l2_va + l2i * 8) as *const u64).read_volatile() };
        let chunk_end = (((pfn >> 9) + 1) << 9).min(to_pfn);
        if let Some((l1_va, l1_mfn)) = pv_next_table(l2e) {
            // An existing L1 (the bootstrap area's last 2 MiB): map what is missing page by page.
            while pfn < chunk_end {
                // SAFETY: the L1 table is ours and readable.
                let pte = unsafe { ((l1_va + (pfn & 511) * 8) as *const u64).read_volatile() };
                if pte & 1 == 0 {
                    let val = (pv_pfn_to_mfn(mfn_list, pfn) << 12) | 0x63;
                    if mmu_update(&crate::abi::MmuUpdate {
                        ptr: (l1_mfn << 12) + (pfn & 511) * 8,
                        val,
                    })
                    .is_err()
                    {
                        break;
                    }
                }
                pfn += 1;
            }
        } else {
            // A new L1 from the heap, filled while writable, then made read-only and hooked in.
            let Some(table) = HeapPages::alloc(1) else {
                break;
            };
            let base = (pfn >> 9) << 9;
            for i in 0..512u64 {
                let p = base + i;
                let pte = if p >= pfn && p < chunk_end {
                    (pv_pfn_to_mfn(mfn_list, p) << 12) | 0x63
                } else {
                    0
                };
                let _ =
                    platform_api::SharedMem::write(table.mem(), i as usize * 8, &pte.to_le_bytes());
            }
            let t_va = table.addr() as u64;
            let t_mfn = pv_pfn_to_mfn(mfn_list, t_va >> 12);
            // From here Rust never writes the table (Xen wants page tables read-only) nor frees it.
            core::mem::forget(table);
            // SAFETY: the table page is ours and no longer written by Rust; its new mapping is
            // the same frame, read-only.
            let ro = unsafe { hypercall::update_va_mapping(t_va, (t_mfn << 12) | 0x21) };
            let l2 = crate::abi::MmuUpdate {
                ptr: (l2_mfn << 12) + l2i * 8,
                val: (t_mfn << 12) | 0x67,
            };
            if ro.and_then(|_| mmu_update(&l2)).is_err() {
                break;
            }
            pfn = chunk_end;
        }
        give(chunk_start, pfn);
    }
    (pfn > from_pfn).then_some((from_pfn << 12, pfn << 12))
}

/// Hands freshly mapped pages to the heap.
fn give(from_pfn: u64, to_pfn: u64) {
    if to_pfn > from_pfn {
        let (start, len) = (from_pfn << 12, (to_pfn - from_pfn) << 12);
        // SAFETY: every page in the range is mapped at its 1:1 address (checked present or just
        // mapped), is RAM of this domain beyond everything the builder placed (the caller starts
        // after the bootstrap stack and the initial heap), and is handed over exactly once.
        HEAP.with(|l| unsafe { l.add_region(start as usize, len as usize) });
    }
}

fn mmu_update(req: &crate::abi::MmuUpdate) -> Result<(), hypercall::XenErrno> {
    let mut done = 0u32;
    // SAFETY: one request read from `req`, the count written to `done`; the PTE change is
    // described by the caller (a page table of ours gains an entry for a page of ours).
    let r = unsafe {
        hypercall::raw(
            crate::abi::hc::MMU_UPDATE,
            req as *const _ as u64,
            1,
            &mut done as *mut u32 as u64,
            u64::from(crate::abi::DOMID_SELF),
            0,
        )
    };
    if r < 0 {
        Err(hypercall::XenErrno(r))
    } else {
        Ok(())
    }
}

/// PV: flushes this vCPU's TLB (`MMUEXT_TLB_FLUSH_LOCAL`), after Xen rewrote PTEs for us.
pub fn pv_flush_tlb() {
    let op = crate::abi::MmuextOp {
        cmd: crate::abi::MMUEXT_TLB_FLUSH_LOCAL,
        arg1: 0,
        arg2: 0,
    };
    // SAFETY: one op read from `op`; a TLB flush changes no mapping.
    unsafe {
        hypercall::raw(
            crate::abi::hc::MMUEXT_OP,
            &op as *const _ as u64,
            1,
            0,
            u64::from(crate::abi::DOMID_SELF),
            0,
        )
    };
}

/// PVH: drops every non-global translation by reloading CR3, so no translation of a grant
/// window slot cached before Xen changed our physmap can survive (the window is only ever
/// touched while mapped, so this is belt and braces; Xen flushes the nested TLB itself).
pub fn pvh_flush_tlb() {
    // SAFETY: rewriting CR3 with its own value changes no mapping; it only flushes the TLB.
    unsafe { asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack)) };
}
