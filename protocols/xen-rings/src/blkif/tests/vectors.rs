//! Every blkif vector both ways: emit == hex, parse == fields; constants; round trips.
use crate::blkif::wire::*;
use alloc::format;
use platform_api::GrantRef;
use proptest::prelude::*;
use test_vectors::Vector;

fn entry(v: &Vector) -> [u8; Request::ENTRY_SIZE] {
    let mut e = [0u8; Request::ENTRY_SIZE];
    let b = v.bytes();
    e[..b.len()].copy_from_slice(&b);
    e
}

fn direct(v: &Vector) -> DirectRequest {
    let nr = v.u64("nr_segments") as u8;
    let mut seg = [Segment::EMPTY; MAX_SEGMENTS];
    for (i, s) in seg.iter_mut().enumerate() {
        if v.has(&format!("seg[{i}].gref")) {
            *s = Segment {
                gref: GrantRef(v.u64(&format!("seg[{i}].gref")) as u32),
                first_sect: v.u64(&format!("seg[{i}].first_sect")) as u8,
                last_sect: v.u64(&format!("seg[{i}].last_sect")) as u8,
            };
        }
    }
    DirectRequest {
        operation: v.u64("operation") as u8,
        nr_segments: nr,
        handle: v.u64("handle") as u16,
        id: v.u64("id"),
        sector_number: v.u64("sector_number"),
        seg,
    }
}

#[test]
fn constants_match_header() {
    let f = test_vectors::load("netif_blkif.json");
    for (name, val) in [
        ("BLKIF_OP_READ", OP_READ),
        ("BLKIF_OP_WRITE", OP_WRITE),
        ("BLKIF_OP_WRITE_BARRIER", OP_WRITE_BARRIER),
        ("BLKIF_OP_FLUSH_DISKCACHE", OP_FLUSH_DISKCACHE),
        ("BLKIF_OP_DISCARD", OP_DISCARD),
        ("BLKIF_OP_INDIRECT", OP_INDIRECT),
        ("BLKIF_DISCARD_SECURE", DISCARD_SECURE),
    ] {
        assert_eq!(f.constant(name), i64::from(val), "{name}");
    }
    for (name, val) in [
        ("BLKIF_RSP_EOPNOTSUPP", RSP_EOPNOTSUPP),
        ("BLKIF_RSP_ERROR", RSP_ERROR),
        ("BLKIF_RSP_OKAY", RSP_OKAY),
    ] {
        assert_eq!(f.constant(name), i64::from(val), "{name}");
    }
    assert_eq!(
        f.constant("BLKIF_MAX_SEGMENTS_PER_REQUEST"),
        MAX_SEGMENTS as i64
    );
    assert_eq!(
        f.constant("BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST"),
        MAX_INDIRECT_PAGES as i64
    );
    assert_eq!(
        f.constant("sizeof(struct blkif_request)"),
        Request::ENTRY_SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct blkif_response)"),
        Response::SIZE as i64
    );
    assert_eq!(
        f.constant("sizeof(struct blkif_request_segment)"),
        Segment::SIZE as i64
    );
    let d = Request::Discard(DiscardRequest {
        flag: 0,
        handle: 0,
        id: 0,
        sector_number: 0,
        nr_sectors: 0,
    });
    assert_eq!(
        f.constant("sizeof(struct blkif_request_discard)"),
        d.buffer_len() as i64
    );
    let i = Request::Indirect(IndirectRequest {
        indirect_op: 0,
        nr_segments: 0,
        id: 0,
        sector_number: 0,
        handle: 0,
        indirect_grefs: [GrantRef(0); MAX_INDIRECT_PAGES],
    });
    assert_eq!(
        f.constant("sizeof(struct blkif_request_indirect)"),
        i.buffer_len() as i64
    );
}

