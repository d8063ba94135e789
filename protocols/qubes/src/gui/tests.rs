//! Transcripts: agent against daemon in memory, whole and byte-at-a-time; hostile peers on
//! both sides; properties.

use super::wire::*;
use super::*;
use crate::framing::FrameError;
use alloc::vec;
use alloc::vec::Vec;
use platform_api::GrantRef;
use proptest::prelude::*;

const W: WindowId = WindowId(1);

struct Pair {
    agent: Agent,
    daemon: Daemon,
    to_daemon: Vec<u8>,
    to_agent: Vec<u8>,
    chunk: usize,
    agent_events: Vec<Event>,
    daemon_events: Vec<DaemonEvent>,
}

impl Pair {
    fn new(chunk: usize) -> Self {
        Pair {
            agent: Agent::new(AgentLimits::DEFAULT),
            daemon: Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(1920, 1080)),
            to_daemon: Vec::new(),
            to_agent: Vec::new(),
            chunk,
            agent_events: Vec::new(),
            daemon_events: Vec::new(),
        }
    }

    fn step(&mut self) -> bool {
        let mut progress = false;
        let mut buf = vec![0; self.chunk];
        if let Some(n) = self.agent.poll_transmit(&mut buf) {
            self.to_daemon.extend_from_slice(&buf[..n]);
            progress = true;
        }
        if let Some(n) = self.daemon.poll_transmit(&mut buf) {
            self.to_agent.extend_from_slice(&buf[..n]);
            progress = true;
        }
        if !self.to_daemon.is_empty() {
            let k = self.to_daemon.len().min(self.chunk);
            let used = self
                .daemon
                .handle_input(&self.to_daemon[..k])
                .expect("daemon input");
            self.to_daemon.drain(..used);
            progress |= used > 0;
        }
        if !self.to_agent.is_empty() {
            let k = self.to_agent.len().min(self.chunk);
            let used = self
                .agent
                .handle_input(&self.to_agent[..k])
                .expect("agent input");
            self.to_agent.drain(..used);
            progress |= used > 0;
        }
        while let Some(e) = self.agent.poll_event() {
            self.agent_events.push(e);
            progress = true;
        }
        while let Some(e) = self.daemon.poll_event() {
            self.daemon_events.push(e);
            progress = true;
        }
        progress
    }

    fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never went idle");
    }

    fn connected(chunk: usize) -> Self {
        let mut p = Pair::new(chunk);
        p.drive();
        assert!(p.agent.is_ready());
        p.agent_events.clear();
        p.daemon_events.clear();
        p
    }
}

fn handshake(chunk: usize) {
    let mut p = Pair::new(chunk);
    p.drive();
    assert_eq!(
        p.agent_events,
        [Event::Connected {
            version: Version::V1_8,
            xconf: XConf::for_screen(1920, 1080)
        }]
    );
    assert_eq!(
        p.daemon_events,
        [DaemonEvent::Connected {
            agent: Version::V1_8,
            negotiated: Version::V1_8
        }]
    );
    assert_eq!(p.agent.version(), Version::V1_8);
    assert_eq!(p.daemon.version(), Version::V1_8);
}

#[test]
fn handshake_whole() {
    handshake(4096);
}

#[test]
fn handshake_byte_at_a_time() {
    handshake(1);
}

#[test]
fn daemon_sends_only_xconf_to_a_1_1_agent() {
    let vf = test_vectors::load("gui.json");
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(1920, 1080));
    d.handle_input(&vf.get("msg_version 1.1 from agent").bytes())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = d.poll_transmit(&mut buf).unwrap();
    assert_eq!(&buf[..n], &vf.get("msg_xconf 1920x1080").bytes()[..]);
    assert_eq!(d.version(), Version::V1_1);
}

#[test]
fn daemon_answers_a_1_7_agent_with_1_7_then_xconf() {
    let vf = test_vectors::load("gui.json");
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(1920, 1080));
    d.handle_input(&vf.get("msg_version 1.7 from agent").bytes())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = d.poll_transmit(&mut buf).unwrap();
    let expected = [
        vf.get("msg_version 1.7 from daemon").bytes(),
        vf.get("msg_xconf 1920x1080").bytes(),
    ]
    .concat();
    assert_eq!(&buf[..n], &expected[..]);
}

