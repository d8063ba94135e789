//! The `vchan_interface` control page (libxenvchan.h \[X\]): a checked view, its `Repr`, and the
//! ring geometry rules of `init.c` \[X\] (order limits, in-page rings, grant slots, server sizing).

use alloc::vec::Vec;

use platform_api::{GrantRef, OutOfBounds, SharedMem, PAGE_SIZE};

use crate::error::LayoutError;

/// `VCHAN_NOTIFY_WRITE`: "tell me when you write".
pub const NOTIFY_WRITE: u8 = 0x1;
/// `VCHAN_NOTIFY_READ`: "tell me when you consume".
pub const NOTIFY_READ: u8 = 0x2;

/// Live byte: the end has closed (or never existed).
pub const LIVE_CLOSED: u8 = 0;
/// Live byte: the end is connected.
pub const LIVE_CONNECTED: u8 = 1;
/// Live byte (`cli_live` only): the server is waiting for a client.
pub const LIVE_WAITING: u8 = 2;

/// Size of the fixed part of `struct vchan_interface`.
pub const HEADER_LEN: usize = 24;
/// Smallest ring order (1 KiB, in the control page at 1024).
pub const MIN_ORDER: u16 = 10;
/// Largest ring order (1 MiB): beyond it the grants no longer fit in the control page.
pub const MAX_ORDER: u16 = 20;
/// Largest ring a server may be asked for (`MAX_RING_SIZE`).
pub const MAX_RING_SIZE: usize = 1 << MAX_ORDER;
/// Order of the small in-page ring.
pub const SMALL_ORDER: u16 = 10;
/// Order of the large in-page ring.
pub const LARGE_ORDER: u16 = 11;
/// Page offset of the small (1024-byte) in-page ring.
pub const SMALL_RING_OFFSET: usize = 1024;
/// Page offset of the large (2048-byte) in-page ring.
pub const LARGE_RING_OFFSET: usize = 2048;
/// Orders from this one up live in separate granted pages.
pub const PAGE_ORDER: u16 = 12;

/// Byte offsets inside the control page.
pub mod field {
    use core::ops::Range;
    /// `left.cons` (u32).
    pub const LEFT_CONS: Range<usize> = 0..4;
    /// `left.prod` (u32).
    pub const LEFT_PROD: Range<usize> = 4..8;
    /// `right.cons` (u32).
    pub const RIGHT_CONS: Range<usize> = 8..12;
    /// `right.prod` (u32).
    pub const RIGHT_PROD: Range<usize> = 12..16;
    /// `left_order` (u16).
    pub const LEFT_ORDER: Range<usize> = 16..18;
    /// `right_order` (u16).
    pub const RIGHT_ORDER: Range<usize> = 18..20;
    /// `cli_live` (u8).
    pub const CLI_LIVE: usize = 20;
    /// `srv_live` (u8).
    pub const SRV_LIVE: usize = 21;
    /// `cli_notify` (u8): requests the server posts, the client consumes.
    pub const CLI_NOTIFY: usize = 22;
    /// `srv_notify` (u8): requests the client posts, the server consumes.
    pub const SRV_NOTIFY: usize = 23;
    /// `grants[]` (u32 each).
    pub const GRANTS: usize = 24;
}

/// One of the two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ring {
    /// Client → server data.
    Left,
    /// Server → client data.
    Right,
}

/// Where a ring's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Inside the control page at this offset (orders 10 and 11).
    InPage {
        /// Page offset of the first ring byte.
        offset: usize,
    },
    /// In this many separately granted pages (orders 12..=20).
    Pages {
        /// Number of pages.
        count: usize,
    },
}

/// Validated ring orders: both in 10..=20, no two equal in-page orders, grants fit their slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    left_order: u16,
    right_order: u16,
}

/// Smallest page-ring order whose ring holds `size` bytes (`min_order` in init.c \[X\]).
fn min_page_order(size: usize) -> u16 {
    let mut order = PAGE_ORDER;
    while size > (1usize << order) {
        order += 1;
    }
    order
}

