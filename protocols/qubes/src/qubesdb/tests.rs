//! Transcripts: the VM side against the dom0 side in memory, whole and byte-at-a-time; hostile
//! peers; properties.

use super::wire::{Message, QdbPath, HEADER_LEN};
use super::*;
use crate::framing::FrameError;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn p(s: &str) -> QdbPath {
    QdbPath::new(s).unwrap()
}

/// The two sides joined by in-memory byte pipes that move at most `chunk` bytes per step.
struct Pair {
    vm: Agent,
    dom0: Daemon,
    to_dom0: Vec<u8>,
    to_vm: Vec<u8>,
    chunk: usize,
    vm_events: Vec<Event>,
    dom0_events: Vec<DaemonEvent>,
}

impl Pair {
    fn new(chunk: usize) -> Self {
        Pair {
            vm: Agent::new(Limits::DEFAULT),
            dom0: Daemon::new(DaemonLimits::DEFAULT),
            to_dom0: Vec::new(),
            to_vm: Vec::new(),
            chunk,
            vm_events: Vec::new(),
            dom0_events: Vec::new(),
        }
    }

    fn connect(&mut self) {
        self.to_dom0.clear();
        self.to_vm.clear();
        self.dom0.connect();
        self.vm.connect();
    }

    /// One step each way; `on_vm_event` sees every VM event as it is produced.
    fn step(&mut self, on_vm_event: &mut dyn FnMut(&Agent, Event)) -> bool {
        let mut progress = false;
        let mut buf = vec![0; self.chunk];
        if let Some(n) = self.vm.poll_transmit(&mut buf) {
            self.to_dom0.extend_from_slice(&buf[..n]);
            progress = true;
        }
        if let Some(n) = self.dom0.poll_transmit(&mut buf) {
            self.to_vm.extend_from_slice(&buf[..n]);
            progress = true;
        }
        if !self.to_dom0.is_empty() {
            let k = self.to_dom0.len().min(self.chunk);
            let used = self
                .dom0
                .handle_input(&self.to_dom0[..k])
                .expect("dom0 input");
            self.to_dom0.drain(..used);
            progress |= used > 0;
        }
        if !self.to_vm.is_empty() {
            let k = self.to_vm.len().min(self.chunk);
            let used = self.vm.handle_input(&self.to_vm[..k]).expect("vm input");
            self.to_vm.drain(..used);
            progress |= used > 0;
        }
        while let Some(e) = self.vm.poll_event() {
            on_vm_event(&self.vm, e);
            self.vm_events.push(e);
            progress = true;
        }
        while let Some(e) = self.dom0.poll_event() {
            self.dom0_events.push(e);
            progress = true;
        }
        progress
    }

    fn drive_with(&mut self, on_vm_event: &mut dyn FnMut(&Agent, Event)) {
        for _ in 0..1_000_000 {
            if !self.step(on_vm_event) {
                return;
            }
        }
        panic!("the pair never went idle");
    }

    fn drive(&mut self) {
        self.drive_with(&mut |_, _| {});
    }
}

fn dom0_with_defaults(d: &mut Daemon) {
    d.write("/name", b"sys-firewall").unwrap();
    d.write("/qubes-ip", b"10.137.0.5").unwrap();
    d.write("/qubes-firewall/10.137.0.12", b"").unwrap();
    d.write("/qubes-firewall/10.137.0.12/policy", b"drop")
        .unwrap();
    d.write(
        "/qubes-firewall/10.137.0.12/0000",
        b"action=accept proto=tcp dstports=443-443",
    )
    .unwrap();
    d.write("/qubes-firewall/10.137.0.12/0001", b"action=drop")
        .unwrap();
    d.write("/connected-ips", b"10.137.0.12").unwrap();
}

fn vm_entries(a: &Agent) -> Vec<(String, Vec<u8>)> {
    a.list("")
        .map(|(k, v)| (String::from(k.as_str()), v.to_vec()))
        .collect()
}

fn dom0_entries(d: &Daemon) -> Vec<(String, Vec<u8>)> {
    d.list("")
        .map(|(k, v)| (String::from(k.as_str()), v.to_vec()))
        .collect()
}