#[test]
fn agent_first_bytes_are_the_1_8_version_word() {
    let mut a = Agent::default();
    let mut buf = [0u8; 16];
    assert_eq!(a.poll_transmit(&mut buf), Some(4));
    assert_eq!(&buf[..4], &0x0001_0008u32.to_le_bytes());
}

fn lifecycle(chunk: usize) {
    let mut p = Pair::connected(chunk);
    let a = &mut p.agent;
    a.create_window(W, 100, 50, 64, 48).unwrap();
    a.set_title(W, "viewer: photo.png").unwrap();
    let hints = WindowHints {
        flags: 48,
        min_width: 64,
        min_height: 48,
        max_width: 64,
        max_height: 48,
        ..Default::default()
    };
    a.set_hints(W, hints).unwrap();
    a.configure(W, 100, 50, 64, 48).unwrap();
    let refs = [GrantRef(10), GrantRef(11), GrantRef(12)];
    a.window_dump(W, 64, 48, &refs).unwrap();
    a.map(W).unwrap();
    a.shm_image(W, 0, 0, 64, 48).unwrap();
    p.drive();
    let geom = Configure {
        x: 100,
        y: 50,
        width: 64,
        height: 48,
        override_redirect: 0,
    };
    assert_eq!(
        p.daemon_events,
        [
            DaemonEvent::Created(
                W,
                Create {
                    x: 100,
                    y: 50,
                    width: 64,
                    height: 48,
                    parent: 0,
                    override_redirect: 0
                }
            ),
            DaemonEvent::Title(W, WmName::new("viewer: photo.png")),
            DaemonEvent::Hints(W, hints),
            DaemonEvent::Configured(W, geom),
            DaemonEvent::Dump(
                W,
                WindowDumpHdr {
                    ty: 0,
                    width: 64,
                    height: 48,
                    bpp: 32
                },
                refs.to_vec()
            ),
            DaemonEvent::Mapped(
                W,
                MapInfo {
                    transient_for: 0,
                    override_redirect: 0
                }
            ),
            DaemonEvent::Damage(
                W,
                ShmImage {
                    x: 0,
                    y: 0,
                    width: 64,
                    height: 48
                }
            ),
        ]
    );
    assert!(p.agent_events.is_empty());
}

#[test]
fn window_lifecycle_whole() {
    lifecycle(1 << 20);
}

#[test]
fn window_lifecycle_byte_at_a_time() {
    lifecycle(1);
}

fn configure_round_trip(chunk: usize) {
    let mut p = Pair::connected(chunk);
    p.agent.create_window(W, 0, 0, 640, 480).unwrap();
    p.drive();
    p.daemon_events.clear();
    let user = Configure {
        x: -8,
        y: 31,
        width: 1280,
        height: 720,
        override_redirect: 0,
    };
    p.daemon.configure(W, user).unwrap();
    assert_eq!(
        p.daemon.configure(W, user),
        Err(LocalError::Busy(W)),
        "one CONFIGURE in flight per window"
    );
    p.drive();
    assert_eq!(p.agent_events, [Event::Configure(W, user)]);
    assert_eq!(p.daemon_events, [DaemonEvent::Configured(W, user)]);
    p.daemon
        .configure(W, Configure { width: 800, ..user })
        .unwrap();
}

#[test]
fn configure_round_trip_whole() {
    configure_round_trip(4096);
}

#[test]
fn configure_round_trip_byte_at_a_time() {
    configure_round_trip(1);
}