impl Geometry {
    /// Checks orders as a client must before mapping anything (`init_gnt_cli` \[X\], plus the
    /// grant-slot limit that C leaves unchecked).
    pub fn new(left_order: u16, right_order: u16) -> Result<Self, LayoutError> {
        for (ring, order) in [(Ring::Left, left_order), (Ring::Right, right_order)] {
            if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
                return Err(LayoutError::BadOrder { ring, order });
            }
        }
        if left_order == right_order && left_order < PAGE_ORDER {
            return Err(LayoutError::SameInPageOrder { order: left_order });
        }
        let g = Self {
            left_order,
            right_order,
        };
        let needed = g.grant_count();
        let slots = g.grant_slots();
        if needed > slots {
            return Err(LayoutError::TooManyGrants { needed, slots });
        }
        Ok(g)
    }

    /// The orders `libxenvchan_server_init(left_min, right_min)` picks \[X\]: in-page rings when
    /// both fit (10/11, else 11/10), else one 2048-byte in-page ring where a side fits it, the
    /// rest in the fewest pages. Qubes' `libvchan_server_init(dom, port, read_min, write_min)`
    /// passes `read_min` as `left_min`.
    pub fn for_minimums(left_min: usize, right_min: usize) -> Result<Self, LayoutError> {
        for (ring, requested) in [(Ring::Left, left_min), (Ring::Right, right_min)] {
            if requested > MAX_RING_SIZE {
                return Err(LayoutError::TooLarge { ring, requested });
            }
        }
        let small = 1usize << SMALL_ORDER;
        let large = 1usize << LARGE_ORDER;
        let (mut left, mut right) = (min_page_order(left_min), min_page_order(right_min));
        if left_min <= small && right_min <= large {
            (left, right) = (SMALL_ORDER, LARGE_ORDER);
        } else if left_min <= large && right_min <= small {
            (left, right) = (LARGE_ORDER, SMALL_ORDER);
        } else if left_min <= large {
            left = LARGE_ORDER;
        } else if right_min <= large {
            right = LARGE_ORDER;
        }
        Self::new(left, right)
    }

    /// `left_order`.
    pub fn left_order(&self) -> u16 {
        self.left_order
    }

    /// `right_order`.
    pub fn right_order(&self) -> u16 {
        self.right_order
    }

    /// Order of one ring.
    pub fn order(&self, ring: Ring) -> u16 {
        match ring {
            Ring::Left => self.left_order,
            Ring::Right => self.right_order,
        }
    }

    /// Size of one ring in bytes.
    pub fn size(&self, ring: Ring) -> u32 {
        1 << self.order(ring)
    }

    /// Where one ring lives.
    pub fn placement(&self, ring: Ring) -> Placement {
        match self.order(ring) {
            SMALL_ORDER => Placement::InPage {
                offset: SMALL_RING_OFFSET,
            },
            LARGE_ORDER => Placement::InPage {
                offset: LARGE_RING_OFFSET,
            },
            o => Placement::Pages {
                count: 1 << (o - PAGE_ORDER),
            },
        }
    }

    /// Number of separate pages one ring needs (0 for an in-page ring).
    pub fn pages(&self, ring: Ring) -> usize {
        match self.placement(ring) {
            Placement::InPage { .. } => 0,
            Placement::Pages { count } => count,
        }
    }

    /// Total grant refs in `grants[]`: the left ring's pages, then the right ring's.
    pub fn grant_count(&self) -> usize {
        self.pages(Ring::Left) + self.pages(Ring::Right)
    }

    /// Grant slots before the first in-page ring (or the page end): 250, 506 or 1018.
    pub fn grant_slots(&self) -> usize {
        let end = if self.left_order == SMALL_ORDER || self.right_order == SMALL_ORDER {
            SMALL_RING_OFFSET
        } else if self.left_order == LARGE_ORDER || self.right_order == LARGE_ORDER {
            LARGE_RING_OFFSET
        } else {
            PAGE_SIZE
        };
        (end - field::GRANTS) / 4
    }

    /// Index of the first grant of `ring` in `grants[]`.
    pub fn first_grant(&self, ring: Ring) -> usize {
        match ring {
            Ring::Left => 0,
            Ring::Right => self.pages(Ring::Left),
        }
    }

    /// The `xen_rings` layout of one ring. In-page rings are addressed in the control page;
    /// page rings at [`PAGE_SIZE`] onwards, i.e. in the ring pages that follow the control
    /// page in the endpoint's joined view.
    pub fn ring_layout(&self, ring: Ring) -> xen_rings::Layout {
        let (cons, prod) = match ring {
            Ring::Left => (field::LEFT_CONS.start, field::LEFT_PROD.start),
            Ring::Right => (field::RIGHT_CONS.start, field::RIGHT_PROD.start),
        };
        let data = match self.placement(ring) {
            Placement::InPage { offset } => offset,
            Placement::Pages { .. } => PAGE_SIZE,
        };
        xen_rings::Layout {
            data,
            size: self.size(ring),
            cons,
            prod,
        }
    }
}

