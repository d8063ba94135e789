//! [`Region`]: memory mapped from a Xen device (granted or foreign pages) as a `SharedMem`,
//! touched only through bounds-checked atomic loads and stores, never a `&[u8]`.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use platform_api::{check_range, OutOfBounds, SharedMem, PAGE_SIZE};

use crate::sys;

/// Bulk copies move 8-byte atomic words between the unaligned head and tail bytes.
const WORD: usize = 8;

/// One live mapping, unmapped on drop. The peer may write any byte at any time.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the region is plain shared memory owned by this value; every access is atomic, so
// using it from several threads is no different from the peer domain using it.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only permits atomic accesses.
unsafe impl Sync for Region {}

impl Region {
    /// Takes ownership of a mapping made by `sys::mmap_device`/`mmap_anonymous`.
    ///
    /// # Safety
    /// `base..base+len` must be one live mapping of ours (readable, and writable if
    /// `writable`), owned by nobody else, which this value will unmap.
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, len: usize, writable: bool) -> Region {
        Region {
            base,
            len,
            writable,
        }
    }

    /// Maps `len` bytes of a Xen device at `offset` (the `index` its ioctl returned).
    pub(crate) fn map_device(
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
        offset: u64,
        writable: bool,
    ) -> io::Result<Region> {
        let base = sys::mmap_device(fd, len, offset, writable)?;
        // SAFETY: `base..base+len` is the fresh mapping just made, readable and writable iff
        // `writable`, owned by no one else.
        Ok(unsafe { Region::from_raw(base, len, writable) })
    }

    /// `pages` zeroed pages of anonymous shared memory (tests, and a local stand-in).
    pub fn anonymous(pages: usize) -> io::Result<Region> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let base = sys::mmap_anonymous(len)?;
        // SAFETY: `base..base+len` is the fresh read-write mapping just made, owned by no one.
        Ok(unsafe { Region::from_raw(base, len, true) })
    }

    /// Start of the region (for a C caller or a diagnostic; never dereferenced here).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether the region is mapped writable.
    pub fn writable(&self) -> bool {
        self.writable
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

    /// A raw pointer `offset` bytes in; callers `check` the access first.
    fn at<A>(&self, offset: usize) -> *mut A {
        self.base.as_ptr().wrapping_add(offset).cast()
    }

    fn byte(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: callers checked `offset < len`; the mapping lives as long as `self`, and an
        // AtomicU8 needs no alignment.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: callers checked `offset + 8 <= len` and `offset % 8 == 0`; the base is page-
        // aligned, so the pointer is 8-aligned; the mapping lives as long as `self`.
        unsafe { AtomicU64::from_ptr(self.at(offset)) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `from_raw`'s contract: this is one live mapping of ours, and no reference
        // into it outlives `self`.
        unsafe { sys::munmap(self.base, self.len) };
    }
}

/// A load cannot release, a store cannot acquire: keep the caller's intent, made valid.
fn load_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Release | Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

fn store_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Acquire | Ordering::AcqRel => Ordering::Release,
        o => o,
    }
}

/// Bytes before the first 8-aligned offset at or after `offset`, at most `len`.
fn head_len(offset: usize, len: usize) -> usize {
    ((WORD - offset % WORD) % WORD).min(len)
}

impl SharedMem for Region {
    fn size(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, buf.len(), 1, false)?;
        // Relaxed atomics, not plain loads: the peer writes meanwhile; torn values across
        // words are fine, the protocol layer validates what it copied.
        let (head, rest) = buf.split_at_mut(head_len(offset, buf.len()));
        let mut o = offset;
        for b in head {
            *b = self.byte(o).load(Ordering::Relaxed);
            o += 1;
        }
        let mut words = rest.chunks_exact_mut(WORD);
        for w in &mut words {
            w.copy_from_slice(&self.word(o).load(Ordering::Relaxed).to_ne_bytes());
            o += WORD;
        }
        for b in words.into_remainder() {
            *b = self.byte(o).load(Ordering::Relaxed);
            o += 1;
        }
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len(), 1, true)?;
        let (head, rest) = data.split_at(head_len(offset, data.len()));
        let mut o = offset;
        for &b in head {
            self.byte(o).store(b, Ordering::Relaxed);
            o += 1;
        }
        let words = rest.chunks_exact(WORD);
        let tail = words.remainder();
        for w in words {
            let mut v = [0u8; WORD];
            v.copy_from_slice(w);
            self.word(o).store(u64::from_ne_bytes(v), Ordering::Relaxed);
            o += WORD;
        }
        for &b in tail {
            self.byte(o).store(b, Ordering::Relaxed);
            o += 1;
        }
        Ok(())
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, false)?;
        Ok(self.byte(offset).load(load_order(order)))
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        self.byte(offset).store(value, store_order(order));
        Ok(())
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        self.check(offset, 2, 2, false)?;
        // SAFETY: `check` proved the 2 bytes inside the mapping and 2-aligned.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        Ok(u16::from_le(a.load(load_order(order))))
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 2, 2, true)?;
        // SAFETY: `check` proved the 2 bytes inside the mapping, 2-aligned and writable.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        a.store(value.to_le(), store_order(order));
        Ok(())
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.check(offset, 4, 4, false)?;
        // SAFETY: `check` proved the 4 bytes inside the mapping and 4-aligned.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        Ok(u32::from_le(a.load(load_order(order))))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(offset, 4, 4, true)?;
        // SAFETY: `check` proved the 4 bytes inside the mapping, 4-aligned and writable.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        a.store(value.to_le(), store_order(order));
        Ok(())
    }

    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        Ok(self.byte(offset).fetch_and(mask, order))
    }

    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.check(offset, 1, 1, true)?;
        Ok(self.byte(offset).fetch_or(bits, order))
    }
}

#[cfg(test)]
mod tests;
