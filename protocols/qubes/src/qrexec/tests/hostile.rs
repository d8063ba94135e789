//! Hostile peers: each test is named after the rule it checks and expects a typed error or a
//! refusal, never a panic; fatal errors are sticky.

use alloc::vec;
use alloc::vec::Vec;

use platform_api::DomId;

use crate::framing::FrameError;
use crate::qrexec::agent::{self, Agent};
use crate::qrexec::daemon::{self, Daemon, Refusal};
use crate::qrexec::data::{self, DataChannel};
use crate::qrexec::wire::{Exec, Message};
use crate::qrexec::*;

fn msg(m: Message<'_>) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b).unwrap();
    b
}

fn raw(ty: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn hello(v: u32) -> Vec<u8> {
    msg(Message::Hello { version: v })
}

fn drain(out: &mut dyn FnMut(&mut [u8]) -> Option<usize>) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 256];
    while let Some(n) = out(&mut buf) {
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// A daemon after the agent's HELLO at `v`.
fn daemon_at(v: u32) -> Daemon {
    let mut d = Daemon::new(daemon::Limits::DEFAULT);
    assert_eq!(d.handle_input(&hello(v)), Ok(12));
    assert!(matches!(d.poll_event(), Some(daemon::Event::Ready { .. })));
    assert_eq!(
        drain(&mut |b| d.poll_transmit(b)),
        hello(v),
        "the daemon echoes the agent's version"
    );
    d
}

/// An agent after the daemon's HELLO at v4.
fn agent_ready(limits: agent::Limits) -> Agent {
    let mut a = Agent::new(limits);
    assert_eq!(a.handle_input(&hello(4)), Ok(12));
    assert_eq!(a.poll_event(), Some(agent::Event::Ready { version: 3 }));
    let _ = drain(&mut |b| a.poll_transmit(b));
    a
}

fn trigger3(target: &[u8], id_field: [u8; 32], name: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8; 96];
    body[..target.len()].copy_from_slice(target);
    body[64..96].copy_from_slice(&id_field);
    body.extend_from_slice(name);
    raw(0x212, &body)
}

fn id_field(text: &[u8]) -> [u8; 32] {
    let mut f = [0u8; 32];
    f[..text.len()].copy_from_slice(text);
    f
}

#[test]
fn oversize_control_len_refused_before_allocation() {
    let mut a = Agent::new(agent::Limits::DEFAULT);
    let bad = [0x00, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff];
    let e = Error::Frame(FrameError::TooLong {
        len: 0xffff_ffff,
        max: MAX_CONTROL_BODY,
    });
    assert_eq!(a.handle_input(&bad), Err(e));
    assert_eq!(a.handle_input(&hello(3)), Err(e), "sticky");
    assert_eq!(
        a.trigger_service("x", "y"),
        Err(e),
        "sticky for local calls too"
    );
    let mut d = Daemon::new(daemon::Limits::DEFAULT);
    let just_over = [[0x12, 2, 0, 0], (MAX_CONTROL_BODY as u32 + 1).to_le_bytes()].concat();
    let e = Error::Frame(FrameError::TooLong {
        len: MAX_CONTROL_BODY as u64 + 1,
        max: MAX_CONTROL_BODY,
    });
    assert_eq!(d.handle_input(&just_over), Err(e));
}

#[test]
fn data_chunk_over_negotiated_max_refused() {
    for (v, max) in [(2, MAX_DATA_CHUNK_V2), (3, MAX_DATA_CHUNK_V3)] {
        let mut c = DataChannel::caller(v);
        assert_eq!(c.handle_input(&hello(v)), Ok(12));
        let hdr = [0x91, 1, 0, 0];
        let len = ((max + 1) as u32).to_le_bytes();
        let e = c.handle_input(&[hdr, len].concat());
        assert_eq!(
            e,
            Err(Error::Frame(FrameError::TooLong {
                len: max as u64 + 1,
                max
            }))
        );
    }
}

