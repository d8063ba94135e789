//! [`HeapMem`]: a [`SharedMem`] on the heap, shareable between threads, for tests and for
//! same-process peers. Built on `AtomicU32` words, so it needs no unsafe code.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::{check_range, OutOfBounds, SharedMem};

/// Zeroed shared memory of a fixed size; clones share the same bytes.
#[derive(Debug, Clone)]
pub struct HeapMem {
    words: Arc<Vec<AtomicU32>>,
    size: usize,
}

impl HeapMem {
    /// `size` zero bytes (rounded up to whole words internally).
    pub fn new(size: usize) -> Self {
        let n = size.div_ceil(4);
        let mut v = Vec::with_capacity(n);
        v.resize_with(n, || AtomicU32::new(0));
        Self {
            words: Arc::new(v),
            size,
        }
    }

    fn oob(&self, offset: usize, len: usize) -> OutOfBounds {
        OutOfBounds {
            offset,
            len,
            size: self.size,
        }
    }

    fn aligned(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        check_range(offset, len, self.size)?;
        if !offset.is_multiple_of(len) {
            return Err(self.oob(offset, len));
        }
        Ok(())
    }

    fn byte_rmw(&self, offset: usize, order: Ordering, f: impl Fn(u8) -> u8) -> u8 {
        let word = &self.words[offset / 4];
        let shift = (offset % 4) * 8;
        let prev = word
            .fetch_update(order, Ordering::Relaxed, |w| {
                let b = (w >> shift) as u8;
                Some((w & !(0xFF << shift)) | (u32::from(f(b)) << shift))
            })
            .unwrap_or_else(|w| w);
        (prev >> shift) as u8
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

impl SharedMem for HeapMem {
    fn size(&self) -> usize {
        self.size
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(offset, buf.len(), self.size)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let o = offset + i;
            *b = (self.words[o / 4].load(Ordering::Relaxed) >> ((o % 4) * 8)) as u8;
        }
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        check_range(offset, data.len(), self.size)?;
        let mut i = 0;
        while i < data.len() {
            let o = offset + i;
            if o.is_multiple_of(4) && data.len() - i >= 4 {
                let w = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                self.words[o / 4].store(w, Ordering::Relaxed);
                i += 4;
            } else {
                let v = data[i];
                self.byte_rmw(o, Ordering::Relaxed, |_| v);
                i += 1;
            }
        }
        Ok(())
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        check_range(offset, 1, self.size)?;
        Ok((self.words[offset / 4].load(load_order(order)) >> ((offset % 4) * 8)) as u8)
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        check_range(offset, 1, self.size)?;
        self.byte_rmw(offset, store_order(order), |_| value);
        Ok(())
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        self.aligned(offset, 2)?;
        Ok((self.words[offset / 4].load(load_order(order)) >> ((offset % 4) * 8)) as u16)
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        self.aligned(offset, 2)?;
        let shift = (offset % 4) * 8;
        let word = &self.words[offset / 4];
        let _ = word.fetch_update(store_order(order), Ordering::Relaxed, |w| {
            Some((w & !(0xFFFF << shift)) | (u32::from(value) << shift))
        });
        Ok(())
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.aligned(offset, 4)?;
        Ok(self.words[offset / 4].load(load_order(order)))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.aligned(offset, 4)?;
        self.words[offset / 4].store(value, store_order(order));
        Ok(())
    }

    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        check_range(offset, 1, self.size)?;
        Ok(self.byte_rmw(offset, order, |b| b & mask))
    }

    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        check_range(offset, 1, self.size)?;
        Ok(self.byte_rmw(offset, order, |b| b | bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_words_agree() {
        let m = HeapMem::new(10);
        m.write(1, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(
            m.load_u32(4, Ordering::Acquire).unwrap(),
            u32::from_le_bytes([4, 5, 6, 7])
        );
        assert_eq!(
            m.load_u16(2, Ordering::Acquire).unwrap(),
            u16::from_le_bytes([2, 3])
        );
        m.store_u16(6, 0xBEEF, Ordering::Release).unwrap();
        let mut b = [0u8; 10];
        m.read(0, &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 0xEF, 0xBE, 0, 0]);
        assert_eq!(m.fetch_and_u8(1, !1, Ordering::AcqRel).unwrap(), 1);
        assert_eq!(m.fetch_or_u8(1, 2, Ordering::AcqRel).unwrap(), 0);
        assert_eq!(m.load_u8(1, Ordering::Acquire).unwrap(), 2);
    }

    #[test]
    fn out_of_range_and_unaligned_refused() {
        let m = HeapMem::new(8);
        assert!(m.read(7, &mut [0; 2]).is_err());
        assert!(m.write(usize::MAX, &[1]).is_err());
        assert!(m.load_u32(2, Ordering::Acquire).is_err());
        assert!(m.load_u32(8, Ordering::Acquire).is_err());
        assert!(m.store_u16(7, 1, Ordering::Release).is_err());
    }
}
