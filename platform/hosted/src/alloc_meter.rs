//! A global allocator that counts live heap bytes and their peak, so hosted tests can check a
//! memory budget (the unikernels run in fixed memory). Forwards everything to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Install with `#[global_allocator] static A: AllocMeter = AllocMeter::new();`.
#[derive(Debug)]
pub struct AllocMeter {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl AllocMeter {
    /// A meter at zero.
    pub const fn new() -> Self {
        Self {
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Live heap bytes now.
    pub fn current(&self) -> usize {
        self.current.load(SeqCst)
    }

    /// Peak live bytes above the level at the start of `f`, while `f` ran. Allocations of
    /// other threads count too: run such measurements one at a time.
    pub fn peak_during<T>(&self, f: impl FnOnce() -> T) -> (T, usize) {
        let base = self.current.load(SeqCst);
        self.peak.store(base, SeqCst);
        let r = f();
        (r, self.peak.load(SeqCst).saturating_sub(base))
    }
}

impl Default for AllocMeter {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded unchanged to the System allocator; only counters are added,
// and they never influence the returned pointers.
unsafe impl GlobalAlloc for AllocMeter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds GlobalAlloc::alloc's contract, which is System's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = self.current.fetch_add(layout.size(), SeqCst) + layout.size();
            self.peak.fetch_max(now, SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout (our alloc above), per the caller.
        unsafe { System.dealloc(ptr, layout) };
        self.current.fetch_sub(layout.size(), SeqCst);
    }
}