#[test]
fn unknown_type_is_fatal() {
    let mut a = agent_ready(agent::Limits::DEFAULT);
    assert_eq!(
        a.handle_input(&raw(0x999, b"")),
        Err(Error::Wire(WireError::UnknownType(0x999)))
    );
    let mut d = daemon_at(3);
    assert_eq!(
        d.handle_input(&raw(0x204, b"abcd")),
        Err(Error::Wire(WireError::UnknownType(0x204)))
    );
    let mut c = DataChannel::caller(3);
    c.handle_input(&hello(3)).unwrap();
    assert_eq!(
        c.handle_input(&raw(0x194, b"")),
        Err(Error::Wire(WireError::UnknownType(0x194)))
    );
}

#[test]
fn first_message_must_be_hello_of_version_2_or_more() {
    let mut a = Agent::new(agent::Limits::DEFAULT);
    let exec = msg(Message::ServiceRefused {
        request_id: b"SOCKET0",
    });
    assert_eq!(
        a.handle_input(&exec),
        Err(Error::Peer(PeerError::ExpectedHello(
            MsgType::ServiceRefused
        )))
    );
    let mut d = Daemon::new(daemon::Limits::DEFAULT);
    assert_eq!(
        d.handle_input(&hello(1)),
        Err(Error::Peer(PeerError::VersionTooOld(1)))
    );
    let mut c = DataChannel::service(false, 3);
    assert_eq!(
        c.handle_input(&msg(Message::ExitCode(0))),
        Err(Error::Peer(PeerError::ExpectedHello(MsgType::DataExitCode)))
    );
}

#[test]
fn hello_with_wrong_length_is_a_wire_error() {
    let mut d = Daemon::new(daemon::Limits::DEFAULT);
    assert_eq!(
        d.handle_input(&raw(0x300, &[3, 0, 0, 0, 0])),
        Err(Error::Wire(WireError::BadLength {
            msg: MsgType::Hello,
            len: 5
        }))
    );
}

#[test]
fn request_id_outside_charset_is_fatal() {
    let mut d = daemon_at(3);
    let bad = trigger3(b"vault", id_field(b"SOCK/ET1"), b"qubes.SshAgent\0");
    assert_eq!(
        d.handle_input(&bad),
        Err(Error::Peer(PeerError::BadRequestId))
    );
}

#[test]
fn request_id_bytes_after_nul_must_be_nul() {
    let mut d = daemon_at(3);
    let mut f = id_field(b"SOCKET1");
    f[20] = b'x';
    assert_eq!(
        d.handle_input(&trigger3(b"vault", f, b"qubes.SshAgent\0")),
        Err(Error::Peer(PeerError::RequestIdTail))
    );
}

#[test]
fn request_id_without_nul_is_refused() {
    let mut d = daemon_at(3);
    let e = d.handle_input(&trigger3(b"vault", [b'A'; 32], b"qubes.SshAgent\0"));
    assert_eq!(
        e,
        Err(Error::Wire(WireError::Unterminated {
            field: "request_id"
        }))
    );
}

#[test]
fn trigger_service_v2_refused_at_v3() {
    let mut d = daemon_at(3);
    let m = msg(Message::TriggerService {
        service_name: b"qubes.SshAgent",
        target_domain: b"vault",
        request_id: b"SOCKET1",
    });
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Peer(PeerError::WrongVersion {
            msg: MsgType::TriggerService,
            version: 3
        }))
    );
    // ... and accepted at v2.
    let mut d2 = daemon_at(2);
    assert_eq!(d2.handle_input(&m), Ok(m.len()));
    assert!(matches!(
        d2.poll_event(),
        Some(daemon::Event::Trigger { .. })
    ));
}

#[test]
fn trigger_service3_refused_at_v2() {
    let mut d = daemon_at(2);
    let m = trigger3(b"vault", id_field(b"SOCKET1"), b"qubes.SshAgent\0");
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Peer(PeerError::WrongVersion {
            msg: MsgType::TriggerService3,
            version: 2
        }))
    );
}

