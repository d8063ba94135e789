//! Vector tests for every entry of `xs_wire.json` (both ways), hostile inputs and properties.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use platform_api::{Access, DomId, HeapMem, Perm, SharedMem, XsErrno};
use test_vectors::Vector;
use xen_rings::{ByteRing, Layout, Role};

use super::*;

extern crate std;

/// A `bytes` field without its trailing NUL.
fn s(v: &Vector, name: &str) -> String {
    let t = v.str(name);
    t.strip_suffix('\0')
        .unwrap_or_else(|| panic!("{}: {name} lacks NUL", v.name))
        .to_string()
}

fn num<T: core::str::FromStr>(v: &Vector, name: &str) -> T {
    s(v, name)
        .parse()
        .unwrap_or_else(|_| panic!("{}: {name} is not a number", v.name))
}

fn dom(v: &Vector, name: &str) -> DomId {
    DomId::new(num(v, name)).unwrap()
}

fn p(v: &Vector, name: &str) -> XsPath {
    XsPath::new(&s(v, name)).unwrap()
}

fn list(v: &Vector, name: &str) -> Vec<String> {
    v.str(name)
        .split_terminator('\0')
        .map(String::from)
        .collect()
}

fn perms(v: &Vector, name: &str) -> Vec<Perm> {
    list(v, name)
        .iter()
        .map(|e| {
            let access = match &e[..1] {
                "r" => Access::Read,
                "w" => Access::Write,
                "b" => Access::Both,
                "n" => Access::None,
                _ => panic!("bad letter"),
            };
            Perm {
                domid: DomId::new(e[1..].parse().unwrap()).unwrap(),
                access,
            }
        })
        .collect()
}

/// The request the vector's fields describe, built from the field values.
fn expected_request(v: &Vector) -> Request {
    match MsgType::from(v.u64("type") as u32) {
        MsgType::Control => Request::Control {
            command: s(v, "command"),
            args: if v.has("argument") {
                alloc::vec![s(v, "argument")]
            } else {
                Vec::new()
            },
        },
        MsgType::Directory => Request::Directory(p(v, "path")),
        MsgType::Read => Request::Read(p(v, "path")),
        MsgType::GetPerms => Request::GetPerms(p(v, "path")),
        MsgType::Watch => Request::Watch {
            path: p(v, "wpath"),
            token: s(v, "token"),
            depth: v.has("depth").then(|| num(v, "depth")),
        },
        MsgType::Unwatch => Request::Unwatch {
            path: p(v, "wpath"),
            token: s(v, "token"),
        },
        MsgType::TransactionStart => {
            assert_eq!(v.str("empty"), "\0");
            Request::TransactionStart
        }
        MsgType::ResetWatches => {
            assert_eq!(v.str("empty"), "\0");
            Request::ResetWatches
        }
        MsgType::TransactionEnd => {
            let commit = if v.has("commit") {
                s(v, "commit")
            } else {
                s(v, "abort")
            };
            Request::TransactionEnd {
                commit: commit == "T",
            }
        }
        MsgType::Introduce => Request::Introduce {
            domid: dom(v, "domid"),
            gfn: num(v, "gfn"),
            evtchn: num(v, "evtchn"),
        },
        MsgType::Release => Request::Release(dom(v, "domid")),
        MsgType::GetDomainPath => Request::GetDomainPath(dom(v, "domid")),
        MsgType::Write => Request::Write {
            path: p(v, "path"),
            value: if v.has("value") {
                v.raw("value")
            } else {
                Vec::new()
            },
        },
        MsgType::Mkdir => Request::Mkdir(p(v, "path")),
        MsgType::Rm => Request::Rm(p(v, "path")),
        MsgType::SetPerms => Request::SetPerms {
            path: p(v, "path"),
            perms: perms(v, "perms"),
        },
        MsgType::IsDomainIntroduced => Request::IsDomainIntroduced(dom(v, "domid")),
        MsgType::Resume => Request::Resume(dom(v, "domid")),
        MsgType::SetTarget => Request::SetTarget {
            domid: dom(v, "domid"),
            target: dom(v, "tdomid"),
        },
        MsgType::DirectoryPart => Request::DirectoryPart {
            path: p(v, "path"),
            offset: num(v, "offset"),
        },
        MsgType::GetFeature => Request::GetFeature(v.has("domid").then(|| dom(v, "domid"))),
        MsgType::SetFeature => Request::SetFeature {
            domid: dom(v, "domid"),
            value: num(v, "value"),
        },
        MsgType::GetQuota => Request::GetQuota {
            domid: Some(dom(v, "domid")),
            quota: Some(s(v, "quota")),
        },
        MsgType::SetQuota => Request::SetQuota {
            domid: Some(dom(v, "domid")),
            quota: s(v, "quota"),
            value: num(v, "value"),
        },
        MsgType::Invalid => Request::Invalid,
        t => panic!("{}: no request of type {t:?}", v.name),
    }
}

