//! Transcripts: a client and the agent in memory with a fake clock; each test names the rule.

use alloc::vec;
use alloc::vec::Vec;

use ed25519_dalek::{Signer as _, Verifier as _};
use platform_api::Instant;

use super::*;
use crate::wire::codec::Reader;
use crate::wire::frame::frame;
use crate::wire::tests::{cat, ed25519_blob, ed25519_private, s, SEED};
use crate::wire::{Response, MAX_MESSAGE_LEN};

const SEC: u64 = 1_000_000_000;

struct Harness {
    agent: Agent<MemoryKeyring>,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            agent: Agent::new(MemoryKeyring::new(8), Config::DEFAULT),
            now: Instant(1000 * SEC),
        }
    }

    /// Sends framed `body`, returns every response it produced.
    fn call(&mut self, sess: &mut Session, body: &[u8]) -> Vec<Response> {
        self.send_raw(sess, &frame(body))
    }

    fn send_raw(&mut self, sess: &mut Session, bytes: &[u8]) -> Vec<Response> {
        let n = sess.handle_input(self.now, &mut self.agent, bytes);
        assert_eq!(n, bytes.len(), "input not fully taken");
        drain(sess)
    }
}

fn drain(sess: &mut Session) -> Vec<Response> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 7];
    while let Some(n) = sess.poll_transmit(&mut buf) {
        raw.extend_from_slice(&buf[..n]);
    }
    let mut out = Vec::new();
    let mut r = Reader::new(&raw);
    while !r.is_empty() {
        out.push(Response::parse(r.string("frame").unwrap()).unwrap());
    }
    out
}

fn add_body(seed: &[u8; 32], comment: &[u8], constraints: &[u8]) -> Vec<u8> {
    let kind = if constraints.is_empty() { 17 } else { 25 };
    cat(&[&[kind], &ed25519_private(seed), &s(comment), constraints])
}

fn sign_body(seed: &[u8; 32], data: &[u8]) -> Vec<u8> {
    cat(&[&[13], &s(&ed25519_blob(seed)), &s(data), &[0, 0, 0, 0]])
}

fn verify_ed25519(seed: &[u8; 32], data: &[u8], resp: &Response) {
    let Response::SignResponse(sig) = resp else {
        panic!("expected a signature, got {resp:?}")
    };
    let mut r = Reader::new(sig);
    assert_eq!(r.string("alg").unwrap(), b"ssh-ed25519");
    let raw: [u8; 64] = r.string("sig").unwrap().try_into().unwrap();
    let vk = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
    vk.verify(data, &ed25519_dalek::Signature::from_bytes(&raw))
        .expect("signature verifies with ed25519-dalek");
    // And through ssh-key's own verifier.
    let kd = crate::KeyBlob::new(ed25519_blob(seed))
        .unwrap()
        .key_data()
        .unwrap();
    let sig = ssh_key::Signature::try_from(sig.as_slice()).unwrap();
    signature::Verifier::verify(&kd, data, &sig).unwrap();
}

fn list(h: &mut Harness, sess: &mut Session) -> Vec<crate::wire::IdentityEntry> {
    match h.call(sess, &[11]).as_slice() {
        [Response::IdentitiesAnswer(v)] => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_add_sign_verify_remove() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert!(list(&mut h, &mut client).is_empty());
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"k1", &[])),
        [Response::Success]
    );
    let l = list(&mut h, &mut client);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].key.as_bytes(), ed25519_blob(&SEED));
    assert_eq!(l[0].comment, "k1");
    let r = h.call(&mut client, &sign_body(&SEED, b"challenge"));
    verify_ed25519(&SEED, b"challenge", &r[0]);
    assert_eq!(
        h.call(&mut admin, &cat(&[&[18], &s(&ed25519_blob(&SEED))])),
        [Response::Success]
    );
    assert_eq!(
        h.call(&mut client, &sign_body(&SEED, b"x")),
        [Response::Failure]
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[18], &s(&ed25519_blob(&SEED))])),
        [Response::Failure]
    );
}

