//! netif tests: vectors, an in-memory netfront<->netback pair, hostile peers on each side.
mod hostile;
mod pair;
mod vectors;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use platform_api::{GrantRef, HeapMem, PAGE_SIZE};

use super::{CopyFailed, FrontPages, GuestCopy};

/// A grant table: page contents by grant ref, shared by the frontend pool and the copier.
pub(super) type Table = Rc<RefCell<BTreeMap<u32, Vec<u8>>>>;

/// The frontend's page pool.
pub(super) struct Pool {
    pub table: Table,
    pub free: Vec<u32>,
    pub fail_reads: bool,
}

impl Pool {
    pub fn new(table: &Table, first: u32, n: u32) -> Self {
        for g in first..first + n {
            table.borrow_mut().insert(g, vec![0u8; PAGE_SIZE]);
        }
        Self {
            table: table.clone(),
            free: (first..first + n).rev().collect(),
            fail_reads: false,
        }
    }
}

impl FrontPages for Pool {
    fn tx_page(&mut self, data: &[u8]) -> Option<GrantRef> {
        let g = self.free.pop()?;
        self.table.borrow_mut().get_mut(&g).unwrap()[..data.len()].copy_from_slice(data);
        Some(GrantRef(g))
    }
    fn rx_page(&mut self) -> Option<GrantRef> {
        self.free.pop().map(GrantRef)
    }
    fn read_rx(&mut self, gref: GrantRef, offset: u16, dst: &mut [u8]) -> Result<(), CopyFailed> {
        if self.fail_reads {
            return Err(CopyFailed);
        }
        let t = self.table.borrow();
        let page = t.get(&gref.0).ok_or(CopyFailed)?;
        let o = usize::from(offset);
        dst.copy_from_slice(&page[o..o + dst.len()]);
        Ok(())
    }
    fn release(&mut self, gref: GrantRef) {
        assert!(
            !self.free.contains(&gref.0),
            "page {} released twice",
            gref.0
        );
        self.free.push(gref.0);
    }
}

/// The backend's grant copier; refs not in the table fail, as an unknown grant would.
pub(super) struct Copier {
    pub table: Table,
    pub fail: bool,
}

impl GuestCopy for Copier {
    fn copy_from_guest(
        &mut self,
        gref: GrantRef,
        offset: u16,
        dst: &mut [u8],
    ) -> Result<(), CopyFailed> {
        let t = self.table.borrow();
        let page = t.get(&gref.0).filter(|_| !self.fail).ok_or(CopyFailed)?;
        let o = usize::from(offset);
        assert!(
            o + dst.len() <= PAGE_SIZE,
            "netback asked for a copy past the page"
        );
        dst.copy_from_slice(&page[o..o + dst.len()]);
        Ok(())
    }
    fn copy_to_guest(&mut self, gref: GrantRef, offset: u16, src: &[u8]) -> Result<(), CopyFailed> {
        let mut t = self.table.borrow_mut();
        let page = t
            .get_mut(&gref.0)
            .filter(|_| !self.fail)
            .ok_or(CopyFailed)?;
        let o = usize::from(offset);
        assert!(
            o + src.len() <= PAGE_SIZE,
            "netback asked for a copy past the page"
        );
        page[o..o + src.len()].copy_from_slice(src);
        Ok(())
    }
}

/// Two ring pages and a grant table.
pub(super) fn pages() -> (HeapMem, HeapMem, Table) {
    (
        HeapMem::new(PAGE_SIZE),
        HeapMem::new(PAGE_SIZE),
        Table::default(),
    )
}

/// A packet of `len` bytes with a recognisable pattern.
pub(super) fn packet(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}