/// The reply the vector's fields describe.
fn expected_reply(v: &Vector) -> Reply {
    let t = MsgType::from(v.u64("type") as u32);
    if t == MsgType::Control {
        return Reply::Control(v.raw("reply"));
    }
    if v.has("reply") {
        assert_eq!(v.str("reply"), "OK\0");
        return Reply::Ok(t);
    }
    match t {
        MsgType::Directory => Reply::Directory(list(v, "children")),
        MsgType::Read => Reply::Read(v.raw("value")),
        MsgType::GetPerms => Reply::Perms(perms(v, "perms")),
        MsgType::TransactionStart => Reply::TransactionStarted(num(v, "txid")),
        MsgType::GetDomainPath => Reply::DomainPath(s(v, "path")),
        MsgType::IsDomainIntroduced => Reply::IsIntroduced(s(v, "answer") == "T"),
        MsgType::DirectoryPart => Reply::DirectoryPart {
            gencnt: num(v, "gencnt"),
            children: list(v, "children"),
            complete: v.str("end") == "\0",
        },
        MsgType::GetFeature => Reply::Feature(num(v, "value")),
        MsgType::WatchEvent => Reply::WatchEvent {
            path: p(v, "epath"),
            token: s(v, "token"),
        },
        MsgType::Error => Reply::Error(XsErrno::from_name(&s(v, "error")).unwrap()),
        t => panic!("{}: no reply of type {t:?}", v.name),
    }
}

fn check_header(v: &Vector, bytes: &[u8]) {
    let h = MsgHeader::new_checked(bytes).unwrap();
    assert_eq!(u32::from(h.msg_type()), v.u64("type") as u32, "{}", v.name);
    assert_eq!(h.req_id(), v.u64("req_id") as u32, "{}", v.name);
    assert_eq!(h.tx_id(), v.u64("tx_id") as u32, "{}", v.name);
    assert_eq!(h.len(), v.u64("len") as u32, "{}", v.name);
    let pre = Header::parse_prefix(bytes).unwrap();
    assert_eq!(pre.total_len(), bytes.len());
}

