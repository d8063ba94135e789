//! The image's heap: a first-fit free list over one memory range, sorted by address and merged
//! on free. Small and single-CPU (a spin flag guards against re-entry); host-tested on a buffer.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

/// Every block is a multiple of this and aligned to it (room for a free-block header).
const UNIT: usize = 16;

#[repr(C)]
struct Free {
    size: usize,
    next: *mut Free,
}

/// A free list over memory handed in by [`FreeList::add_region`].
#[derive(Debug)]
pub struct FreeList {
    head: *mut Free,
    free: usize,
    total: usize,
}

// SAFETY: the list owns the memory it was given; moving it between threads moves that ownership.
unsafe impl Send for FreeList {}

fn round_up(x: usize, a: usize) -> Option<usize> {
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

fn request(layout: Layout) -> Option<(usize, usize)> {
    Some((
        round_up(layout.size().max(1), UNIT)?,
        layout.align().max(UNIT),
    ))
}

impl FreeList {
    /// An empty heap.
    pub const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            free: 0,
            total: 0,
        }
    }

    /// Bytes free and bytes managed.
    pub fn stats(&self) -> (usize, usize) {
        (self.free, self.total)
    }

    /// Gives `[start, start + size)` to the heap (trimmed to whole units).
    ///
    /// # Safety
    /// 1. The range is mapped, readable and writable for the life of the heap.
    /// 2. Nothing else uses it, now or later, and it overlaps no range added before.
    pub unsafe fn add_region(&mut self, start: usize, size: usize) {
        let Some(s) = round_up(start, UNIT) else {
            return;
        };
        let Some(end) = start.checked_add(size) else {
            return;
        };
        let end = end & !(UNIT - 1);
        if end <= s || end - s < UNIT {
            return;
        }
        self.total += end - s;
        self.free += end - s;
        // SAFETY: the range is ours (contract above), unit-aligned and at least a header long.
        unsafe { self.insert(s, end - s) };
    }

    /// Allocates, first fit; null when nothing fits.
    pub fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let Some((size, align)) = request(layout) else {
            return ptr::null_mut();
        };
        let mut link: *mut *mut Free = &mut self.head;
        // SAFETY: every node on the list is a unit-aligned free block inside memory given to
        // add_region, written only by this list; `link` always points at a live `next` field
        // (or `head`).
        unsafe {
            while !(*link).is_null() {
                let cur = *link;
                let b_start = cur as usize;
                let b_end = b_start + (*cur).size;
                let mut a_start = round_up(b_start, align).unwrap_or(usize::MAX);
                if a_start != b_start && a_start - b_start < UNIT {
                    a_start = round_up(b_start + UNIT, align).unwrap_or(usize::MAX);
                }
                if let Some(a_end) = a_start.checked_add(size).filter(|e| *e <= b_end) {
                    let mut rest = (*cur).next;
                    if b_end > a_end {
                        let tail = a_end as *mut Free;
                        tail.write(Free {
                            size: b_end - a_end,
                            next: rest,
                        });
                        rest = tail;
                    }
                    if a_start > b_start {
                        (*cur).size = a_start - b_start;
                        (*cur).next = rest;
                    } else {
                        *link = rest;
                    }
                    self.free -= size;
                    return a_start as *mut u8;
                }
                link = &mut (*cur).next;
            }
        }
        ptr::null_mut()
    }

    /// Returns a block.
    ///
    /// # Safety
    /// `p` came from [`FreeList::alloc`] on this list with the same `layout`, and is not used again.
    pub unsafe fn dealloc(&mut self, p: *mut u8, layout: Layout) {
        if let Some((size, _)) = request(layout) {
            self.free += size;
            // SAFETY: the block was ours (contract above) and is unit-aligned and sized.
            unsafe { self.insert(p as usize, size) };
        }
    }

    /// Inserts a free block in address order, merging with its neighbours.
    ///
    /// # Safety
    /// `[addr, addr + size)` is unit-aligned, writable, owned by the heap and not on the list.
    unsafe fn insert(&mut self, addr: usize, size: usize) {
        let mut prev: *mut Free = ptr::null_mut();
        let mut link: *mut *mut Free = &mut self.head;
        // SAFETY: as in `alloc`: list nodes are live free blocks; the new block is ours.
        unsafe {
            while !(*link).is_null() && (*link as usize) < addr {
                prev = *link;
                link = &mut (*prev).next;
            }
            let next = *link;
            let node = addr as *mut Free;
            node.write(Free { size, next });
            if !next.is_null() && addr + size == next as usize {
                (*node).size += (*next).size;
                (*node).next = (*next).next;
            }
            *link = node;
            if !prev.is_null() && prev as usize + (*prev).size == addr {
                (*prev).size += (*node).size;
                (*prev).next = (*node).next;
            }
        }
    }
}

