//! Wire tests: every `qubesdb.json` vector both ways, garbage after the path's NUL, the
//! `verify_hdr` refusals, and parse/emit properties.

use super::*;
use crate::framing::FrameReader;
use alloc::vec::Vec;
use proptest::prelude::*;

fn build<'a>(ty: u8, path: QdbPath, data: &'a [u8]) -> Message<'a> {
    match MsgType::from(ty) {
        MsgType::Read => Message::Read(path),
        MsgType::Write => Message::Write(path, data),
        MsgType::Multiread => Message::Multiread(path),
        MsgType::List => Message::List(path),
        MsgType::Rm => Message::Rm(path),
        MsgType::Watch => Message::Watch(path),
        MsgType::Unwatch => Message::Unwatch(path),
        MsgType::RespOk => Message::RespOk(path),
        MsgType::RespErrorNoent => Message::RespErrorNoent(path),
        MsgType::RespError => Message::RespError(path),
        MsgType::RespRead => Message::RespRead(path, data),
        MsgType::RespMultiread => Message::RespMultiread(path, data),
        MsgType::RespList => Message::RespList(path),
        MsgType::RespWatch => Message::RespWatch(path),
        MsgType::Unknown(t) => panic!("vector with unknown type {t}"),
    }
}

#[test]
fn every_vector_emits_and_parses() {
    let vf = test_vectors::load("qubesdb.json");
    assert_eq!(vf.constant("sizeof(struct qdb_hdr)") as usize, HEADER_LEN);
    assert_eq!(vf.constant("QDB_MAX_DATA") as usize, MAX_DATA);
    assert_eq!(vf.constant("QDB_MAX_PATH") as usize, PATH_FIELD_LEN);
    assert_eq!(vf.constant("offsetof(struct qdb_hdr, data_len)"), 68);
    let mut seen = [false; 14];
    for v in &vf.vectors {
        let bytes = v.bytes();
        let ty = v.u64("type") as u8;
        let path = QdbPath::new(v.str("path")).unwrap();
        let data = if v.has("data") {
            v.raw("data")
        } else {
            Vec::new()
        };
        assert_eq!(v.u64("data_len") as usize, data.len(), "{}", v.name);
        let msg = build(ty, path, &data);
        assert_eq!(msg.to_vec().unwrap(), bytes, "{}: emit", v.name);
        assert_eq!(msg.buffer_len(), bytes.len(), "{}", v.name);
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed, msg, "{}: parse", v.name);
        assert_eq!(u8::from(parsed.msg_type()), ty, "{}", v.name);
        assert_eq!(parsed.path().as_str(), v.str("path"), "{}", v.name);
        assert_eq!(parsed.data(), &data[..], "{}", v.name);
        let local_only = v.direction.as_deref().is_some_and(|d| d.contains("local"));
        assert_eq!(
            parsed.msg_type().valid_on_vchan(),
            !local_only,
            "{}: vchan validity",
            v.name
        );
        seen[usize::from(ty)] = true;
    }
    assert!(
        seen.iter().all(|&s| s),
        "a message type has no vector: {seen:?}"
    );
}

#[test]
fn vectors_decode_with_garbage_after_path_nul_and_in_padding() {
    let vf = test_vectors::load("qubesdb.json");
    for v in &vf.vectors {
        let clean = v.bytes();
        let mut dirty = clean.clone();
        let end = 1 + v.str("path").len();
        for b in &mut dirty[end + 1..68] {
            *b = b'Z';
        }
        let a = Message::parse(&clean).unwrap();
        let b = Message::parse(&dirty).unwrap();
        assert_eq!(a, b, "{}", v.name);
        assert_eq!(
            b.to_vec().unwrap(),
            clean,
            "{}: re-emit zeroes the garbage",
            v.name
        );
    }
}

#[test]
fn end_marker_keeping_previous_path_bytes_is_an_end_marker() {
    let mut b = Message::RespMultiread(QdbPath::new("/qubes-ip").unwrap(), b"")
        .to_vec()
        .unwrap();
    b[1] = 0;
    assert!(Message::parse(&b).unwrap().is_end_of_dump());
    assert_eq!(
        Message::END_OF_DUMP.to_vec().unwrap()[..],
        Message::parse(&b).unwrap().to_vec().unwrap()[..]
    );
}

