//! Hostile agent bytes into dom0's per-VM daemon: byte 0 picks the delivery chunk size and how
//! the harness answers calls (refuse, connect, exec); the rest is the agent's stream. Checks
//! that everything we emit frames and parses, that fatal errors are sticky, and that the port
//! table never hands out a port twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_api::DomId;
use qubes::framing::FrameReader;
use qubes::qrexec::{daemon, is_data_port, Daemon, Error, Message, QrexecFraming};

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let chunk = [1, 3, 64, usize::MAX][usize::from(sel & 3)];
    let mut d = Daemon::new(daemon::Limits {
        max_events: 4,
        out_bytes: 8192,
    });
    let mut framing = QrexecFraming::new();
    framing.set_version(4);
    let mut check = FrameReader::new(framing);
    let mut ports = std::collections::BTreeSet::new();
    let mut out = [0u8; 61];
    let peer = DomId::new(9).unwrap();
    for piece in rest.chunks(chunk) {
        let mut off = 0;
        for _ in 0..4 * piece.len() + 4 {
            if off >= piece.len() {
                break;
            }
            match d.handle_input(&piece[off..]) {
                Ok(n) => off += n,
                Err(e) => {
                    assert!(e.is_fatal());
                    assert_eq!(d.handle_input(b"x"), Err(e));
                    let e2: Result<u32, Error> = d.exec(peer, b"u:x", false);
                    assert_eq!(e2, Err(e));
                    return;
                }
            }
            while let Some(ev) = d.poll_event() {
                match ev {
                    daemon::Event::Trigger { request_id, .. } => match sel >> 2 & 3 {
                        0 => {
                            let _ = d.refuse(request_id);
                        }
                        1 => {
                            let _ = d.service_connect(peer, 600, request_id);
                        }
                        _ => {
                            if let Ok(p) =
                                d.exec(peer, b"user:QUBESRPC qubes.Service+ src", sel & 0x10 != 0)
                            {
                                assert!(is_data_port(p));
                                assert!(ports.insert(p), "port {p} handed out twice");
                            }
                        }
                    },
                    daemon::Event::ConnectionTerminated { port, released, .. } => {
                        assert!(is_data_port(port));
                        if released {
                            assert!(ports.remove(&port));
                        }
                    }
                    daemon::Event::Ready { .. } | daemon::Event::TriggerRefused { .. } => {}
                }
            }
            while let Some(n) = d.poll_transmit(&mut out) {
                let mut b = &out[..n];
                while !b.is_empty() {
                    let used = check.push(b).expect("our output frames");
                    b = &b[used..];
                    if let Some(frame) = check.take() {
                        Message::parse(&frame).expect("our output parses");
                    }
                }
            }
        }
    }
});