#[test]
fn ecdsa_p256_and_p384_keys_sign_and_verify() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let d256 = [0x11u8; 32];
    let q256 = p256::SecretKey::from_slice(&d256)
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    let d384 = [0x22u8; 48];
    let q384 = p384::SecretKey::from_slice(&d384)
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    for (alg, curve, q, d) in [
        (
            &b"ecdsa-sha2-nistp256"[..],
            &b"nistp256"[..],
            q256.as_bytes(),
            &d256[..],
        ),
        (
            b"ecdsa-sha2-nistp384",
            b"nistp384",
            q384.as_bytes(),
            &d384[..],
        ),
    ] {
        let mut mp = Vec::new();
        crate::wire::codec::put_mpint(&mut mp, d);
        let body = cat(&[&[17], &s(alg), &s(curve), &s(q), &mp, &s(b"ec")]);
        assert_eq!(h.call(&mut admin, &body), [Response::Success], "{alg:?}");
        let blob = cat(&[&s(alg), &s(curve), &s(q)]);
        let r = h.call(
            &mut admin,
            &cat(&[&[13], &s(&blob), &s(b"msg"), &[0, 0, 0, 0]]),
        );
        let Response::SignResponse(sig) = &r[0] else {
            panic!("{r:?}")
        };
        let kd = crate::KeyBlob::new(blob).unwrap().key_data().unwrap();
        let sig = ssh_key::Signature::try_from(sig.as_slice()).unwrap();
        signature::Verifier::verify(&kd, b"msg", &sig).unwrap();
    }
}

/// An mpint drops leading zero bytes: OpenSSH sends about one ECDSA key in 256 with a scalar
/// shorter than its curve's size, and such a key must add, sign and re-parse like any other.
#[test]
fn ecdsa_keys_whose_scalar_has_leading_zero_bytes_are_accepted() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let mut d256a = [0x11u8; 32];
    d256a[0] = 0;
    let mut d256b = [0x93u8; 32];
    d256b[..2].copy_from_slice(&[0, 0]);
    let mut d384 = [0x22u8; 48];
    d384[0] = 0;
    type Case<'a> = (&'a [u8], &'a [u8], Vec<u8>, &'a [u8]);
    let keys: [Case<'_>; 3] = [
        (
            b"ecdsa-sha2-nistp256",
            b"nistp256",
            p256::SecretKey::from_slice(&d256a)
                .unwrap()
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            &d256a,
        ),
        (
            b"ecdsa-sha2-nistp256",
            b"nistp256",
            p256::SecretKey::from_slice(&d256b)
                .unwrap()
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            &d256b,
        ),
        (
            b"ecdsa-sha2-nistp384",
            b"nistp384",
            p384::SecretKey::from_slice(&d384)
                .unwrap()
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            &d384,
        ),
    ];
    for (alg, curve, q, d) in keys {
        let mut h = Harness::new();
        let mut admin = Session::new(true);
        let mut mp = Vec::new();
        crate::wire::codec::put_mpint(&mut mp, d);
        assert!(
            mp.len() < 4 + d.len(),
            "the mpint is shorter than the scalar"
        );
        let key = cat(&[&s(alg), &s(curve), &s(&q), &mp]);
        let body = cat(&[&[17], &key, &s(b"short")]);
        assert_eq!(h.call(&mut admin, &body), [Response::Success], "{d:02x?}");
        let blob = cat(&[&s(alg), &s(curve), &s(&q)]);
        let r = h.call(
            &mut admin,
            &cat(&[&[13], &s(&blob), &s(b"msg"), &[0, 0, 0, 0]]),
        );
        let Response::SignResponse(sig) = &r[0] else {
            panic!("{r:?}")
        };
        let kd = crate::KeyBlob::new(blob).unwrap().key_data().unwrap();
        let sig = ssh_key::Signature::try_from(sig.as_slice()).unwrap();
        signature::Verifier::verify(&kd, b"msg", &sig).unwrap();

        // The key is kept as received (the vault stores those bytes) and parses back the same.
        let tail = cat(&[&key, &s(b"after")]);
        let mut r = crate::wire::codec::Reader::new(&tail);
        let pk = crate::PrivateKey::parse(&mut r).unwrap();
        let mut out = Vec::new();
        pk.emit(&mut out);
        assert_eq!(out, key);
        assert_eq!(r.rest(), &s(b"after")[..]);
    }
}