#[test]
fn oversized_user_configure_is_clamped_so_the_echo_matches() {
    let mut p = Pair::connected(4096);
    p.agent.create_window(W, 0, 0, 10, 10).unwrap();
    p.drive();
    let huge = Configure {
        x: 0,
        y: 0,
        width: 99_999,
        height: 99_999,
        override_redirect: 0,
    };
    p.daemon.configure(W, huge).unwrap();
    p.drive();
    let clamped = Configure {
        width: MAX_WINDOW_WIDTH,
        height: MAX_WINDOW_HEIGHT,
        ..huge
    };
    assert_eq!(p.agent_events, [Event::Configure(W, clamped)]);
    p.daemon.configure(W, clamped).unwrap();
}

#[test]
fn dump_then_ack() {
    let mut p = Pair::connected(4096);
    p.agent.create_window(W, 0, 0, 32, 32).unwrap();
    p.agent.window_dump(W, 32, 32, &[GrantRef(7)]).unwrap();
    p.drive();
    assert!(
        matches!(p.daemon_events.last(), Some(DaemonEvent::Dump(W, _, r)) if r == &[GrantRef(7)])
    );
    p.daemon.ack_dump(W).unwrap();
    p.drive();
    assert_eq!(p.agent_events, [Event::DumpAcked(W)]);
}

#[test]
fn close_destroy_ack() {
    let mut p = Pair::connected(3);
    p.agent.create_window(W, 0, 0, 32, 32).unwrap();
    p.drive();
    p.daemon.close(W).unwrap();
    p.drive();
    assert_eq!(p.agent_events, [Event::Close(W)]);
    p.agent.destroy(W).unwrap();
    assert_eq!(
        p.agent.create_window(W, 0, 0, 1, 1),
        Err(LocalError::WindowExists(W)),
        "id held until the echo"
    );
    assert_eq!(p.agent.map(W), Err(LocalError::Busy(W)));
    p.drive();
    assert_eq!(p.agent_events, [Event::Close(W), Event::Destroyed(W)]);
    assert!(p.daemon_events.contains(&DaemonEvent::Destroyed(W)));
    assert!(!p.daemon.has_window(W));
    p.agent.create_window(W, 0, 0, 1, 1).unwrap();
    p.drive();
    assert!(p.daemon.has_window(W));
}

#[test]
fn input_events_reach_the_agent() {
    let mut p = Pair::connected(5);
    p.agent.create_window(W, 0, 0, 32, 32).unwrap();
    p.drive();
    let k = Keypress {
        ty: 2,
        x: 1,
        y: 2,
        state: 1,
        keycode: 38,
    };
    let b = Button {
        ty: 4,
        x: 3,
        y: 4,
        state: 0,
        button: 1,
    };
    p.daemon.send_input(W, &Message::Keypress(k)).unwrap();
    p.daemon.send_input(W, &Message::Button(b)).unwrap();
    p.daemon.send_input(W, &Message::ClipboardReq).unwrap();
    p.daemon.clipboard_data(W, b"pasted").unwrap();
    assert!(p
        .daemon
        .send_input(W, &Message::Create(Create::default()))
        .is_err());
    p.drive();
    p.agent.clipboard_data(W, b"copied").unwrap();
    p.drive();
    assert_eq!(
        p.agent_events,
        [
            Event::Key(W, k),
            Event::Button(W, b),
            Event::ClipboardRequest(W),
            Event::ClipboardData(W, b"pasted".to_vec())
        ]
    );
    assert_eq!(
        p.daemon_events.last(),
        Some(&DaemonEvent::ClipboardData(b"copied".to_vec()))
    );
}

#[test]
fn agent_local_rules() {
    let mut a = Agent::default();
    assert_eq!(
        a.create_window(W, 0, 0, 1, 1),
        Err(LocalError::NotConnected)
    );
    let mut p = Pair::connected(4096);
    assert_eq!(
        p.agent.create_window(WindowId(0), 0, 0, 1, 1),
        Err(LocalError::WindowZero)
    );
    assert_eq!(p.agent.map(W), Err(LocalError::NoSuchWindow(W)));
    p.agent.create_window(W, 0, 0, 100_000, 100_000).unwrap();
    assert!(matches!(
        p.agent.window_dump(W, 64, 48, &[GrantRef(1)]),
        Err(LocalError::Invalid(WireError::DumpRefs(_)))
    ));
    let big = vec![b'x'; MAX_CLIPBOARD_1_8];
    assert!(p.agent.clipboard_data(W, &big).is_err());
    p.drive();
    assert!(
        matches!(p.daemon_events[0], DaemonEvent::Created(W, c) if c.width == MAX_WINDOW_WIDTH && c.height == MAX_WINDOW_HEIGHT)
    );
}

