//! QubesDB and qvm-firewall end to end: dom0's daemon per qube filled from the registry, the
//! qube's tools over their own port-111 vchan, and dom0's firewall reload sequence.

mod common;

use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::sim::{drain, lines, Guard, Sim, DEADLINE};
use common::State;

/// sys-net (provides network, domid 1) and work (its client, domid 2), both running.
fn net_sim(tag: &str) -> Sim {
    let state = State::new(tag);
    state.ok("qvm-create", &["--label", "red", "sys-net"]);
    state.ok("qvm-prefs", &["sys-net", "provides_network", "True"]);
    state.ok("qvm-create", &["--label", "blue", "work"]);
    state.ok("qvm-prefs", &["work", "netvm", "sys-net"]);
    state.ok("qvm-create", &["--label", "black", "vault"]);
    let sim = Sim::boot(state);
    sim.ok("qvm-start", &["sys-net"]);
    sim.ok("qvm-start", &["work"]);
    sim
}

#[test]
fn qubes_read_the_entries_dom0_writes() {
    let sim = net_sim("qdb-entries");
    // Inside the qube, through its agent: the tools are on a service's PATH.
    let out = sim.ok(
        "qvm-run",
        &["-p", "work", "qubesdb-read /name /type /qubes-ip /qubes-gateway /qubes-netmask /qubes-primary-dns /qubes-mac /qubes-gui-enabled"],
    );
    assert_eq!(
        out,
        "work\nAppVM\n10.137.0.2\n10.137.0.1\n255.255.255.255\n10.139.1.1\n00:16:3e:5e:6c:00\nFalse\n"
    );
    let (code, out, _) = sim.run_in("sys-net", "qubesdb-list", &["/qubes-netvm-"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "gateway\nnetmask\nnetwork\nprimary-dns\nsecondary-dns\n"
    );
    let (_, out, _) = sim.run_in(
        "sys-net",
        "qubesdb-read",
        &[
            "/qubes-netvm-gateway",
            "/connected-ips",
            "/qubes-firewall/10.137.0.2/policy",
            "/qubes-firewall/10.137.0.2/0000",
            "/qubes-firewall/10.137.0.2",
        ],
    );
    assert_eq!(out, "10.137.0.1\n10.137.0.2\ndrop\naction=accept\n\n");
    let (_, out, _) = sim.run_in("sys-net", "qubesdb-list", &["-f", "/qubes-firewall/"]);
    assert_eq!(
        out,
        "/qubes-firewall/10.137.0.2\n/qubes-firewall/10.137.0.2/0000\n/qubes-firewall/10.137.0.2/policy\n"
    );
    // A missing key fails like the real tool; -d gives a default.
    let (code, _, err) = sim.run_in("work", "qubesdb-read", &["/no-such-key"]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = sim.run_in("work", "qubesdb-read", &["-q", "/no-such-key", "/name"]);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "work\n", ""));
    let (_, out, _) = sim.run_in("work", "qubesdb-read", &["-f", "/name"]);
    assert_eq!(out, "/name = work\n");
    let (_, out, _) = sim.run_in("sys-net", "qubesdb-multiread", &["/qubes-netvm-"]);
    assert!(
        out.starts_with("gateway = 10.137.0.1\nnetmask = 255.255.255.255\n"),
        "{out}"
    );
    // vault has no netvm: no network keys.
    sim.ok("qvm-start", &["vault"]);
    let (code, _, _) = sim.run_in("vault", "qubesdb-read", &["/qubes-ip"]);
    assert_eq!(code, 1);
    // The qube's own writes land in dom0's untrusted area and are acknowledged.
    let (code, _, err) = sim.run_in("work", "qubesdb-write", &["/qubes-iptables-error", "x"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sim.run_in("work", "qubesdb-rm", &["/qubes-iptables-error"]);
    assert_eq!(code, 0, "{err}");
    // The real tool's default: one event, then exit.
    let mut w = sim.in_vm("sys-net", "qubesdb-watch");
    w.arg("/qubes-firewall/10.137.0.2").stdout(Stdio::piped());
    let mut child = w.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut guard = Guard(child);
    // The watch counts from its registration, after its sync: rewrite the commit marker
    // (a reset of the default rules changes nothing else) until the watch has seen one.
    let line = until_seen(&sim, &rx);
    assert_eq!(line, "/qubes-firewall/10.137.0.2");
    let end = Instant::now() + DEADLINE;
    while guard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "watch -n 1 did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Registry changes reach running qubes: a new client of sys-net, a service feature.
    sim.ok("qvm-create", &["--label", "red", "mail"]);
    sim.ok("qvm-prefs", &["mail", "netvm", "sys-net"]);
    sim.ok("qvm-features", &["work", "service.cups", "1"]);
    let (_, out, _) = sim.run_in(
        "sys-net",
        "qubesdb-read",
        &[
            "/connected-ips",
            "/qubes-firewall/10.137.0.4/0000",
            "/qubes-firewall/10.137.0.4",
        ],
    );
    assert_eq!(out, "10.137.0.2 10.137.0.4\naction=accept\n\n");
    let (_, out, _) = sim.run_in("work", "qubesdb-read", &["/qubes-service/cups"]);
    assert_eq!(out, "1\n");
    sim.ok("qvm-features", &["-D", "work", "service.cups"]);
    let (code, _, _) = sim.run_in("work", "qubesdb-read", &["-q", "/qubes-service/cups"]);
    assert_eq!(code, 1);
    // Many clients one after another: each connection is served and ends.
    for _ in 0..20 {
        let (code, out, err) = sim.run_in("work", "qubesdb-read", &["/name"]);
        assert_eq!((code, out.as_str()), (0, "work\n"), "{err}");
    }
}

/// Resets `work`'s (default) rules, rewriting its commit marker in sys-net, until the watch
/// behind `rx` reports a line; that line.
fn until_seen(sim: &Sim, rx: &Receiver<String>) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        sim.ok("qvm-firewall", &["work", "reset"]);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            return l;
        }
        assert!(Instant::now() < end, "the watch never fired: {}", sim.log());
    }
}