#[test]
fn ecdsa_private_scalar_not_matching_public_point_is_refused() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let q = p256::SecretKey::from_slice(&[0x11; 32])
        .unwrap()
        .public_key()
        .to_encoded_point(false);
    let mut mp = Vec::new();
    crate::wire::codec::put_mpint(&mut mp, &[0x12; 32]);
    let body = cat(&[
        &[17],
        &s(b"ecdsa-sha2-nistp256"),
        &s(b"nistp256"),
        &s(q.as_bytes()),
        &mp,
        &s(b"x"),
    ]);
    assert_eq!(h.call(&mut admin, &body), [Response::Failure]);
    assert!(h.agent.keyring().is_empty());
}

#[test]
fn non_admin_session_may_not_add_remove_or_lock() {
    let mut h = Harness::new();
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut client, &add_body(&SEED, b"k", &[])),
        [Response::Failure]
    );
    assert!(h.agent.keyring().is_empty());
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"k", &[])),
        [Response::Success]
    );
    assert_eq!(h.call(&mut client, &[19]), [Response::Failure]);
    assert_eq!(
        h.call(&mut client, &cat(&[&[18], &s(&ed25519_blob(&SEED))])),
        [Response::Failure]
    );
    assert_eq!(
        h.call(&mut client, &cat(&[&[22], &s(b"pw")])),
        [Response::Failure]
    );
    assert!(!h.agent.is_locked());
    assert_eq!(h.agent.keyring().len(), 1);
    assert_eq!(h.call(&mut admin, &[19]), [Response::Success]);
    assert!(h.agent.keyring().is_empty());
}

#[test]
fn lock_hides_keys_and_refuses_all_but_unlock() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"k", &[])),
        [Response::Success]
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[22], &s(b"")])),
        [Response::Failure],
        "empty passphrase"
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[22], &s(b"pw")])),
        [Response::Success]
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[22], &s(b"pw")])),
        [Response::Failure],
        "lock twice"
    );
    assert!(list(&mut h, &mut client).is_empty());
    assert_eq!(
        h.call(&mut client, &sign_body(&SEED, b"x")),
        [Response::Failure]
    );
    assert_eq!(
        h.call(&mut admin, &add_body(&[3; 32], b"k2", &[])),
        [Response::Failure]
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[23], &s(b"wrong")])),
        [Response::Failure]
    );
    assert_eq!(h.agent.failed_unlocks(), 1);
    assert_eq!(
        h.call(&mut client, &cat(&[&[23], &s(b"pw")])),
        [Response::Failure],
        "client unlock"
    );
    assert_eq!(
        h.call(&mut admin, &cat(&[&[23], &s(b"pw")])),
        [Response::Success]
    );
    assert_eq!(list(&mut h, &mut client).len(), 1);
    let r = h.call(&mut client, &sign_body(&SEED, b"x"));
    verify_ed25519(&SEED, b"x", &r[0]);
    // Unlocking an unlocked agent is the owner's business (the vault's store passphrase).
    assert_eq!(h.call(&mut admin, &cat(&[&[23], &s(b"pw")])), []);
    let Some(Event::Owner(OwnerRequest {
        id,
        kind: OwnerKind::Unlock(p),
    })) = admin.poll_event()
    else {
        panic!("expected an owner unlock request")
    };
    assert_eq!(p.as_bytes(), b"pw");
    admin.answer(id, &Response::Failure);
    assert_eq!(drain(&mut admin), [Response::Failure], "not locked");
}