impl Default for FreeList {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`FreeList`] usable as `#[global_allocator]`. Re-entry (an allocation from inside an
/// allocation, which only a bug could cause) spins forever rather than corrupting the list.
#[derive(Debug)]
pub struct Heap {
    busy: AtomicBool,
    list: UnsafeCell<FreeList>,
}

// SAFETY: all access to `list` happens while `busy` is held.
unsafe impl Sync for Heap {}

impl Heap {
    /// An empty heap.
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            list: UnsafeCell::new(FreeList::new()),
        }
    }

    /// Runs `f` with the list held.
    pub fn with<R>(&self, f: impl FnOnce(&mut FreeList) -> R) -> R {
        while self.busy.swap(true, Ordering::Acquire) {
            core::hint::spin_loop();
        }
        // SAFETY: `busy` is held, so this is the only reference to the list.
        let r = f(unsafe { &mut *self.list.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: alloc returns unit-aligned blocks of at least `layout.size()` bytes that no other
// allocation overlaps; dealloc hands them back under the same layout.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|l| l.alloc(layout))
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract is the same as FreeList::dealloc's.
        self.with(|l| unsafe { l.dealloc(p, layout) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[repr(align(4096))]
    struct Arena([u8; 1 << 16]);

    fn with_heap(f: impl FnOnce(&mut FreeList, usize)) {
        let mut arena = std::boxed::Box::new(Arena([0; 1 << 16]));
        let base = arena.0.as_mut_ptr() as usize;
        let mut h = FreeList::new();
        // SAFETY: the arena is ours for the whole closure.
        unsafe { h.add_region(base + 3, (1 << 16) - 3) };
        f(&mut h, base);
        drop(arena);
    }

    #[test]
    fn alloc_align_free_merges_back() {
        with_heap(|h, base| {
            let (free0, total) = h.stats();
            assert_eq!(free0, total);
            assert_eq!(total, (1 << 16) - 16);
            let a = h.alloc(Layout::from_size_align(100, 8).unwrap());
            let b = h.alloc(Layout::from_size_align(10, 4096).unwrap());
            assert!(!a.is_null() && !b.is_null());
            assert_eq!(b as usize % 4096, 0);
            assert!(a as usize >= base + 16);
            // SAFETY: both came from this heap with these layouts.
            unsafe {
                h.dealloc(a, Layout::from_size_align(100, 8).unwrap());
                h.dealloc(b, Layout::from_size_align(10, 4096).unwrap());
            }
            assert_eq!(h.stats().0, free0);
            let all = h.alloc(Layout::from_size_align(free0, 16).unwrap());
            assert!(!all.is_null(), "fully merged again");
            assert!(
                h.alloc(Layout::from_size_align(1, 1).unwrap()).is_null(),
                "full is null, not a panic"
            );
        });
    }

    proptest! {
        #[test]
        fn random_alloc_free_never_overlaps(ops in proptest::collection::vec((1usize..3000, 0u32..8, any::<bool>()), 1..200)) {
            with_heap(|h, _| {
                let mut live: Vec<(usize, Layout)> = Vec::new();
                for (size, align_pow, free_one) in ops {
                    if free_one && !live.is_empty() {
                        let (p, l) = live.swap_remove(size % live.len());
                        // SAFETY: p was allocated with l and is dropped from `live`.
                        unsafe { h.dealloc(p as *mut u8, l) };
                        continue;
                    }
                    let l = Layout::from_size_align(size, 1 << align_pow).unwrap();
                    let p = h.alloc(l) as usize;
                    if p == 0 { continue; }
                    assert_eq!(p % l.align(), 0);
                    for (q, ql) in &live {
                        assert!(p + size <= *q || q + ql.size() <= p, "overlap");
                    }
                    live.push((p, l));
                }
                for (p, l) in live.drain(..) {
                    // SAFETY: as above.
                    unsafe { h.dealloc(p as *mut u8, l) };
                }
                assert_eq!(h.stats().0, h.stats().1, "everything merged back");
            });
        }
    }
}
