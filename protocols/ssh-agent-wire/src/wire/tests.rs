//! Literal-byte tests built by hand from draft-miller-ssh-agent / PROTOCOL.agent, and property
//! tests (`parse(emit(x)) == x`, arbitrary bytes never panic).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::codec::Reader;
use super::*;
use crate::key::{KeyBlob, PrivateKey};

/// `string` of RFC 4251.
pub(crate) fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) const SEED: [u8; 32] = [7; 32];

pub(crate) fn ed25519_pub(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// `string "ssh-ed25519" || string pk`.
pub(crate) fn ed25519_blob(seed: &[u8; 32]) -> Vec<u8> {
    cat(&[&s(b"ssh-ed25519"), &s(&ed25519_pub(seed))])
}

/// The private part of ADD_IDENTITY for ed25519: type, pk, seed || pk.
pub(crate) fn ed25519_private(seed: &[u8; 32]) -> Vec<u8> {
    let pk = ed25519_pub(seed);
    cat(&[&s(b"ssh-ed25519"), &s(&pk), &s(&cat(&[seed, &pk]))])
}

fn blob(b: Vec<u8>) -> KeyBlob {
    KeyBlob::new(b).unwrap()
}

#[test]
fn request_identities_literal() {
    assert_eq!(Request::parse(&[11]), Ok(Request::RequestIdentities));
    let mut out = Vec::new();
    Request::RequestIdentities.emit(&mut out);
    assert_eq!(out, [11]);
}

#[test]
fn identities_answer_literal() {
    let body = cat(&[&[12, 0, 0, 0, 1], &s(&ed25519_blob(&SEED)), &s(b"me@vault")]);
    let r = Response::IdentitiesAnswer(vec![IdentityEntry {
        key: blob(ed25519_blob(&SEED)),
        comment: "me@vault".into(),
    }]);
    assert_eq!(Response::parse(&body), Ok(r.clone()));
    let mut out = Vec::new();
    r.emit(&mut out);
    assert_eq!(out, body);
}

#[test]
fn identities_answer_with_lying_count_is_truncated() {
    assert_eq!(
        Response::parse(&[12, 0xff, 0xff, 0xff, 0xff]),
        Err(WireError::Truncated { field: "key blob" })
    );
}

#[test]
fn sign_request_literal_with_sha2_flags() {
    let body = cat(&[&[13], &s(&ed25519_blob(&SEED)), &s(b"data"), &[0, 0, 0, 6]]);
    let req = Request::parse(&body).unwrap();
    let Request::SignRequest { key, data, flags } = &req else {
        panic!("{req:?}")
    };
    assert_eq!(key.algorithm(), "ssh-ed25519");
    assert_eq!(data, b"data");
    assert!(flags.contains(SignFlags::RSA_SHA2_256) && flags.contains(SignFlags::RSA_SHA2_512));
    let mut out = Vec::new();
    req.emit(&mut out);
    assert_eq!(out, body);
}

#[test]
fn sign_response_literal() {
    let sig = cat(&[&s(b"ssh-ed25519"), &s(&[1; 64])]);
    let body = cat(&[&[14], &s(&sig)]);
    assert_eq!(Response::parse(&body), Ok(Response::SignResponse(sig)));
}

#[test]
fn add_identity_ed25519_literal() {
    let body = cat(&[&[17], &ed25519_private(&SEED), &s(b"laptop")]);
    let req = Request::parse(&body).unwrap();
    let Request::AddIdentity {
        key,
        comment,
        constraints,
    } = &req
    else {
        panic!("{req:?}")
    };
    assert_eq!(key.public_blob().as_bytes(), ed25519_blob(&SEED));
    assert_eq!(comment, "laptop");
    assert!(constraints.is_empty());
    assert_eq!(*key, PrivateKey::from_ed25519_seed(&SEED).unwrap());
    let mut out = Vec::new();
    req.emit(&mut out);
    assert_eq!(out, body);
}

#[test]
fn add_identity_whose_public_half_does_not_match_is_refused() {
    let pk = ed25519_pub(&SEED);
    let other = ed25519_pub(&[8; 32]);
    let body = cat(&[
        &[17],
        &s(b"ssh-ed25519"),
        &s(&other),
        &s(&cat(&[&SEED, &pk])),
        &s(b"x"),
    ]);
    assert_eq!(Request::parse(&body), Err(WireError::BadKey));
}

fn dest_constraint_bytes() -> Vec<u8> {
    let hostkey = ed25519_blob(&[9; 32]);
    let from = cat(&[&s(b""), &s(b""), &s(b"")]);
    let to = cat(&[&s(b"git"), &s(b"example.org"), &s(b""), &s(&hostkey), &[0]]);
    let one = cat(&[&s(&from), &s(&to), &s(b"")]);
    cat(&[
        &[255],
        &s(b"restrict-destination-v00@openssh.com"),
        &s(&s(&one)),
    ])
}

#[test]
fn add_id_constrained_literal_lifetime_confirm_destination() {
    let body = cat(&[
        &[25],
        &ed25519_private(&SEED),
        &s(b"c"),
        &[1, 0, 0, 0x0e, 0x10],
        &[2],
        &dest_constraint_bytes(),
    ]);
    let req = Request::parse(&body).unwrap();
    let Request::AddIdentity { constraints, .. } = &req else {
        panic!("{req:?}")
    };
    assert_eq!(constraints.len(), 3);
    assert_eq!(constraints[0], Constraint::Lifetime(3600));
    assert_eq!(constraints[1], Constraint::Confirm);
    let Constraint::RestrictDestination(d) = &constraints[2] else {
        panic!()
    };
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].to.hostname, "example.org");
    assert_eq!(d[0].to.user, "git");
    assert_eq!(d[0].to.keys[0].key.as_bytes(), ed25519_blob(&[9; 32]));
    assert!(d[0].from.keys.is_empty());
    let mut out = Vec::new();
    req.emit(&mut out);
    assert_eq!(out, body);
}