#[test]
fn admin_extensions_and_unlock_wait_for_the_owner_in_order() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let stream = cat(&[
        &frame(&cat(&[&[27], &s(b"vault-x@example.org"), b"abc"])),
        &frame(&[11]),
    ]);
    let took = admin.handle_input(h.now, &mut h.agent, &stream);
    assert!(took < stream.len(), "input after an owner request is held");
    assert!(admin.is_waiting());
    let Some(Event::Owner(OwnerRequest {
        id,
        kind: OwnerKind::Extension { name, contents },
    })) = admin.poll_event()
    else {
        panic!("expected an owner extension request")
    };
    assert_eq!(
        (name.as_str(), contents.as_slice()),
        ("vault-x@example.org", &b"abc"[..])
    );
    admin.answer(ConfirmId(id.0 + 1), &Response::Success); // stale id ignored
    assert!(admin.is_waiting());
    admin.answer(id, &Response::Success);
    let rest = &stream[took..];
    assert_eq!(admin.handle_input(h.now, &mut h.agent, rest), rest.len());
    assert_eq!(
        drain(&mut admin),
        [Response::Success, Response::IdentitiesAnswer(vec![])]
    );
    // A client's unknown extension is answered at once, never handed to the owner.
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut client, &cat(&[&[27], &s(b"vault-x@example.org")])),
        [Response::ExtensionFailure]
    );
    assert!(client.poll_event().is_none());
}

#[test]
fn keyring_wide_confirm_asks_for_every_key() {
    let mut h = Harness::new();
    h.agent.set_config(Config {
        confirm_all: true,
        ..Config::DEFAULT
    });
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"k", &[])),
        [Response::Success]
    );
    assert_eq!(h.call(&mut client, &sign_body(&SEED, b"x")), []);
    let Some(Event::ConfirmRequest(req)) = client.poll_event() else {
        panic!("expected a confirmation")
    };
    client.confirm(h.now, &mut h.agent, req.id, false);
    assert_eq!(drain(&mut client), [Response::Failure]);
}

#[derive(Debug)]
struct FailingKeyring(MemoryKeyring, bool);

impl Keyring for FailingKeyring {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize) -> Option<&Identity> {
        self.0.get(index)
    }
    fn insert(&mut self, identity: Identity) -> Result<(), KeyringError> {
        if self.1 {
            return Err(KeyringError::Storage);
        }
        self.0.insert(identity)
    }
    fn remove(&mut self, index: usize) -> Result<Option<Identity>, KeyringError> {
        if self.1 {
            return Err(KeyringError::Storage);
        }
        self.0.remove(index)
    }
    fn clear(&mut self) -> Result<(), KeyringError> {
        if self.1 {
            return Err(KeyringError::Storage);
        }
        self.0.clear()
    }
}

#[test]
fn store_failures_answer_failure_and_keep_the_keyring() {
    let mut agent = Agent::new(
        FailingKeyring(MemoryKeyring::new(4), false),
        Config::DEFAULT,
    );
    let now = Instant(SEC);
    let mut admin = Session::new(true);
    let mut call = |agent: &mut Agent<FailingKeyring>, body: &[u8]| {
        let f = frame(body);
        assert_eq!(admin.handle_input(now, agent, &f), f.len());
        drain(&mut admin)
    };
    assert_eq!(
        call(&mut agent, &add_body(&SEED, b"k", &[])),
        [Response::Success]
    );
    agent.keyring_mut().1 = true;
    assert_eq!(
        call(&mut agent, &add_body(&[4; 32], b"k", &[])),
        [Response::Failure]
    );
    assert_eq!(
        call(&mut agent, &cat(&[&[18], &s(&ed25519_blob(&SEED))])),
        [Response::Failure]
    );
    assert_eq!(call(&mut agent, &[19]), [Response::Failure]);
    assert_eq!(agent.keyring().len(), 1);
}

#[test]
fn lifetime_expires_with_the_fake_clock() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"k", &[1, 0, 0, 0, 10])),
        [Response::Success]
    );
    assert_eq!(h.agent.poll_at(), Some(Instant(1010 * SEC)));
    h.now = Instant(1009 * SEC);
    verify_ed25519(
        &SEED,
        b"a",
        &h.call(&mut client, &sign_body(&SEED, b"a"))[0],
    );
    h.now = Instant(1010 * SEC);
    assert_eq!(
        h.call(&mut client, &sign_body(&SEED, b"a")),
        [Response::Failure]
    );
    assert!(list(&mut h, &mut client).is_empty());
    assert_eq!(h.agent.poll_at(), None);
}