fn full_sync(chunk: usize) {
    let mut pair = Pair::new(chunk);
    dom0_with_defaults(&mut pair.dom0);
    let fw = pair.vm.watch("/qubes-firewall/").unwrap();
    pair.connect();
    pair.drive();
    assert_eq!(pair.vm.state(), SyncState::Ready);
    assert_eq!(
        pair.vm_events,
        [
            Event::Synced { entries: 7 },
            Event::Changed {
                watch: fw,
                path: p("/qubes-firewall/")
            },
            Event::FirewallCommit(p("/qubes-firewall/10.137.0.12")),
        ]
    );
    assert_eq!(
        pair.dom0_events,
        [
            DaemonEvent::SyncRequested,
            DaemonEvent::SyncServed { entries: 7 }
        ]
    );
    assert_eq!(vm_entries(&pair.vm), dom0_entries(&pair.dom0));
    assert_eq!(pair.vm.read("/name"), Some(&b"sys-firewall"[..]));
}

#[test]
fn full_sync_transcript_whole() {
    full_sync(1 << 16);
}

#[test]
fn full_sync_transcript_byte_at_a_time() {
    full_sync(1);
}

#[test]
fn dump_is_reverse_sorted_with_end_marker() {
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    dom0_with_defaults(&mut d);
    d.connect();
    let req = Message::Multiread(QdbPath::EMPTY).to_vec().unwrap();
    assert_eq!(d.handle_input(&req), Ok(HEADER_LEN));
    let mut stream = Vec::new();
    let mut buf = [0u8; 1000];
    while let Some(n) = d.poll_transmit(&mut buf) {
        stream.extend_from_slice(&buf[..n]);
    }
    let mut paths = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let len = HEADER_LEN + u32::from_le_bytes(rest[68..72].try_into().unwrap()) as usize;
        let m = Message::parse(&rest[..len]).unwrap();
        assert_eq!(m.msg_type(), wire::MsgType::RespMultiread);
        paths.push(String::from(m.path().as_str()));
        rest = &rest[len..];
    }
    assert_eq!(paths.pop().as_deref(), Some(""), "end marker last");
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(paths, sorted);
    assert_eq!(paths.len(), 7);
}

#[test]
fn multiread_prefix_dumps_only_that_prefix() {
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    dom0_with_defaults(&mut d);
    d.connect();
    let req = Message::Multiread(p("/qubes-firewall/")).to_vec().unwrap();
    d.handle_input(&req).unwrap();
    let mut buf = [0u8; 1 << 16];
    let n = d.poll_transmit(&mut buf).unwrap();
    // The marker, policy, 0000 and 0001, then the end marker; /name and the rest stay out.
    assert_eq!(n, 5 * HEADER_LEN + 4 + 40 + 11);
}

fn firewall_reload(chunk: usize) {
    let mut pair = Pair::new(chunk);
    dom0_with_defaults(&mut pair.dom0);
    pair.dom0
        .write(
            "/qubes-firewall/10.137.0.12/0002",
            b"action=accept dsthost=old.example",
        )
        .unwrap();
    pair.connect();
    pair.drive();
    pair.vm_events.clear();
    pair.dom0_events.clear();

    let new_rules = [
        "action=accept dst4=192.168.1.0/24 proto=tcp dstports=443-443",
        "action=drop proto=icmp",
    ];
    pair.dom0
        .reload_firewall("10.137.0.12", &new_rules)
        .unwrap();
    let mut seen_at_commit = Vec::new();
    pair.drive_with(&mut |vm, e| {
        if let Event::FirewallCommit(path) = e {
            assert_eq!(firewall_commit_ip(&path), Some("10.137.0.12"));
            seen_at_commit = vm
                .list("/qubes-firewall/10.137.0.12/")
                .map(|(k, v)| (*k, v.to_vec()))
                .collect();
        }
    });
    let commits = pair
        .vm_events
        .iter()
        .filter(|e| matches!(e, Event::FirewallCommit(_)))
        .count();
    assert_eq!(commits, 1, "{:?}", pair.vm_events);
    assert_eq!(
        seen_at_commit,
        [
            (
                p("/qubes-firewall/10.137.0.12/0000"),
                new_rules[0].as_bytes().to_vec()
            ),
            (
                p("/qubes-firewall/10.137.0.12/0001"),
                new_rules[1].as_bytes().to_vec()
            ),
            (p("/qubes-firewall/10.137.0.12/policy"), b"drop".to_vec()),
        ]
    );
    let acked: Vec<_> = pair
        .dom0_events
        .iter()
        .filter(|e| matches!(e, DaemonEvent::Acked(_)))
        .collect();
    assert_eq!(acked.len(), 5, "rm, policy, two rules, marker");
    assert_eq!(
        pair.dom0_events[0],
        DaemonEvent::Acked(p("/qubes-firewall/10.137.0.12/"))
    );
    assert_eq!(vm_entries(&pair.vm), dom0_entries(&pair.dom0));
}