#[test]
fn unknown_constraint_is_an_error() {
    for c in [
        &[3u8, 0, 0, 0, 1][..],
        &[9],
        &cat(&[&[255], &s(b"other@example.org")]),
    ] {
        let body = cat(&[&[25], &ed25519_private(&SEED), &s(b"c"), c]);
        assert!(Request::parse(&body).is_err(), "{c:?}");
    }
}

#[test]
fn duplicate_constraint_is_an_error() {
    let body = cat(&[&[25], &ed25519_private(&SEED), &s(b"c"), &[2, 2]]);
    assert_eq!(Request::parse(&body), Err(WireError::DuplicateConstraint));
}

#[test]
fn dest_constraint_without_to_host_is_refused() {
    let from = cat(&[&s(b""), &s(b""), &s(b"")]);
    let to = cat(&[&s(b""), &s(b""), &s(b"")]);
    let one = cat(&[&s(&from), &s(&to), &s(b"")]);
    let c = cat(&[
        &[255],
        &s(b"restrict-destination-v00@openssh.com"),
        &s(&s(&one)),
    ]);
    let body = cat(&[&[25], &ed25519_private(&SEED), &s(b"c"), &c]);
    assert_eq!(Request::parse(&body), Err(WireError::BadDestConstraint));
}

#[test]
fn add_identity_17_with_trailing_constraints_is_refused() {
    let body = cat(&[&[17], &ed25519_private(&SEED), &s(b"c"), &[2]]);
    assert!(matches!(
        Request::parse(&body),
        Err(WireError::TrailingBytes { .. })
    ));
}

#[test]
fn remove_literals() {
    let body = cat(&[&[18], &s(&ed25519_blob(&SEED))]);
    assert_eq!(
        Request::parse(&body),
        Ok(Request::RemoveIdentity {
            key: blob(ed25519_blob(&SEED))
        })
    );
    assert_eq!(Request::parse(&[19]), Ok(Request::RemoveAllIdentities));
}

#[test]
fn lock_unlock_literals() {
    let l = Request::parse(&cat(&[&[22], &s(b"hunter2")])).unwrap();
    assert_eq!(l, Request::Lock(Passphrase::new(b"hunter2")));
    let u = Request::parse(&cat(&[&[23], &s(b"hunter2")])).unwrap();
    assert_eq!(u, Request::Unlock(Passphrase::new(b"hunter2")));
    assert_eq!(alloc::format!("{l:?}"), "Lock(Passphrase(..))");
}

#[test]
fn session_bind_literal() {
    let body = cat(&[
        &[27],
        &s(b"session-bind@openssh.com"),
        &s(&ed25519_blob(&[9; 32])),
        &s(&[0xaa; 32]),
        &s(&cat(&[&s(b"ssh-ed25519"), &s(&[0; 64])])),
        &[1],
    ]);
    let req = Request::parse(&body).unwrap();
    let Request::Extension(Extension::SessionBind(b)) = &req else {
        panic!("{req:?}")
    };
    assert_eq!(b.session_id, [0xaa; 32]);
    assert!(b.is_forwarding);
    let mut out = Vec::new();
    req.emit(&mut out);
    assert_eq!(out, body);
}

