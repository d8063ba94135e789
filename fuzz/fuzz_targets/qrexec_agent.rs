//! Hostile daemon (or data peer) bytes into the VM side: byte 0 picks the machine (control agent,
//! service, JUST_EXEC service, caller) and the delivery chunk size; the rest is the peer's stream.
//! The harness reacts to events like an app would, and checks that everything we emit frames and
//! parses, and that fatal errors are sticky.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_api::DomId;
use qubes::framing::FrameReader;
use qubes::qrexec::{agent, data, Agent, DataChannel, Error, Message, QrexecFraming, Stream};

/// Checks that our own output is a sequence of well-formed messages.
struct OutCheck(FrameReader<QrexecFraming>);

impl OutCheck {
    fn new() -> Self {
        let mut f = QrexecFraming::new();
        f.set_version(4);
        Self(FrameReader::new(f))
    }
    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            let n = self.0.push(b).expect("our output frames");
            b = &b[n..];
            if let Some(frame) = self.0.take() {
                Message::parse(&frame).expect("our output parses");
            }
        }
    }
}

fn chunk_size(sel: u8) -> usize {
    [1, 3, 64, usize::MAX][usize::from(sel >> 2 & 3)]
}

fn run_agent(input: &[u8], chunk: usize) {
    let mut a = Agent::new(agent::Limits {
        max_channels: 3,
        max_events: 4,
        out_bytes: 512,
    });
    let mut check = OutCheck::new();
    let mut out = [0u8; 97];
    let mut sticky: Option<Error> = None;
    for piece in input.chunks(chunk) {
        let mut off = 0;
        for _ in 0..4 * piece.len() + 4 {
            if off >= piece.len() {
                break;
            }
            match a.handle_input(&piece[off..]) {
                Ok(n) => off += n,
                Err(e) => {
                    if e.is_fatal() {
                        if let Some(s) = sticky {
                            assert_eq!(s, e);
                        }
                        sticky = Some(e);
                    }
                    break;
                }
            }
            while let Some(ev) = a.poll_event() {
                match ev {
                    agent::Event::Ready { .. } => {
                        let _ = a.trigger_service("@default", "qubes.Service+arg");
                    }
                    agent::Event::Exec { peer, port, .. }
                    | agent::Event::ServiceConnect { peer, port, .. } => {
                        let _ = a.connection_terminated(peer, port);
                    }
                    agent::Event::Refused { .. } => {
                        let _ = a.trigger_service("vault", "qubes.Other");
                    }
                    agent::Event::Overflow { .. } => {}
                }
            }
            while let Some(n) = a.poll_transmit(&mut out) {
                check.feed(&out[..n]);
            }
        }
        if let Some(s) = sticky {
            assert_eq!(a.handle_input(b"x"), Err(s));
            assert_eq!(a.connection_terminated(DomId::DOM0, 513), Err(s));
            return;
        }
    }
}

fn run_data(input: &[u8], chunk: usize, role: data::Role) {
    let limits = data::Limits {
        max_events: 4,
        event_bytes: 70_000,
        out_bytes: 70_000,
    };
    let mut c = DataChannel::new(role, data::Handshake::SendFirst, 3, limits);
    let mut check = OutCheck::new();
    let mut out = vec![0u8; 8192];
    for piece in input.chunks(chunk) {
        let mut off = 0;
        for _ in 0..4 * piece.len() + 4 {
            if off >= piece.len() {
                break;
            }
            match c.handle_input(&piece[off..]) {
                Ok(n) => off += n,
                Err(e) => {
                    assert!(e.is_fatal());
                    assert_eq!(c.handle_input(b"x"), Err(e));
                    assert_eq!(c.handle_close().err().unwrap_or(e), e);
                    return;
                }
            }
            while let Some(ev) = c.poll_event() {
                match ev {
                    data::Event::Ready { .. } => {
                        let _ = c.send(Stream::Stdout, &[0x55; 5000]);
                        let _ = c.send(Stream::Stdin, b"hello");
                    }
                    data::Event::Data { data, .. } => {
                        assert!(!data.is_empty() && data.len() <= 65536)
                    }
                    data::Event::Eof(Stream::Stdin) => {
                        let _ = c.send_exit(0);
                    }
                    data::Event::Eof(_) => {
                        let _ = c.send_eof(Stream::Stdin);
                    }
                    data::Event::Exit(_) => assert!(c.exit_code().is_some()),
                }
            }
            while let Some(n) = c.poll_transmit(&mut out) {
                check.feed(&out[..n]);
            }
        }
    }
    let _ = c.handle_close();
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let chunk = chunk_size(sel);
    match sel & 3 {
        0 => run_agent(rest, chunk),
        1 => run_data(rest, chunk, data::Role::Service { just_exec: false }),
        2 => run_data(rest, chunk, data::Role::Service { just_exec: true }),
        _ => run_data(rest, chunk, data::Role::Caller),
    }
});
