//! Server and client over shared in-memory pages: every ring placement, streaming, close.

use alloc::vec;
use alloc::vec::Vec;

use platform_api::{GrantRef, HeapMem, PAGE_SIZE};

use crate::layout::Offer;
use crate::test_utils::TestNotify;
use crate::{grant_list, Client, Error, Geometry, Ring, Server};

pub(crate) type S = Server<HeapMem, TestNotify>;
pub(crate) type C = Client<HeapMem, TestNotify>;

/// A server with the given orders, not yet attached; the memories for the client.
pub(crate) fn server(
    left: u16,
    right: u16,
) -> (S, TestNotify, HeapMem, Option<HeapMem>, Option<HeapMem>) {
    let g = Geometry::new(left, right).unwrap();
    let pages = |r| (g.pages(r) > 0).then(|| HeapMem::new(g.size(r) as usize));
    let (lp, rp) = (pages(Ring::Left), pages(Ring::Right));
    let lg: Vec<GrantRef> = (0..g.pages(Ring::Left) as u32)
        .map(|i| GrantRef(100 + i))
        .collect();
    let rg: Vec<GrantRef> = (0..g.pages(Ring::Right) as u32)
        .map(|i| GrantRef(1000 + i))
        .collect();
    let ctrl = HeapMem::new(PAGE_SIZE);
    let n = TestNotify::new();
    let s = Server::new(
        ctrl.clone(),
        g,
        lp.clone(),
        rp.clone(),
        &grant_list(&lg, &rg),
        n.clone(),
    )
    .unwrap();
    (s, n, ctrl, lp, rp)
}

/// A connected pair with the given orders, and each side's notification counter.
pub(crate) fn pair(left: u16, right: u16) -> (S, C, TestNotify, TestNotify) {
    let (s, sn, ctrl, lp, rp) = server(left, right);
    let offer = Offer::read(&ctrl).unwrap();
    assert_eq!(offer.left_grants.len(), offer.geometry.pages(Ring::Left));
    let cn = TestNotify::new();
    let c = Client::attach(ctrl, &offer, lp, rp, cn.clone()).unwrap();
    (s, c, sn, cn)
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

/// Moves `total` bytes each way in odd-sized chunks and checks every byte.
fn stream_both_ways(s: &mut S, c: &mut C, total: usize) {
    let chunk = 1237;
    let src: Vec<u8> = (0..total).map(pattern).collect();
    let (mut c_sent, mut s_got, mut s_sent, mut c_got) = (0, 0, 0, 0);
    let mut buf = vec![0u8; 3001];
    let mut steps = 0;
    while s_got < total || c_got < total {
        steps += 1;
        assert!(steps < 100 * (total / 100 + 10), "no progress");
        if c_sent < total {
            c_sent += c.write(&src[c_sent..(c_sent + chunk).min(total)]).unwrap();
        }
        if s_sent < total {
            s_sent += s
                .write(&src[s_sent..(s_sent + chunk * 2).min(total)])
                .unwrap();
        }
        let n = s.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], &src[s_got..s_got + n]);
        s_got += n;
        let n = c.read(&mut buf[..777]).unwrap();
        assert_eq!(&buf[..n], &src[c_got..c_got + n]);
        c_got += n;
    }
}

#[test]
fn every_placement_streams_both_ways() {
    for (l, r) in [
        (10, 11),
        (11, 10),
        (12, 12),
        (16, 16),
        (11, 13),
        (13, 11),
        (12, 20),
        (20, 11),
        (20, 20),
        (10, 19),
    ] {
        let (mut s, mut c, _, _) = pair(l, r);
        assert_eq!(s.buffer_space().unwrap(), 1 << r, "{l}/{r}");
        assert_eq!(c.buffer_space().unwrap(), 1 << l, "{l}/{r}");
        stream_both_ways(&mut s, &mut c, 3 * (1 << l.max(r)) + 1000);
    }
}

#[test]
fn server_writes_before_client_connects() {
    let (mut s, _, ctrl, lp, rp) = server(12, 12);
    assert!(s.is_open(), "cli_live = 2 counts as open");
    assert!(!s.is_connected().unwrap());
    assert_eq!(s.write(b"HELLO before connect").unwrap(), 20);
    let offer = Offer::read(&ctrl).unwrap();
    let mut c = Client::attach(ctrl, &offer, lp, rp, TestNotify::new()).unwrap();
    assert!(s.is_connected().unwrap());
    let mut buf = [0u8; 64];
    assert_eq!(c.read(&mut buf).unwrap(), 20);
    assert_eq!(&buf[..20], b"HELLO before connect");
}

#[test]
fn peer_close_mid_stream_drains_then_eof() {
    let (mut s, mut c, _, _) = pair(11, 10);
    assert_eq!(c.write(b"last words").unwrap(), 10);
    c.close().unwrap();
    assert!(!s.is_open());
    let mut buf = [0u8; 4];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::PeerClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"last words");
    assert_eq!(s.write(b"x"), Err(Error::PeerClosed));
    assert_eq!(c.read(&mut buf), Err(Error::Closed));
    assert_eq!(c.write(b"x"), Err(Error::Closed));
}