#[test]
fn confirm_allow_signs_and_deny_fails() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"work", &[2])),
        [Response::Success]
    );
    // The request and a following list arrive together; the list waits behind the confirmation.
    let stream = cat(&[&frame(&sign_body(&SEED, b"one")), &frame(&[11])]);
    let n = client.handle_input(h.now, &mut h.agent, &stream);
    assert_eq!(n, frame(&sign_body(&SEED, b"one")).len());
    assert!(client.is_waiting());
    assert!(drain(&mut client).is_empty());
    let Some(Event::ConfirmRequest(req)) = client.poll_event() else {
        panic!()
    };
    assert_eq!(req.comment, "work");
    assert_eq!(
        req.fingerprint,
        crate::KeyBlob::new(ed25519_blob(&SEED))
            .unwrap()
            .fingerprint()
    );
    assert_eq!(req.host, None);
    client.confirm(h.now, &mut h.agent, ConfirmId(req.id.0 + 1), true); // stale id ignored
    assert!(client.is_waiting());
    client.confirm(h.now, &mut h.agent, req.id, true);
    verify_ed25519(&SEED, b"one", &drain(&mut client)[0]);
    let m = client.handle_input(h.now, &mut h.agent, &stream[n..]);
    assert_eq!(m, stream.len() - n);
    assert!(
        matches!(drain(&mut client).as_slice(), [Response::IdentitiesAnswer(v)] if v.len() == 1)
    );

    assert!(h.call(&mut client, &sign_body(&SEED, b"two")).is_empty());
    let Some(Event::ConfirmRequest(req)) = client.poll_event() else {
        panic!()
    };
    client.confirm(h.now, &mut h.agent, req.id, false);
    assert_eq!(drain(&mut client), [Response::Failure]);
}

#[test]
fn confirm_after_key_removed_fails() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let mut client = Session::new(false);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"w", &[2])),
        [Response::Success]
    );
    assert!(h.call(&mut client, &sign_body(&SEED, b"x")).is_empty());
    let Some(Event::ConfirmRequest(req)) = client.poll_event() else {
        panic!()
    };
    assert_eq!(h.call(&mut admin, &[19]), [Response::Success]);
    client.confirm(h.now, &mut h.agent, req.id, true);
    assert_eq!(drain(&mut client), [Response::Failure]);
}

#[test]
fn malformed_and_oversized_messages_get_failure_and_the_session_continues() {
    let mut h = Harness::new();
    let mut admin = Session::new(false);
    let mut stream = Vec::new();
    stream.extend(frame(&[]));
    stream.extend(frame(&[13, 0, 0]));
    stream.extend(frame(&[200, 1, 2, 3]));
    stream.extend(frame(&[20]));
    stream.extend(frame(&[21]));
    stream.extend(frame(&[26]));
    let big = (MAX_MESSAGE_LEN + 1) as u32;
    stream.extend(big.to_be_bytes());
    stream.extend(vec![0xee; MAX_MESSAGE_LEN + 1]);
    stream.extend(frame(&cat(&[&[27], &s(b"nope@example.org")])));
    stream.extend(frame(&[11]));
    let out = h.send_raw(&mut admin, &stream);
    assert_eq!(
        out,
        [
            Response::Failure,
            Response::Failure,
            Response::Failure,
            Response::Failure,
            Response::Failure,
            Response::Failure,
            Response::Failure,
            Response::ExtensionFailure,
            Response::IdentitiesAnswer(vec![]),
        ]
    );
}

#[test]
fn byte_at_a_time_input_gives_the_same_transcript() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    let stream = cat(&[
        &frame(&add_body(&SEED, b"k", &[])),
        &frame(&[11]),
        &frame(&[19]),
    ]);
    let mut out = Vec::new();
    for b in &stream {
        assert_eq!(
            admin.handle_input(h.now, &mut h.agent, core::slice::from_ref(b)),
            1
        );
        out.extend(drain(&mut admin));
    }
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Response::Success);
    assert!(matches!(&out[1], Response::IdentitiesAnswer(v) if v.len() == 1));
    assert_eq!(out[2], Response::Success);
}

#[test]
fn query_lists_supported_extensions() {
    let mut h = Harness::new();
    let mut c = Session::new(false);
    let r = h.call(&mut c, &cat(&[&[27], &s(b"query")]));
    assert_eq!(
        r,
        [Response::ExtensionResponse {
            name: "query".into(),
            contents: cat(&[&s(b"query"), &s(b"session-bind@openssh.com")]),
        }]
    );
}

