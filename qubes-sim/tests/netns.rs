//! Network namespaces (`QUBES_SIM_NETNS=1`, root only; skipped otherwise): a client reaches its
//! netvm over the veth pair with the addresses QubesDB gives them; an offline qube reaches
//! nothing; nothing is left after the sim stops.

mod common;

use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::sim::{lines, Guard, Sim, DEADLINE};
use common::{State, EXE};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        && std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn listen(sim: &Sim, vm: &str, port: &str) -> (Guard, Receiver<String>) {
    let mut c = sim.state.cmd("qvm-run");
    c.args(["-p", vm, &format!("{EXE} net-probe listen {port}")])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), "listening");
    (Guard(child), rx)
}

#[test]
fn a_client_reaches_its_netvm_and_an_offline_qube_reaches_nothing() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root and ip(8)");
        return;
    }
    let state = State::new("netns");
    state.ok("qvm-create", &["--label", "red", "sys-net"]);
    state.ok("qvm-prefs", &["sys-net", "provides_network", "True"]);
    state.ok("qvm-create", &["--label", "blue", "work"]);
    state.ok("qvm-prefs", &["work", "netvm", "sys-net"]);
    state.ok("qvm-create", &["--label", "black", "vault"]);
    let prefix = qubes_sim::netns::prefix(state.path());
    let sim = Sim::boot_with(state, &[("QUBES_SIM_NETNS", "1")]);
    // The client first: the link is made when its netvm comes.
    for vm in ["work", "vault", "sys-net"] {
        sim.ok("qvm-start", &[vm]);
    }
    assert_eq!(namespaces(&prefix).len(), 3, "{}", sim.log());
    let mac = sim.ok(
        "qvm-run",
        &["-p", "work", "cat /sys/class/net/eth0/address"],
    );
    assert_eq!(mac, "00:16:3e:5e:6c:00\n");

    let (_g, rx) = listen(&sim, "sys-net", "7777");
    let out = sim.ok(
        "qvm-run",
        &[
            "-p",
            "work",
            &format!("{EXE} net-probe connect 10.137.0.1 7777 ping"),
        ],
    );
    assert_eq!(out, "pong\n");
    assert_eq!(
        rx.recv_timeout(DEADLINE).unwrap(),
        "got ping from 10.137.0.2"
    );

    // vault has only its loopback: the same address is unreachable from it.
    let (code, _, err) = sim.state.run(
        "qvm-run",
        &[
            "-p",
            "vault",
            &format!("{EXE} net-probe connect 10.137.0.1 7777 ping"),
        ],
    );
    assert_ne!(code, 0, "{err}");
    let devs = sim.ok("qvm-run", &["-p", "vault", "ls /sys/class/net"]);
    assert_eq!(devs, "lo\n");

    // A restarted client is linked again at once.
    sim.ok("qvm-shutdown", &["--wait", "work"]);
    assert_eq!(namespaces(&prefix).len(), 2);
    sim.ok("qvm-start", &["work"]);
    let (_g2, rx2) = listen(&sim, "sys-net", "7778");
    let out = sim.ok(
        "qvm-run",
        &[
            "-p",
            "work",
            &format!("{EXE} net-probe connect 10.137.0.1 7778 again"),
        ],
    );
    assert_eq!(out, "pong\n");
    assert_eq!(
        rx2.recv_timeout(DEADLINE).unwrap(),
        "got again from 10.137.0.2"
    );

    // A restarted netvm gets its running client back; a netvm change moves the link.
    sim.ok("qvm-shutdown", &["--wait", "sys-net"]);
    sim.ok("qvm-start", &["sys-net"]);
    let (_g3, rx3) = listen(&sim, "sys-net", "7779");
    let out = sim.ok(
        "qvm-run",
        &[
            "-p",
            "work",
            &format!("{EXE} net-probe connect 10.137.0.1 7779 back"),
        ],
    );
    assert_eq!(out, "pong\n");
    assert_eq!(
        rx3.recv_timeout(DEADLINE).unwrap(),
        "got back from 10.137.0.2"
    );
    sim.ok("qvm-create", &["--label", "red", "sys-net2"]);
    sim.ok("qvm-prefs", &["sys-net2", "provides_network", "True"]);
    sim.ok("qvm-start", &["sys-net2"]);
    sim.ok("qvm-prefs", &["work", "netvm", "sys-net2"]);
    let gw = sim.ok("qvm-run", &["-p", "work", "qubesdb-read /qubes-gateway"]);
    assert_eq!(gw, "10.137.0.4\n");
    let (_g4, rx4) = listen(&sim, "sys-net2", "7780");
    let out = sim.ok(
        "qvm-run",
        &[
            "-p",
            "work",
            &format!("{EXE} net-probe connect 10.137.0.4 7780 moved"),
        ],
    );
    assert_eq!(out, "pong\n");
    assert_eq!(
        rx4.recv_timeout(DEADLINE).unwrap(),
        "got moved from 10.137.0.2"
    );
    sim.ok("qvm-prefs", &["work", "netvm", ""]);
    let devs = sim.ok("qvm-run", &["-p", "work", "ls /sys/class/net"]);
    assert_eq!(devs, "lo\n");
    drop(sim);
    // Removal finishes as the sim stops: wait for it, with a deadline.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !namespaces(&prefix).is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "namespaces left behind: {:?}",
            namespaces(&prefix)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