#[test]
fn firewall_reload_gives_one_commit_with_new_rules_visible_whole() {
    firewall_reload(1 << 16);
}

#[test]
fn firewall_reload_gives_one_commit_with_new_rules_visible_byte_at_a_time() {
    firewall_reload(1);
}

#[test]
fn firewall_reload_emits_dom0_sequence_exactly() {
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    d.connect();
    d.handle_input(&Message::Multiread(QdbPath::EMPTY).to_vec().unwrap())
        .unwrap();
    let mut buf = [0u8; 1 << 16];
    d.poll_transmit(&mut buf).unwrap();
    d.reload_firewall("10.137.0.12", &["action=accept"])
        .unwrap();
    let n = d.poll_transmit(&mut buf).unwrap();
    let expected: Vec<u8> = [
        Message::Rm(p("/qubes-firewall/10.137.0.12/")),
        Message::Write(p("/qubes-firewall/10.137.0.12/policy"), b"drop"),
        Message::Write(p("/qubes-firewall/10.137.0.12/0000"), b"action=accept"),
        Message::Write(p("/qubes-firewall/10.137.0.12"), b""),
    ]
    .iter()
    .flat_map(|m| m.to_vec().unwrap())
    .collect();
    assert_eq!(&buf[..n], &expected[..]);
}

#[test]
fn own_write_reaches_the_untrusted_area_and_is_acked() {
    let mut pair = Pair::new(7);
    pair.connect();
    pair.drive();
    pair.vm.write("/qubes-iptables-error", b"").unwrap();
    pair.vm
        .write("/dns/10.137.0.12/example.org", b"203.0.113.7")
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.dom0.read_untrusted("/dns/10.137.0.12/example.org"),
        Some(&b"203.0.113.7"[..])
    );
    assert_eq!(
        pair.dom0.read("/dns/10.137.0.12/example.org"),
        None,
        "VM writes stay apart"
    );
    assert!(pair
        .vm_events
        .contains(&Event::WriteAcked(p("/qubes-iptables-error"))));
    assert!(pair
        .dom0_events
        .contains(&DaemonEvent::VmWrite(p("/qubes-iptables-error"))));
    assert_eq!(
        pair.vm.read("/dns/10.137.0.12/example.org"),
        Some(&b"203.0.113.7"[..])
    );
}

#[test]
fn own_write_during_sync_survives_the_sync() {
    let mut pair = Pair::new(5);
    dom0_with_defaults(&mut pair.dom0);
    pair.connect();
    pair.vm.write("/qubes-iptables-error", b"").unwrap();
    pair.drive();
    assert_eq!(pair.vm.read("/qubes-iptables-error"), Some(&b""[..]));
    assert_eq!(
        pair.dom0.read_untrusted("/qubes-iptables-error"),
        Some(&b""[..])
    );
    assert!(pair
        .vm_events
        .contains(&Event::WriteAcked(p("/qubes-iptables-error"))));
}

#[test]
fn reconnect_is_a_new_sync() {
    let mut pair = Pair::new(64);
    dom0_with_defaults(&mut pair.dom0);
    pair.connect();
    pair.drive();
    let w = pair.vm.watch("/qubes-ip").unwrap();
    pair.dom0.disconnect();
    pair.vm.disconnect();
    pair.dom0.write("/qubes-ip", b"10.137.0.99").unwrap();
    pair.dom0.rm("/connected-ips").unwrap();
    assert_eq!(
        pair.vm.read("/qubes-ip"),
        Some(&b"10.137.0.5"[..]),
        "old copy still readable"
    );
    pair.vm_events.clear();
    pair.connect();
    pair.drive();
    assert_eq!(pair.vm.read("/qubes-ip"), Some(&b"10.137.0.99"[..]));
    assert_eq!(pair.vm.read("/connected-ips"), None);
    assert!(pair.vm_events.contains(&Event::Changed {
        watch: w,
        path: p("/qubes-ip")
    }));
    assert_eq!(vm_entries(&pair.vm), dom0_entries(&pair.dom0));
}