#[test]
fn keyring_bound_is_enforced() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    for i in 0..8u8 {
        assert_eq!(
            h.call(&mut admin, &add_body(&[i + 1; 32], b"k", &[])),
            [Response::Success]
        );
    }
    assert_eq!(
        h.call(&mut admin, &add_body(&[100; 32], b"k", &[])),
        [Response::Failure]
    );
    // Re-adding an existing key replaces it (new comment), it does not need room.
    assert_eq!(
        h.call(&mut admin, &add_body(&[1; 32], b"new", &[])),
        [Response::Success]
    );
    assert_eq!(h.agent.keyring().get(0).unwrap().comment, "new");
}

#[test]
fn sign_flags_are_ignored_for_ed25519() {
    use crate::key::sign;
    let kp = PrivateKey::from_ed25519_seed(&SEED).unwrap();
    // Flags are ignored for ed25519.
    assert!(sign(kp.keypair(), b"x", crate::wire::SignFlags(0), false).is_ok());
}

// ---- session-bind and destination constraints ----

const HOST: [u8; 32] = [9; 32];
const HOST2: [u8; 32] = [10; 32];

fn bind_body(host: &[u8; 32], sid: &[u8], fwd: bool) -> Vec<u8> {
    let sig = ed25519_dalek::SigningKey::from_bytes(host)
        .sign(sid)
        .to_bytes();
    cat(&[
        &[27],
        &s(b"session-bind@openssh.com"),
        &s(&ed25519_blob(host)),
        &s(sid),
        &s(&cat(&[&s(b"ssh-ed25519"), &s(&sig)])),
        &[u8::from(fwd)],
    ])
}

fn userauth(sid: &[u8], user: &[u8], key_seed: &[u8; 32]) -> Vec<u8> {
    cat(&[
        &s(sid),
        &[50],
        &s(user),
        &s(b"ssh-connection"),
        &s(b"publickey"),
        &[1],
        &s(b"ssh-ed25519"),
        &s(&ed25519_blob(key_seed)),
    ])
}

fn restrict_to(host: &[u8; 32], user: &[u8]) -> Vec<u8> {
    let from = cat(&[&s(b""), &s(b""), &s(b"")]);
    let to = cat(&[
        &s(user),
        &s(b"host.example"),
        &s(b""),
        &s(&ed25519_blob(host)),
        &[0],
    ]);
    let one = cat(&[&s(&from), &s(&to), &s(b"")]);
    cat(&[
        &[255],
        &s(b"restrict-destination-v00@openssh.com"),
        &s(&s(&one)),
    ])
}

#[test]
fn session_bind_verifies_the_host_signature() {
    let mut h = Harness::new();
    let mut c = Session::new(false);
    let mut bad = bind_body(&HOST, &[1; 32], false);
    let n = bad.len();
    bad[n - 2] ^= 1; // flip a signature bit
    assert_eq!(h.call(&mut c, &bad), [Response::Failure]);
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[1; 32], false)),
        [Response::Success]
    );
    // Bound for authentication: no further binding.
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST2, &[2; 32], false)),
        [Response::Failure]
    );
}

#[test]
fn failed_session_bind_leaves_a_connection_that_signs_nothing() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"u", &[])),
        [Response::Success]
    );
    let mut c = Session::new(false);
    let mut bad = bind_body(&HOST, &[1; 32], false);
    let n = bad.len();
    bad[n - 2] ^= 1;
    assert_eq!(h.call(&mut c, &bad), [Response::Failure]);
    assert_eq!(h.call(&mut c, &sign_body(&SEED, b"x")), [Response::Failure]);
    assert_eq!(
        list(&mut h, &mut c).len(),
        1,
        "listing still works, as OpenSSH"
    );
}