fn header(ty: u8, path: &[u8], len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = ty;
    h[1..1 + path.len()].copy_from_slice(path);
    h[68..].copy_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn path_must_be_nul_terminated_within_64_bytes() {
    let h = header(1, &[b'a'; 64], 0);
    assert_eq!(Message::parse(&h), Err(WireError::PathTooLong));
    let ok = header(1, &[b'a'; 63], 0);
    assert_eq!(Message::parse(&ok).unwrap().path().as_bytes().len(), 63);
    assert_eq!(
        QdbPath::from_bytes(&[b'a'; 64]),
        Err(WireError::PathTooLong)
    );
}

#[test]
fn path_charset_is_enforced() {
    for bad in [&b"/a b"[..], b"/a\xff", b"/a*", b"/a\n", b"/\\x"] {
        let h = header(1, bad, 0);
        assert!(
            matches!(Message::parse(&h), Err(WireError::PathChar(_))),
            "{bad:?}"
        );
    }
    assert!(QdbPath::new("/A-z_0.9:@/").is_ok());
}

#[test]
fn path_leading_dash_is_refused() {
    assert_eq!(
        Message::parse(&header(4, b"-rf", 0)),
        Err(WireError::PathLeadingDash)
    );
    assert!(QdbPath::new("/-ok").is_ok());
}

#[test]
fn data_len_3072_is_refused_before_allocation() {
    let h = header(1, b"/x", MAX_DATA as u32);
    assert_eq!(Message::parse(&h), Err(WireError::DataTooLong(3072)));
    let mut r = FrameReader::new(QdbFraming);
    assert_eq!(
        r.push(&header(1, b"/x", u32::MAX)),
        Err(FrameError::TooLong {
            len: u32::MAX.into(),
            max: 3071
        })
    );
    let mut r = FrameReader::new(QdbFraming);
    assert_eq!(r.push(&header(1, b"/x", 3071)), Ok(HEADER_LEN));
    assert_eq!(r.wanted(), 3071);
}

#[test]
fn unknown_type_is_refused() {
    assert_eq!(
        Message::parse(&header(14, b"/x", 0)),
        Err(WireError::UnknownType(14))
    );
    assert_eq!(
        Message::parse(&header(255, b"", 0)),
        Err(WireError::UnknownType(255))
    );
    let mut r = FrameReader::new(QdbFraming);
    assert!(matches!(
        r.push(&header(200, b"", 0)),
        Err(FrameError::BadHeader(_))
    ));
}

#[test]
fn value_on_a_type_without_one_is_refused() {
    let mut b = header(4, b"/x", 2).to_vec();
    b.extend_from_slice(b"hi");
    assert_eq!(
        Message::parse(&b),
        Err(WireError::UnexpectedData(MsgType::Rm))
    );
}

#[test]
fn truncated_and_trailing_are_refused() {
    assert_eq!(
        Message::parse(&[1; 10]),
        Err(WireError::Truncated { needed: HEADER_LEN })
    );
    let mut b = header(1, b"/x", 4).to_vec();
    b.extend_from_slice(b"ab");
    assert_eq!(Message::parse(&b), Err(WireError::Truncated { needed: 76 }));
    b.extend_from_slice(b"cde");
    assert_eq!(Message::parse(&b), Err(WireError::TrailingBytes));
}

#[test]
fn nul_in_data_is_detected_but_parses() {
    let mut b = header(1, b"/x", 3).to_vec();
    b.extend_from_slice(b"a\0b");
    let m = Message::parse(&b).unwrap();
    assert_eq!(check_data(m.data()), Err(WireError::DataHasNul));
}

#[test]
fn emit_refuses_small_buffer_and_long_value() {
    let m = Message::Write(QdbPath::new("/x").unwrap(), b"abc");
    assert_eq!(
        m.emit(&mut [0; 74]),
        Err(EmitError::BufferTooSmall(BufferTooSmall { needed: 75 }))
    );
    let long = [b'a'; MAX_DATA];
    let m = Message::Write(QdbPath::new("/x").unwrap(), &long);
    assert_eq!(m.to_vec(), Err(WireError::DataTooLong(3072)));
}

fn arb_path() -> impl Strategy<Value = QdbPath> {
    "([A-Za-z0-9_/.:@][A-Za-z0-9_/.:@-]{0,62})?".prop_map(|s| QdbPath::new(&s).unwrap())
}

proptest! {
    #[test]
    fn parse_of_emit_is_identity(ty in 0u8..14, path in arb_path(),
                                 data in proptest::collection::vec(1u8..=255, 0..MAX_DATA)) {
        let data = if MsgType::from(ty).carries_data() { data } else { Vec::new() };
        let m = build(ty, path, &data);
        let bytes = m.to_vec().unwrap();
        prop_assert_eq!(Message::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::parse(&bytes);
    }
}