#[test]
fn every_message_vector_both_ways() {
    let vf = test_vectors::load("xs_wire.json");
    let mut seen = 0;
    for v in &vf.vectors {
        if !v.struct_.starts_with("xsd_sockmsg") {
            continue;
        }
        seen += 1;
        let bytes = v.bytes();
        check_header(v, &bytes);
        let h = MsgHeader::new_checked(&bytes[..]).unwrap();
        match v.direction.as_deref() {
            Some("client->xenstored") => {
                let want = RequestMsg {
                    req_id: v.u64("req_id") as u32,
                    tx_id: v.u64("tx_id") as u32,
                    request: expected_request(v),
                };
                assert_eq!(RequestMsg::parse(&h).unwrap(), want, "{} parse", v.name);
                assert_eq!(want.buffer_len(), bytes.len(), "{} len", v.name);
                let mut out = alloc::vec![0xAAu8; bytes.len()];
                assert_eq!(want.emit(&mut out).unwrap(), bytes.len());
                assert_eq!(out, bytes, "{} emit", v.name);
            }
            Some("xenstored->client") => {
                let want = ReplyMsg {
                    req_id: v.u64("req_id") as u32,
                    tx_id: v.u64("tx_id") as u32,
                    reply: expected_reply(v),
                };
                assert_eq!(ReplyMsg::parse(&h).unwrap(), want, "{} parse", v.name);
                assert_eq!(want.buffer_len(), bytes.len(), "{} len", v.name);
                assert_eq!(want.to_vec().unwrap(), bytes, "{} emit", v.name);
            }
            d => panic!("{}: unknown direction {d:?}", v.name),
        }
    }
    assert_eq!(seen, 44);
}

const REQ: Layout = Layout {
    data: 0,
    size: 1024,
    cons: 2048,
    prod: 2052,
};
const RSP: Layout = Layout {
    data: 1024,
    size: 1024,
    cons: 2056,
    prod: 2060,
};

#[test]
fn domain_interface_vector_both_ways() {
    let vf = test_vectors::load("xs_wire.json");
    let v = vf.get("xenstore_domain_interface with a wrapped READ request");
    let bytes = v.bytes();
    assert_eq!(
        bytes.len() as i64,
        vf.constant("sizeof(struct xenstore_domain_interface)")
    );
    // The ring carries exactly the standalone READ vectors.
    let req_v = vf.get("XS_READ request");
    let rsp_v = vf.get("XS_READ reply");
    let request = RequestMsg::parse(&MsgHeader::new_checked(&req_v.bytes()[..]).unwrap()).unwrap();
    let reply = ReplyMsg::parse(&MsgHeader::new_checked(&rsp_v.bytes()[..]).unwrap()).unwrap();
    assert_eq!(
        request.request,
        Request::Read(XsPath::new("domid").unwrap())
    );
    assert_eq!(reply.reply, Reply::Read(b"42".to_vec()));

    // Decode: xenstored reads the request from req[], the guest reads the reply from rsp[].
    let mem = HeapMem::new(bytes.len());
    mem.write(0, &bytes).unwrap();
    let mut req = ByteRing::attach(&mem, REQ, Role::Consumer).unwrap();
    assert_eq!(req.own_index(), v.u64("req_cons") as u32);
    let mut buf = [0u8; 64];
    let n = req.read(&mem, &mut buf).unwrap();
    assert_eq!(n, 22);
    let got = RequestMsg::parse(&MsgHeader::new_checked(&buf[..n]).unwrap()).unwrap();
    assert_eq!(got, request);
    assert_eq!(
        mem.load_u32(2048, Ordering::Acquire).unwrap(),
        v.u64("req_prod") as u32
    );
    let mut rsp = ByteRing::attach(&mem, RSP, Role::Consumer).unwrap();
    let n = rsp.read(&mem, &mut buf).unwrap();
    assert_eq!(n as u64, v.u64("rsp_prod") - v.u64("rsp_cons"));
    let got = ReplyMsg::parse(&MsgHeader::new_checked(&buf[..n]).unwrap()).unwrap();
    assert_eq!(got, reply);
    assert_eq!(
        mem.load_u32(2064, Ordering::Acquire).unwrap() as u64,
        v.u64("server_features")
    );

    // Encode: the same page built from the field values through producer rings.
    let mem = HeapMem::new(bytes.len());
    for f in ["req_cons", "req_prod"] {
        mem.store_u32(
            v.field(f).offset,
            v.u64("req_cons") as u32,
            Ordering::Release,
        )
        .unwrap();
    }
    for f in ["rsp_cons", "rsp_prod"] {
        mem.store_u32(
            v.field(f).offset,
            v.u64("rsp_cons") as u32,
            Ordering::Release,
        )
        .unwrap();
    }
    for f in ["server_features", "connection", "error", "evtchn_port"] {
        mem.store_u32(v.field(f).offset, v.u64(f) as u32, Ordering::Release)
            .unwrap();
    }
    let mut req = ByteRing::attach(&mem, REQ, Role::Producer).unwrap();
    assert_eq!(req.write(&mem, &request.to_vec().unwrap()).unwrap(), 22);
    let mut rsp = ByteRing::attach(&mem, RSP, Role::Producer).unwrap();
    assert_eq!(rsp.write(&mem, &reply.to_vec().unwrap()).unwrap(), 18);
    let mut page = alloc::vec![0u8; bytes.len()];
    mem.read(0, &mut page).unwrap();
    assert_eq!(page, bytes);
}