#[test]
fn session_bind_rules_duplicate_id_and_bound() {
    let mut h = Harness::new();
    let mut c = Session::new(false);
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[1; 32], true)),
        [Response::Success]
    );
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[1; 32], true)),
        [Response::Success],
        "same id, same key"
    );
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST2, &[1; 32], true)),
        [Response::Failure],
        "same id, other key"
    );
    for i in 2..=MAX_SESSION_BINDS as u8 {
        assert_eq!(
            h.call(&mut c, &bind_body(&HOST, &[i; 32], true)),
            [Response::Success]
        );
    }
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[0xee; 32], true)),
        [Response::Failure],
        "bound reached"
    );
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[0xaa; 129], true)),
        [Response::Failure],
        "sid too long"
    );
}

#[test]
fn restricted_key_signs_only_for_its_destination() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(
            &mut admin,
            &add_body(&SEED, b"r", &restrict_to(&HOST, b"git"))
        ),
        [Response::Success]
    );
    // Unbound connection: listed (local use) but never signs.
    let mut local = Session::new(false);
    assert_eq!(list(&mut h, &mut local).len(), 1);
    assert_eq!(
        h.call(
            &mut local,
            &sign_body(&SEED, &userauth(&[1; 32], b"git", &SEED))
        ),
        [Response::Failure]
    );

    // Bound to the permitted host: signs a userauth request for this session and user.
    let mut good = Session::new(false);
    assert_eq!(
        h.call(&mut good, &bind_body(&HOST, &[1; 32], false)),
        [Response::Success]
    );
    assert_eq!(list(&mut h, &mut good).len(), 1);
    let data = userauth(&[1; 32], b"git", &SEED);
    verify_ed25519(
        &SEED,
        &data,
        &h.call(&mut good, &sign_body(&SEED, &data))[0],
    );
    // Wrong user, wrong session id, or not a userauth request.
    assert_eq!(
        h.call(
            &mut good,
            &sign_body(&SEED, &userauth(&[1; 32], b"root", &SEED))
        ),
        [Response::Failure]
    );
    assert_eq!(
        h.call(
            &mut good,
            &sign_body(&SEED, &userauth(&[2; 32], b"git", &SEED))
        ),
        [Response::Failure]
    );
    assert_eq!(
        h.call(&mut good, &sign_body(&SEED, b"arbitrary")),
        [Response::Failure]
    );

    // Bound to another host: hidden and refused.
    let mut other = Session::new(false);
    assert_eq!(
        h.call(&mut other, &bind_body(&HOST2, &[3; 32], false)),
        [Response::Success]
    );
    assert!(list(&mut h, &mut other).is_empty());
    assert_eq!(
        h.call(
            &mut other,
            &sign_body(&SEED, &userauth(&[3; 32], b"git", &SEED))
        ),
        [Response::Failure]
    );

    // Forwarded to the host, then signing there is a forwarding hop: refused.
    let mut fwd = Session::new(false);
    assert_eq!(
        h.call(&mut fwd, &bind_body(&HOST, &[4; 32], true)),
        [Response::Success]
    );
    assert_eq!(
        h.call(
            &mut fwd,
            &sign_body(&SEED, &userauth(&[4; 32], b"git", &SEED))
        ),
        [Response::Failure]
    );
}

#[test]
fn bound_connection_refuses_userauth_for_another_session() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"u", &[])),
        [Response::Success]
    );
    let mut c = Session::new(false);
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[1; 32], false)),
        [Response::Success]
    );
    assert_eq!(
        h.call(&mut c, &sign_body(&SEED, &userauth(&[9; 32], b"u", &SEED))),
        [Response::Failure]
    );
    let data = userauth(&[1; 32], b"u", &SEED);
    verify_ed25519(&SEED, &data, &h.call(&mut c, &sign_body(&SEED, &data))[0]);
}

#[test]
fn confirm_request_names_the_bound_host() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(&mut admin, &add_body(&SEED, b"c", &[2])),
        [Response::Success]
    );
    let mut c = Session::new(false);
    assert_eq!(
        h.call(&mut c, &bind_body(&HOST, &[1; 32], false)),
        [Response::Success]
    );
    assert!(h
        .call(&mut c, &sign_body(&SEED, &userauth(&[1; 32], b"u", &SEED)))
        .is_empty());
    let Some(Event::ConfirmRequest(req)) = c.poll_event() else {
        panic!()
    };
    assert_eq!(
        req.host,
        crate::KeyBlob::new(ed25519_blob(&HOST))
            .unwrap()
            .fingerprint()
    );
}

