//! Client machine tests: matching, events, limits, and a hostile xenstored.

use super::*;
use crate::wire::XsPath;
use platform_api::XsErrno;

fn path(s: &str) -> XsPath {
    XsPath::new(s).unwrap()
}

fn sent(c: &mut Client) -> RequestMsg {
    let mut buf = [0u8; MSG_MAX];
    assert_eq!(c.poll_transmit(&mut buf[..HEADER_LEN]), Some(HEADER_LEN));
    let total = Header::parse_prefix(&buf).unwrap().total_len();
    if total > HEADER_LEN {
        assert_eq!(
            c.poll_transmit(&mut buf[HEADER_LEN..total]),
            Some(total - HEADER_LEN)
        );
    }
    RequestMsg::parse(&MsgHeader::new_checked(&buf[..total]).unwrap()).unwrap()
}

fn reply(req_id: u32, tx_id: u32, reply: Reply) -> Vec<u8> {
    ReplyMsg {
        req_id,
        tx_id,
        reply,
    }
    .to_vec()
    .unwrap()
}

#[test]
fn replies_match_by_req_id_in_any_order() {
    let mut c = Client::default();
    let a = c.send(Tx::NONE, Request::Read(path("a"))).unwrap();
    let b = c.send(Tx(5), Request::Read(path("b"))).unwrap();
    assert_ne!(a, b);
    let ma = sent(&mut c);
    let mb = sent(&mut c);
    assert_eq!((ma.req_id, ma.tx_id), (a.0, 0));
    assert_eq!((mb.req_id, mb.tx_id), (b.0, 5));
    assert!(c.poll_transmit(&mut [0u8; 8]).is_none());
    c.handle_input(&reply(b.0, 5, Reply::Error(XsErrno::Enoent)))
        .unwrap();
    c.handle_input(&reply(a.0, 0, Reply::Read(b"x".to_vec())))
        .unwrap();
    assert_eq!(c.take_reply(a), Some(Ok(Reply::Read(b"x".to_vec()))));
    assert_eq!(c.take_reply(b), Some(Err(StoreError::Xs(XsErrno::Enoent))));
    assert_eq!(c.take_reply(b), None);
}

#[test]
fn byte_at_a_time_input_and_interleaved_events() {
    let mut c = Client::default();
    let a = c
        .send(
            Tx::NONE,
            Request::Write {
                path: path("a"),
                value: b"1".to_vec(),
            },
        )
        .unwrap();
    let mut bytes = ReplyMsg {
        req_id: 0,
        tx_id: 0,
        reply: Reply::WatchEvent {
            path: path("a"),
            token: "t".into(),
        },
    }
    .to_vec()
    .unwrap();
    bytes.extend(reply(a.0, 0, Reply::Ok(MsgType::Write)));
    for b in &bytes {
        c.handle_input(core::slice::from_ref(b)).unwrap();
    }
    assert_eq!(
        c.poll_event(),
        Some(WatchEvent {
            path: "a".into(),
            token: "t".into()
        })
    );
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.take_reply(a), Some(Ok(Reply::Ok(MsgType::Write))));
}

#[test]
fn outstanding_requests_bounded_with_full() {
    let mut c = Client::new(Limits {
        max_pending: 2,
        max_events: 1,
    });
    let a = c.send(Tx::NONE, Request::TransactionStart).unwrap();
    c.send(Tx::NONE, Request::TransactionStart).unwrap();
    assert_eq!(
        c.send(Tx::NONE, Request::TransactionStart),
        Err(ClientError::Full {
            what: "outstanding requests"
        })
    );
    c.handle_input(&reply(a.0, 0, Reply::TransactionStarted(9)))
        .unwrap();
    // Still counted until taken.
    assert!(c.send(Tx::NONE, Request::TransactionStart).is_err());
    assert!(c.take_reply(a).is_some());
    assert!(c.send(Tx::NONE, Request::TransactionStart).is_ok());
}