// ---- hostile agent (bytes into the daemon side) ----

fn ready_daemon() -> Daemon {
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(800, 600));
    d.handle_input(&Version::V1_8.0.to_le_bytes()).unwrap();
    let mut buf = [0u8; 64];
    while d.poll_transmit(&mut buf).is_some() {}
    while d.poll_event().is_some() {}
    d
}

fn frame(w: u32, m: Message<'_>) -> Vec<u8> {
    m.to_vec(WindowId(w)).unwrap()
}

#[test]
fn create_on_existing_window_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let e = ConnError::Peer(PeerError::WindowExists(W));
    assert_eq!(
        d.handle_input(&frame(1, Message::Create(Create::default()))),
        Err(e)
    );
    assert_eq!(d.handle_input(&frame(1, Message::Unmap)), Err(e), "sticky");
}

#[test]
fn message_without_create_is_fatal() {
    let mut d = ready_daemon();
    assert_eq!(
        d.handle_input(&frame(5, Message::Unmap)),
        Err(ConnError::Peer(PeerError::UnknownWindow(WindowId(5))))
    );
}

#[test]
fn clipboard_data_needs_no_window() {
    let mut d = ready_daemon();
    d.handle_input(&frame(77, Message::ClipboardData(b"x")))
        .unwrap();
    assert_eq!(
        d.poll_event(),
        Some(DaemonEvent::ClipboardData(b"x".to_vec()))
    );
}

#[test]
fn create_window_zero_is_fatal() {
    let mut d = ready_daemon();
    assert_eq!(
        d.handle_input(&frame(0, Message::Create(Create::default()))),
        Err(ConnError::Peer(PeerError::WindowZero))
    );
}

#[test]
fn unknown_type_from_agent_is_fatal() {
    let mut d = ready_daemon();
    let mut f = frame(1, Message::Unmap);
    f[0] = 200;
    assert!(matches!(
        d.handle_input(&f),
        Err(ConnError::Frame(FrameError::BadHeader(_)))
    ));
}

#[test]
fn length_mismatch_at_1_6_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let mut f = frame(1, Message::Configure(Configure::default()));
    f[8] = 36; // mirage's CONFIGURE
    f.resize(12 + 36, 0);
    assert!(matches!(
        d.handle_input(&f),
        Err(ConnError::Frame(FrameError::BadHeader(_)))
    ));
}

#[test]
fn below_1_6_the_type_size_wins_over_untrusted_len() {
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(800, 600));
    d.handle_input(&Version::V1_4.0.to_le_bytes()).unwrap();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let mut f = frame(
        1,
        Message::Configure(Configure {
            width: 9,
            ..Default::default()
        }),
    );
    f[8] = 36;
    assert_eq!(d.handle_input(&f), Ok(f.len()));
    while let Some(e) = d.poll_event() {
        if let DaemonEvent::Configured(_, c) = e {
            assert_eq!(c.width, 9);
        }
    }
}

#[test]
fn dump_larger_than_the_limit_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let mut f = frame(
        1,
        Message::WindowDump(
            WindowDumpHdr {
                ty: 0,
                width: 1,
                height: 1,
                bpp: 32,
            },
            Words::Values(&[1]),
        ),
    );
    f[16..20].copy_from_slice(&(MAX_WINDOW_WIDTH + 1).to_le_bytes());
    assert!(matches!(
        d.handle_input(&f),
        Err(ConnError::Wire(WireError::DumpTooLarge { .. }))
    ));
}