#[test]
fn query_and_unknown_extension_literals() {
    assert_eq!(
        Request::parse(&cat(&[&[27], &s(b"query")])),
        Ok(Request::Extension(Extension::Query))
    );
    assert_eq!(
        Request::parse(&cat(&[&[27], &s(b"x@example.org"), &[1, 2]])),
        Ok(Request::Extension(Extension::Other {
            name: "x@example.org".into(),
            contents: vec![1, 2]
        }))
    );
}

#[test]
fn status_literals() {
    assert_eq!(Response::parse(&[5]), Ok(Response::Failure));
    assert_eq!(Response::parse(&[6]), Ok(Response::Success));
    assert_eq!(Response::parse(&[28]), Ok(Response::ExtensionFailure));
    assert_eq!(Response::Failure.to_frame(), [0, 0, 0, 1, 5]);
    assert_eq!(Response::Success.to_frame(), [0, 0, 0, 1, 6]);
    assert_eq!(Response::ExtensionFailure.to_frame(), [0, 0, 0, 1, 28]);
}

#[test]
fn smartcard_messages_are_unsupported_requests() {
    for kind in [20u8, 21, 26] {
        let body = cat(&[&[kind], &s(b"/usr/lib/opensc-pkcs11.so"), &s(b"1234")]);
        assert!(matches!(
            Request::parse(&body),
            Ok(Request::Unsupported { kind: k, .. }) if k == kind
        ));
    }
}

#[test]
fn empty_message_is_an_error() {
    assert_eq!(Request::parse(&[]), Err(WireError::Empty));
    assert_eq!(Response::parse(&[]), Err(WireError::Empty));
}

