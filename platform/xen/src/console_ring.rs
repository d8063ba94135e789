//! The PV console ring (`struct xencons_interface`, io/console.h \[X\]): its two byte rings in
//! `xen-rings` terms, and output with LF turned into CRLF as terminals expect.
#![forbid(unsafe_code)]

use platform_api::SharedMem;
use xen_rings::{ByteRing, Layout, RingError, Role};

/// `in[]` (backend to guest): data offset and size.
pub const IN: (usize, u32) = (0, 1024);
/// `out[]` (guest to backend).
pub const OUT: (usize, u32) = (1024, 2048);
/// `in_cons`, `in_prod`, `out_cons`, `out_prod`.
pub const IN_CONS: usize = 3072;
/// `in_prod`.
pub const IN_PROD: usize = 3076;
/// `out_cons`.
pub const OUT_CONS: usize = 3080;
/// `out_prod`.
pub const OUT_PROD: usize = 3084;

/// The guest's output ring.
pub fn out_layout() -> Layout {
    Layout {
        data: OUT.0,
        size: OUT.1,
        cons: OUT_CONS,
        prod: OUT_PROD,
    }
}

/// The guest's input ring.
pub fn in_layout() -> Layout {
    Layout {
        data: IN.0,
        size: IN.1,
        cons: IN_CONS,
        prod: IN_PROD,
    }
}

/// Our producer end of `out[]`, remembering a CR owed before an LF when the ring filled.
#[derive(Debug, Clone)]
pub struct ConsoleOut {
    ring: ByteRing,
}

impl ConsoleOut {
    /// Attaches to a console page (the indices may not start at 0).
    pub fn attach<M: SharedMem + ?Sized>(mem: &M) -> Result<Self, RingError> {
        Ok(Self {
            ring: ByteRing::attach(mem, out_layout(), Role::Producer)?,
        })
    }

    /// Writes as much of `text` as fits, each LF as CRLF; returns the bytes of `text` consumed
    /// (an LF is consumed only when both its bytes fit). 0 means the ring is full: notify the
    /// backend and wait for `out_cons` to move.
    pub fn write<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        text: &[u8],
    ) -> Result<usize, RingError> {
        let mut done = 0;
        for line in text.split_inclusive(|b| *b == b'\n') {
            let (body, nl) = match line.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (line, false),
            };
            let n = self.ring.write(mem, body)?;
            done += n;
            if n < body.len() {
                return Ok(done);
            }
            if nl {
                if self.ring.available(mem)? < 2 {
                    return Ok(done);
                }
                self.ring.write(mem, b"\r\n")?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Bytes the backend has not consumed yet.
    pub fn unconsumed<M: SharedMem + ?Sized>(&self, mem: &M) -> Result<usize, RingError> {
        Ok(OUT.1 as usize - self.ring.available(mem)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform_api::{HeapMem, Ordering};
    use test_vectors::load;

    fn page_from(hex: &[u8]) -> HeapMem {
        let m = HeapMem::new(4096);
        m.write(0, hex).unwrap();
        m
    }

    #[test]
    fn vector_console_ring_both_ways() {
        let vf = load("boot.json");
        let v = vf.get("xencons_interface");
        let hex = v.bytes();
        assert_eq!(
            vf.constant("offsetof(struct xencons_interface, out)"),
            OUT.0 as i64
        );
        assert_eq!(
            vf.constant("offsetof(struct xencons_interface, in_cons)"),
            IN_CONS as i64
        );
        // Decode: the backend's view of out[] reads exactly "boot ok\r\n" across the wrap.
        let mem = page_from(&hex);
        let mut back = ByteRing::attach(&mem, out_layout(), Role::Consumer).unwrap();
        let mut buf = [0u8; 64];
        let n = back.read(&mem, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"boot ok\r\n");
        let mut inr = ByteRing::attach(&mem, in_layout(), Role::Consumer).unwrap();
        assert_eq!(inr.read(&mem, &mut buf).unwrap(), 2);
        // Encode: the same page, out indices rewound to 0x7fc, written by us, is byte-identical.
        let mem2 = page_from(&hex);
        mem2.store_u32(OUT_PROD, 0x7fc, Ordering::Release).unwrap();
        for i in 0..4 {
            mem2.write(OUT.0 + 2044 + i, &[0]).unwrap();
        }
        for i in 0..5 {
            mem2.write(OUT.0 + i, &[0]).unwrap();
        }
        let mut out = ConsoleOut::attach(&mem2).unwrap();
        assert_eq!(out.write(&mem2, b"boot ok\n").unwrap(), 8);
        let mut got = vec![0u8; hex.len()];
        mem2.read(0, &mut got).unwrap();
        assert_eq!(got, hex);
    }

    #[test]
    fn full_ring_consumes_no_half_newline() {
        let mem = HeapMem::new(4096);
        let mut out = ConsoleOut::attach(&mem).unwrap();
        let big = vec![b'x'; 2047];
        assert_eq!(out.write(&mem, &big).unwrap(), 2047);
        assert_eq!(
            out.write(&mem, b"\n").unwrap(),
            0,
            "one free byte cannot take CRLF"
        );
        assert_eq!(out.unconsumed(&mem).unwrap(), 2047);
    }

    #[test]
    fn hostile_backend_index_refused() {
        let mem = HeapMem::new(4096);
        let mut out = ConsoleOut::attach(&mem).unwrap();
        mem.store_u32(OUT_CONS, 5000, Ordering::Release).unwrap();
        assert!(matches!(
            out.write(&mem, b"x"),
            Err(RingError::BadIndex { .. })
        ));
    }
}
