//! The one place the hosted backend touches raw memory: mapping grant files into a contiguous
//! region and accessing it only through bounds-checked atomic loads and stores.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering};

use platform_api::{check_range, OutOfBounds, SharedMem, PAGE_SIZE};

/// Block size of bulk copies: one SSE register where available.
#[cfg(target_arch = "x86_64")]
type Word = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Word = u64;
const WORD: usize = std::mem::size_of::<Word>();

/// A region of `files.len()` pages, page `i` being the first page of `files[i]`, mapped
/// `MAP_SHARED` so that every process mapping the same file sees the same bytes.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes through
// atomics, so using it from several threads is no different from several processes.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only permits atomic accesses.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first page of each file, in order, as one region.
    pub fn map_files(files: &[File], writable: bool) -> io::Result<Mapping> {
        if files.is_empty() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let len = files
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing
        // touches no existing memory; the result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        for (i, f) in files.iter().enumerate() {
            // SAFETY: `base + i*PAGE_SIZE` lies inside the reservation made above (i < len /
            // PAGE_SIZE), which we own, so MAP_FIXED replaces only our own PROT_NONE pages.
            let got = unsafe {
                libc::mmap(
                    base.add(i * PAGE_SIZE).cast(),
                    PAGE_SIZE,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    f.as_raw_fd(),
                    0,
                )
            };
            if got == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                // SAFETY: unmapping exactly the reservation we made; nothing else refers to it.
                unsafe { libc::munmap(base.cast(), len) };
                return Err(e);
            }
        }
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Mapping {
            base,
            len,
            writable,
        })
    }

    /// Start of the region, for handing to C code (the xen-shims).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether the region was mapped writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Gives up ownership without unmapping (the C caller unmaps it with `munmap`).
    pub fn leak(self) -> (*mut u8, usize) {
        let r = (self.base.as_ptr(), self.len);
        std::mem::forget(self);
        r
    }

    fn check(
        &self,
        offset: usize,
        len: usize,
        align: usize,
        write: bool,
    ) -> Result<(), OutOfBounds> {
        check_range(offset, len, self.len)?;
        if !offset.is_multiple_of(align) || (write && !self.writable) {
            return Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        Ok(())
    }

    /// A pointer to a `A` at `offset`; callers run `check` for its size and alignment first.
    fn at<A>(&self, offset: usize) -> *mut A {
        self.base.as_ptr().wrapping_add(offset).cast()
    }

    fn u8_at(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: callers checked `offset < len`; the page is mapped for our lifetime and an
        // AtomicU8 has no alignment requirement.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this region (made in `map_files`, never leaked) and no reference into
        // it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn load_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Release => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

fn store_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Acquire => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Release,
        o => o,
    }
}

impl SharedMem for Mapping {
    fn size(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, buf.len(), 1, false)?;
        // Bytes up to 16-alignment, then 16-byte volatile blocks, then the tail. Volatile
        // (not plain) loads: the peer may write meanwhile, and the compiler must neither
        // elide, merge nor re-read them; torn values are fine, the protocol validates.
        let head = ((WORD - offset % WORD) % WORD).min(buf.len());
        let (head_buf, rest) = buf.split_at_mut(head);
        for (i, b) in head_buf.iter_mut().enumerate() {
            *b = self.u8_at(offset + i).load(Ordering::Relaxed);
        }
        let mut o = offset + head;
        let mut words = rest.chunks_exact_mut(WORD);
        for w in &mut words {
            // SAFETY: `check` proved `o + WORD <= len`; `o` is WORD-aligned (the base is
            // page-aligned); the page stays mapped for our lifetime.
            let v: Word = unsafe { self.at::<Word>(o).read_volatile() };
            // SAFETY: `w` is exactly WORD bytes of the caller's buffer; unaligned store.
            unsafe { w.as_mut_ptr().cast::<Word>().write_unaligned(v) };
            o += WORD;
        }
        for b in words.into_remainder() {
            *b = self.u8_at(o).load(Ordering::Relaxed);
            o += 1;
        }
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len(), 1, true)?;
        let head = ((WORD - offset % WORD) % WORD).min(data.len());
        let (head_data, rest) = data.split_at(head);
        for (i, &b) in head_data.iter().enumerate() {
            self.u8_at(offset + i).store(b, Ordering::Relaxed);
        }
        let mut o = offset + head;
        let words = rest.chunks_exact(WORD);
        let tail = words.remainder();
        for w in words {
            // SAFETY: `w` is exactly WORD bytes of the caller's data; unaligned load.
            let v: Word = unsafe { w.as_ptr().cast::<Word>().read_unaligned() };
            // SAFETY: `check` proved `o + WORD <= len` and the mapping writable; `o` is
            // WORD-aligned; the page stays mapped for our lifetime.
            unsafe { self.at::<Word>(o).write_volatile(v) };
            o += WORD;
        }
        for &b in tail {
            self.u8_at(o).store(b, Ordering::Relaxed);
            o += 1;
        }
        Ok(())
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, false)?;
        Ok(self.u8_at(offset).load(load_order(order)))
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        self.u8_at(offset).store(value, store_order(order));
        Ok(())
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        self.check(offset, 2, 2, false)?;
        // SAFETY: `check` proved the 2 bytes are inside the mapping and 2-aligned.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        Ok(u16::from_le(a.load(load_order(order))))
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 2, 2, true)?;
        // SAFETY: `check` proved the 2 bytes are inside the mapping, 2-aligned and writable.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        a.store(value.to_le(), store_order(order));
        Ok(())
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.check(offset, 4, 4, false)?;
        // SAFETY: `check` proved the 4 bytes are inside the mapping and 4-aligned.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        Ok(u32::from_le(a.load(load_order(order))))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 4, 4, true)?;
        // SAFETY: `check` proved the 4 bytes are inside the mapping, 4-aligned and writable.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        a.store(value.to_le(), store_order(order));
        Ok(())
    }

    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        Ok(self.u8_at(offset).fetch_and(mask, order))
    }

    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        Ok(self.u8_at(offset).fetch_or(bits, order))
    }
}