/// What a client reads from the control page before mapping: validated orders (read once)
/// and the grant refs of each ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The orders, read once; the endpoint never re-reads them.
    pub geometry: Geometry,
    /// Grants of the left ring's pages (map writable).
    pub left_grants: Vec<GrantRef>,
    /// Grants of the right ring's pages (map read-only).
    pub right_grants: Vec<GrantRef>,
}

impl Offer {
    /// Reads and validates a server's control page. The grant count is bounded by the
    /// validated orders (at most 512) before anything is allocated.
    pub fn read<M: SharedMem + ?Sized>(ctrl: &M) -> Result<Self, LayoutError> {
        use platform_api::Ordering::Acquire;
        if ctrl.size() < PAGE_SIZE {
            return Err(LayoutError::ControlPageTooSmall { size: ctrl.size() });
        }
        let left = ctrl.load_u16(field::LEFT_ORDER.start, Acquire)?;
        let right = ctrl.load_u16(field::RIGHT_ORDER.start, Acquire)?;
        let geometry = Geometry::new(left, right)?;
        let read_refs = |ring| -> Result<Vec<GrantRef>, OutOfBounds> {
            let first = geometry.first_grant(ring);
            let n = geometry.pages(ring);
            let mut v = Vec::with_capacity(n);
            for i in first..first + n {
                v.push(GrantRef(ctrl.load_u32(field::GRANTS + 4 * i, Acquire)?));
            }
            Ok(v)
        };
        Ok(Self {
            geometry,
            left_grants: read_refs(Ring::Left)?,
            right_grants: read_refs(Ring::Right)?,
        })
    }
}