#[test]
fn truncated_sign_request_is_an_error() {
    let full = cat(&[&[13], &s(&ed25519_blob(&SEED)), &s(b"data"), &[0, 0, 0, 0]]);
    for cut in 1..full.len() {
        assert!(Request::parse(&full[..cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn key_blob_with_bad_type_name_is_refused() {
    assert_eq!(KeyBlob::new(s(b"")), Err(WireError::BadKeyType));
    assert_eq!(KeyBlob::new(s(b"a b")), Err(WireError::BadKeyType));
    assert!(KeyBlob::new(vec![0; 20_000]).is_err());
}

// ---- property tests ----

fn key_blob() -> impl Strategy<Value = KeyBlob> {
    (
        "[a-z0-9@.-]{1,40}",
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(n, rest)| {
            let mut b = s(n.as_bytes());
            b.extend(rest);
            KeyBlob::new(b).unwrap()
        })
}

fn hop(from: bool) -> impl Strategy<Value = Hop> {
    (
        "[a-z]{0,8}",
        "[a-z.]{1,12}",
        proptest::collection::vec((key_blob(), any::<bool>()), 1..3),
        any::<bool>(),
    )
        .prop_map(move |(user, host, keys, origin)| {
            let keys: Vec<KeySpec> = keys
                .into_iter()
                .map(|(key, is_ca)| KeySpec { key, is_ca })
                .collect();
            if from && origin {
                Hop {
                    user: String::new(),
                    hostname: String::new(),
                    keys: Vec::new(),
                }
            } else if from {
                Hop {
                    user: String::new(),
                    hostname: host,
                    keys,
                }
            } else {
                Hop {
                    user,
                    hostname: host,
                    keys,
                }
            }
        })
}

fn constraints() -> impl Strategy<Value = Vec<Constraint>> {
    (
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(
            (hop(true), hop(false)).prop_map(|(from, to)| DestConstraint { from, to }),
            0..3,
        )),
    )
        .prop_map(|(life, confirm, dest)| {
            let mut v = Vec::new();
            if let Some(l) = life {
                v.push(Constraint::Lifetime(l));
            }
            if confirm {
                v.push(Constraint::Confirm);
            }
            if let Some(d) = dest {
                v.push(Constraint::RestrictDestination(d));
            }
            v
        })
}

fn request() -> impl Strategy<Value = Request> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        Just(Request::RequestIdentities),
        Just(Request::RemoveAllIdentities),
        (key_blob(), bytes(), any::<u32>()).prop_map(|(key, data, f)| Request::SignRequest {
            key,
            data,
            flags: SignFlags(f)
        }),
        key_blob().prop_map(|key| Request::RemoveIdentity { key }),
        bytes().prop_map(|p| Request::Lock(Passphrase::new(&p))),
        bytes().prop_map(|p| Request::Unlock(Passphrase::new(&p))),
        (any::<[u8; 32]>(), "[ -~]{0,20}", constraints()).prop_map(|(seed, comment, c)| {
            Request::AddIdentity {
                key: PrivateKey::from_ed25519_seed(&seed).unwrap(),
                comment,
                constraints: c,
            }
        }),
        (key_blob(), bytes(), bytes(), any::<bool>()).prop_map(|(host_key, sid, sig, fwd)| {
            Request::Extension(Extension::SessionBind(SessionBind {
                host_key,
                session_id: sid,
                signature: sig,
                is_forwarding: fwd,
            }))
        }),
        Just(Request::Extension(Extension::Query)),
        ("[a-z]{1,10}@[a-z]{1,10}", bytes())
            .prop_map(|(name, contents)| Request::Extension(Extension::Other { name, contents })),
        (any::<u8>(), bytes())
            .prop_filter("known type", |(k, _)| !matches!(
                k,
                11 | 13 | 17 | 18 | 19 | 22 | 23 | 25 | 27
            ))
            .prop_map(|(kind, body)| Request::Unsupported { kind, body }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        Just(Response::Failure),
        Just(Response::Success),
        Just(Response::ExtensionFailure),
        bytes().prop_map(Response::SignResponse),
        proptest::collection::vec((key_blob(), "[ -~]{0,20}"), 0..4).prop_map(|v| {
            Response::IdentitiesAnswer(
                v.into_iter()
                    .map(|(key, comment)| IdentityEntry { key, comment })
                    .collect(),
            )
        }),
        ("[a-z]{1,10}", bytes())
            .prop_map(|(name, contents)| Response::ExtensionResponse { name, contents }),
    ]
}

proptest! {
    #[test]
    fn request_parse_emit_roundtrip(req in request()) {
        let mut out = Vec::new();
        req.emit(&mut out);
        prop_assert_eq!(Request::parse(&out), Ok(req));
    }

    #[test]
    fn response_parse_emit_roundtrip(resp in response()) {
        let mut out = Vec::new();
        resp.emit(&mut out);
        prop_assert_eq!(Response::parse(&out), Ok(resp));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Request::parse(&b);
        let _ = Response::parse(&b);
        let _ = Constraint::parse_all(&mut Reader::new(&b));
        let _ = PrivateKey::parse(&mut Reader::new(&b));
        let mut f = FrameReader::new(64);
        let mut off = 0;
        while off < b.len() {
            let (n, _) = f.push(&b[off..]);
            prop_assert!(n > 0 || off == b.len());
            off += n;
        }
    }

    #[test]
    fn arbitrary_add_identity_suffix_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256), kind in prop_oneof![Just(17u8), Just(25u8)]) {
        let body = cat(&[&[kind], &ed25519_private(&SEED), &tail]);
        let _ = Request::parse(&body);
    }
}

/// `ssh-rsa` private key fields (n, e, d, iqmp, p, q) with made-up numbers.
pub(crate) fn fake_rsa_private(n_len: usize) -> Vec<u8> {
    let mut v = s(b"ssh-rsa");
    for m in [
        vec![0x7f; n_len],
        vec![1, 0, 1],
        vec![0x33; 64],
        vec![0x22; 32],
        vec![0x44; 32],
        vec![0x55; 32],
    ] {
        codec::put_mpint(&mut v, &m);
    }
    v
}

#[test]
fn rsa_modulus_below_2048_bits_is_unsupported() {
    let body = cat(&[&[17], &fake_rsa_private(128), &s(b"small")]);
    assert_eq!(Request::parse(&body), Err(WireError::UnsupportedKeyType));
    let body = cat(&[&[17], &fake_rsa_private(256), &s(b"ok size")]);
    assert!(matches!(
        Request::parse(&body),
        Ok(Request::AddIdentity { .. })
    ));
}

#[test]
fn dsa_private_key_is_unsupported() {
    let mut v = s(b"ssh-dss");
    for _ in 0..5 {
        codec::put_mpint(&mut v, &[0x11; 20]);
    }
    let body = cat(&[&[17], &v, &s(b"dsa")]);
    assert!(Request::parse(&body).is_err());
}