#[test]
fn trigger_service4_only_at_v4() {
    let m = msg(Message::TriggerService4 {
        source_domain: b"remote",
        target_domain: b"vault",
        request_id: b"SOCKET9",
        service_name: b"qubes.SshAgent+work",
    });
    let mut d = daemon_at(3);
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Peer(PeerError::WrongVersion {
            msg: MsgType::TriggerService4,
            version: 3
        }))
    );
    let mut d4 = daemon_at(4);
    assert_eq!(d4.handle_input(&m), Ok(m.len()));
    let Some(daemon::Event::Trigger {
        source, argument, ..
    }) = d4.poll_event()
    else {
        panic!()
    };
    assert_eq!(
        (source.as_deref(), argument.as_str()),
        (Some("remote"), "work")
    );
    // A v7 agent is echoed 7 but the daemon itself speaks 4.
    let mut d7 = Daemon::new(daemon::Limits::DEFAULT);
    d7.handle_input(&hello(7)).unwrap();
    assert_eq!(d7.version(), Some(4));
}

#[test]
fn service_name_with_nul_inside_is_refused() {
    let mut d = daemon_at(3);
    let m = trigger3(b"vault", id_field(b"SOCKET3"), b"qubes.Ssh\0Agent\0");
    assert_eq!(d.handle_input(&m), Ok(m.len()));
    let id = RequestId::new(b"SOCKET3").unwrap();
    assert_eq!(
        d.poll_event(),
        Some(daemon::Event::TriggerRefused {
            request_id: id,
            reason: Refusal::NulInName
        })
    );
    assert_eq!(
        drain(&mut |b| d.poll_transmit(b)),
        msg(Message::ServiceRefused {
            request_id: b"SOCKET3"
        })
    );
}

#[test]
fn service_name_nul_must_be_last_byte() {
    let mut d = daemon_at(3);
    let m = trigger3(b"vault", id_field(b"SOCKET3"), b"qubes.SshAgent");
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Wire(WireError::Unterminated {
            field: "service_name"
        }))
    );
    let mut d = daemon_at(3);
    let empty_body = trigger3(b"vault", id_field(b"SOCKET3"), b"");
    assert_eq!(
        d.handle_input(&empty_body),
        Err(Error::Wire(WireError::BadLength {
            msg: MsgType::TriggerService3,
            len: 96
        }))
    );
}

#[test]
fn empty_or_plus_first_service_name_is_refused() {
    for (name, reason) in [
        (&b"\0"[..], Refusal::EmptyName),
        (b"+arg\0", Refusal::LeadingPlus),
    ] {
        let mut d = daemon_at(3);
        d.handle_input(&trigger3(b"vault", id_field(b"S1"), name))
            .unwrap();
        let id = RequestId::new(b"S1").unwrap();
        assert_eq!(
            d.poll_event(),
            Some(daemon::Event::TriggerRefused {
                request_id: id,
                reason
            })
        );
    }
}

#[test]
fn target_and_service_names_are_sanitised() {
    let mut d = daemon_at(3);
    d.handle_input(&trigger3(
        b"../evil vm@dispvm:x",
        id_field(b"S1"),
        b"qubes.Ssh Agent+a/b+c\0",
    ))
    .unwrap();
    let Some(daemon::Event::Trigger {
        target,
        service,
        argument,
        ..
    }) = d.poll_event()
    else {
        panic!()
    };
    assert_eq!(target, ".._evil_vm@dispvm:x");
    assert_eq!(service, "qubes.Ssh_Agent");
    assert_eq!(argument, "a_b+c");
}

#[test]
fn connection_terminated_outside_data_ports_is_fatal() {
    let mut d = daemon_at(3);
    let m = msg(Message::ConnectionTerminated {
        connect_domain: 3,
        connect_port: 512,
    });
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Peer(PeerError::BadPort(512)))
    );
    let mut d = daemon_at(3);
    let m = raw(0x211, &[0; 12]);
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Wire(WireError::BadLength {
            msg: MsgType::ConnectionTerminated,
            len: 12
        }))
    );
}

#[test]
fn daemon_refuses_agent_bound_messages_from_the_agent() {
    let mut d = daemon_at(3);
    let m = msg(Message::ExecCmdline(Exec {
        connect_domain: 0,
        connect_port: 513,
        cmdline: b"user:x",
    }));
    assert_eq!(
        d.handle_input(&m),
        Err(Error::Peer(PeerError::UnexpectedMessage(
            MsgType::ExecCmdline
        )))
    );
}