#[test]
fn constants_match_headers() {
    let vf = test_vectors::load("xs_wire.json");
    let mut types = 0;
    for (name, _) in vf.constants.iter() {
        let Some(rest) = name.strip_prefix("XS_") else {
            continue;
        };
        if matches!(rest, "WATCH_PATH" | "WATCH_TOKEN" | "TYPE_COUNT") {
            continue;
        }
        let value = vf.constant(name) as u32;
        let t = MsgType::from(value);
        assert!(!matches!(t, MsgType::Unknown(_)), "{name} unknown");
        assert!(MsgType::ALL.contains(&t));
        types += 1;
    }
    // CONTROL and DEBUG share 0.
    assert_eq!(types, MsgType::ALL.len() + 1);
    assert_eq!(MsgType::from(20), MsgType::Unknown(20));
    assert_eq!(
        MsgType::from(vf.constant("XS_TYPE_COUNT") as u32),
        MsgType::Unknown(27)
    );
    for (i, e) in XsErrno::ALL.iter().enumerate() {
        let key = alloc::format!("xsd_errors[{i}]");
        assert_eq!(vf.constants[&key].as_str(), Some(e.name()), "{key}");
    }
    assert!(!vf.constants.contains_key("xsd_errors[16]"));
    assert_eq!(
        vf.constant("sizeof(struct xsd_sockmsg)") as usize,
        HEADER_LEN
    );
    assert_eq!(vf.constant("XENSTORE_PAYLOAD_MAX") as usize, PAYLOAD_MAX);
    assert_eq!(vf.constant("XENSTORE_ABS_PATH_MAX") as usize, ABS_PATH_MAX);
    assert_eq!(vf.constant("XENSTORE_REL_PATH_MAX") as usize, REL_PATH_MAX);
    assert_eq!(vf.constant("XENSTORE_RING_SIZE"), 1024);
}

use platform_api::Ordering;

