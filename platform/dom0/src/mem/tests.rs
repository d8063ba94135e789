//! The mmap accessors against `HeapMem` (the safe model of the same trait), bounds and
//! alignment refusals, and visibility across threads.

use super::*;
use platform_api::HeapMem;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    Read(usize, usize),
    Store8(usize, u8),
    Store16(usize, u16),
    Store32(usize, u32),
    Load16(usize),
    Load32(usize),
    And(usize, u8),
    Or(usize, u8),
}

const PAGES: usize = 2;
const SIZE: usize = PAGES * PAGE_SIZE;

/// Offsets cluster near the page boundary and the end so that head/tail splitting, page
/// crossing and out-of-range accesses are all hit.
fn offset() -> impl Strategy<Value = usize> {
    prop_oneof![
        0..64usize,
        (PAGE_SIZE - 40)..(PAGE_SIZE + 40),
        (SIZE - 40)..(SIZE + 8),
        Just(usize::MAX - 3),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (offset(), proptest::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(o, d)| Op::Write(o, d)),
        (offset(), 0..80usize).prop_map(|(o, n)| Op::Read(o, n)),
        (offset(), any::<u8>()).prop_map(|(o, v)| Op::Store8(o, v)),
        (offset(), any::<u16>()).prop_map(|(o, v)| Op::Store16(o, v)),
        (offset(), any::<u32>()).prop_map(|(o, v)| Op::Store32(o, v)),
        offset().prop_map(Op::Load16),
        offset().prop_map(Op::Load32),
        (offset(), any::<u8>()).prop_map(|(o, v)| Op::And(o, v)),
        (offset(), any::<u8>()).prop_map(|(o, v)| Op::Or(o, v)),
    ]
}

fn apply(m: &dyn SharedMem, op: &Op) -> Result<Vec<u8>, OutOfBounds> {
    let o = Ordering::SeqCst;
    Ok(match op {
        Op::Write(at, d) => m.write(*at, d).map(|()| Vec::new())?,
        Op::Read(at, n) => {
            let mut b = vec![0u8; *n];
            m.read(*at, &mut b)?;
            b
        }
        Op::Store8(at, v) => m.store_u8(*at, *v, o).map(|()| Vec::new())?,
        Op::Store16(at, v) => m.store_u16(*at, *v, o).map(|()| Vec::new())?,
        Op::Store32(at, v) => m.store_u32(*at, *v, o).map(|()| Vec::new())?,
        Op::Load16(at) => m.load_u16(*at, o)?.to_le_bytes().to_vec(),
        Op::Load32(at) => m.load_u32(*at, o)?.to_le_bytes().to_vec(),
        Op::And(at, v) => vec![m.fetch_and_u8(*at, *v, o)?],
        Op::Or(at, v) => vec![m.fetch_or_u8(*at, *v, o)?],
    })
}

proptest! {
    #[test]
    fn region_behaves_like_heap_mem(ops in proptest::collection::vec(op(), 1..60)) {
        let r = Region::anonymous(PAGES).unwrap();
        let h = HeapMem::new(SIZE);
        for op in &ops {
            prop_assert_eq!(apply(&r, op).is_ok(), apply(&h, op).is_ok(), "{:?}", op);
        }
        let mut a = vec![0u8; SIZE];
        let mut b = vec![0u8; SIZE];
        r.read(0, &mut a).unwrap();
        h.read(0, &mut b).unwrap();
        prop_assert_eq!(a, b);
    }
}

#[test]
fn every_head_and_tail_split_copies_exactly() {
    let r = Region::anonymous(1).unwrap();
    let pattern: Vec<u8> = (0..40u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(1))
        .collect();
    for at in 0..16 {
        for len in 0..pattern.len() {
            r.write(0, &[0u8; 64]).unwrap();
            r.write(at, &pattern[..len]).unwrap();
            let mut back = vec![0u8; 64];
            r.read(0, &mut back).unwrap();
            assert!(
                back[..at].iter().all(|&b| b == 0),
                "bytes before {at} untouched"
            );
            assert_eq!(&back[at..at + len], &pattern[..len], "at {at} len {len}");
            assert!(
                back[at + len..].iter().all(|&b| b == 0),
                "bytes after untouched"
            );
        }
    }
}

#[test]
fn multi_byte_values_are_little_endian_as_xen_rings_are() {
    let r = Region::anonymous(1).unwrap();
    r.store_u32(8, 0x0403_0201, Ordering::Release).unwrap();
    r.store_u16(12, 0x0605, Ordering::Release).unwrap();
    let mut b = [0u8; 6];
    r.read(8, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4, 5, 6]);
    assert_eq!(r.load_u32(8, Ordering::Acquire).unwrap(), 0x0403_0201);
}

#[test]
fn accesses_past_the_end_or_unaligned_are_errors_not_panics() {
    let r = Region::anonymous(1).unwrap();
    let mut b = [0u8; 2];
    assert!(r.read(PAGE_SIZE - 1, &mut b).is_err());
    assert!(r.read(usize::MAX, &mut b).is_err(), "offset overflow");
    assert!(r.write(PAGE_SIZE, &[1]).is_err());
    assert!(r.load_u32(2, Ordering::Relaxed).is_err(), "unaligned u32");
    assert!(
        r.store_u16(1, 0, Ordering::Relaxed).is_err(),
        "unaligned u16"
    );
    assert!(r.load_u8(PAGE_SIZE, Ordering::Relaxed).is_err());
    // Orderings a plain atomic would panic on are accepted.
    assert!(r.load_u8(0, Ordering::Release).is_ok());
    assert!(r.store_u8(0, 1, Ordering::Acquire).is_ok());
    assert!(r.load_u16(0, Ordering::AcqRel).is_ok());
    assert_eq!(
        Region::anonymous(0).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn a_read_only_mapping_refuses_every_write() {
    let rw = Region::anonymous(1).unwrap();
    rw.store_u8(5, 9, Ordering::Relaxed).unwrap();
    let (base, len) = (rw.base, rw.len);
    std::mem::forget(rw);
    // SAFETY: the mapping made above is live and now owned only by `ro` (the read-write
    // owner was forgotten without unmapping).
    let ro = unsafe { Region::from_raw(base, len, false) };
    assert!(!ro.writable());
    assert_eq!(ro.load_u8(5, Ordering::Relaxed), Ok(9));
    assert!(ro.write(0, &[1]).is_err());
    assert!(ro.store_u8(0, 1, Ordering::Relaxed).is_err());
    assert!(ro.store_u16(0, 1, Ordering::Relaxed).is_err());
    assert!(ro.store_u32(0, 1, Ordering::Relaxed).is_err());
    assert!(ro.fetch_or_u8(0, 1, Ordering::Relaxed).is_err());
    assert!(ro.fetch_and_u8(0, 1, Ordering::Relaxed).is_err());
}

#[test]
fn a_release_store_is_seen_with_the_data_before_it_across_threads() {
    let r = std::sync::Arc::new(Region::anonymous(1).unwrap());
    let peer = {
        let r = r.clone();
        std::thread::spawn(move || {
            while r.load_u32(0, Ordering::Acquire).unwrap() == 0 {
                std::thread::yield_now();
            }
            let mut b = [0u8; 100];
            r.read(100, &mut b).unwrap();
            b
        })
    };
    r.write(100, &[0xAB; 100]).unwrap();
    r.store_u32(0, 1, Ordering::Release).unwrap();
    assert_eq!(peer.join().unwrap(), [0xAB; 100]);
}
