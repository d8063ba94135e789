//! The control page and one ring's pages seen as one [`SharedMem`], so `xen_rings::ByteRing`
//! finds the indexes (control page) and the data (ring pages at `PAGE_SIZE..`) in one region.

use platform_api::{check_range, Ordering, OutOfBounds, SharedMem, PAGE_SIZE};

/// `0..PAGE_SIZE` is the control page, `PAGE_SIZE..` the ring pages (if any).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Joined<'a, M> {
    pub(crate) ctrl: &'a M,
    pub(crate) pages: Option<&'a M>,
}

enum Target {
    Ctrl(usize),
    Pages(usize),
}

impl<M: SharedMem> Joined<'_, M> {
    fn oob(&self, offset: usize, len: usize) -> OutOfBounds {
        OutOfBounds {
            offset,
            len,
            size: self.size(),
        }
    }

    /// Which memory holds `offset..offset+len` entirely, or an error if it straddles.
    fn target(&self, offset: usize, len: usize) -> Result<Target, OutOfBounds> {
        check_range(offset, len, self.size())?;
        if offset + len <= PAGE_SIZE {
            Ok(Target::Ctrl(offset))
        } else if offset >= PAGE_SIZE {
            Ok(Target::Pages(offset - PAGE_SIZE))
        } else {
            Err(self.oob(offset, len))
        }
    }

    fn pages(&self, offset: usize, len: usize) -> Result<&M, OutOfBounds> {
        self.pages.ok_or(self.oob(offset, len))
    }
}

macro_rules! dispatch {
    ($self:ident, $off:expr, $len:expr, |$m:ident, $o:ident| $body:expr) => {
        match $self.target($off, $len)? {
            Target::Ctrl($o) => {
                let $m = $self.ctrl;
                $body
            }
            Target::Pages($o) => {
                let $m = $self.pages($off, $len)?;
                $body
            }
        }
    };
}

impl<M: SharedMem> SharedMem for Joined<'_, M> {
    fn size(&self) -> usize {
        PAGE_SIZE + self.pages.map_or(0, |p| p.size())
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        dispatch!(self, offset, buf.len(), |m, o| m.read(o, buf))
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        dispatch!(self, offset, data.len(), |m, o| m.write(o, data))
    }
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        dispatch!(self, offset, 1, |m, o| m.load_u8(o, order))
    }
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        dispatch!(self, offset, 1, |m, o| m.store_u8(o, value, order))
    }
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        dispatch!(self, offset, 2, |m, o| m.load_u16(o, order))
    }
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        dispatch!(self, offset, 2, |m, o| m.store_u16(o, value, order))
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        dispatch!(self, offset, 4, |m, o| m.load_u32(o, order))
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        dispatch!(self, offset, 4, |m, o| m.store_u32(o, value, order))
    }
    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        dispatch!(self, offset, 1, |m, o| m.fetch_and_u8(o, mask, order))
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        dispatch!(self, offset, 1, |m, o| m.fetch_or_u8(o, bits, order))
    }
    fn fence(&self, order: Ordering) {
        self.ctrl.fence(order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform_api::HeapMem;

    #[test]
    fn routes_by_offset_and_refuses_straddling() {
        let ctrl = HeapMem::new(PAGE_SIZE);
        let pages = HeapMem::new(2 * PAGE_SIZE);
        let j = Joined {
            ctrl: &ctrl,
            pages: Some(&pages),
        };
        assert_eq!(j.size(), 3 * PAGE_SIZE);
        j.write(PAGE_SIZE + 5, b"xy").unwrap();
        let mut b = [0u8; 2];
        pages.read(5, &mut b).unwrap();
        assert_eq!(&b, b"xy");
        j.store_u32(8, 7, Ordering::Release).unwrap();
        assert_eq!(ctrl.load_u32(8, Ordering::Acquire).unwrap(), 7);
        assert!(j.write(PAGE_SIZE - 1, b"ab").is_err());
        assert!(j.read(3 * PAGE_SIZE - 1, &mut b).is_err());
        let only = Joined {
            ctrl: &ctrl,
            pages: None,
        };
        assert!(only.read(PAGE_SIZE, &mut b).is_err());
    }
}