#[test]
fn watches_fire_for_writes_and_prefix_removes() {
    let mut pair = Pair::new(64);
    dom0_with_defaults(&mut pair.dom0);
    pair.connect();
    pair.drive();
    let fw = pair.vm.watch("/qubes-firewall/10.137.0.12/").unwrap();
    let name = pair.vm.watch("/name").unwrap();
    pair.vm_events.clear();
    pair.dom0.rm("/qubes-firewall/").unwrap();
    pair.dom0.write("/name", b"other").unwrap();
    pair.drive();
    assert_eq!(
        pair.vm_events,
        [
            Event::Changed {
                watch: fw,
                path: p("/qubes-firewall/")
            },
            Event::Changed {
                watch: name,
                path: p("/name")
            },
        ]
    );
    assert_eq!(pair.vm.list("/qubes-firewall/").count(), 0);
    assert!(pair.vm.unwatch(fw));
    assert!(!pair.vm.unwatch(fw));
}

// ---- hostile dom0 (bytes into the VM side) ----

fn synced_agent() -> Agent {
    let mut a = Agent::new(Limits::DEFAULT);
    a.connect();
    let mut buf = [0u8; 100];
    assert_eq!(a.poll_transmit(&mut buf), Some(HEADER_LEN));
    a.handle_input(&Message::END_OF_DUMP.to_vec().unwrap())
        .unwrap();
    assert_eq!(a.state(), SyncState::Ready);
    assert_eq!(a.poll_event(), Some(Event::Synced { entries: 0 }));
    a
}

#[test]
fn watch_on_the_vchan_is_fatal_and_sticky() {
    let mut a = synced_agent();
    let m = Message::Watch(p("/x")).to_vec().unwrap();
    let e = ConnError::Peer(PeerError::NotOnVchan(wire::MsgType::Watch));
    assert_eq!(a.handle_input(&m), Err(e));
    assert_eq!(
        a.handle_input(&Message::Write(p("/y"), b"1").to_vec().unwrap()),
        Err(e)
    );
    assert_eq!(a.state(), SyncState::Failed(e));
    assert_eq!(a.write("/z", b"1"), Err(LocalError::NotConnected));
}

#[test]
fn resp_error_noent_on_the_vchan_is_fatal() {
    let mut a = synced_agent();
    let m = Message::RespErrorNoent(p("/x")).to_vec().unwrap();
    assert!(matches!(
        a.handle_input(&m),
        Err(ConnError::Peer(PeerError::NotOnVchan(_)))
    ));
}

#[test]
fn unterminated_path_header_is_fatal() {
    let mut a = synced_agent();
    let mut h = [b'a'; HEADER_LEN];
    h[0] = 1;
    h[68..].copy_from_slice(&[0; 4]);
    assert!(matches!(
        a.handle_input(&h),
        Err(ConnError::Frame(FrameError::BadHeader(_)))
    ));
}

#[test]
fn oversized_data_len_is_fatal_before_allocation() {
    let mut a = synced_agent();
    let mut h = Message::Write(p("/x"), b"").to_vec().unwrap();
    h[68..72].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        a.handle_input(&h),
        Err(ConnError::Frame(FrameError::TooLong { .. }))
    ));
}

#[test]
fn multiread_entry_after_sync_is_fatal() {
    let mut a = synced_agent();
    let m = Message::RespMultiread(p("/x"), b"1").to_vec().unwrap();
    assert!(matches!(
        a.handle_input(&m),
        Err(ConnError::Peer(PeerError::UnexpectedType(_)))
    ));
}

#[test]
fn multiread_from_dom0_is_fatal() {
    let mut a = synced_agent();
    let m = Message::Multiread(QdbPath::EMPTY).to_vec().unwrap();
    assert!(matches!(
        a.handle_input(&m),
        Err(ConnError::Peer(PeerError::UnexpectedType(_)))
    ));
}