fn hdr(t: u32, len: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [t, 1, 0, len] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

#[test]
fn hostile_len_above_payload_max_refused_before_payload() {
    let b = hdr(2, 4097);
    assert_eq!(
        Header::parse_prefix(&b),
        Err(WireError::PayloadTooLong { len: 4097 })
    );
    assert_eq!(
        MsgHeader::new_checked(&b[..]).err(),
        Some(WireError::PayloadTooLong { len: 4097 })
    );
    let b = hdr(2, u32::MAX);
    assert!(matches!(
        Header::parse_prefix(&b),
        Err(WireError::PayloadTooLong { .. })
    ));
}

#[test]
fn hostile_truncated_payload_refused() {
    let mut b = hdr(2, 10);
    b.extend_from_slice(b"abc");
    assert_eq!(
        MsgHeader::new_checked(&b[..]).err(),
        Some(WireError::Truncated { needed: 26 })
    );
    assert_eq!(
        Header::parse_prefix(&b[..15]),
        Err(WireError::Truncated { needed: 16 })
    );
}

fn req(t: MsgType, payload: &[u8]) -> Result<Request, WireError> {
    Request::parse_payload(t, payload)
}

#[test]
fn path_rules() {
    assert!(XsPath::new("/").is_ok());
    assert!(XsPath::new("/local/domain/0").is_ok());
    assert!(XsPath::new("device/vif/0").is_ok());
    assert_eq!(XsPath::new(""), Err(PathError::Empty));
    assert_eq!(XsPath::new("/a//b"), Err(PathError::DoubleSlash));
    assert_eq!(XsPath::new("/a/"), Err(PathError::TrailingSlash));
    assert_eq!(XsPath::new("/a b"), Err(PathError::BadChar(b' ')));
    assert_eq!(XsPath::new("a.b"), Err(PathError::BadChar(b'.')));
    assert_eq!(XsPath::new("@foo"), Err(PathError::UnknownSpecial));
    assert!(XsPath::new(RELEASE_DOMAIN).unwrap().is_special());
    assert_eq!(XsPath::node(INTRODUCE_DOMAIN), Err(PathError::Special));
    let abs = alloc::format!("/{}", "a".repeat(ABS_PATH_MAX - 1));
    assert!(XsPath::new(&abs).is_ok());
    let abs = alloc::format!("/{}", "a".repeat(ABS_PATH_MAX));
    assert_eq!(
        XsPath::new(&abs),
        Err(PathError::TooLong {
            len: 3073,
            max: 3072
        })
    );
    assert!(XsPath::new(&"a".repeat(REL_PATH_MAX)).is_ok());
    assert!(matches!(
        XsPath::new(&"a".repeat(REL_PATH_MAX + 1)),
        Err(PathError::TooLong { .. })
    ));
    let d = DomId::new(7).unwrap();
    assert_eq!(
        XsPath::new("x/y").unwrap().resolve(d),
        "/local/domain/7/x/y"
    );
    assert_eq!(XsPath::new("/x").unwrap().resolve(d), "/x");
}

#[test]
fn hostile_request_payloads_refused() {
    assert_eq!(
        req(MsgType::Read, b"domid"),
        Err(WireError::MissingNul { field: "path" })
    );
    assert!(matches!(
        req(MsgType::Read, b"a//b\0"),
        Err(WireError::BadPath { .. })
    ));
    assert!(matches!(
        req(MsgType::Read, b"@releaseDomain\0"),
        Err(WireError::BadPath { .. })
    ));
    assert!(req(MsgType::Watch, b"@releaseDomain\0t\0").is_ok());
    assert_eq!(req(MsgType::Read, b"a\0b"), Err(WireError::TrailingBytes));
    assert_eq!(
        req(MsgType::Read, b"\xff\0"),
        Err(WireError::BadText { field: "path" })
    );
    assert_eq!(
        req(MsgType::TransactionEnd, b"X\0"),
        Err(WireError::BadFlag { field: "commit" })
    );
    assert_eq!(
        req(MsgType::Release, b"+1\0"),
        Err(WireError::BadNumber { field: "domid" })
    );
    assert_eq!(
        req(MsgType::Release, b"32752\0"),
        Err(WireError::BadNumber { field: "domid" })
    );
    assert_eq!(
        req(MsgType::SetPerms, b"a\0"),
        Err(WireError::Empty { field: "perms" })
    );
    assert_eq!(req(MsgType::SetPerms, b"a\0x1\0"), Err(WireError::BadPerm));
    assert_eq!(req(MsgType::SetPerms, b"a\0r\0"), Err(WireError::BadPerm));
    assert_eq!(
        req(MsgType::Error, b"EINVAL\0"),
        Err(WireError::UnexpectedType(MsgType::Error))
    );
    assert_eq!(
        req(MsgType::Unknown(20), b""),
        Err(WireError::UnexpectedType(MsgType::Unknown(20)))
    );
    assert_eq!(
        req(MsgType::DirectoryPart, b"a\099999999999\0"),
        Err(WireError::BadNumber { field: "offset" })
    );
    assert_eq!(
        req(MsgType::Introduce, b"1\0-5\0\x33\0").unwrap(),
        Request::Introduce {
            domid: DomId::new(1).unwrap(),
            gfn: -5,
            evtchn: 3
        }
    );
}

#[test]
fn hostile_replies_refused() {
    let rep = Reply::parse_payload;
    assert_eq!(rep(MsgType::Write, b"KO\0"), Err(WireError::NotOk));
    assert_eq!(
        rep(MsgType::Write, b"OK"),
        Err(WireError::MissingNul { field: "ok" })
    );
    assert!(matches!(
        rep(MsgType::Directory, b"a/b\0"),
        Err(WireError::BadPath { .. })
    ));
    assert_eq!(
        rep(MsgType::Directory, b"\0").unwrap(),
        Reply::Directory(Vec::new())
    );
    assert!(matches!(
        rep(MsgType::Directory, b"a\0\0"),
        Err(WireError::BadPath { .. })
    ));
    assert_eq!(
        rep(MsgType::GetPerms, b""),
        Err(WireError::Empty { field: "perms" })
    );
    assert_eq!(
        rep(MsgType::TransactionStart, b"4294967296\0"),
        Err(WireError::BadNumber { field: "txid" })
    );
    assert_eq!(
        rep(MsgType::Error, b"EWHAT\0").unwrap(),
        Reply::UnknownError("EWHAT".into())
    );
    assert_eq!(
        rep(MsgType::WatchEvent, b"a\0t\0x"),
        Err(WireError::TrailingBytes)
    );
    assert_eq!(
        rep(MsgType::Invalid, b""),
        Err(WireError::UnexpectedType(MsgType::Invalid))
    );
    assert_eq!(
        rep(MsgType::Directory, b"").unwrap(),
        Reply::Directory(Vec::new())
    );
}

#[test]
fn emit_refuses_payload_above_max_and_small_buffers() {
    let big = RequestMsg {
        req_id: 1,
        tx_id: 0,
        request: Request::Write {
            path: XsPath::new("a").unwrap(),
            value: alloc::vec![b'x'; 4095],
        },
    };
    assert_eq!(big.to_vec(), Err(WireError::PayloadTooLong { len: 4097 }));
    let ok = RequestMsg {
        req_id: 1,
        tx_id: 0,
        request: Request::TransactionStart,
    };
    let mut small = [0u8; 16];
    assert_eq!(
        ok.emit(&mut small),
        Err(WireError::BufferTooSmall { needed: 17 })
    );
}

mod props {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = XsPath> {
        prop_oneof![
            "[a-z0-9_-]{1,8}(/[a-zA-Z0-9_@-]{1,8}){0,4}",
            "/[a-z0-9_-]{1,8}(/[a-zA-Z0-9_@-]{1,8}){0,4}",
            Just("/".to_string()),
        ]
        .prop_map(|s| XsPath::new(&s).unwrap())
    }

    fn domid() -> impl Strategy<Value = DomId> {
        (0u32..0x7FF0).prop_map(|d| DomId::new(d).unwrap())
    }

    fn perm() -> impl Strategy<Value = Perm> {
        (domid(), 0..4u8).prop_map(|(domid, a)| Perm {
            domid,
            access: [Access::None, Access::Read, Access::Write, Access::Both][a as usize],
        })
    }

    fn request() -> impl Strategy<Value = Request> {
        let tok = "[ -~]{0,12}";
        prop_oneof![
            (
                "[a-z]{1,6}",
                proptest::collection::vec("[a-z0-9 ]{0,6}", 0..3)
            )
                .prop_map(|(command, args)| Request::Control { command, args }),
            path().prop_map(Request::Read),
            path().prop_map(Request::Directory),
            path().prop_map(Request::GetPerms),
            path().prop_map(Request::Mkdir),
            path().prop_map(Request::Rm),
            (path(), tok, proptest::option::of(any::<u32>()))
                .prop_map(|(path, token, depth)| Request::Watch { path, token, depth }),
            (path(), tok).prop_map(|(path, token)| Request::Unwatch { path, token }),
            Just(Request::TransactionStart),
            Just(Request::ResetWatches),
            Just(Request::Invalid),
            any::<bool>().prop_map(|commit| Request::TransactionEnd { commit }),
            (domid(), any::<i64>(), any::<u32>())
                .prop_map(|(domid, gfn, evtchn)| Request::Introduce { domid, gfn, evtchn }),
            domid().prop_map(Request::Release),
            domid().prop_map(Request::GetDomainPath),
            domid().prop_map(Request::IsDomainIntroduced),
            domid().prop_map(Request::Resume),
            (domid(), domid()).prop_map(|(domid, target)| Request::SetTarget { domid, target }),
            (path(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(path, value)| Request::Write { path, value }),
            (path(), proptest::collection::vec(perm(), 1..5))
                .prop_map(|(path, perms)| Request::SetPerms { path, perms }),
            (path(), any::<u32>())
                .prop_map(|(path, offset)| Request::DirectoryPart { path, offset }),
            proptest::option::of(domid()).prop_map(Request::GetFeature),
            (domid(), any::<u32>()).prop_map(|(domid, value)| Request::SetFeature { domid, value }),
            (
                proptest::option::of(domid()),
                proptest::option::of("[a-z]{1,6}")
            )
                .prop_map(|(domid, quota)| Request::GetQuota {
                    domid: quota.as_ref().and(domid),
                    quota
                }),
            (proptest::option::of(domid()), "[a-z]{1,6}", any::<u32>()).prop_map(
                |(domid, quota, value)| Request::SetQuota {
                    domid,
                    quota,
                    value
                }
            ),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let name = "[a-zA-Z0-9_-]{1,8}";
        prop_oneof![
            Just(Reply::Ok(MsgType::Write)),
            Just(Reply::Ok(MsgType::Watch)),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Read),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Control),
            proptest::collection::vec(name, 0..5).prop_map(Reply::Directory),
            proptest::collection::vec(perm(), 1..5).prop_map(Reply::Perms),
            any::<u32>().prop_map(Reply::TransactionStarted),
            path()
                .prop_filter("absolute", |p| p.is_absolute())
                .prop_map(|p| Reply::DomainPath(p.as_str().into())),
            any::<bool>().prop_map(Reply::IsIntroduced),
            (
                any::<u64>(),
                proptest::collection::vec(name, 0..5),
                any::<bool>()
            )
                .prop_map(|(gencnt, children, complete)| Reply::DirectoryPart {
                    gencnt,
                    children,
                    complete
                }),
            any::<u32>().prop_map(Reply::Feature),
            any::<u32>().prop_map(Reply::Quota),
            (path(), "[ -~]{0,12}").prop_map(|(path, token)| Reply::WatchEvent { path, token }),
            (0..16usize).prop_map(|i| Reply::Error(XsErrno::ALL[i])),
        ]
    }

    proptest! {
        #[test]
        fn request_parse_emit_roundtrip(request in request(), req_id: u32, tx_id: u32) {
            let m = RequestMsg { req_id, tx_id, request };
            let bytes = m.to_vec().unwrap();
            prop_assert_eq!(bytes.len(), m.buffer_len());
            let back = RequestMsg::parse(&MsgHeader::new_checked(&bytes[..]).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn reply_parse_emit_roundtrip(reply in reply(), req_id: u32, tx_id: u32) {
            let m = ReplyMsg { req_id, tx_id, reply };
            let bytes = m.to_vec().unwrap();
            let back = ReplyMsg::parse(&MsgHeader::new_checked(&bytes[..]).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn decoders_never_panic(t in 0u32..30, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Request::parse_payload(MsgType::from(t), &payload);
            let _ = Reply::parse_payload(MsgType::from(t), &payload);
        }
    }
}