fn commits(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.matches('/').count() == 2).count()
}

/// Waits for the next firewall commit and returns every line up to quiet.
fn next_reload(rx: &Receiver<String>) -> Vec<String> {
    let mut got = drain(rx, Duration::from_millis(700));
    if commits(&got) == 0 {
        if let Ok(l) = rx.recv_timeout(DEADLINE) {
            got.push(l);
        }
        got.extend(drain(rx, Duration::from_millis(700)));
    }
    got
}

#[test]
fn firewall_changes_reach_the_netvm_as_one_commit_each() {
    let sim = net_sim("qdb-fw");
    let mut watch = sim.in_vm("sys-net", "qubesdb-watch");
    watch
        .args(["-n", "-1", "/qubes-firewall/"])
        .stdout(Stdio::piped());
    let mut child = watch.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let _guard = Guard(child);
    // The watch is registered after its sync: prime it, then let the priming lines pass.
    until_seen(&sim, &rx);
    drain(&rx, Duration::from_millis(700));
    let ip = "/qubes-firewall/10.137.0.2";
    let read = |k: &str| match sim.run_in("sys-net", "qubesdb-read", &["-q", k]) {
        (0, v, _) => v,
        (1, _, _) => "<none>\n".to_string(),
        other => panic!("{other:?}"),
    };

    sim.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            "proto=tcp",
            "dstports=22",
        ],
    );
    let got = next_reload(&rx);
    let want: Vec<String> = ["/", "/policy", "/0000", "/0001", ""]
        .iter()
        .map(|s| format!("{ip}{s}"))
        .collect();
    assert_eq!(got, want, "RM, policy, rules, then the commit marker");
    assert_eq!(
        read(&format!("{ip}/0000")),
        "action=drop proto=tcp dstports=22-22\n"
    );
    assert_eq!(read(&format!("{ip}/0001")), "action=accept\n");

    // An IPv6 rule keeps its number: the IPv4 directory gets a gap, as dom0 leaves it.
    sim.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "1",
            "action=accept",
            "dst6=2001:db8::/32",
        ],
    );
    let got = next_reload(&rx);
    assert_eq!(commits(&got), 1, "{got:?}");
    assert!(
        got.contains(&format!("{ip}/0002")) && !got.contains(&format!("{ip}/0001")),
        "{got:?}"
    );
    assert_eq!(read(&format!("{ip}/0001")), "<none>\n");
    assert_eq!(read(&format!("{ip}/0002")), "action=accept\n");

    let list = sim.ok("qvm-firewall", &["work", "list", "--raw"]);
    assert_eq!(
        list,
        "action=drop proto=tcp dstports=22-22\naction=accept dst6=2001:db8::/32\naction=accept\n"
    );

    sim.ok("qvm-firewall", &["work", "del", "--rule-no", "1"]);
    assert_eq!(commits(&next_reload(&rx)), 1);
    sim.ok(
        "qvm-firewall",
        &["work", "del", "action=drop", "proto=tcp", "dstports=22-22"],
    );
    assert_eq!(commits(&next_reload(&rx)), 1);
    assert_eq!(read(&format!("{ip}/0000")), "action=accept\n");
    assert_eq!(read(&format!("{ip}/0001")), "<none>\n");
    sim.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "action=drop",
            "specialtarget=dns",
            "comment=no dns",
        ],
    );
    let got = next_reload(&rx);
    assert_eq!(commits(&got), 1, "{got:?}");
    assert_eq!(
        read(&format!("{ip}/0001")),
        "action=drop specialtarget=dns\n"
    );
    sim.ok("qvm-firewall", &["work", "reset"]);
    assert_eq!(commits(&next_reload(&rx)), 1);
    assert_eq!(read(&format!("{ip}/0001")), "<none>\n");

    // A refused rule changes nothing and sends nothing.
    let (code, _, err) = sim.state.run(
        "qvm-firewall",
        &["work", "add", "action=accept", "dstports=80"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(drain(&rx, Duration::from_millis(500)).is_empty());

    // A restarted netvm gets its clients' rules in its first sync.
    sim.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            "dst4=192.168.0.0/16",
        ],
    );
    assert_eq!(commits(&next_reload(&rx)), 1);
    sim.ok("qvm-shutdown", &["--wait", "sys-net"]);
    sim.ok("qvm-start", &["sys-net"]);
    assert_eq!(
        read(&format!("{ip}/0000")),
        "action=drop dst4=192.168.0.0/16\n"
    );
}

