//! Full-duplex transfers through small bounded rings: a caller that polls in the natural order
//! (`handle_input`, `poll_transmit`, `poll_event`, then sends) must never deadlock.

use alloc::collections::VecDeque;
use alloc::vec;

use crate::qrexec::data::{self, DataChannel, Event, Limits, Role};
use crate::qrexec::*;

/// One direction of a vchan: at most `cap` bytes in flight.
struct Ring {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            cap,
        }
    }
}

/// One end: its machine, what it still has to send and what it has checked so far.
struct End {
    ch: DataChannel,
    send_stream: Stream,
    recv_stream: Stream,
    sent: usize,
    received: usize,
    peer_eof: bool,
    exit: Option<i32>,
}

fn pattern(stream: Stream, i: usize) -> u8 {
    let salt = if stream == Stream::Stdin { 0x5a } else { 0xa5 };
    (i as u8).wrapping_mul(31) ^ ((i >> 9) as u8) ^ salt
}

/// One natural-order step of `e`; returns whether anything moved.
fn step(e: &mut End, rx: &mut Ring, tx: &mut Ring, total: usize, buf: &mut [u8]) -> bool {
    let mut moved = false;
    // 1. Input.
    loop {
        let (front, _) = rx.bytes.as_slices();
        if front.is_empty() {
            break;
        }
        let n = e.ch.handle_input(front).expect("peer input");
        if n == 0 {
            break;
        }
        rx.bytes.drain(..n);
        moved = true;
    }
    // 2. Output, as much as the ring has room for.
    loop {
        let room = (tx.cap - tx.bytes.len()).min(buf.len());
        let Some(n) = e.ch.poll_transmit(&mut buf[..room]) else {
            break;
        };
        tx.bytes.extend(&buf[..n]);
        moved = true;
    }
    // 3. Events.
    while let Some(ev) = e.ch.poll_event() {
        moved = true;
        match ev {
            Event::Ready { .. } => {}
            Event::Data { stream, data } => {
                assert_eq!(stream, e.recv_stream);
                for (k, b) in data.iter().enumerate() {
                    assert_eq!(
                        *b,
                        pattern(stream, e.received + k),
                        "byte {}",
                        e.received + k
                    );
                }
                e.received += data.len();
            }
            Event::Eof(s) if s == e.recv_stream => e.peer_eof = true,
            // send_exit also closes the unused stderr.
            Event::Eof(s) => assert_eq!(s, Stream::Stderr),
            Event::Exit(code) => e.exit = Some(code),
        }
    }
    // 4. The application sends as much as the machine takes.
    if e.ch.version().is_some() && e.sent < total {
        let want = (total - e.sent).min(buf.len());
        for (k, b) in buf[..want].iter_mut().enumerate() {
            *b = pattern(e.send_stream, e.sent + k);
        }
        let n = e.ch.send(e.send_stream, &buf[..want]).unwrap();
        e.sent += n;
        moved |= n > 0;
        if e.sent == total {
            if e.send_stream == Stream::Stdin {
                e.ch.send_eof(Stream::Stdin).unwrap();
            }
            moved = true;
        }
    }
    moved
}

