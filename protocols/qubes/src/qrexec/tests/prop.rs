//! Properties: `parse(emit(x)) == x` for every message shape, the decoders and machines never
//! panic on arbitrary bytes, and service calls survive `to_cmdline` -> `parse`.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::framing::FrameReader;
use crate::qrexec::agent::{self, Agent};
use crate::qrexec::daemon::{self, Daemon};
use crate::qrexec::wire::{Exec, Message, QrexecFraming};
use crate::qrexec::*;

/// An owned message, so proptest can generate it; [`Owned::msg`] borrows it as a [`Message`].
#[derive(Debug, Clone)]
enum Owned {
    Hello(u32),
    Exec(bool, u32, u32, Vec<u8>),
    Connect(u32, u32, Vec<u8>),
    Refused(Vec<u8>),
    T2(Vec<u8>, Vec<u8>, Vec<u8>),
    Term(u32, u32),
    T3(Vec<u8>, Vec<u8>, Vec<u8>),
    T4(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>),
    Data(u8, Vec<u8>),
    Exit(i32),
}

impl Owned {
    fn msg(&self) -> Message<'_> {
        match self {
            Self::Hello(v) => Message::Hello { version: *v },
            Self::Exec(j, d, p, c) => {
                let e = Exec {
                    connect_domain: *d,
                    connect_port: *p,
                    cmdline: c,
                };
                if *j {
                    Message::JustExec(e)
                } else {
                    Message::ExecCmdline(e)
                }
            }
            Self::Connect(d, p, id) => Message::ServiceConnect {
                connect_domain: *d,
                connect_port: *p,
                request_id: id,
            },
            Self::Refused(id) => Message::ServiceRefused { request_id: id },
            Self::T2(s, t, id) => Message::TriggerService {
                service_name: s,
                target_domain: t,
                request_id: id,
            },
            Self::Term(d, p) => Message::ConnectionTerminated {
                connect_domain: *d,
                connect_port: *p,
            },
            Self::T3(t, id, s) => Message::TriggerService3 {
                target_domain: t,
                request_id: id,
                service_name: s,
            },
            Self::T4(src, t, id, s) => Message::TriggerService4 {
                source_domain: src,
                target_domain: t,
                request_id: id,
                service_name: s,
            },
            Self::Data(k, d) => {
                let stream = [Stream::Stdin, Stream::Stdout, Stream::Stderr][usize::from(*k % 3)];
                Message::Data { stream, data: d }
            }
            Self::Exit(c) => Message::ExitCode(*c),
        }
    }
}

/// Text for a fixed `char[N]` field: no NUL, at most `n - 1` bytes.
fn fixed(n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..n)
}

fn owned() -> impl Strategy<Value = Owned> {
    let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        any::<u32>().prop_map(Owned::Hello),
        (any::<bool>(), any::<u32>(), any::<u32>(), fixed(300))
            .prop_map(|(j, d, p, c)| Owned::Exec(j, d, p, c)),
        (any::<u32>(), any::<u32>(), fixed(32)).prop_map(|(d, p, i)| Owned::Connect(d, p, i)),
        fixed(32).prop_map(Owned::Refused),
        (fixed(64), fixed(32), fixed(32)).prop_map(|(s, t, i)| Owned::T2(s, t, i)),
        (any::<u32>(), any::<u32>()).prop_map(|(d, p)| Owned::Term(d, p)),
        (fixed(64), fixed(32), bytes(300)).prop_map(|(t, i, s)| Owned::T3(t, i, s)),
        (fixed(64), fixed(64), fixed(32), bytes(300))
            .prop_map(|(a, t, i, s)| Owned::T4(a, t, i, s)),
        (any::<u8>(), bytes(5000)).prop_map(|(k, d)| Owned::Data(k, d)),
        any::<i32>().prop_map(Owned::Exit),
    ]
}