#[test]
fn unsolicited_ack_is_fatal() {
    let mut a = synced_agent();
    let m = Message::RespOk(p("/x")).to_vec().unwrap();
    assert_eq!(
        a.handle_input(&m),
        Err(ConnError::Peer(PeerError::UnsolicitedAck(p("/x"))))
    );
}

#[test]
fn ack_for_another_path_is_fatal() {
    let mut a = synced_agent();
    a.write("/mine", b"1").unwrap();
    let m = Message::RespOk(p("/other")).to_vec().unwrap();
    assert!(matches!(
        a.handle_input(&m),
        Err(ConnError::Peer(PeerError::AckMismatch(_)))
    ));
}

#[test]
fn value_with_nul_is_answered_with_resp_error_and_not_stored() {
    let mut a = synced_agent();
    let m = Message::Write(p("/x"), b"a\0b").to_vec().unwrap();
    assert_eq!(a.handle_input(&m), Ok(m.len()));
    assert_eq!(a.read("/x"), None);
    assert_eq!(a.poll_event(), Some(Event::ValueRefused(p("/x"))));
    let mut buf = [0u8; 100];
    let n = a.poll_transmit(&mut buf).unwrap();
    assert_eq!(Message::parse(&buf[..n]), Ok(Message::RespError(p("/x"))));
}

#[test]
fn dump_with_garbage_after_path_nul_is_accepted() {
    let mut a = Agent::new(Limits::DEFAULT);
    a.connect();
    let mut entry = Message::RespMultiread(p("/qubes-ip"), b"10.1.2.3")
        .to_vec()
        .unwrap();
    let mut end = entry.clone();
    entry[20..68].fill(b'#');
    // The C end marker keeps the previous path after byte 0.
    end[1] = 0;
    end[68..72].fill(0);
    end.truncate(HEADER_LEN);
    a.handle_input(&entry).unwrap();
    a.handle_input(&end).unwrap();
    assert_eq!(a.state(), SyncState::Ready);
    assert_eq!(a.read("/qubes-ip"), Some(&b"10.1.2.3"[..]));
}

#[test]
fn full_local_db_ends_the_connection() {
    let mut a = Agent::new(Limits {
        max_entries: 2,
        ..Limits::DEFAULT
    });
    a.connect();
    for k in ["/a", "/b"] {
        a.handle_input(&Message::RespMultiread(p(k), b"1").to_vec().unwrap())
            .unwrap();
    }
    let third = Message::RespMultiread(p("/c"), b"1").to_vec().unwrap();
    assert_eq!(
        a.handle_input(&third),
        Err(ConnError::Full { what: "entries" })
    );
}

#[test]
fn flood_without_reading_replies_is_backpressured() {
    let mut a = synced_agent();
    let one = Message::Rm(p("/nothing")).to_vec().unwrap();
    let flood: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 10_000)
        .collect();
    let used = a.handle_input(&flood).unwrap();
    assert!(
        used < flood.len(),
        "input must stop while replies cannot be queued"
    );
    assert!(used <= Limits::DEFAULT.max_out / HEADER_LEN * HEADER_LEN + HEADER_LEN);
    let mut buf = vec![0u8; 1 << 20];
    let n = a.poll_transmit(&mut buf).unwrap();
    assert!(n <= Limits::DEFAULT.max_out);
    assert!(
        a.handle_input(&flood[used..]).unwrap() > 0,
        "resumes after transmitting"
    );
}

#[test]
fn event_flood_is_backpressured() {
    let mut a = synced_agent();
    a.watch("/").unwrap();
    let mut stream = Vec::new();
    for i in 0..2000 {
        stream.extend(
            Message::Write(p("/k"), alloc::format!("{i}").as_bytes())
                .to_vec()
                .unwrap(),
        );
    }
    let used = a.handle_input(&stream).unwrap();
    assert!(used < stream.len());
    let mut count = 0;
    while a.poll_event().is_some() {
        count += 1;
    }
    assert!(count <= Limits::DEFAULT.max_events, "{count}");
}