/// Pumps `total` bytes each way at once through `ring`-byte rings; panics after `stall`
/// iterations in which nothing moved.
fn full_duplex(total: usize, ring: usize) {
    let end = |ch, send_stream, recv_stream| End {
        ch,
        send_stream,
        recv_stream,
        sent: 0,
        received: 0,
        peer_eof: false,
        exit: None,
    };
    let mut caller = end(
        DataChannel::caller(AGENT_VERSION),
        Stream::Stdin,
        Stream::Stdout,
    );
    let service = DataChannel::new(
        Role::Service { just_exec: false },
        data::Handshake::SendFirst,
        AGENT_VERSION,
        Limits::DEFAULT,
    );
    let mut service = end(service, Stream::Stdout, Stream::Stdin);
    let (mut c2s, mut s2c) = (Ring::new(ring), Ring::new(ring));
    let mut buf = vec![0u8; 3 * 65536];
    let mut stalled = 0;
    while caller.exit.is_none() {
        let a = step(&mut caller, &mut s2c, &mut c2s, total, &mut buf);
        let b = step(&mut service, &mut c2s, &mut s2c, total, &mut buf);
        if service.sent == total && service.peer_eof && service.exit.is_none() {
            service.ch.send_exit(0).unwrap();
            service.exit = Some(0);
        }
        stalled = if a || b { 0 } else { stalled + 1 };
        assert!(
            stalled < 100,
            "deadlock: caller sent {} got {}, service sent {} got {}, rings {}/{}",
            caller.sent,
            caller.received,
            service.sent,
            service.received,
            c2s.bytes.len(),
            s2c.bytes.len()
        );
    }
    assert_eq!(caller.exit, Some(0));
    assert_eq!(caller.received, total);
    assert_eq!(service.received, total);
    assert!(caller.peer_eof && service.peer_eof);
}

#[test]
fn full_duplex_through_full_rings_does_not_deadlock() {
    full_duplex(16 << 20, 4096);
}

#[test]
fn full_duplex_small_transfer_through_tiny_rings() {
    full_duplex(300_000, 64);
}

#[test]
fn daemon_reads_on_when_its_own_messages_fill_the_queue() {
    use crate::qrexec::daemon::{self, Daemon};
    use crate::qrexec::wire::Message;
    use platform_api::DomId;
    let emit = |m: Message<'_>| {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b).unwrap();
        b
    };
    let mut d = Daemon::new(daemon::Limits::DEFAULT);
    let hello = emit(Message::Hello { version: 3 });
    assert_eq!(d.handle_input(&hello), Ok(hello.len()));
    let _ = d.poll_event();
    let peer = DomId::new(5).unwrap();
    let cmdline = [b'x'; 1000];
    let mut ports = alloc::vec::Vec::new();
    let mut cmd = b"user:".to_vec();
    cmd.extend_from_slice(&cmdline);
    // The application queues commands until the queue refuses (the agent is not reading).
    while let Ok(port) = d.exec(peer, &cmd, false) {
        ports.push(port);
    }
    assert!(ports.len() > 1);
    // The agent's CONNECTION_TERMINATED still gets in: only unread answers may stop input.
    let bye = emit(Message::ConnectionTerminated {
        connect_domain: 5,
        connect_port: ports[0],
    });
    assert_eq!(d.handle_input(&bye), Ok(bye.len()));
    assert_eq!(
        d.poll_event(),
        Some(daemon::Event::ConnectionTerminated {
            peer: 5,
            port: ports[0],
            released: true
        })
    );
}

#[test]
fn agent_reads_on_when_its_own_messages_fill_the_queue() {
    use crate::qrexec::agent::{self, Agent};
    use crate::qrexec::wire::Message;
    let emit = |m: Message<'_>| {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b).unwrap();
        b
    };
    let trigger_len = Message::TriggerService3 {
        target_domain: b"work",
        request_id: b"SOCKET0",
        service_name: b"qubes.Filecopy",
    }
    .buffer_len();
    // HELLO (still queued), then room for three calls but 8 bytes short of a fourth.
    let limits = agent::Limits {
        max_channels: 1000,
        max_events: 16,
        out_bytes: 12 + 3 * trigger_len + 8,
    };
    let mut a = Agent::new(limits);
    let hello = emit(Message::Hello { version: 3 });
    assert_eq!(a.handle_input(&hello), Ok(hello.len()));
    let _ = a.poll_event();
    let mut ids = alloc::vec::Vec::new();
    while let Ok(id) = a.trigger_service("work", "qubes.Filecopy") {
        ids.push(id);
    }
    assert!(ids.len() > 1);
    let refused = emit(Message::ServiceRefused {
        request_id: ids[0].as_bytes(),
    });
    assert_eq!(a.handle_input(&refused), Ok(refused.len()));
    assert_eq!(
        a.poll_event(),
        Some(agent::Event::Refused { request_id: ids[0] })
    );
}