#[test]
fn locked_agent_debug_prints_no_passphrase_hash() {
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(
        h.call(&mut admin, &cat(&[&[22], &s(b"pw")])),
        [Response::Success]
    );
    let d = alloc::format!("{:?}", h.agent);
    assert!(d.contains("LockHash(..)"), "{d}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_streams_never_panic_and_answer_whole_frames(
        stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        admin in proptest::prelude::any::<bool>(),
    ) {
        let mut h = Harness::new();
        let mut sess = Session::new(admin);
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = sess.handle_input(h.now, &mut h.agent, rest);
            proptest::prop_assert!(n > 0, "a session without pending work takes input");
            rest = &rest[n..];
            drain(&mut sess); // parses every frame as a Response or panics
        }
    }
}

#[test]
fn private_key_debug_prints_no_secret() {
    let k = PrivateKey::from_ed25519_seed(&SEED).unwrap();
    let d = alloc::format!("{k:?}");
    assert!(d.starts_with("PrivateKey"), "{d}");
    assert!(!d.contains("0707"), "{d}");
    let id = Identity {
        key: k,
        comment: "c".into(),
        expires: None,
        confirm: false,
        destinations: Vec::new(),
    };
    let d = alloc::format!("{id:?}");
    assert!(!d.contains("7, 7, 7") && !d.contains("0707"), "{d}");
}

/// Writes seed inputs for the `ssh_agent_msg` fuzz target (control byte, then a stream):
/// `SEED_DIR=... cargo test -p ssh-agent-wire -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz corpus"]
fn write_fuzz_seeds() {
    extern crate std;
    let dir = std::env::var("SEED_DIR").expect("SEED_DIR");
    let key8 = [8u8; 32];
    let seeds: Vec<(u8, Vec<Vec<u8>>)> = vec![
        (0, vec![vec![11]]),
        (1, vec![vec![11], sign_body(&SEED, b"challenge")]),
        (
            0,
            vec![
                sign_body(&key8, b"confirm me"),
                sign_body(&key8, b"again"),
                vec![11],
            ],
        ),
        (
            1,
            vec![
                add_body(&[3; 32], b"new", &[1, 0, 0, 0, 2, 2]),
                vec![11],
                vec![19],
            ],
        ),
        (
            1,
            vec![
                cat(&[&[22], &s(b"pw")]),
                vec![11],
                cat(&[&[23], &s(b"pw")]),
                vec![11],
            ],
        ),
        (
            0,
            vec![
                bind_body(&HOST, &[1; 32], false),
                sign_body(&SEED, &userauth(&[1; 32], b"git", &SEED)),
            ],
        ),
        (
            1,
            vec![
                add_body(&[4; 32], b"r", &restrict_to(&HOST, b"git")),
                bind_body(&HOST, &[1; 32], true),
                vec![11],
            ],
        ),
        (
            0,
            vec![
                cat(&[&[27], &s(b"query")]),
                cat(&[&[27], &s(b"x@y")]),
                vec![20],
                vec![200],
            ],
        ),
        (3, vec![cat(&[&[18], &s(&ed25519_blob(&SEED))]), vec![11]]),
    ];
    for (i, (ctl, msgs)) in seeds.iter().enumerate() {
        let mut bytes = vec![*ctl];
        for m in msgs {
            bytes.extend(frame(m));
        }
        std::fs::write(std::format!("{dir}/seed-{i:02}"), bytes).unwrap();
    }
}

#[test]
fn rsa_key_refused_unless_configured_and_inconsistent_rsa_refused_always() {
    let body = cat(&[&[17], &crate::wire::tests::fake_rsa_private(256), &s(b"r")]);
    let mut h = Harness::new();
    let mut admin = Session::new(true);
    assert_eq!(h.call(&mut admin, &body), [Response::Failure]);
    let mut h = Harness::new();
    h.agent = Agent::new(
        MemoryKeyring::new(8),
        Config {
            allow_rsa: true,
            ..Config::DEFAULT
        },
    );
    assert_eq!(
        h.call(&mut admin, &body),
        [Response::Failure],
        "made-up primes"
    );
    assert!(h.agent.keyring().is_empty());
}