/// A view of `struct vchan_interface` (+ `grants[]`) over bytes.
///
/// Contract (smoltcp `wire`): once [`VchanInterface::new_checked`] passes, no accessor panics;
/// grant slots past the buffer are `None`. Input is checked, output is not.
#[derive(Debug, Clone)]
pub struct VchanInterface<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VchanInterface<T> {
    /// A view without checking the length (accessors may then panic).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view over at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, LayoutError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that the fixed header is present.
    pub fn check_len(&self) -> Result<(), LayoutError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(LayoutError::Truncated {
                needed: HEADER_LEN,
                len,
            });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u32_at(&self, off: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    fn u16_at(&self, off: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    /// `left.cons`.
    pub fn left_cons(&self) -> u32 {
        self.u32_at(field::LEFT_CONS.start)
    }
    /// `left.prod`.
    pub fn left_prod(&self) -> u32 {
        self.u32_at(field::LEFT_PROD.start)
    }
    /// `right.cons`.
    pub fn right_cons(&self) -> u32 {
        self.u32_at(field::RIGHT_CONS.start)
    }
    /// `right.prod`.
    pub fn right_prod(&self) -> u32 {
        self.u32_at(field::RIGHT_PROD.start)
    }
    /// `left_order`.
    pub fn left_order(&self) -> u16 {
        self.u16_at(field::LEFT_ORDER.start)
    }
    /// `right_order`.
    pub fn right_order(&self) -> u16 {
        self.u16_at(field::RIGHT_ORDER.start)
    }
    /// `cli_live`.
    pub fn cli_live(&self) -> u8 {
        self.buffer.as_ref()[field::CLI_LIVE]
    }
    /// `srv_live`.
    pub fn srv_live(&self) -> u8 {
        self.buffer.as_ref()[field::SRV_LIVE]
    }
    /// `cli_notify`.
    pub fn cli_notify(&self) -> u8 {
        self.buffer.as_ref()[field::CLI_NOTIFY]
    }
    /// `srv_notify`.
    pub fn srv_notify(&self) -> u8 {
        self.buffer.as_ref()[field::SRV_NOTIFY]
    }
    /// `grants[i]`, or `None` past the buffer.
    pub fn grant(&self, i: usize) -> Option<GrantRef> {
        let off = field::GRANTS.checked_add(i.checked_mul(4)?)?;
        let b = self.buffer.as_ref().get(off..off.checked_add(4)?)?;
        Some(GrantRef(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VchanInterface<T> {
    fn set_u32(&mut self, off: usize, v: u32) {
        self.buffer.as_mut()[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u16(&mut self, off: usize, v: u16) {
        self.buffer.as_mut()[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets `left.cons`.
    pub fn set_left_cons(&mut self, v: u32) {
        self.set_u32(field::LEFT_CONS.start, v)
    }
    /// Sets `left.prod`.
    pub fn set_left_prod(&mut self, v: u32) {
        self.set_u32(field::LEFT_PROD.start, v)
    }
    /// Sets `right.cons`.
    pub fn set_right_cons(&mut self, v: u32) {
        self.set_u32(field::RIGHT_CONS.start, v)
    }
    /// Sets `right.prod`.
    pub fn set_right_prod(&mut self, v: u32) {
        self.set_u32(field::RIGHT_PROD.start, v)
    }
    /// Sets `left_order`.
    pub fn set_left_order(&mut self, v: u16) {
        self.set_u16(field::LEFT_ORDER.start, v)
    }
    /// Sets `right_order`.
    pub fn set_right_order(&mut self, v: u16) {
        self.set_u16(field::RIGHT_ORDER.start, v)
    }
    /// Sets `cli_live`.
    pub fn set_cli_live(&mut self, v: u8) {
        self.buffer.as_mut()[field::CLI_LIVE] = v;
    }
    /// Sets `srv_live`.
    pub fn set_srv_live(&mut self, v: u8) {
        self.buffer.as_mut()[field::SRV_LIVE] = v;
    }
    /// Sets `cli_notify`.
    pub fn set_cli_notify(&mut self, v: u8) {
        self.buffer.as_mut()[field::CLI_NOTIFY] = v;
    }
    /// Sets `srv_notify`.
    pub fn set_srv_notify(&mut self, v: u8) {
        self.buffer.as_mut()[field::SRV_NOTIFY] = v;
    }
    /// Sets `grants[i]` (panics past the buffer: output is the caller's to size).
    pub fn set_grant(&mut self, i: usize, g: GrantRef) {
        self.set_u32(field::GRANTS + 4 * i, g.0)
    }
}

/// One ring's shared indexes (`struct ring_shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingIndexes {
    /// Consumer index (free-running).
    pub cons: u32,
    /// Producer index (free-running).
    pub prod: u32,
}

/// The decoded header plus the grant list its orders call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// Left ring (client → server) indexes.
    pub left: RingIndexes,
    /// Right ring (server → client) indexes.
    pub right: RingIndexes,
    /// Validated orders.
    pub geometry: Geometry,
    /// `cli_live`.
    pub cli_live: u8,
    /// `srv_live`.
    pub srv_live: u8,
    /// `cli_notify`.
    pub cli_notify: u8,
    /// `srv_notify`.
    pub srv_notify: u8,
    /// `grants[]`: left ring pages, then right ring pages.
    pub grants: Vec<GrantRef>,
}

impl Repr {
    /// Decodes and validates; the grant count comes from the orders, not the buffer length.
    pub fn parse<T: AsRef<[u8]>>(v: &VchanInterface<T>) -> Result<Self, LayoutError> {
        v.check_len()?;
        let geometry = Geometry::new(v.left_order(), v.right_order())?;
        let n = geometry.grant_count();
        let needed = field::GRANTS + 4 * n;
        let len = v.buffer.as_ref().len();
        let mut grants = Vec::with_capacity(n);
        for i in 0..n {
            grants.push(v.grant(i).ok_or(LayoutError::Truncated { needed, len })?);
        }
        Ok(Self {
            left: RingIndexes {
                cons: v.left_cons(),
                prod: v.left_prod(),
            },
            right: RingIndexes {
                cons: v.right_cons(),
                prod: v.right_prod(),
            },
            geometry,
            cli_live: v.cli_live(),
            srv_live: v.srv_live(),
            cli_notify: v.cli_notify(),
            srv_notify: v.srv_notify(),
            grants,
        })
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        field::GRANTS + 4 * self.grants.len()
    }

    /// Writes the header and grants into a view of at least [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, v: &mut VchanInterface<T>) {
        v.set_left_cons(self.left.cons);
        v.set_left_prod(self.left.prod);
        v.set_right_cons(self.right.cons);
        v.set_right_prod(self.right.prod);
        v.set_left_order(self.geometry.left_order());
        v.set_right_order(self.geometry.right_order());
        v.set_cli_live(self.cli_live);
        v.set_srv_live(self.srv_live);
        v.set_cli_notify(self.cli_notify);
        v.set_srv_notify(self.srv_notify);
        for (i, g) in self.grants.iter().enumerate() {
            v.set_grant(i, *g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sizes_follow_libxenvchan() {
        let o = |l, r| Geometry::for_minimums(l, r).map(|g| (g.left_order(), g.right_order()));
        assert_eq!(o(1024, 2048), Ok((10, 11)));
        assert_eq!(o(0, 0), Ok((10, 11)));
        assert_eq!(o(2048, 1024), Ok((11, 10)));
        assert_eq!(o(2048, 2048), Ok((11, 12)));
        assert_eq!(o(1025, 1025), Ok((11, 12)));
        assert_eq!(o(4096, 4096), Ok((12, 12)));
        assert_eq!(o(4096, 2048), Ok((12, 11)));
        assert_eq!(o(2048, 65536), Ok((11, 16)));
        assert_eq!(o(65536, 65536), Ok((16, 16)));
        assert_eq!(o(65537, 4097), Ok((17, 13)));
        assert_eq!(o(1 << 20, 1 << 20), Ok((20, 20)));
        assert_eq!(o(1 << 20, 1), Ok((20, 11)));
        assert_eq!(
            o((1 << 20) + 1, 1),
            Err(LayoutError::TooLarge {
                ring: Ring::Left,
                requested: (1 << 20) + 1
            })
        );
    }

    #[test]
    fn client_order_rules() {
        assert!(matches!(
            Geometry::new(9, 11),
            Err(LayoutError::BadOrder {
                ring: Ring::Left,
                order: 9
            })
        ));
        assert!(matches!(
            Geometry::new(12, 21),
            Err(LayoutError::BadOrder {
                ring: Ring::Right,
                ..
            })
        ));
        assert_eq!(
            Geometry::new(11, 11),
            Err(LayoutError::SameInPageOrder { order: 11 })
        );
        assert_eq!(
            Geometry::new(10, 10),
            Err(LayoutError::SameInPageOrder { order: 10 })
        );
        assert!(Geometry::new(12, 12).is_ok());
        // 256 pages do not fit in the 250 slots before a 1024-offset ring.
        assert_eq!(
            Geometry::new(10, 20),
            Err(LayoutError::TooManyGrants {
                needed: 256,
                slots: 250
            })
        );
        assert!(Geometry::new(10, 19).is_ok());
        assert!(Geometry::new(11, 20).is_ok());
        assert_eq!(Geometry::new(20, 20).map(|g| g.grant_count()), Ok(512));
    }

    #[test]
    fn grant_slots() {
        assert_eq!(Geometry::new(10, 11).unwrap().grant_slots(), 250);
        assert_eq!(Geometry::new(11, 13).unwrap().grant_slots(), 506);
        assert_eq!(Geometry::new(12, 13).unwrap().grant_slots(), 1018);
    }

    #[test]
    fn short_buffer_is_truncated() {
        assert!(matches!(
            VchanInterface::new_checked(&[0u8; 23][..]),
            Err(LayoutError::Truncated {
                needed: 24,
                len: 23
            })
        ));
        let mut b = [0u8; 28];
        b[16] = 12;
        b[18] = 12;
        let v = VchanInterface::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&v),
            Err(LayoutError::Truncated {
                needed: 32,
                len: 28
            })
        );
        assert_eq!(v.grant(usize::MAX), None);
    }
}