#[test]
fn exec_with_reserved_domid_or_bad_port_is_fatal() {
    let mut a = agent_ready(agent::Limits::DEFAULT);
    let m = msg(Message::ExecCmdline(Exec {
        connect_domain: 0x7ff0,
        connect_port: 513,
        cmdline: b"u:QUBESRPC a b",
    }));
    assert_eq!(
        a.handle_input(&m),
        Err(Error::Peer(PeerError::BadDomId(0x7ff0)))
    );
    let mut a = agent_ready(agent::Limits::DEFAULT);
    let m = msg(Message::JustExec(Exec {
        connect_domain: 3,
        connect_port: 769,
        cmdline: b"u:QUBESRPC a b",
    }));
    assert_eq!(
        a.handle_input(&m),
        Err(Error::Peer(PeerError::BadPort(769)))
    );
}

#[test]
fn cmdline_without_nul_is_a_wire_error() {
    let mut a = agent_ready(agent::Limits::DEFAULT);
    let mut body = vec![3, 0, 0, 0, 1, 2, 0, 0];
    body.extend_from_slice(b"user:QUBESRPC a b");
    assert_eq!(
        a.handle_input(&raw(0x200, &body)),
        Err(Error::Wire(WireError::Unterminated { field: "cmdline" }))
    );
}

#[test]
fn service_connect_for_unknown_request_id_is_fatal() {
    let mut a = agent_ready(agent::Limits::DEFAULT);
    let m = msg(Message::ServiceConnect {
        connect_domain: 3,
        connect_port: 600,
        request_id: b"SOCKET77",
    });
    assert_eq!(
        a.handle_input(&m),
        Err(Error::Peer(PeerError::UnknownRequestId))
    );
    let mut a = agent_ready(agent::Limits::DEFAULT);
    let m = msg(Message::ServiceRefused {
        request_id: b"bad/id",
    });
    assert_eq!(
        a.handle_input(&m),
        Err(Error::Peer(PeerError::BadRequestId))
    );
}

#[test]
fn calls_beyond_max_channels_are_dropped_and_their_port_released() {
    let mut a = agent_ready(agent::Limits {
        max_channels: 1,
        ..agent::Limits::DEFAULT
    });
    let m1 = msg(Message::ExecCmdline(Exec {
        connect_domain: 3,
        connect_port: 513,
        cmdline: b"u:QUBESRPC a+ b",
    }));
    let m2 = msg(Message::ExecCmdline(Exec {
        connect_domain: 4,
        connect_port: 514,
        cmdline: b"u:QUBESRPC a+ c",
    }));
    assert_eq!(a.handle_input(&[m1.clone(), m2].concat()), Ok(2 * m1.len()));
    assert!(matches!(a.poll_event(), Some(agent::Event::Exec { .. })));
    let four = DomId::new(4).unwrap();
    assert_eq!(
        a.poll_event(),
        Some(agent::Event::Overflow {
            peer: four,
            port: 514
        })
    );
    let bye = msg(Message::ConnectionTerminated {
        connect_domain: 4,
        connect_port: 514,
    });
    assert_eq!(drain(&mut |b| a.poll_transmit(b)), bye);
    assert_eq!(
        a.trigger_service("x", "y"),
        Err(Error::Full {
            what: "qrexec channels"
        })
    );
    assert_eq!(
        a.connection_terminated(four, 514),
        Err(Error::InvalidArgument("no such data channel"))
    );
}

#[test]
fn input_stops_while_events_are_not_polled() {
    let mut a = agent_ready(agent::Limits {
        max_events: 1,
        ..agent::Limits::DEFAULT
    });
    let m1 = msg(Message::ExecCmdline(Exec {
        connect_domain: 3,
        connect_port: 513,
        cmdline: b"u:x",
    }));
    let both = [m1.clone(), m1.clone()].concat();
    assert_eq!(a.handle_input(&both), Ok(m1.len()));
    assert!(a.poll_event().is_some());
    assert_eq!(a.handle_input(&both[m1.len()..]), Ok(m1.len()));
}