#[test]
fn notify_bits_follow_libxenvchan() {
    use crate::layout::{field, NOTIFY_READ, NOTIFY_WRITE};
    use platform_api::{Ordering::SeqCst, SharedMem};
    let (mut s, mut c, sn, cn) = pair(12, 12);
    let ctrl = s.control_page().clone();
    let byte = |off| ctrl.load_u8(off, SeqCst).unwrap();
    // After attach: server asked for the client's first write, client for the server's.
    assert_eq!(byte(field::CLI_NOTIFY), NOTIFY_WRITE);
    assert_eq!(byte(field::SRV_NOTIFY), NOTIFY_WRITE);
    assert_eq!(cn.take(), 1);
    // The client writes: it clears WRITE in its own byte and signals once.
    c.write(b"a").unwrap();
    assert_eq!((byte(field::CLI_NOTIFY), cn.take()), (0, 1));
    c.write(b"b").unwrap();
    assert_eq!(cn.take(), 0, "no request pending, no signal");
    // The server reads everything. A short read posts nothing (fewer locked operations and
    // signals while streaming); finding nothing, it posts WRITE into the client's byte.
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 2);
    assert_eq!(
        byte(field::CLI_NOTIFY),
        0,
        "a read that got data asks nothing"
    );
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    assert_eq!(byte(field::CLI_NOTIFY), NOTIFY_WRITE);
    assert_eq!(sn.take(), 0, "client never asked for READ");
    // A full ring makes the writer post READ into the peer's byte (on the write that finds no
    // room); the reader then signals.
    let big = vec![0u8; 5000];
    assert_eq!(s.write(&big).unwrap(), 4096);
    assert_eq!(
        byte(field::CLI_NOTIFY) & NOTIFY_READ,
        0,
        "a write that fit data asks nothing"
    );
    assert_eq!(s.write(&big).unwrap(), 0);
    assert_eq!(
        byte(field::SRV_NOTIFY) & NOTIFY_READ,
        0,
        "server posts into cli_notify"
    );
    assert_ne!(byte(field::CLI_NOTIFY) & NOTIFY_READ, 0);
    sn.take();
    let mut rb = vec![0u8; 100];
    assert_eq!(c.read(&mut rb).unwrap(), 100);
    assert_eq!(cn.take(), 1, "client signals the READ the server asked for");
    assert_eq!(byte(field::CLI_NOTIFY) & NOTIFY_READ, 0);
}

#[test]
fn prepare_wait_rechecks() {
    let (mut s, mut c, _, _) = pair(10, 11);
    let read = crate::Interest {
        read: true,
        write: false,
    };
    assert!(s.prepare_wait(read).unwrap(), "nothing to read: may sleep");
    c.write(b"x").unwrap();
    assert!(!s.prepare_wait(read).unwrap());
    let mut b = [0u8; 1];
    s.read(&mut b).unwrap();
    c.close().unwrap();
    assert!(!s.prepare_wait(read).unwrap(), "peer closed: wake");
}

#[test]
fn dropped_client_is_closed_for_the_server_after_its_last_bytes() {
    let (mut s, mut c, _, cn) = pair(11, 10);
    assert_eq!(c.write(b"bye").unwrap(), 3);
    cn.take();
    drop(c);
    assert_eq!(cn.take(), 1, "the drop signals the server");
    assert_eq!(s.peer_state(), Ok(crate::PeerState::Closed));
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Ok(3));
    assert_eq!(&buf[..3], b"bye");
    assert_eq!(s.read(&mut buf), Err(Error::PeerClosed));
}

#[test]
fn dropped_server_is_closed_for_the_client() {
    let (s, mut c, sn, _) = pair(12, 13);
    sn.take();
    drop(s);
    assert_eq!(sn.take(), 1, "the drop signals the client");
    assert!(!c.is_open());
    assert_eq!(c.write(b"x"), Err(Error::PeerClosed));
}

#[test]
fn drop_after_close_does_not_close_again() {
    use crate::layout::{field, LIVE_CLOSED};
    use platform_api::{Ordering::SeqCst, SharedMem};
    let (s, mut c, _, cn) = pair(10, 11);
    let ctrl = s.control_page().clone();
    cn.take();
    c.close().unwrap();
    assert_eq!(c.close(), Ok(()), "a second close is a no-op");
    drop(c);
    assert_eq!(
        cn.take(),
        1,
        "close signals once, neither the second close nor the drop"
    );
    assert_eq!(ctrl.load_u8(field::CLI_LIVE, SeqCst).unwrap(), LIVE_CLOSED);
    drop(s);
    assert_eq!(ctrl.load_u8(field::SRV_LIVE, SeqCst).unwrap(), LIVE_CLOSED);
}

#[test]
fn explicit_close_then_drop_signals_once() {
    let (mut s, c, sn, _) = pair(10, 11);
    drop(c);
    sn.take();
    s.close().unwrap();
    drop(s);
    assert_eq!(sn.take(), 1, "close signals, the drop after it does not");
}

#[test]
fn moved_endpoints_stay_open() {
    let (s, c, _, _) = pair(11, 10);
    let mut ends = Vec::new();
    ends.push((s, c));
    let (mut s, mut c) = ends.pop().unwrap();
    assert!(s.is_open() && c.is_open(), "a move is not a drop");
    assert_eq!(c.write(b"ok").unwrap(), 2);
    let mut buf = [0u8; 2];
    assert_eq!(s.read(&mut buf), Ok(2));
}
