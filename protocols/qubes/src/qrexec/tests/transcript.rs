//! Transcripts: agent <-> daemon and caller <-> service in memory, whole and byte at a time; the
//! events each side saw are compared with the expected lists.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::DomId;

use super::pair::{Pair, CHUNKS};
use crate::qrexec::agent::{self, Agent};
use crate::qrexec::daemon::{self, Daemon};
use crate::qrexec::data::{self, DataChannel, Handshake, Role};
use crate::qrexec::*;

fn dom(d: u32) -> DomId {
    DomId::new(d).unwrap()
}

/// An agent and its daemon after HELLO.
fn control(chunk: usize) -> Pair<Agent, Daemon> {
    let mut p = Pair::new(
        Agent::new(agent::Limits::DEFAULT),
        Daemon::new(daemon::Limits::DEFAULT),
        chunk,
    );
    p.drive().unwrap();
    let (a, d) = p.take_events();
    assert_eq!(a, [agent::Event::Ready { version: 3 }]);
    assert_eq!(
        d,
        [daemon::Event::Ready {
            agent_version: 3,
            version: 3
        }]
    );
    p
}

#[test]
fn control_handshake_echoes_agent_version() {
    for chunk in CHUNKS {
        let p = control(chunk);
        assert_eq!(p.a.version(), Some(3));
        assert_eq!(p.b.version(), Some(3));
    }
}

#[test]
fn agent_sends_hello_before_daemon_connects() {
    let mut a = Agent::new(agent::Limits::DEFAULT);
    let mut out = [0u8; 64];
    let n = a.poll_transmit(&mut out).unwrap();
    assert_eq!(&out[..n], &[0x00, 0x03, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0]);
    assert!(a.poll_transmit(&mut out).is_none());
}

/// Drains a data pair and returns all payload bytes per stream.
fn collect(events: &[data::Event], stream: Stream) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            data::Event::Data { stream: s, data } if *s == stream => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

#[test]
fn vm_to_vm_call_full_flow() {
    let (a_id, b_id) = (dom(5), dom(7));
    for chunk in CHUNKS {
        let mut ctl_a = control(chunk);
        let mut ctl_b = control(chunk);

        // 1. A's agent triggers; A's daemon validates and asks policy.
        let id = ctl_a
            .a
            .trigger_service("vault-b", "qubes.SshAgent")
            .unwrap();
        assert_eq!(id.as_str(), "SOCKET0");
        ctl_a.drive().unwrap();
        let (_, d) = ctl_a.take_events();
        assert_eq!(
            d,
            [daemon::Event::Trigger {
                target: "vault-b".into(),
                service: "qubes.SshAgent".into(),
                argument: String::new(),
                source: None,
                request_id: id,
            }]
        );

        // 2. Allowed: B's daemon allocates a port and forwards EXEC_CMDLINE to B's agent.
        let port = ctl_b
            .b
            .exec(a_id, b"user:QUBESRPC qubes.SshAgent+ work-a", false)
            .unwrap();
        assert_eq!(port, FIRST_DATA_PORT);
        ctl_b.drive().unwrap();
        let (b_events, _) = ctl_b.take_events();
        let call = ServiceCall {
            user: "user".into(),
            nogui: false,
            service: "qubes.SshAgent".into(),
            argument: Some(String::new()),
            source: "work-a".into(),
        };
        assert_eq!(
            b_events,
            [agent::Event::Exec {
                peer: a_id,
                port,
                just_exec: false,
                command: Ok(Command::Service(call))
            }]
        );

        // 3. A's daemon sends SERVICE_CONNECT to A's agent.
        ctl_a.b.service_connect(b_id, port, id).unwrap();
        ctl_a.drive().unwrap();
        let (a_events, _) = ctl_a.take_events();
        assert_eq!(
            a_events,
            [agent::Event::ServiceConnect {
                peer: b_id,
                port,
                request_id: id
            }]
        );

        // 4. Data: A is the caller (vchan server), B the service (vchan client); both send first.
        let mut dp = Pair::new(
            DataChannel::caller(AGENT_VERSION),
            DataChannel::service(false, AGENT_VERSION),
            chunk,
        );
        dp.drive().unwrap();
        let (c, s) = dp.take_events();
        assert_eq!(c, [data::Event::Ready { version: 3 }]);
        assert_eq!(s, [data::Event::Ready { version: 3 }]);

        assert_eq!(dp.a.send(Stream::Stdin, b"\0\0\0\x01\x0b").unwrap(), 5);
        dp.a.send_eof(Stream::Stdin).unwrap();
        dp.drive().unwrap();
        let (_, s) = dp.take_events();
        assert_eq!(collect(&s, Stream::Stdin), b"\0\0\0\x01\x0b");
        assert_eq!(s.last(), Some(&data::Event::Eof(Stream::Stdin)));

        let reply: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut sent = 0;
        while sent < reply.len() {
            sent += dp.b.send(Stream::Stdout, &reply[sent..]).unwrap();
            dp.drive().unwrap();
        }
        dp.b.send(Stream::Stderr, b"warning\n").unwrap();
        dp.b.send_exit(0).unwrap();
        dp.drive().unwrap();
        let (c, _) = dp.take_events();
        assert_eq!(collect(&c, Stream::Stdout), reply);
        assert_eq!(collect(&c, Stream::Stderr), b"warning\n");
        assert!(c.iter().all(
            |e| !matches!(e, data::Event::Data { data, .. } if data.len() > MAX_DATA_CHUNK_V3)
        ));
        assert_eq!(
            c[c.len() - 3..],
            [
                data::Event::Eof(Stream::Stdout),
                data::Event::Eof(Stream::Stderr),
                data::Event::Exit(0)
            ]
        );
        assert_eq!(dp.a.exit_code(), Some(0));
        assert!(dp.a.is_finished() && dp.b.is_finished());
        dp.a.handle_close().unwrap();

        // 5. Both agents report the closed channel; only B's daemon had allocated the port.
        ctl_a.a.connection_terminated(b_id, port).unwrap();
        ctl_b.a.connection_terminated(a_id, port).unwrap();
        ctl_a.drive().unwrap();
        ctl_b.drive().unwrap();
        let released = |p: &mut Pair<Agent, Daemon>| p.take_events().1;
        assert_eq!(
            released(&mut ctl_a),
            [daemon::Event::ConnectionTerminated {
                peer: 7,
                port,
                released: false
            }]
        );
        assert_eq!(
            released(&mut ctl_b),
            [daemon::Event::ConnectionTerminated {
                peer: 5,
                port,
                released: true
            }]
        );
        assert_eq!(ctl_a.a.channels_in_use(), 0);
        // The port is free again.
        assert_eq!(ctl_b.b.exec(a_id, b"user:QUBESRPC x+ y", false), Ok(port));
    }
}