#[test]
fn direct_requests_both_ways() {
    let f = test_vectors::load("netif_blkif.json");
    for name in [
        "blkif_request READ 2 segments",
        "blkif_request WRITE 11 segments",
        "blkif_request FLUSH_DISKCACHE",
    ] {
        let v = f.get(name);
        let r = Request::Direct(direct(v));
        assert_eq!(r.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(Request::parse(&entry(v)).unwrap(), r, "{name}");
    }
}

#[test]
fn discard_both_ways() {
    let f = test_vectors::load("netif_blkif.json");
    let v = f.get("blkif_request_discard");
    let r = Request::Discard(DiscardRequest {
        flag: v.u64("flag") as u8,
        handle: v.u64("handle") as u16,
        id: v.u64("id"),
        sector_number: v.u64("sector_number"),
        nr_sectors: v.u64("nr_sectors"),
    });
    assert_eq!(u64::from(r.operation()), v.u64("operation"));
    assert_eq!(&r.emit()[..v.size], v.bytes().as_slice());
    assert!(r.emit()[v.size..].iter().all(|b| *b == 0));
    assert_eq!(r.buffer_len(), v.size);
    assert_eq!(Request::parse(&entry(v)).unwrap(), r);
}

#[test]
fn indirect_both_ways() {
    let f = test_vectors::load("netif_blkif.json");
    let v = f.get("blkif_request_indirect");
    let mut g = [GrantRef(0); MAX_INDIRECT_PAGES];
    for (i, x) in v.array("indirect_grefs").into_iter().enumerate() {
        g[i] = GrantRef(x as u32);
    }
    let r = Request::Indirect(IndirectRequest {
        indirect_op: v.u64("indirect_op") as u8,
        nr_segments: v.u64("nr_segments") as u16,
        id: v.u64("id"),
        sector_number: v.u64("sector_number"),
        handle: v.u64("handle") as u16,
        indirect_grefs: g,
    });
    assert_eq!(u64::from(r.operation()), v.u64("operation"));
    assert_eq!(&r.emit()[..v.size], v.bytes().as_slice());
    assert_eq!(r.buffer_len(), v.size);
    assert_eq!(Request::parse(&entry(v)).unwrap(), r);
}

#[test]
fn segment_both_ways() {
    let f = test_vectors::load("netif_blkif.json");
    let v = f.get("blkif_request_segment");
    let s = Segment {
        gref: GrantRef(v.u64("gref") as u32),
        first_sect: v.u64("first_sect") as u8,
        last_sect: v.u64("last_sect") as u8,
    };
    assert_eq!(s.emit().as_slice(), v.bytes().as_slice());
    assert_eq!(Segment::parse(&v.bytes().try_into().unwrap()), s);
    assert!(s.is_valid());
    assert_eq!(s.sectors(), 2);
}

#[test]
fn responses_both_ways() {
    let f = test_vectors::load("netif_blkif.json");
    for name in ["blkif_response OKAY", "blkif_response EOPNOTSUPP"] {
        let v = f.get(name);
        let r = Response {
            id: v.u64("id"),
            operation: v.u64("operation") as u8,
            status: v.i64("status") as i16,
        };
        assert_eq!(r.emit().as_slice(), v.bytes().as_slice(), "{name}");
        assert_eq!(Response::parse(&v.bytes().try_into().unwrap()), r, "{name}");
    }
}

#[test]
fn parse_refuses_too_many_segments() {
    let mut e = [0u8; Request::ENTRY_SIZE];
    e[1] = 12;
    assert_eq!(
        Request::parse(&e),
        Err(WireError::TooManySegments { nr: 12, max: 11 })
    );
    e[0] = OP_INDIRECT;
    e[2..4].copy_from_slice(&4097u16.to_le_bytes());
    assert!(Request::parse(&e).is_err());
}

proptest! {
    /// parse(emit(x)) == x for every decodable entry, and parse never panics.
    #[test]
    fn request_parse_emit(b in proptest::collection::vec(any::<u8>(), 112)) {
        let e: [u8; 112] = b.try_into().unwrap();
        if let Ok(r) = Request::parse(&e) {
            prop_assert_eq!(Request::parse(&r.emit()).unwrap(), r);
        }
    }

    #[test]
    fn response_parse_emit(id in any::<u64>(), operation in any::<u8>(), status in any::<i16>()) {
        let r = Response { id, operation, status };
        prop_assert_eq!(Response::parse(&r.emit()), r);
    }
}