#[test]
fn event_queue_bounded_and_losses_counted() {
    let mut c = Client::new(Limits {
        max_pending: 2,
        max_events: 2,
    });
    let ev = ReplyMsg {
        req_id: 0,
        tx_id: 0,
        reply: Reply::WatchEvent {
            path: path("/x"),
            token: "t".into(),
        },
    }
    .to_vec()
    .unwrap();
    for _ in 0..5 {
        c.handle_input(&ev).unwrap();
    }
    assert_eq!(c.events_lost(), 3);
    assert!(c.poll_event().is_some());
    assert!(c.poll_event().is_some());
    assert!(c.poll_event().is_none());
}

#[test]
fn hostile_unknown_req_id_is_fatal_and_sticky() {
    let mut c = Client::default();
    let e = c
        .handle_input(&reply(77, 0, Reply::Ok(MsgType::Write)))
        .unwrap_err();
    assert_eq!(e, ClientError::Peer(PeerError::UnknownReqId(77)));
    assert_eq!(c.send(Tx::NONE, Request::TransactionStart), Err(e));
    assert_eq!(c.handle_input(b""), Err(e));
    c.reset();
    assert!(c.send(Tx::NONE, Request::TransactionStart).is_ok());
}

#[test]
fn hostile_wrong_type_and_tx_id_are_fatal() {
    let mut c = Client::default();
    let a = c.send(Tx(3), Request::Read(path("a"))).unwrap();
    let e = c
        .handle_input(&reply(a.0, 4, Reply::Read(vec![])))
        .unwrap_err();
    assert_eq!(
        e,
        ClientError::Peer(PeerError::WrongTxId {
            expected: 3,
            got: 4
        })
    );
    let mut c = Client::default();
    let a = c.send(Tx::NONE, Request::Read(path("a"))).unwrap();
    let e = c
        .handle_input(&reply(a.0, 0, Reply::Ok(MsgType::Write)))
        .unwrap_err();
    assert_eq!(
        e,
        ClientError::Peer(PeerError::WrongType {
            expected: MsgType::Read,
            got: MsgType::Write
        })
    );
}

#[test]
fn hostile_oversized_len_refused_before_payload() {
    let mut c = Client::default();
    let mut h = [0u8; 16];
    h[0] = 2;
    h[12..16].copy_from_slice(&4097u32.to_le_bytes());
    let e = c.handle_input(&h).unwrap_err();
    assert_eq!(
        e,
        ClientError::Peer(PeerError::Malformed(WireError::PayloadTooLong {
            len: 4097
        }))
    );
    assert!(c.inbuf.len() <= HEADER_LEN);
}

#[test]
fn hostile_malformed_reply_is_fatal() {
    let mut c = Client::default();
    let a = c
        .send(
            Tx::NONE,
            Request::Write {
                path: path("a"),
                value: vec![],
            },
        )
        .unwrap();
    let mut m = reply(a.0, 0, Reply::Ok(MsgType::Write));
    m[16] = b'K';
    assert!(matches!(
        c.handle_input(&m),
        Err(ClientError::Peer(PeerError::Malformed(_)))
    ));
}

#[test]
fn reset_fails_pending_with_disconnected() {
    let mut c = Client::default();
    let a = c.send(Tx::NONE, Request::TransactionStart).unwrap();
    c.reset();
    assert_eq!(c.transmit_len(), 0);
    assert_eq!(c.take_reply(a), Some(Err(StoreError::Disconnected)));
}

#[test]
fn oversized_request_refused_locally() {
    let mut c = Client::default();
    let e = c.send(
        Tx::NONE,
        Request::Write {
            path: path("a"),
            value: vec![0; 5000],
        },
    );
    assert!(matches!(
        e,
        Err(ClientError::Encode(WireError::PayloadTooLong { .. }))
    ));
    assert_eq!(c.transmit_len(), 0);
}

use alloc::vec;