#[test]
fn refused_call_gives_caller_126() {
    for chunk in CHUNKS {
        let mut p = control(chunk);
        let id = p.a.trigger_service("@default", "qubes.Filecopy").unwrap();
        p.drive().unwrap();
        assert!(matches!(
            p.take_events().1.as_slice(),
            [daemon::Event::Trigger { .. }]
        ));
        p.b.refuse(id).unwrap();
        p.drive().unwrap();
        let (a, _) = p.take_events();
        assert_eq!(a, [agent::Event::Refused { request_id: id }]);
        assert_eq!(p.a.channels_in_use(), 0);
        // What a caller does with the event: exit with 126.
        let status = match a[0] {
            agent::Event::Refused { .. } => EXIT_REFUSED,
            _ => 0,
        };
        assert_eq!(status, 126);
    }
}

#[test]
fn dom0_just_exec_sends_only_exit_code() {
    for chunk in CHUNKS {
        let mut p = control(chunk);
        let port =
            p.b.exec(DomId::DOM0, b"root:QUBESRPC qubes.SetDateTime dom0", true)
                .unwrap();
        p.drive().unwrap();
        let (a, _) = p.take_events();
        let agent::Event::Exec {
            peer,
            port: got,
            just_exec: true,
            command: Ok(Command::Service(call)),
        } = &a[0]
        else {
            panic!("{a:?}");
        };
        assert_eq!((*peer, *got), (DomId::DOM0, port));
        assert_eq!(
            (
                call.service.as_str(),
                call.argument.as_deref(),
                call.source.as_str()
            ),
            ("qubes.SetDateTime", None, "dom0")
        );

        let mut dp = Pair::new(
            DataChannel::caller(DAEMON_VERSION),
            DataChannel::service(true, AGENT_VERSION),
            chunk,
        );
        dp.drive().unwrap();
        assert_eq!(
            dp.b.send(Stream::Stdout, b"x"),
            Err(Error::NotAllowed("this role does not send that stream"))
        );
        dp.b.send_exit(0).unwrap();
        let mut out = [0u8; 64];
        let n = dp.b.poll_transmit(&mut out).unwrap();
        assert_eq!(&out[..n], &[0x93, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    }
}

#[test]
fn dom0_running_a_service_reads_hello_first() {
    for chunk in CHUNKS {
        let dom0 = DataChannel::new(
            Role::Service { just_exec: false },
            Handshake::ReadFirst,
            DAEMON_VERSION,
            data::Limits::DEFAULT,
        );
        let mut out = [0u8; 16];
        let mut dp = Pair::new(DataChannel::caller(AGENT_VERSION), dom0, chunk);
        assert!(
            dp.b.poll_transmit(&mut out).is_none(),
            "a read-first end must not speak first"
        );
        dp.drive().unwrap();
        let (c, s) = dp.take_events();
        assert_eq!(c, [data::Event::Ready { version: 3 }]);
        assert_eq!(s, [data::Event::Ready { version: 3 }]);
        dp.b.send_exit(EXIT_NOT_FOUND).unwrap();
        dp.drive().unwrap();
        let (c, _) = dp.take_events();
        assert_eq!(
            c,
            [
                data::Event::Eof(Stream::Stdout),
                data::Event::Eof(Stream::Stderr),
                data::Event::Exit(127)
            ]
        );
    }
}

#[test]
fn v2_daemon_gets_trigger_service_v2_and_4k_chunks() {
    // A v2 peer: drive the agent by hand with a v2 HELLO.
    let mut a = Agent::new(agent::Limits::DEFAULT);
    let hello2 = [0x00, 0x03, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0];
    assert_eq!(a.handle_input(&hello2), Ok(12));
    assert_eq!(a.poll_event(), Some(agent::Event::Ready { version: 2 }));
    let mut out = [0u8; 512];
    let _ = a.poll_transmit(&mut out);
    a.trigger_service("ssh-vault", "qubes.SshAgent+work")
        .unwrap();
    let n = a.poll_transmit(&mut out).unwrap();
    assert_eq!(
        wire::Message::parse(&out[..n]).unwrap().msg_type(),
        MsgType::TriggerService
    );

    let mut dp = Pair::new(
        DataChannel::caller(AGENT_VERSION),
        DataChannel::service(false, PROTOCOL_V2),
        usize::MAX,
    );
    dp.drive().unwrap();
    dp.b.send(Stream::Stdout, &vec![1u8; 10_000]).unwrap();
    dp.drive().unwrap();
    let (c, _) = dp.take_events();
    let sizes: Vec<usize> = c
        .iter()
        .filter_map(|e| {
            if let data::Event::Data { data, .. } = e {
                Some(data.len())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes, [4096, 4096, 1808]);
}

#[test]
fn caller_closed_before_exit_code_is_an_error() {
    let mut dp = Pair::new(
        DataChannel::caller(AGENT_VERSION),
        DataChannel::service(false, AGENT_VERSION),
        1,
    );
    dp.drive().unwrap();
    dp.b.send(Stream::Stdout, b"partial").unwrap();
    dp.drive().unwrap();
    assert_eq!(
        dp.a.handle_close(),
        Err(Error::Peer(PeerError::ClosedEarly))
    );
    assert_eq!(
        dp.a.handle_input(&[0]),
        Err(Error::Peer(PeerError::ClosedEarly)),
        "sticky"
    );
    assert!(
        dp.b.handle_close().is_ok(),
        "the service side has no exit code to wait for"
    );
}

#[test]
fn caller_sends_stdin_eof_when_exit_code_arrives_first() {
    let mut dp = Pair::new(
        DataChannel::caller(AGENT_VERSION),
        DataChannel::service(false, AGENT_VERSION),
        3,
    );
    dp.drive().unwrap();
    dp.b.send_exit(3).unwrap();
    dp.drive().unwrap();
    let (_, s) = dp.take_events();
    assert_eq!(
        s,
        [
            data::Event::Ready { version: 3 },
            data::Event::Eof(Stream::Stdin)
        ]
    );
    assert_eq!(
        dp.a.send(Stream::Stdin, b"late"),
        Err(Error::NotAllowed("data after EOF"))
    );
}

#[test]
fn daemon_replaces_default_user() {
    let mut p = control(usize::MAX);
    p.b.set_default_user("user").unwrap();
    p.b.exec(dom(4), b"DEFAULT:QUBESRPC qubes.Filecopy+ src", false)
        .unwrap();
    p.drive().unwrap();
    let (a, _) = p.take_events();
    let agent::Event::Exec {
        command: Ok(Command::Service(call)),
        ..
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(call.user, "user");
    assert_eq!(
        p.b.set_default_user("a:b"),
        Err(Error::InvalidArgument("default user"))
    );
}