#[test]
fn dump_with_too_few_refs_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let mut f = frame(
        1,
        Message::WindowDump(
            WindowDumpHdr {
                ty: 0,
                width: 32,
                height: 32,
                bpp: 32,
            },
            Words::Values(&[1]),
        ),
    );
    f[16..20].copy_from_slice(&64u32.to_le_bytes());
    assert!(matches!(
        d.handle_input(&f),
        Err(ConnError::Wire(WireError::DumpRefs(4)))
    ));
}

#[test]
fn dump_declaring_too_many_refs_is_refused_before_allocation() {
    let mut d = ready_daemon();
    let mut h = frame(1, Message::WindowDumpAck);
    h[0] = 147;
    h[8..12].copy_from_slice(&(16 + 4 * 98305u32).to_le_bytes());
    assert!(matches!(
        d.handle_input(&h),
        Err(ConnError::Frame(FrameError::TooLong { .. }))
    ));
}

#[test]
fn mfndump_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let cmd = ShmCmd {
        num_mfn: 1,
        ..Default::default()
    };
    assert_eq!(
        d.handle_input(&frame(1, Message::MfnDump(cmd, Words::Values(&[5])))),
        Err(ConnError::Peer(PeerError::MfnDump))
    );
}

#[test]
fn daemon_only_type_from_agent_is_fatal() {
    let mut d = ready_daemon();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    let k = Message::Keypress(Keypress::default());
    assert_eq!(
        d.handle_input(&frame(1, k)),
        Err(ConnError::Peer(PeerError::UnexpectedType(
            MsgType::Keypress
        )))
    );
}

#[test]
fn agent_bad_major_is_fatal() {
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(8, 8));
    assert_eq!(
        d.handle_input(&0x0002_0008u32.to_le_bytes()),
        Err(ConnError::Peer(PeerError::BadMajor(2)))
    );
}

#[test]
fn window_table_is_bounded() {
    let mut d = Daemon::new(
        DaemonLimits {
            max_windows: 2,
            ..DaemonLimits::DEFAULT
        },
        XConf::for_screen(8, 8),
    );
    d.handle_input(&Version::V1_8.0.to_le_bytes()).unwrap();
    d.handle_input(&frame(1, Message::Create(Create::default())))
        .unwrap();
    d.handle_input(&frame(2, Message::Create(Create::default())))
        .unwrap();
    assert_eq!(
        d.handle_input(&frame(3, Message::Create(Create::default()))),
        Err(ConnError::Full { what: "windows" })
    );
}

// ---- hostile daemon (bytes into the agent) ----

fn ready_agent() -> Agent {
    let mut a = Agent::default();
    let mut hs = Version::V1_8.0.to_le_bytes().to_vec();
    let mut x = [0u8; 16];
    XConf::for_screen(800, 600).emit(&mut x);
    hs.extend_from_slice(&x);
    assert_eq!(a.handle_input(&hs), Ok(20));
    assert!(a.is_ready());
    let mut buf = [0u8; 64];
    while a.poll_transmit(&mut buf).is_some() {}
    while a.poll_event().is_some() {}
    a.create_window(W, 0, 0, 8, 8).unwrap();
    while a.poll_transmit(&mut buf).is_some() {}
    a
}

#[test]
fn daemon_version_below_1_4_is_refused() {
    let mut a = Agent::default();
    let e = ConnError::Peer(PeerError::VersionOutOfRange(Version::V1_1));
    assert_eq!(a.handle_input(&Version::V1_1.0.to_le_bytes()), Err(e));
    assert_eq!(
        a.create_window(W, 0, 0, 1, 1),
        Err(LocalError::NotConnected)
    );
}

#[test]
fn daemon_version_above_ours_is_refused() {
    let mut a = Agent::default();
    assert!(matches!(
        a.handle_input(&Version::new(1, 9).0.to_le_bytes()),
        Err(ConnError::Peer(PeerError::VersionOutOfRange(_)))
    ));
    let mut a = Agent::default();
    assert!(matches!(
        a.handle_input(&0x0003_0001u32.to_le_bytes()),
        Err(ConnError::Peer(PeerError::BadMajor(3)))
    ));
}

