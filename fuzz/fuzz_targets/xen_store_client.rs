//! A hostile xenstored against the client machine, as an operation list: requests go out,
//! arbitrary replies, events and raw bytes come in. Checks: no panic, bounded queues, the
//! fatal error is sticky until `reset`, and our output always parses as requests.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::Tx;
use xen_store::client::{Client, ClientError, Limits, ReqId};
use xen_store::wire::{Header, MsgHeader, Request, RequestMsg, XsPath, HEADER_LEN, MSG_MAX};

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        kind: u8,
        tx: u8,
    },
    Reply {
        req_id: u8,
        ty: u8,
        tx: u8,
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
    Take(u8),
    Poll,
    Transmit(u16),
    Reset,
}

const LIMITS: Limits = Limits {
    max_pending: 4,
    max_events: 3,
};

fn request(kind: u8) -> Request {
    let p = XsPath::new("device/vif/0").unwrap();
    match kind % 8 {
        0 => Request::Read(p),
        1 => Request::Write {
            path: p,
            value: b"4".to_vec(),
        },
        2 => Request::Directory(p),
        3 => Request::GetPerms(p),
        4 => Request::TransactionStart,
        5 => Request::TransactionEnd { commit: true },
        6 => Request::Watch {
            path: p,
            token: "t".into(),
            depth: None,
        },
        _ => Request::GetDomainPath(platform_api::DomId::DOM0),
    }
}

/// Our output must be a stream of well-formed requests.
fn check_output(buf: &mut Vec<u8>) {
    while buf.len() >= HEADER_LEN {
        let h = Header::parse_prefix(buf).expect("our header is valid");
        if buf.len() < h.total_len() {
            return;
        }
        let frame: Vec<u8> = buf.drain(..h.total_len()).collect();
        RequestMsg::parse(&MsgHeader::new_checked(&frame[..]).unwrap()).expect("ours parses");
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut c = Client::new(LIMITS);
    let mut out = Vec::new();
    let mut sent: Vec<(ReqId, u32)> = Vec::new();
    for op in ops.into_iter().take(256) {
        let fatal = c.error();
        match op {
            Op::Send { kind, tx } => {
                let r = c.send(Tx(u32::from(tx % 3)), request(kind));
                if let Some(e) = fatal {
                    assert_eq!(r, Err(ClientError::Peer(e)));
                }
                if let Ok(id) = r {
                    sent.push((id, u32::from(tx % 3)));
                }
            }
            Op::Reply {
                req_id,
                ty,
                tx,
                payload,
            } => {
                let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
                let len = payload.len().min(MSG_MAX) as u32;
                for w in [
                    u32::from(ty % 28),
                    u32::from(req_id % 8),
                    u32::from(tx % 3),
                    len,
                ] {
                    m.extend_from_slice(&w.to_le_bytes());
                }
                m.extend_from_slice(&payload);
                let r = c.handle_input(&m);
                if let Some(e) = fatal {
                    assert_eq!(r, Err(ClientError::Peer(e)));
                }
            }
            Op::Raw(bytes) => {
                let r = c.handle_input(&bytes);
                if let Some(e) = fatal {
                    assert_eq!(r, Err(ClientError::Peer(e)));
                }
            }
            Op::Take(i) => {
                if let Some(&(id, _)) = sent.get(usize::from(i) % sent.len().max(1)) {
                    let _ = c.take_reply(id);
                }
            }
            Op::Poll => {
                let mut n = 0;
                while c.poll_event().is_some() {
                    n += 1;
                }
                assert!(n <= LIMITS.max_events);
            }
            Op::Transmit(n) => {
                let mut buf = vec![0u8; usize::from(n % 5000)];
                if let Some(k) = c.poll_transmit(&mut buf) {
                    out.extend_from_slice(&buf[..k]);
                    check_output(&mut out);
                }
            }
            Op::Reset => {
                c.reset();
                out.clear();
                assert!(c.error().is_none());
            }
        }
        if let Some(e) = fatal {
            assert!(c.error() == Some(e) || c.error().is_none());
        }
        assert!(c.transmit_len() <= LIMITS.max_pending * MSG_MAX);
    }
});