#[test]
fn local_bounds_are_enforced() {
    let mut a = Agent::new(Limits {
        max_watches: 1,
        max_pending_writes: 1,
        ..Limits::DEFAULT
    });
    assert_eq!(a.write("/x", b"1"), Err(LocalError::NotConnected));
    a.connect();
    a.watch("/a").unwrap();
    assert_eq!(a.watch("/b"), Err(LocalError::Full { what: "watches" }));
    a.write("/x", b"1").unwrap();
    assert_eq!(
        a.write("/y", b"1"),
        Err(LocalError::Full {
            what: "pending writes"
        })
    );
    assert_eq!(
        a.write("/y", b"a\0"),
        Err(LocalError::Invalid(wire::WireError::DataHasNul))
    );
    assert_eq!(
        a.write("-y", b"1"),
        Err(LocalError::Invalid(wire::WireError::PathLeadingDash))
    );
}

#[test]
fn local_value_of_max_data_is_refused_without_desync() {
    // A value the wire cannot carry (data_len must stay below 3072) used to be stored and its
    // path queued as pending with nothing sent: a debug_assert panic, or in release a pending
    // ack that never comes, so dom0's next ack failed the connection as a mismatch.
    let long = vec![b'a'; wire::MAX_DATA];
    let mut a = synced_agent();
    assert_eq!(
        a.write("/x", &long),
        Err(LocalError::Invalid(wire::WireError::DataTooLong(3072)))
    );
    assert_eq!(a.read("/x"), None, "a refused write changes nothing");
    let mut d = ready_daemon();
    assert_eq!(
        d.write("/x", &long),
        Err(LocalError::Invalid(wire::WireError::DataTooLong(3072)))
    );
    assert_eq!(d.read("/x"), None);
    // Not yet connected: the value would be stored and break the dump later.
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    assert!(d.write("/x", &long).is_err());
    let max = vec![b'a'; wire::MAX_DATA - 1];
    d.write("/y", &max).unwrap();
    d.connect();
    d.handle_input(&Message::Multiread(QdbPath::EMPTY).to_vec().unwrap())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1000];
    while let Some(n) = d.poll_transmit(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        out.len(),
        HEADER_LEN + max.len() + HEADER_LEN,
        "one entry and the end marker"
    );
}

// ---- hostile VM (bytes into the dom0 side) ----

fn ready_daemon() -> Daemon {
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    d.connect();
    d.handle_input(&Message::Multiread(QdbPath::EMPTY).to_vec().unwrap())
        .unwrap();
    let mut buf = [0u8; 1000];
    while d.poll_transmit(&mut buf).is_some() {}
    assert!(d.is_ready());
    while d.poll_event().is_some() {}
    d
}

#[test]
fn read_on_the_vchan_is_fatal_to_the_connection() {
    let mut d = ready_daemon();
    let m = Message::Read(p("/name")).to_vec().unwrap();
    assert!(matches!(
        d.handle_input(&m),
        Err(ConnError::Peer(PeerError::NotOnVchan(_)))
    ));
    assert!(d.error().is_some());
    assert!(d.handle_input(&m).is_err(), "sticky");
    d.connect();
    assert!(d.error().is_none(), "a new connection starts clean");
}

#[test]
fn second_multiread_is_fatal() {
    let mut d = ready_daemon();
    let m = Message::Multiread(QdbPath::EMPTY).to_vec().unwrap();
    assert_eq!(
        d.handle_input(&m),
        Err(ConnError::Peer(PeerError::SecondMultiread))
    );
}

#[test]
fn vm_sending_dump_entries_is_fatal() {
    let mut d = ready_daemon();
    let m = Message::RespMultiread(p("/x"), b"1").to_vec().unwrap();
    assert!(matches!(
        d.handle_input(&m),
        Err(ConnError::Peer(PeerError::UnexpectedType(_)))
    ));
}

#[test]
fn vm_unknown_type_is_fatal() {
    let mut d = ready_daemon();
    let mut m = Message::RespOk(p("/x")).to_vec().unwrap();
    m[0] = 99;
    assert!(matches!(d.handle_input(&m), Err(ConnError::Frame(_))));
}

#[test]
fn vm_area_full_answers_resp_error_and_keeps_the_connection() {
    let mut d = Daemon::new(DaemonLimits {
        max_vm_entries: 1,
        ..DaemonLimits::DEFAULT
    });
    d.connect();
    d.handle_input(&Message::Write(p("/a"), b"1").to_vec().unwrap())
        .unwrap();
    d.handle_input(&Message::Write(p("/b"), b"1").to_vec().unwrap())
        .unwrap();
    let mut buf = [0u8; 1000];
    let n = d.poll_transmit(&mut buf).unwrap();
    assert_eq!(
        Message::parse(&buf[HEADER_LEN..n]),
        Ok(Message::RespError(p("/b")))
    );
    assert_eq!(d.read_untrusted("/b"), None);
    assert!(d.error().is_none());
}