#[test]
fn unknown_type_from_daemon_is_skipped_by_its_length() {
    let mut a = ready_agent();
    let mut f = vec![0u8; 12 + 10];
    f[0] = 222;
    f[8] = 10;
    let close = frame(1, Message::Close);
    let stream = [f, close].concat();
    assert_eq!(a.handle_input(&stream), Ok(stream.len()));
    assert_eq!(a.poll_event(), Some(Event::Close(W)));
    assert_eq!(a.skipped(), 1);
}

#[test]
fn unknown_type_with_huge_length_is_fatal_without_allocation() {
    let mut a = ready_agent();
    let mut f = vec![0u8; 12];
    f[0] = 222;
    f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        a.handle_input(&f),
        Err(ConnError::Frame(FrameError::TooLong { .. }))
    ));
}

#[test]
fn known_type_with_wrong_length_from_daemon_is_fatal() {
    let mut a = ready_agent();
    let mut f = frame(1, Message::Keypress(Keypress::default()));
    f[8] = 16;
    assert!(matches!(
        a.handle_input(&f),
        Err(ConnError::Frame(FrameError::BadHeader(_)))
    ));
}

#[test]
fn input_for_unknown_window_is_dropped() {
    let mut a = ready_agent();
    let f = frame(9, Message::Keypress(Keypress::default()));
    assert_eq!(a.handle_input(&f), Ok(f.len()));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn clipboard_over_the_limit_from_daemon_is_fatal() {
    let mut a = ready_agent();
    let mut f = frame(1, Message::ClipboardData(b""));
    f[8..12].copy_from_slice(&(MAX_CLIPBOARD_1_8 as u32 + 1).to_le_bytes());
    assert!(matches!(
        a.handle_input(&f),
        Err(ConnError::Frame(FrameError::TooLong { .. }))
    ));
}

#[test]
fn configure_flood_is_backpressured() {
    let mut a = Agent::new(AgentLimits {
        max_out: 1024,
        max_events: 10_000,
        ..AgentLimits::DEFAULT
    });
    let mut hs = Version::V1_8.0.to_le_bytes().to_vec();
    hs.extend_from_slice(&[0; 16]);
    a.handle_input(&hs).unwrap();
    let mut buf = [0u8; 64];
    while a.poll_transmit(&mut buf).is_some() {}
    a.create_window(W, 0, 0, 8, 8).unwrap();
    while a.poll_transmit(&mut buf).is_some() {}
    let one = frame(1, Message::Configure(Configure::default()));
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let used = a.handle_input(&flood).unwrap();
    assert!(used < flood.len());
    let mut big = vec![0u8; 1 << 20];
    assert!(a.poll_transmit(&mut big).unwrap() <= 1024);
}

/// Payload bytes held in queued events that carry a buffer.
fn agent_payload(e: &Event) -> usize {
    match e {
        Event::ClipboardData(_, d) => d.len(),
        _ => 0,
    }
}

#[test]
fn clipboard_flood_from_daemon_is_bounded_in_bytes() {
    // 256 queued events of 256000 bytes each were 64 MiB held for a hostile daemon.
    let mut a = ready_agent();
    let payload = vec![b'x'; MAX_CLIPBOARD_1_8 - 1];
    let one = frame(1, Message::ClipboardData(&payload));
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
    let used = a.handle_input(&flood).unwrap();
    assert!(used < flood.len(), "input stops while payloads wait");
    let mut held = 0;
    while let Some(e) = a.poll_event() {
        held += agent_payload(&e);
    }
    let bound = AgentLimits::DEFAULT.max_event_bytes + MAX_CLIPBOARD_1_8;
    assert!(held > 0 && held <= bound, "{held} > {bound}");
    // Once polled, the rest is consumed again.
    let more = a.handle_input(&flood[used..]).unwrap();
    assert!(more > 0);
}

#[test]
fn clipboard_and_dump_flood_from_agent_is_bounded_in_bytes() {
    let mut d = ready_daemon();
    d.handle_input(&frame(
        1,
        Message::Create(Create {
            width: 8,
            height: 8,
            ..Create::default()
        }),
    ))
    .unwrap();
    while d.poll_event().is_some() {}
    let payload = vec![b'x'; MAX_CLIPBOARD_1_8 - 1];
    let refs: Vec<u32> = (0..MAX_GRANT_REFS).collect();
    let dump = WindowDumpHdr {
        ty: 0,
        width: 8,
        height: 8,
        bpp: 32,
    };
    let mut one = frame(1, Message::ClipboardData(&payload));
    one.extend(frame(1, Message::WindowDump(dump, Words::Values(&refs))));
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
    let used = d.handle_input(&flood).unwrap();
    assert!(used < flood.len(), "input stops while payloads wait");
    let mut held = 0;
    while let Some(e) = d.poll_event() {
        held += match e {
            DaemonEvent::ClipboardData(b) => b.len(),
            DaemonEvent::Dump(_, _, r) => 4 * r.len(),
            _ => 0,
        };
    }
    let bound = DaemonLimits::DEFAULT.max_event_bytes + MAX_CLIPBOARD_1_8;
    assert!(held > 0 && held <= bound, "{held} > {bound}");
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u16, u16),
    Title(u8, u8),
    Configure(u8, i16, u16),
    Dump(u8, u8, u8),
    Map(u8),
    Destroy(u8),
    UserConfigure(u8, u16),
    Close(u8),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<u16>(), any::<u16>()).prop_map(|(w, a, b)| Op::Create(w, a, b)),
        (0u8..5, any::<u8>()).prop_map(|(w, t)| Op::Title(w, t)),
        (0u8..5, any::<i16>(), any::<u16>()).prop_map(|(w, x, s)| Op::Configure(w, x, s)),
        (0u8..5, any::<u8>(), any::<u8>()).prop_map(|(w, a, b)| Op::Dump(w, a, b)),
        (0u8..5).prop_map(Op::Map),
        (0u8..5).prop_map(Op::Destroy),
        (0u8..5, any::<u16>()).prop_map(|(w, s)| Op::UserConfigure(w, s)),
        (0u8..5).prop_map(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the app does through the agent API, the daemon never finds a protocol error
    /// and both sides agree on which windows exist once idle.
    #[test]
    fn agent_api_never_breaks_daemon_rules(ops in proptest::collection::vec(arb_op(), 0..60), chunk in 1usize..200) {
        let mut p = Pair::connected(chunk);
        for op in ops {
            let _ = match op {
                Op::Create(w, a, b) => p.agent.create_window(WindowId(w.into()), 0, 0, a.into(), b.into()),
                Op::Title(w, t) => p.agent.set_title(WindowId(w.into()), core::str::from_utf8(&[t.max(1)]).unwrap_or("\u{fffd}")),
                Op::Configure(w, x, s) => p.agent.configure(WindowId(w.into()), x.into(), 0, s.into(), s.into()),
                Op::Dump(w, a, b) => {
                    let refs: Vec<GrantRef> = (0..Agent::pages_for(a.into(), b.into()) as u32).map(GrantRef).collect();
                    p.agent.window_dump(WindowId(w.into()), a.into(), b.into(), &refs)
                }
                Op::Map(w) => p.agent.map(WindowId(w.into())),
                Op::Destroy(w) => p.agent.destroy(WindowId(w.into())),
                Op::UserConfigure(w, s) => p.daemon.configure(WindowId(w.into()), Configure { x: 1, y: 2, width: s.into(), height: 3, override_redirect: 0 }),
                Op::Close(w) => p.daemon.close(WindowId(w.into())),
            };
            p.drive();
        }
        prop_assert!(p.daemon.error().is_none());
        prop_assert!(p.agent.error().is_none());
        for w in 0..5 {
            prop_assert_eq!(p.agent.has_window(WindowId(w)), p.daemon.has_window(WindowId(w)));
        }
    }

    #[test]
    fn hostile_bytes_never_panic_either_side(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut a = ready_agent();
        let _ = a.handle_input(&bytes);
        let mut d = ready_daemon();
        let _ = d.handle_input(&bytes);
    }
}
