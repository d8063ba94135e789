//! Hostile bytes into the ssh-agent frame reader and a session over a fixed in-memory keyring
//! (admin on or off, input split at a chosen size): no panic, every output frame is a valid
//! response, and every request that decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_api::Instant;
use ssh_agent_wire::agent::{
    Agent, Config, Event, Identity, Keyring, MemoryKeyring, OwnerRequest, Session,
};
use ssh_agent_wire::wire::codec::Reader;
use ssh_agent_wire::wire::{Frame, FrameReader, Request, Response};
use ssh_agent_wire::PrivateKey;

fn keyring() -> MemoryKeyring {
    let mut k = MemoryKeyring::new(4);
    for (seed, confirm, life) in [([7u8; 32], false, None), ([8u8; 32], true, Some(5))] {
        let key = PrivateKey::from_ed25519_seed(&seed).expect("seed key");
        let id = Identity {
            key,
            comment: "fuzz".into(),
            expires: life.map(|s| Instant(s * 1_000_000_000)),
            confirm,
            destinations: Vec::new(),
        };
        k.insert(id).expect("room");
    }
    k
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let admin = ctl & 1 != 0;
    let chunk = match usize::from(ctl >> 1) {
        0 => stream.len().max(1),
        n => n,
    };

    // Wire layer alone: decoded requests re-encode to themselves.
    let mut frames = FrameReader::default();
    let mut off = 0;
    while off < stream.len() {
        let (n, f) = frames.push(&stream[off..]);
        assert!(n > 0 || f.is_some());
        off += n;
        if let Some(Frame::Message(body)) = f {
            if let Ok(req) = Request::parse(&body) {
                let mut out = Vec::new();
                req.emit(&mut out);
                assert_eq!(Request::parse(&out).as_ref(), Ok(&req));
            }
            let _ = Response::parse(&body);
        }
    }

    // The session machine.
    let mut agent = Agent::new(
        keyring(),
        Config {
            allow_rsa: ctl & 0x80 != 0,
            confirm_all: ctl & 0x40 != 0,
        },
    );
    let mut sess = Session::new(admin);
    let mut now = Instant(0);
    let mut allow = false;
    let mut tx = Vec::new();
    let mut buf = [0u8; 1024];
    let mut rest = stream;
    let mut stalls = 0;
    while !rest.is_empty() && stalls < 4 {
        let part = &rest[..chunk.min(rest.len())];
        let took = sess.handle_input(now, &mut agent, part);
        assert!(took <= part.len());
        rest = &rest[took..];
        stalls = if took == 0 { stalls + 1 } else { 0 };
        while let Some(ev) = sess.poll_event() {
            allow = !allow;
            match ev {
                Event::ConfirmRequest(req) => sess.confirm(now, &mut agent, req.id, allow),
                Event::Owner(OwnerRequest { id, .. }) => {
                    let resp = if allow { Response::Success } else { Response::ExtensionFailure };
                    sess.answer(id, &resp);
                }
            }
        }
        while let Some(n) = sess.poll_transmit(&mut buf) {
            assert!(n > 0 && n <= buf.len());
            tx.extend_from_slice(&buf[..n]);
        }
        now = Instant(now.0 + 1_000_000_000);
    }
    let mut r = Reader::new(&tx);
    while !r.is_empty() {
        let body = r.string("frame").expect("output is whole frames");
        Response::parse(body).expect("output frames are valid responses");
    }
});