proptest! {
    #[test]
    fn parse_of_emit_is_identity(x in owned()) {
        let m = x.msg();
        let mut buf = vec![0u8; m.buffer_len()];
        prop_assert_eq!(m.emit(&mut buf), Ok(buf.len()));
        prop_assert_eq!(Message::parse(&buf), Ok(m));
        // The framing passes every message we emit whole at v3 (bodies here stay under the caps).
        let mut framing = QrexecFraming::new();
        framing.set_version(PROTOCOL_V3);
        let mut r = FrameReader::new(framing);
        prop_assert_eq!(r.push(&buf), Ok(buf.len()));
        prop_assert_eq!(r.take(), Some(buf));
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
        let _ = cmdline::parse(&bytes);
    }

    #[test]
    fn machines_never_panic_on_arbitrary_input(bytes in proptest::collection::vec(any::<u8>(), 0..600), hello in 0u32..6) {
        let mut prefix = vec![0x00, 0x03, 0, 0, 4, 0, 0, 0];
        prefix.extend_from_slice(&hello.to_le_bytes());
        let input = [prefix, bytes].concat();
        let mut a = Agent::new(agent::Limits::DEFAULT);
        let mut d = Daemon::new(daemon::Limits::DEFAULT);
        let mut c = DataChannel::caller(3);
        let mut s = DataChannel::service(false, 3);
        let mut out = [0u8; 128];
        for chunk in input.chunks(5) {
            let _ = a.handle_input(chunk);
            let _ = d.handle_input(chunk);
            let _ = c.handle_input(chunk);
            let _ = s.handle_input(chunk);
            while a.poll_event().is_some() || d.poll_event().is_some() || c.poll_event().is_some() || s.poll_event().is_some() {}
            while a.poll_transmit(&mut out).is_some() || d.poll_transmit(&mut out).is_some() {}
        }
    }

    #[test]
    fn service_call_survives_cmdline(
        user in "[a-z]{1,8}",
        nogui in any::<bool>(),
        service in "[A-Za-z0-9._-]{1,40}",
        argument in proptest::option::of("[A-Za-z0-9+._-]{0,20}"),
        source in "[a-z0-9-]{1,20}",
    ) {
        let call = ServiceCall { user, nogui, service, argument, source };
        let line = call.to_cmdline();
        prop_assert_eq!(cmdline::parse(line.as_bytes()), Ok(Command::Service(call)));
    }

    #[test]
    fn chunks_reassemble_at_any_size(len in 0usize..200_000, v in 2u32..5) {
        let mut s = DataChannel::service(false, v);
        let mut c = DataChannel::caller(3);
        let mut buf = vec![0u8; 70_000];
        let mut pump = |from: &mut DataChannel, to: &mut DataChannel| {
            while let Some(n) = from.poll_transmit(&mut buf) {
                let mut off = 0;
                while off < n {
                    off += to.handle_input(&buf[off..n]).unwrap();
                    while to.poll_event().is_some() {}
                }
            }
        };
        pump(&mut s, &mut c);
        pump(&mut c, &mut s);
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let max = max_chunk(v.min(3));
        let mut sent = 0;
        let mut got = Vec::new();
        while sent < data.len() {
            sent += s.send(Stream::Stdout, &data[sent..]).unwrap();
            while let Some(n) = s.poll_transmit(&mut buf) {
                let mut off = 0;
                while off < n {
                    off += c.handle_input(&buf[off..n]).unwrap();
                    while let Some(e) = c.poll_event() {
                        if let data::Event::Data { data, .. } = e {
                            prop_assert!(data.len() <= max);
                            got.extend(data);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(got, data);
    }
}

#[test]
fn cmdline_forms() {
    let svc = |user: &str, service: &str, argument: Option<&str>, source: &str| {
        Ok(Command::Service(ServiceCall {
            user: user.into(),
            nogui: false,
            service: service.into(),
            argument: argument.map(String::from),
            source: source.into(),
        }))
    };
    let p = |s: &str| cmdline::parse(s.as_bytes());
    assert_eq!(
        p("user:QUBESRPC qubes.SshAgent+ work"),
        svc("user", "qubes.SshAgent", Some(""), "work")
    );
    assert_eq!(
        p("user:QUBESRPC qubes.SshAgent+work sys-firewall"),
        svc("user", "qubes.SshAgent", Some("work"), "sys-firewall")
    );
    assert_eq!(
        p("root:QUBESRPC qubes.WaitForSession dom0"),
        svc("root", "qubes.WaitForSession", None, "dom0")
    );
    assert_eq!(
        p("user:QUBESRPC a+b+c src keyword adminvm"),
        svc("user", "a", Some("b+c"), "src")
    );
    let Ok(Command::Service(c)) = p("user:nogui:QUBESRPC qubes.Filecopy+ work") else {
        panic!()
    };
    assert!(c.nogui);
    assert_eq!(c.service_and_arg(), "qubes.Filecopy+");
    assert_eq!(
        p("user:xterm -e ls"),
        Ok(Command::Shell {
            user: "user".into(),
            nogui: false,
            command: "xterm -e ls".into()
        })
    );
    assert_eq!(
        p("user:QUBESRPCX a b"),
        Ok(Command::Shell {
            user: "user".into(),
            nogui: false,
            command: "QUBESRPCX a b".into()
        })
    );
    assert_eq!(p("no user here"), Err(cmdline::CmdlineError::NoUser));
    assert_eq!(p(":QUBESRPC a b"), Err(cmdline::CmdlineError::NoUser));
    assert_eq!(p("u:QUBESRPC a+b"), Err(cmdline::CmdlineError::NoSource));
    assert_eq!(p("u:QUBESRPC a+b "), Err(cmdline::CmdlineError::NoSource));
    assert_eq!(
        p("u:QUBESRPC a/b src"),
        Err(cmdline::CmdlineError::Name(names::NameError::BadChar(b'/')))
    );
    assert_eq!(
        p("u:QUBESRPC +arg src"),
        Err(cmdline::CmdlineError::Name(names::NameError::Empty))
    );
    let long = alloc::format!("u:QUBESRPC {} src", "s".repeat(256));
    assert_eq!(
        p(&long),
        Err(cmdline::CmdlineError::Name(names::NameError::TooLong(256)))
    );
    let ok = alloc::format!("u:QUBESRPC {}+{} src", "s".repeat(255), "a".repeat(1000));
    assert!(matches!(p(&ok), Ok(Command::Service(_))));
    assert_eq!(
        cmdline::parse(b"u:\xff"),
        Err(cmdline::CmdlineError::NotUtf8)
    );
}

#[test]
fn request_ids_follow_the_daemon_rule() {
    assert!(RequestId::new(b"SOCKET12").is_some());
    assert!(RequestId::new(b"with space_-.").is_some());
    assert!(RequestId::new(&[b'a'; 31]).is_some());
    assert!(RequestId::new(&[b'a'; 32]).is_none());
    assert!(RequestId::new(b"a+b").is_none());
    let mut f = [0u8; 32];
    f[..3].copy_from_slice(b"abc");
    assert_eq!(RequestId::from_field(&f).map(|i| i.as_str().len()), Ok(3));
    f[31] = 1;
    assert_eq!(RequestId::from_field(&f), Err(PeerError::RequestIdTail));
    assert_eq!(
        RequestId::from_field(&[b'a'; 32]),
        Err(PeerError::BadRequestId)
    );
}

#[test]
fn emit_refuses_text_longer_than_its_field() {
    let m = Message::ServiceRefused {
        request_id: &[b'a'; 32],
    };
    let mut buf = [0u8; 40];
    assert_eq!(
        m.emit(&mut buf),
        Err(EmitError::FieldTooLong {
            field: "request_id",
            max: 31
        })
    );
    assert_eq!(
        m.emit(&mut buf[..39]),
        Err(EmitError::BufferTooSmall { needed: 40 })
    );
}

#[test]
fn agent_request_ids_skip_pending_ones_and_wrap() {
    let mut a = Agent::new(agent::Limits::DEFAULT);
    a.handle_input(&[0x00, 0x03, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0])
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| String::from(a.trigger_service("b", "s").unwrap().as_str()))
        .collect();
    assert_eq!(ids, ["SOCKET0", "SOCKET1", "SOCKET2"]);
    assert_eq!(
        a.trigger_service("b", "bad name"),
        Err(Error::InvalidArgument("service name"))
    );
    assert_eq!(
        a.trigger_service("b/c", "s"),
        Err(Error::InvalidArgument("target qube"))
    );
    let huge = alloc::format!("s+{}", "a".repeat(4000));
    assert_eq!(
        a.trigger_service("b", &huge),
        Err(Error::InvalidArgument(
            "service name too long for the control channel"
        ))
    );
}