#[test]
fn data_after_eof_is_fatal() {
    let mut c = DataChannel::caller(3);
    c.handle_input(&hello(3)).unwrap();
    let eof = msg(Message::Data {
        stream: Stream::Stdout,
        data: b"",
    });
    let more = msg(Message::Data {
        stream: Stream::Stdout,
        data: b"x",
    });
    assert_eq!(
        c.handle_input(&[eof, more].concat()),
        Err(Error::Peer(PeerError::DataAfterEof(Stream::Stdout)))
    );
}

#[test]
fn message_after_exit_code_is_fatal() {
    let mut c = DataChannel::caller(3);
    c.handle_input(&hello(3)).unwrap();
    let m = [msg(Message::ExitCode(0)), msg(Message::ExitCode(1))].concat();
    assert_eq!(
        c.handle_input(&m),
        Err(Error::Peer(PeerError::AfterExit(MsgType::DataExitCode)))
    );
}

#[test]
fn streams_only_flow_in_their_direction() {
    let mut s = DataChannel::service(false, 3);
    s.handle_input(&hello(3)).unwrap();
    let m = msg(Message::Data {
        stream: Stream::Stdout,
        data: b"x",
    });
    assert_eq!(
        s.handle_input(&m),
        Err(Error::Peer(PeerError::UnexpectedMessage(
            MsgType::DataStdout
        )))
    );
    let mut s = DataChannel::service(false, 3);
    s.handle_input(&hello(3)).unwrap();
    assert_eq!(
        s.handle_input(&msg(Message::ExitCode(0))),
        Err(Error::Peer(PeerError::UnexpectedMessage(
            MsgType::DataExitCode
        )))
    );
    let mut c = DataChannel::caller(3);
    c.handle_input(&hello(3)).unwrap();
    let m = msg(Message::Data {
        stream: Stream::Stdin,
        data: b"x",
    });
    assert_eq!(
        c.handle_input(&m),
        Err(Error::Peer(PeerError::UnexpectedMessage(
            MsgType::DataStdin
        )))
    );
    assert_eq!(
        c.handle_input(&hello(3)),
        Err(Error::Peer(PeerError::UnexpectedMessage(
            MsgType::DataStdin
        ))),
        "sticky"
    );
}

#[test]
fn second_hello_is_unexpected() {
    let mut c = DataChannel::caller(3);
    c.handle_input(&hello(3)).unwrap();
    assert_eq!(
        c.handle_input(&hello(3)),
        Err(Error::Peer(PeerError::UnexpectedMessage(MsgType::Hello)))
    );
    let mut d = daemon_at(3);
    assert_eq!(
        d.handle_input(&hello(3)),
        Err(Error::Peer(PeerError::UnexpectedMessage(MsgType::Hello)))
    );
}

#[test]
fn data_events_are_bounded_by_bytes() {
    let limits = data::Limits {
        max_events: 100,
        event_bytes: 10,
        out_bytes: 0,
    };
    let mut s = DataChannel::new(
        data::Role::Service { just_exec: false },
        data::Handshake::SendFirst,
        3,
        limits,
    );
    s.handle_input(&hello(3)).unwrap();
    let chunk = msg(Message::Data {
        stream: Stream::Stdin,
        data: &[7u8; 8],
    });
    let three = [chunk.clone(), chunk.clone(), chunk.clone()].concat();
    // Two chunks (16 bytes) pass the 10-byte mark; the third waits.
    assert_eq!(s.handle_input(&three), Ok(2 * chunk.len()));
    while s.poll_event().is_some() {}
    assert_eq!(s.handle_input(&three[2 * chunk.len()..]), Ok(chunk.len()));
}

#[test]
fn just_exec_ignores_stdin() {
    let mut s = DataChannel::service(true, 3);
    s.handle_input(&hello(3)).unwrap();
    assert_eq!(s.poll_event(), Some(data::Event::Ready { version: 3 }));
    let m = msg(Message::Data {
        stream: Stream::Stdin,
        data: b"ignored",
    });
    assert_eq!(s.handle_input(&m), Ok(m.len()));
    assert_eq!(s.poll_event(), None);
}
