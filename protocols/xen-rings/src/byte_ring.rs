//! Producer/consumer byte rings in shared memory: the xenstore, console and vchan rings.
//! One end of one ring; the peer's index is read once per call and validated before use.

use core::fmt;

use platform_api::Ordering::{Acquire, Release, SeqCst};
use platform_api::{OutOfBounds, SharedMem};

/// Where one ring lives inside a shared region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the first data byte.
    pub data: usize,
    /// Size of the data area in bytes, a power of two.
    pub size: u32,
    /// Offset of the consumer index (u32, 4-aligned).
    pub cons: usize,
    /// Offset of the producer index (u32, 4-aligned).
    pub prod: usize,
}

impl Layout {
    /// A layout; `size` must be a non-zero power of two.
    pub fn new(data: usize, size: u32, cons: usize, prod: usize) -> Result<Self, RingError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(RingError::BadSize(size));
        }
        Ok(Self {
            data,
            size,
            cons,
            prod,
        })
    }
}

/// Why a ring operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The peer's index says more bytes are in flight than the ring holds (`prod - cons >
    /// size`): the peer is broken or hostile; stop serving this ring.
    BadIndex {
        /// `prod - cons` as computed.
        in_flight: u32,
        /// The ring size.
        size: u32,
    },
    /// A ring size that is not a power of two.
    BadSize(u32),
    /// The layout lies outside the shared region.
    Mem(OutOfBounds),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadIndex { in_flight, size } => write!(
                f,
                "peer's ring index claims {in_flight} bytes in flight in a {size}-byte ring"
            ),
            Self::BadSize(s) => write!(f, "ring size {s} is not a power of two"),
            Self::Mem(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for RingError {}

impl From<OutOfBounds> for RingError {
    fn from(e: OutOfBounds) -> Self {
        Self::Mem(e)
    }
}

/// Which index this end owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We read: we own `cons`, the peer owns `prod`.
    Consumer,
    /// We write: we own `prod`, the peer owns `cons`.
    Producer,
}

/// Our end of one byte ring. Our own index is kept here (the shared copy is only published,
/// never trusted back); the peer's index is loaded once per call.
#[derive(Debug, Clone)]
pub struct ByteRing {
    layout: Layout,
    role: Role,
    own: u32,
}

impl ByteRing {
    /// Attaches to a ring whose indices may not start at 0 (xenstore): our own index is read
    /// once from the shared page now.
    pub fn attach<M: SharedMem + ?Sized>(
        mem: &M,
        layout: Layout,
        role: Role,
    ) -> Result<Self, RingError> {
        let own_off = match role {
            Role::Consumer => layout.cons,
            Role::Producer => layout.prod,
        };
        let peer_off = match role {
            Role::Consumer => layout.prod,
            Role::Producer => layout.cons,
        };
        platform_api::check_range(layout.data, layout.size as usize, mem.size())?;
        let own = mem.load_u32(own_off, Acquire)?;
        // Validate the peer's offset now too, so later calls fail only on index values.
        mem.load_u32(peer_off, Acquire)?;
        Ok(Self { layout, role, own })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our index as we last published it.
    pub fn own_index(&self) -> u32 {
        self.own
    }

    /// Bytes in flight given the peer's index, refusing an impossible value.
    fn in_flight<M: SharedMem + ?Sized>(&self, mem: &M) -> Result<u32, RingError> {
        let (prod, cons) = match self.role {
            Role::Consumer => (mem.load_u32(self.layout.prod, Acquire)?, self.own),
            Role::Producer => (self.own, mem.load_u32(self.layout.cons, Acquire)?),
        };
        let in_flight = prod.wrapping_sub(cons);
        if in_flight > self.layout.size {
            return Err(RingError::BadIndex {
                in_flight,
                size: self.layout.size,
            });
        }
        Ok(in_flight)
    }

    /// Consumer: bytes ready to read. Producer: free space to write.
    pub fn available<M: SharedMem + ?Sized>(&self, mem: &M) -> Result<usize, RingError> {
        let n = self.in_flight(mem)?;
        Ok(match self.role {
            Role::Consumer => n,
            Role::Producer => self.layout.size - n,
        } as usize)
    }

    /// Consumer: copies up to `buf.len()` ready bytes out, publishes the new `cons`, and
    /// returns how many were read (0 if none are ready).
    pub fn read<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        buf: &mut [u8],
    ) -> Result<usize, RingError> {
        debug_assert_eq!(self.role, Role::Consumer);
        let ready = self.in_flight(mem)? as usize;
        let n = ready.min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.copy_out(mem, self.own, &mut buf[..n])?;
        // The copy must complete before the producer may reuse the space.
        mem.fence(SeqCst);
        self.own = self.own.wrapping_add(n as u32);
        mem.store_u32(self.layout.cons, self.own, Release)?;
        Ok(n)
    }

    /// Consumer: copies up to `buf.len()` ready bytes without consuming them.
    pub fn peek<M: SharedMem + ?Sized>(&self, mem: &M, buf: &mut [u8]) -> Result<usize, RingError> {
        debug_assert_eq!(self.role, Role::Consumer);
        let ready = self.in_flight(mem)? as usize;
        let n = ready.min(buf.len());
        self.copy_out(mem, self.own, &mut buf[..n])?;
        Ok(n)
    }