#[test]
fn vm_value_with_nul_answers_resp_error() {
    let mut d = ready_daemon();
    d.handle_input(&Message::Write(p("/a"), b"\0").to_vec().unwrap())
        .unwrap();
    assert_eq!(d.poll_event(), Some(DaemonEvent::VmWriteRefused(p("/a"))));
}

#[test]
fn pushes_wait_for_the_sync_and_are_bounded() {
    let mut d = Daemon::new(DaemonLimits {
        max_pending: 2,
        ..DaemonLimits::DEFAULT
    });
    d.write("/before", b"1").unwrap();
    d.connect();
    let mut buf = [0u8; 1000];
    assert_eq!(
        d.poll_transmit(&mut buf),
        None,
        "nothing pushed before MULTIREAD"
    );
    d.handle_input(&Message::Multiread(QdbPath::EMPTY).to_vec().unwrap())
        .unwrap();
    while d.poll_transmit(&mut buf).is_some() {}
    d.write("/a", b"1").unwrap();
    d.write("/b", b"1").unwrap();
    assert_eq!(
        d.write("/c", b"1"),
        Err(LocalError::Full {
            what: "pending pushes"
        })
    );
    assert_eq!(d.read("/c"), None, "a refused push changes nothing");
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Write(u8, u8),
    Rm(u8),
    RmPrefix,
    Commit(u8),
    VmWrite(u8),
}

fn key(k: u8) -> String {
    alloc::format!("/qubes-firewall/10.0.0.{}/{:04}", k % 3, k % 5)
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Write(k, v)),
        any::<u8>().prop_map(Op::Rm),
        Just(Op::RmPrefix),
        any::<u8>().prop_map(Op::Commit),
        any::<u8>().prop_map(Op::VmWrite),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn vm_copy_converges_to_dom0(before in proptest::collection::vec(arb_op(), 0..20),
                                 after in proptest::collection::vec(arb_op(), 0..40),
                                 chunk in 1usize..300) {
        let mut pair = Pair::new(chunk);
        let mut commits = 0;
        let apply = |pair: &mut Pair, op: &Op, commits: &mut usize, synced: bool| match op {
            Op::Write(k, v) => pair.dom0.write(&key(*k), alloc::format!("v{v}").as_bytes()).unwrap(),
            Op::Rm(k) => pair.dom0.rm(&key(*k)).unwrap(),
            Op::RmPrefix => pair.dom0.rm("/qubes-firewall/10.0.0.1/").unwrap(),
            Op::Commit(k) => {
                pair.dom0.write(&alloc::format!("/qubes-firewall/10.0.0.{}", k % 3), b"").unwrap();
                *commits += usize::from(synced);
            }
            Op::VmWrite(k) => {
                if synced {
                    pair.vm.write(&alloc::format!("/vm/{k}"), b"x").unwrap();
                }
            }
        };
        for op in &before {
            apply(&mut pair, op, &mut commits, false);
        }
        pair.connect();
        pair.drive();
        let at_sync = pair.vm.list("/qubes-firewall/").filter(|(k, v)| v.is_empty() && firewall_commit_ip(k).is_some()).count();
        for op in &after {
            apply(&mut pair, op, &mut commits, true);
            pair.drive();
        }
        let got = pair.vm_events.iter().filter(|e| matches!(e, Event::FirewallCommit(_))).count();
        prop_assert_eq!(got, commits + at_sync);
        let fw: Vec<_> = vm_entries(&pair.vm).into_iter().filter(|(k, _)| !k.starts_with("/vm/")).collect();
        prop_assert_eq!(fw, dom0_entries(&pair.dom0));
        prop_assert!(pair.vm_events.iter().all(|e| !matches!(e, Event::WriteRefused(_))));
    }

    #[test]
    fn hostile_bytes_never_panic_the_vm_side(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut a = Agent::new(Limits::DEFAULT);
        a.connect();
        let _ = a.handle_input(&bytes);
        let mut buf = [0u8; 4096];
        while a.poll_transmit(&mut buf).is_some() {}
    }
}