#[test]
fn qvm_firewall_edits_the_registry_without_a_sim() {
    let state = State::new("qdb-fw-offline");
    state.ok("qvm-create", &["--label", "red", "work"]);
    let out = state.ok("qvm-firewall", &["work"]);
    assert_eq!(
        out.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[..2],
        ["0", "accept"]
    );
    state.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "action=drop",
            "dsthost=example.com",
            "expire=+3600",
        ],
    );
    let raw = state.ok("qvm-firewall", &["work", "list", "--raw"]);
    assert!(
        raw.starts_with("action=accept\naction=drop dsthost=example.com expire=@"),
        "{raw}"
    );
    let (code, _, err) = state.run("qvm-firewall", &["work", "del", "--rule-no", "7"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = state.run("qvm-firewall", &["work", "del", "action=drop"]);
    assert!(code == 1 && err.contains("Rule not found"), "{err}");
    let (code, _, _) = state.run("qvm-firewall", &["nosuch", "list"]);
    assert_eq!(code, 1);
}

/// A QubesDB header (72 bytes) with `len` declared and `body` after it.
fn qdb_frame(ty: u8, path: &str, len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 72];
    v[0] = ty;
    v[1..1 + path.len()].copy_from_slice(path.as_bytes());
    v[68..72].copy_from_slice(&len.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Connects to dom0's QubesDB as `vm` from this process, the way a hostile qube would.
fn raw_client(sim: &Sim, vm: &str) -> (qubes_sim::chan::Hosted, qubes_sim::chan::Vchan) {
    use platform_api::DomId;
    use qubes_sim::chan::{Hosted, Vchan};
    let domid: u32 = sim.domid(vm).parse().unwrap();
    let mut h = Hosted::new(&sim.run_dir(), DomId::new(domid).unwrap()).unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        match Vchan::connect(&mut h, DomId::DOM0, 111, DEADLINE, &|| false) {
            Ok(v) => return (h, v),
            Err(e) => assert!(Instant::now() < end, "{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write_all(v: &mut qubes_sim::chan::Vchan, mut data: &[u8]) {
    let end = Instant::now() + DEADLINE;
    while !data.is_empty() {
        let n = v.write(data).unwrap();
        data = &data[n..];
        assert!(Instant::now() < end, "dom0 does not read");
        std::thread::sleep(Duration::from_millis(1));
    }
}

use std::time::Instant;

/// Reads dom0's messages until `count` of them name `path`; their types.
fn replies_for(v: &mut qubes_sim::chan::Vchan, path: &str, count: usize) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let (mut buf, mut got) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    while got.len() < count {
        assert!(Instant::now() < end, "only {got:?} for {path}");
        let n = v.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 72 {
            let len = u32::from_le_bytes(buf[68..72].try_into().unwrap()) as usize;
            if buf.len() < 72 + len {
                break;
            }
            let name = &buf[1..65];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(64)];
            if name == path.as_bytes() {
                got.push(buf[0]);
            }
            buf.drain(..72 + len);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn hostile_qubesdb_messages_end_only_that_connection() {
    let sim = net_sim("qdb-hostile");
    for bad in [
        // READ is for the local socket only: fatal on the vchan.
        qdb_frame(0, "/name", 0, &[]),
        // A length far beyond QDB_MAX_DATA, before any allocation.
        qdb_frame(1, "/x", 0xFFFF_FFF0, &[]),
        // A path with a forbidden character.
        qdb_frame(2, "/a b", 0, &[]),
    ] {
        let (_h, mut v) = raw_client(&sim, "work");
        write_all(&mut v, &bad);
        let end = Instant::now() + DEADLINE;
        while v.peer_state().unwrap() != vchan::PeerState::Closed {
            assert!(
                Instant::now() < end,
                "dom0 kept a connection that broke the protocol"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The qube's next client is served as before.
        let (code, out, err) = sim.run_in("work", "qubesdb-read", &["/name"]);
        assert_eq!((code, out.as_str()), (0, "work\n"), "{err}");
    }
    assert_eq!(
        sim.log().matches("connection dropped").count(),
        3,
        "{}",
        sim.log()
    );
    // A value with a NUL is refused but the connection stays.
    let (_h, mut v) = raw_client(&sim, "work");
    write_all(&mut v, &qdb_frame(2, "", 0, &[]));
    write_all(&mut v, &qdb_frame(1, "/mine", 3, b"a\0b"));
    // A good write after it is answered on the same connection: RESP_ERROR, then RESP_OK.
    write_all(&mut v, &qdb_frame(1, "/mine", 1, b"x"));
    let replies = replies_for(&mut v, "/mine", 2);
    assert_eq!(
        replies,
        [9, 7],
        "RESP_ERROR for the NUL, RESP_OK for the good one"
    );
    assert_eq!(v.peer_state().unwrap(), vchan::PeerState::Connected);
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_keep_up() {
    let sim = net_sim("qdb-stale");
    // Never sends MULTIREAD and never reads: dom0 queues its pushes until a bound.
    let (_h, mut stale) = raw_client(&sim, "sys-net");
    write_all(&mut stale, &qdb_frame(2, "", 0, &[]));
    for i in 0..45 {
        let rule = format!("dst4=10.{i}.0.0/16");
        sim.ok(
            "qvm-firewall",
            &["work", "add", "--before", "0", "action=drop", &rule],
        );
    }
    let end = Instant::now() + DEADLINE;
    while !sim.log().contains("cannot take a change") {
        assert!(
            Instant::now() < end,
            "the stale connection was kept: {}",
            sim.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out, _) = sim.run_in(
        "sys-net",
        "qubesdb-read",
        &["/qubes-firewall/10.137.0.2/0045"],
    );
    assert_eq!((code, out.as_str()), (0, "action=accept\n"));
    let (_, out, _) = sim.run_in("sys-net", "qubesdb-list", &["/qubes-firewall/10.137.0.2/"]);
    assert_eq!(out.lines().count(), 47, "46 rules and the policy");
}

#[test]
fn a_netvm_without_qrexec_gets_its_clients_rules_over_its_own_connection() {
    use std::os::unix::fs::PermissionsExt;
    let state = State::new("qdb-noqrexec");
    // A stand-in for a hosted firewall unikernel: no qrexec agent, only QubesDB.
    let script = state.path().join("fw.kernel");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} qubesdb-watch -n -1 /qubes-firewall/ >> \"$QUBES_SIM_VM_DIR/watch.log\"\n",
            common::EXE
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    state.ok("qvm-create", &["--label", "red", "fw"]);
    state.ok("qvm-prefs", &["fw", "provides_network", "True"]);
    state.ok("qvm-prefs", &["fw", "kernel", script.to_str().unwrap()]);
    state.ok("qvm-features", &["fw", "qrexec", "0"]);
    state.ok("qvm-create", &["--label", "blue", "work"]);
    state.ok("qvm-prefs", &["work", "netvm", "fw"]);
    let sim = Sim::boot(state);
    sim.ok("qvm-start", &["fw"]);
    let ls = sim.ok("qvm-ls", &["fw"]);
    assert!(ls.contains("Running"), "{ls}");
    let log = sim.path().join("vms").join("fw").join("watch.log");
    let commits_in_log = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "/qubes-firewall/10.137.0.2")
            .count()
    };
    let wait_for = |n: usize| {
        let end = Instant::now() + DEADLINE;
        while commits_in_log() < n {
            assert!(Instant::now() < end, "{:?}", std::fs::read_to_string(&log));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // The stand-in's watch counts from its registration: reset the (default) rules until it
    // has seen a commit.
    let end = Instant::now() + DEADLINE;
    while commits_in_log() == 0 {
        assert!(Instant::now() < end, "the watch never fired");
        sim.ok("qvm-firewall", &["work", "reset"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Priming resets still on their way: wait until the count stays put for a moment.
    let mut base = commits_in_log();
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < end, "the watch never settled");
        std::thread::sleep(Duration::from_millis(10));
        let now = commits_in_log();
        if now != base {
            (base, still) = (now, Instant::now());
        }
    }
    // One reload when the client starts, one for the change.
    sim.ok("qvm-start", &["work"]);
    sim.ok(
        "qvm-firewall",
        &["work", "add", "action=drop", "proto=udp", "dstports=53"],
    );
    wait_for(base + 2);
    // A last reload: QubesDB is one ordered stream, so any extra commit would be in before it.
    sim.ok("qvm-firewall", &["work", "reset"]);
    wait_for(base + 3);
    assert_eq!(commits_in_log(), base + 3);
    sim.ok("qvm-kill", &["fw"]);
}