    /// Producer: copies as much of `data` as fits, publishes the new `prod` after the data,
    /// and returns how many bytes were written (0 if the ring is full).
    pub fn write<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        data: &[u8],
    ) -> Result<usize, RingError> {
        debug_assert_eq!(self.role, Role::Producer);
        let free = (self.layout.size - self.in_flight(mem)?) as usize;
        let n = free.min(data.len());
        if n == 0 {
            return Ok(0);
        }
        let size = self.layout.size as usize;
        let start = (self.own & (self.layout.size - 1)) as usize;
        let first = n.min(size - start);
        mem.write(self.layout.data + start, &data[..first])?;
        if first < n {
            mem.write(self.layout.data, &data[first..n])?;
        }
        self.own = self.own.wrapping_add(n as u32);
        // Release: the data is visible before the index that announces it.
        mem.store_u32(self.layout.prod, self.own, Release)?;
        Ok(n)
    }

    fn copy_out<M: SharedMem + ?Sized>(
        &self,
        mem: &M,
        from: u32,
        buf: &mut [u8],
    ) -> Result<(), RingError> {
        let n = buf.len();
        let size = self.layout.size as usize;
        let start = (from & (self.layout.size - 1)) as usize;
        let first = n.min(size - start);
        mem.read(self.layout.data + start, &mut buf[..first])?;
        if first < n {
            mem.read(self.layout.data, &mut buf[first..])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform_api::HeapMem;

    fn pair(mem: &HeapMem, size: u32) -> (ByteRing, ByteRing) {
        let l = Layout::new(16, size, 0, 4).unwrap();
        (
            ByteRing::attach(mem, l, Role::Producer).unwrap(),
            ByteRing::attach(mem, l, Role::Consumer).unwrap(),
        )
    }

    #[test]
    fn wraps_around() {
        let mem = HeapMem::new(16 + 8);
        let (mut p, mut c) = pair(&mem, 8);
        let mut out = [0u8; 8];
        assert_eq!(p.write(&mem, b"abcdef").unwrap(), 6);
        assert_eq!(c.read(&mem, &mut out[..4]).unwrap(), 4);
        assert_eq!(&out[..4], b"abcd");
        assert_eq!(p.write(&mem, b"ghijklmnop").unwrap(), 6);
        assert_eq!(p.available(&mem).unwrap(), 0);
        assert_eq!(c.read(&mem, &mut out).unwrap(), 8);
        assert_eq!(&out, b"efghijkl");
        assert_eq!(c.read(&mem, &mut out).unwrap(), 0);
    }

    #[test]
    fn indices_not_starting_at_zero() {
        let mem = HeapMem::new(16 + 8);
        mem.store_u32(0, u32::MAX - 2, Release).unwrap();
        mem.store_u32(4, u32::MAX - 2, Release).unwrap();
        let (mut p, mut c) = pair(&mem, 8);
        assert_eq!(p.write(&mem, b"12345678").unwrap(), 8);
        let mut out = [0u8; 8];
        assert_eq!(c.read(&mem, &mut out).unwrap(), 8);
        assert_eq!(&out, b"12345678");
        assert_eq!(c.own_index(), 5);
    }

    #[test]
    fn hostile_producer_index_refused() {
        let mem = HeapMem::new(16 + 8);
        let (_, mut c) = pair(&mem, 8);
        mem.store_u32(4, 9, Release).unwrap();
        let mut out = [0u8; 4];
        assert_eq!(
            c.read(&mem, &mut out),
            Err(RingError::BadIndex {
                in_flight: 9,
                size: 8
            })
        );
    }

    #[test]
    fn hostile_consumer_index_refused() {
        let mem = HeapMem::new(16 + 8);
        let (mut p, _) = pair(&mem, 8);
        mem.store_u32(0, 1, Release).unwrap(); // cons ahead of prod
        assert!(matches!(
            p.write(&mem, b"x"),
            Err(RingError::BadIndex { .. })
        ));
    }

    #[test]
    fn layout_outside_memory_refused() {
        let mem = HeapMem::new(16);
        let l = Layout::new(16, 8, 0, 4).unwrap();
        assert!(ByteRing::attach(&mem, l, Role::Consumer).is_err());
        assert!(Layout::new(0, 6, 0, 4).is_err());
    }

    mod prop {
        use super::*;
        use alloc::vec::Vec;
        use proptest::prelude::*;

        proptest! {
            /// Any interleaving of writes and reads, from any starting index (wrap-around near
            /// u32::MAX included), delivers the bytes in order and keeps `0 <= in flight <= size`.
            #[test]
            fn stream_integrity_at_any_start(
                start in prop_oneof![Just(u32::MAX - 3), Just(0u32), any::<u32>()],
                order in 1u32..7,
                ops in proptest::collection::vec((any::<bool>(), 0usize..100), 1..60),
            ) {
                let size = 1u32 << order;
                let mem = HeapMem::new(16 + size as usize);
                mem.store_u32(0, start, Release).unwrap();
                mem.store_u32(4, start, Release).unwrap();
                let l = Layout::new(16, size, 0, 4).unwrap();
                let mut p = ByteRing::attach(&mem, l, Role::Producer).unwrap();
                let mut c = ByteRing::attach(&mem, l, Role::Consumer).unwrap();
                let (mut next_out, mut next_in) = (0u8, 0u8);
                for (is_write, n) in ops {
                    if is_write {
                        let data: Vec<u8> = (0..n).map(|i| next_out.wrapping_add(i as u8)).collect();
                        let w = p.write(&mem, &data).unwrap();
                        prop_assert!(w <= n);
                        next_out = next_out.wrapping_add(w as u8);
                    } else {
                        let mut buf = alloc::vec![0u8; n];
                        let r = c.read(&mem, &mut buf).unwrap();
                        for b in &buf[..r] {
                            prop_assert_eq!(*b, next_in);
                            next_in = next_in.wrapping_add(1);
                        }
                    }
                    let ready = c.available(&mem).unwrap();
                    let free = p.available(&mem).unwrap();
                    prop_assert_eq!(ready + free, size as usize);
                }
            }
        }
    }
}
