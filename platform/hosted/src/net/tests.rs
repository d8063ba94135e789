//! TAP devices into scratch namespaces (`qhtest*`), driven by a tiny ARP + UDP-echo responder
//! written on top of [`HostedNet`]; the namespace side is a thread that entered it with setns.
//! Needs root: skipped with a line locally, a failure when `CI` is set.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use platform_api::{Access, Events, Perm, Tx};

use super::*;
use crate::events::test_dir::TestDir;
use crate::store::{connect, connect_with_events, Daemon, HostedStore};

fn dom(n: u32) -> DomId {
    DomId::new(n).unwrap()
}

/// True when the test may run; otherwise prints a skip line, or fails under CI.
fn privileged(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() == Some("0") {
        assert!(
            Path::new("/dev/net/tun").exists(),
            "{test}: /dev/net/tun missing"
        );
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root (CAP_NET_ADMIN) and CI is set"
    );
    eprintln!("skipped {test}: needs root for TAP devices and network namespaces");
    false
}

fn ip_out(args: &[&str]) -> String {
    let o = Command::new(ip_binary()).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Whether `f` holds within two seconds.
fn eventually(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A scratch namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("qhtest{}{tag}", std::process::id());
        let _ = ip_out(&["netns", "del", &name]);
        ip("add netns", &["netns", "add", &name]).unwrap();
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip("del netns", &["netns", "del", &self.0]);
    }
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let nsfile = File::open(Path::new(NETNS_DIR).join(ns)).unwrap();
    std::thread::spawn(move || {
        sys::setns_net(nsfile.as_fd()).unwrap();
        f()
    })
}

/// Sends `payload` by UDP to `to` from inside the namespace and returns the echo.
fn udp_echo_from(ns: &str, to: SocketAddr, payload: &'static [u8]) -> JoinHandle<Vec<u8>> {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        s.send_to(payload, to).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf).expect("no echo came back");
        assert_eq!(from, to, "echo from the address we sent to");
        buf[..n].to_vec()
    })
}

/// What the responder saw.
#[derive(Debug, Default)]
struct Seen {
    /// (sender MAC, sender IP, target IP) of every ARP request.
    arp_requests: Vec<([u8; 6], Ipv4Addr, Ipv4Addr)>,
    /// (sender MAC, sender IP) of every ARP reply.
    arp_replies: Vec<([u8; 6], Ipv4Addr)>,
    /// (destination MAC, source IP, destination IP) of every UDP datagram echoed.
    udp: Vec<([u8; 6], Ipv4Addr, Ipv4Addr)>,
}

fn ipv4_at(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp(op: u16, src_mac: [u8; 6], src_ip: Ipv4Addr, dst_mac: [u8; 6], dst_ip: Ipv4Addr) -> Vec<u8> {
    let eth_dst = if op == 1 { [0xff; 6] } else { dst_mac };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&dst_ip.octets());
    f
}

/// Answers ARP for `me` and echoes every UDP datagram (swapping addresses and ports).
fn respond(dev: &mut HostedNet, me: Ipv4Addr, frame: &[u8], seen: &mut Seen) {
    let mac = dev.mac();
    if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] {
        let a = &frame[14..];
        let sha: [u8; 6] = a[8..14].try_into().unwrap();
        let (spa, tpa) = (ipv4_at(&a[14..18]), ipv4_at(&a[24..28]));
        match u16::from_be_bytes([a[6], a[7]]) {
            1 => {
                seen.arp_requests.push((sha, spa, tpa));
                if tpa == me {
                    assert!(dev.send(&arp(2, mac, me, sha, spa)).unwrap());
                }
            }
            2 => seen.arp_replies.push((sha, spa)),
            _ => {}
        }
    } else if frame.len() >= 42 && frame[12..14] == [0x08, 0x00] && frame[23] == 17 {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let mut out = frame.to_vec();
        out.copy_within(6..12, 0);
        out[6..12].copy_from_slice(&mac);
        let ip = &mut out[14..14 + ihl];
        let (src, dst) = (ipv4_at(&ip[12..16]), ipv4_at(&ip[16..20]));
        seen.udp.push((frame[0..6].try_into().unwrap(), src, dst));
        ip[12..16].copy_from_slice(&dst.octets());
        ip[16..20].copy_from_slice(&src.octets());
        ip[10..12].fill(0);
        let c = ip_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut out[14 + ihl..];
        let (sp, dp) = ([udp[0], udp[1]], [udp[2], udp[3]]);
        udp[0..2].copy_from_slice(&dp);
        udp[2..4].copy_from_slice(&sp);
        udp[6..8].copy_from_slice(&[0, 0]);
        assert!(dev.send(&out).unwrap());
    }
}

/// Runs the responder on `dev` until `done` is set or 10 s pass, waking through `events`.
fn serve_until(
    dev: &mut HostedNet,
    events: &mut HostedEvents,
    me: Ipv4Addr,
    done: &AtomicBool,
    seen: &mut Seen,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 2048];
    while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
        let set = events.wait(Some(Duration::from_millis(50))).unwrap();
        if set.is_empty() {
            continue;
        }
        assert!(
            set.contains(dev.port()),
            "woke for a port that is not the TAP's"
        );
        while let Some(n) = dev.recv(&mut buf).unwrap() {
            respond(dev, me, &buf[..n], seen);
        }
    }
}

/// Serves until the namespace-side thread `h` finishes, returning its result.
fn serve_while<T: Send + 'static>(
    dev: &mut HostedNet,
    events: &mut HostedEvents,
    me: Ipv4Addr,
    seen: &mut Seen,
    h: JoinHandle<T>,
) -> T {
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let watcher = std::thread::spawn(move || {
        let r = h.join();
        d2.store(true, Ordering::SeqCst);
        r
    });
    serve_until(dev, events, me, &done, seen);
    watcher.join().unwrap().expect("namespace thread failed")
}

const FE: u32 = 12;
const BE: u32 = 3;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 12);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 3);
const CLIENT_IP6: &str = "fd09:24ef:4179::a89:c";
const GATEWAY6: &str = "fd09:24ef:4179::a89:3";

/// A run with xenstored, dom0's connection, and the vif of FE served by BE described the
/// way contract §3 says, with `ns` as the client's and the netvm's namespace.
struct Fixture {
    t: TestDir,
    _xs: Daemon,
    dom0: HostedStore,
}

impl Fixture {
    fn new(client_ns: &str, netvm_ns: &str) -> Self {
        let t = TestDir::new();
        let xs = Daemon::spawn(t.path(), &[dom(0), dom(BE), dom(FE)]).unwrap();
        let mut d0 = connect(t.path(), dom(0)).unwrap();
        let bdir = format!("/local/domain/{BE}/backend/vif/{FE}/0");
        let fdir = format!("/local/domain/{FE}/device/vif/0");
        d0.mkdir(Tx::NONE, &bdir).unwrap();
        let perms = [
            Perm {
                domid: dom(BE),
                access: Access::None,
            },
            Perm {
                domid: dom(FE),
                access: Access::Read,
            },
        ];
        d0.set_perms(Tx::NONE, &bdir, &perms).unwrap();
        for (k, v) in [
            ("frontend", fdir.clone()),
            ("frontend-id", FE.to_string()),
            ("mac", "00:16:3e:5e:6c:00".into()),
            ("ip", format!("{CLIENT_IP} {CLIENT_IP6}")),
            ("gateway", GATEWAY.to_string()),
            ("gateway6", GATEWAY6.into()),
            ("hosted-netns", client_ns.into()),
        ] {
            d0.write(Tx::NONE, &format!("{bdir}/{k}"), v.as_bytes())
                .unwrap();
        }
        for (k, v) in [
            ("backend", bdir.clone()),
            ("backend-id", BE.to_string()),
            ("mac", "00:16:3e:5e:6c:00".into()),
            ("hosted-netns", netvm_ns.into()),
        ] {
            d0.write(Tx::NONE, &format!("{fdir}/{k}"), v.as_bytes())
                .unwrap();
        }
        Fixture {
            t,
            _xs: xs,
            dom0: d0,
        }
    }

    fn domain(&self, d: u32) -> (HostedEvents, HostedStore) {
        let ev = HostedEvents::new(self.t.path(), dom(d)).unwrap();
        let st = connect_with_events(self.t.path(), &ev).unwrap();
        (ev, st)
    }
}

#[test]
fn netback_tap_is_the_clients_eth0_and_carries_arp_and_udp_both_ways() {
    if !privileged("netback_tap") {
        return;
    }
    let ns = Netns::new("nb");
    let fx = Fixture::new(&ns.0, "unused");
    let (mut ev, mut st) = fx.domain(BE);
    let mut dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    assert!(dev.is_up());
    assert_eq!(dev.mac(), BACKEND_MAC);
    assert!(dev.port().get() >= crate::events::FIRST_PSEUDO_PORT);
    let link = ip_out(&["-n", &ns.0, "addr", "show", "dev", "eth0"]);
    assert!(link.contains("00:16:3e:5e:6c:00"), "{link}");
    assert!(link.contains("10.137.0.12/32"), "{link}");
    assert!(link.contains("UP"), "{link}");
    let routes = ip_out(&["-n", &ns.0, "route"]);
    assert!(
        routes.contains("default via 10.137.0.3 dev eth0"),
        "{routes}"
    );

    let mut seen = Seen::default();
    let h = udp_echo_from(&ns.0, SocketAddr::from((GATEWAY, 7)), b"to the gateway");
    assert_eq!(
        serve_while(&mut dev, &mut ev, GATEWAY, &mut seen, h),
        b"to the gateway"
    );
    assert!(
        seen.arp_requests
            .contains(&(CLIENT_MAC, CLIENT_IP, GATEWAY)),
        "the client asked for the gateway from its MAC and IP: {seen:?}"
    );
    // Off-link: through the default route, to our MAC.
    let far = Ipv4Addr::new(192, 0, 2, 9);
    let h = udp_echo_from(&ns.0, SocketAddr::from((far, 53)), b"far away");
    assert_eq!(
        serve_while(&mut dev, &mut ev, GATEWAY, &mut seen, h),
        b"far away"
    );
    assert!(
        seen.udp.contains(&(BACKEND_MAC, CLIENT_IP, far)),
        "{seen:?}"
    );
    drop(dev);
    assert!(
        eventually(|| !ip_out(&["-n", &ns.0, "link"]).contains("eth0")),
        "dropping the device removes the netdev"
    );
}

#[test]
fn netfront_tap_is_the_netvms_vif_with_route_proxy_arp_and_gateway() {
    if !privileged("netfront_tap") {
        return;
    }
    let ns = Netns::new("nf");
    let fx = Fixture::new("unused", &ns.0);
    let (mut ev, mut st) = fx.domain(FE);
    let mut dev = HostedNet::netfront(&mut st, &ev, dom(FE), 0).unwrap();
    assert_eq!(dev.mac(), CLIENT_MAC);
    let vif = format!("vif{FE}.0");
    let link = ip_out(&["-n", &ns.0, "addr", "show", "dev", &vif]);
    assert!(
        link.contains("fe:ff:ff:ff:ff:ff") && link.contains("10.137.0.3/32"),
        "{link}"
    );
    let routes = ip_out(&["-n", &ns.0, "route"]);
    assert!(
        routes.contains(&format!("10.137.0.12 dev {vif}")),
        "{routes}"
    );
    let key = format!("/proc/sys/net/ipv4/conf/{vif}/proxy_arp");
    let proxy = in_netns(&ns.0, move || std::fs::read_to_string(key).unwrap())
        .join()
        .unwrap();
    assert_eq!(proxy.trim(), "1");

    // The netvm talks to us (the client) ...
    let mut seen = Seen::default();
    let h = udp_echo_from(&ns.0, SocketAddr::from((CLIENT_IP, 7)), b"hello client");
    assert_eq!(
        serve_while(&mut dev, &mut ev, CLIENT_IP, &mut seen, h),
        b"hello client"
    );
    assert!(
        seen.arp_requests
            .iter()
            .any(|&(mac, _, tpa)| mac == BACKEND_MAC && tpa == CLIENT_IP),
        "{seen:?}"
    );
    // ... and answers our ARP for the gateway with the vif's MAC.
    assert!(dev
        .send(&arp(1, CLIENT_MAC, CLIENT_IP, [0; 6], GATEWAY))
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 2048];
    while seen.arp_replies.is_empty() && Instant::now() < deadline {
        ev.wait(Some(Duration::from_millis(50))).unwrap();
        while let Some(n) = dev.recv(&mut buf).unwrap() {
            respond(&mut dev, CLIENT_IP, &buf[..n], &mut seen);
        }
    }
    assert_eq!(seen.arp_replies.first(), Some(&(BACKEND_MAC, GATEWAY)));
}

#[test]
fn ipv6_is_set_up_like_setup_ip_and_vif_route_qubes() {
    if !privileged("ipv6_setup") || !Path::new("/proc/sys/net/ipv6").exists() {
        return;
    }
    let (client, netvm) = (Netns::new("c6"), Netns::new("n6"));
    let fx = Fixture::new(&client.0, &netvm.0);
    // The client's eth0: its /128 (no DAD), the gateway on-link, the default route via it.
    let (ev, mut st) = fx.domain(BE);
    let back = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    let addrs = ip_out(&["-n", &client.0, "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{CLIENT_IP6}/128")), "{addrs}");
    assert!(
        addrs
            .lines()
            .any(|l| l.contains(CLIENT_IP6) && l.contains("nodad") && !l.contains("tentative")),
        "DAD is off for the Qubes address: {addrs}"
    );
    let routes = ip_out(&["-n", &client.0, "-6", "route"]);
    assert!(
        routes.contains(&format!("{GATEWAY6} dev eth0"))
            && routes.contains(&format!("default via {GATEWAY6} dev eth0")),
        "{routes}"
    );
    // The netvm's vif: the /128 route to the client, the gateway address, proxy NDP.
    let (ev2, mut st2) = fx.domain(FE);
    let front = HostedNet::netfront(&mut st2, &ev2, dom(FE), 0).unwrap();
    let vif = format!("vif{FE}.0");
    let addrs = ip_out(&["-n", &netvm.0, "-6", "addr", "show", "dev", &vif]);
    assert!(addrs.contains(&format!("{GATEWAY6}/128")), "{addrs}");
    let routes = ip_out(&["-n", &netvm.0, "-6", "route"]);
    assert!(
        routes.contains(&format!("{CLIENT_IP6} dev {vif}")),
        "{routes}"
    );
    let key = format!("/proc/sys/net/ipv6/conf/{vif}/proxy_ndp");
    let proxy = in_netns(&netvm.0, move || std::fs::read_to_string(key).unwrap())
        .join()
        .unwrap();
    assert_eq!(proxy.trim(), "1");
    drop((back, front));
}

#[test]
fn without_gateway6_the_client_gets_its_address_and_no_ipv6_route() {
    if !privileged("no_gateway6") || !Path::new("/proc/sys/net/ipv6").exists() {
        return;
    }
    let ns = Netns::new("g6");
    let mut fx = Fixture::new(&ns.0, "unused");
    let bdir = format!("/local/domain/{BE}/backend/vif/{FE}/0");
    fx.dom0.rm(Tx::NONE, &format!("{bdir}/gateway6")).unwrap();
    let (ev, mut st) = fx.domain(BE);
    let _dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    let addrs = ip_out(&["-n", &ns.0, "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{CLIENT_IP6}/128")), "{addrs}");
    let routes = ip_out(&["-n", &ns.0, "-6", "route"]);
    assert!(!routes.contains("default"), "{routes}");
}

#[test]
fn devices_leave_nothing_behind_run_twice() {
    if !privileged("cleanup") {
        return;
    }
    for round in 0..2 {
        let ns = Netns::new("cl");
        let name = ns.0.clone();
        let fx = Fixture::new(&ns.0, &ns.0);
        let (ev, mut st) = fx.domain(BE);
        let (ev2, mut st2) = fx.domain(FE);
        let back = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
        let front = HostedNet::netfront(&mut st2, &ev2, dom(FE), 0).unwrap();
        let links = ip_out(&["-n", &name, "link"]);
        assert!(
            links.contains("eth0") && links.contains("vif12.0"),
            "{links}"
        );
        let created = [back.created_as().to_owned(), front.created_as().to_owned()];
        drop((back, front));
        // The last close may trail by a concurrent test's fork-then-exec holding the fd.
        assert!(
            eventually(|| {
                let links = ip_out(&["-n", &name, "link"]);
                !links.contains("eth0") && !links.contains("vif12.0")
            }),
            "round {round}: {}",
            ip_out(&["-n", &name, "link"])
        );
        let ours = ip_out(&["link"]);
        for c in &created {
            assert!(!ours.contains(&format!("{c}:")), "round {round}: {c} left");
        }
        drop(ns);
        assert!(
            !ip_out(&["netns", "list"]).contains(&name),
            "round {round}: namespace left"
        );
        drop(fx);
    }
}

/// Child half of `a_killed_process_leaves_no_tap_behind` (run by re-executing this binary).
#[test]
#[ignore = "run as a child process by a_killed_process_leaves_no_tap_behind"]
fn child_holds_a_netback() {
    let Ok(dir) = std::env::var("HOSTED_TEST_NET_DIR") else {
        return;
    };
    let ev = HostedEvents::new(Path::new(&dir), dom(BE)).unwrap();
    let mut st = connect_with_events(Path::new(&dir), &ev).unwrap();
    let _dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    println!("holding");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_process_leaves_no_tap_behind() {
    if !privileged("killed_process") {
        return;
    }
    let ns = Netns::new("kp");
    let fx = Fixture::new(&ns.0, &ns.0);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "net::tests::child_holds_a_netback",
            "--nocapture",
        ])
        .env("HOSTED_TEST_NET_DIR", fx.t.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(|| ip_out(&["-n", &ns.0, "link"]).contains("eth0"))
        || eventually(|| ip_out(&["-n", &ns.0, "link"]).contains("eth0"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(up, "the child never made its TAP");
    assert!(
        eventually(|| !ip_out(&["-n", &ns.0, "link"]).contains("eth0")),
        "SIGKILL closed the fd, so the kernel removed the TAP"
    );
}

#[test]
fn a_deleted_netdev_or_namespace_makes_the_device_down() {
    if !privileged("down") {
        return;
    }
    let ns = Netns::new("dn");
    let fx = Fixture::new(&ns.0, &ns.0);
    let (mut ev, mut st) = fx.domain(BE);
    let mut dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    ip("delete", &["-n", &ns.0, "link", "del", "eth0"]).unwrap();
    let set = ev.wait(Some(Duration::from_secs(5))).unwrap();
    assert!(set.contains(dev.port()), "a removed netdev wakes the loop");
    let mut buf = [0u8; 1514];
    assert_eq!(dev.recv(&mut buf).unwrap(), None);
    assert!(!dev.is_up());
    assert!(
        dev.send(&[0u8; 60]).unwrap(),
        "a frame to a gone link is dropped"
    );

    let mut dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    assert!(dev.is_up());
    let name = ns.0.clone();
    drop(ns);
    assert!(!dev.is_up(), "namespace {name} gone");
    let _ = dev.recv(&mut buf);
}

#[test]
fn frames_outside_ethernet_sizes_are_refused() {
    if !privileged("frame_sizes") {
        return;
    }
    let ns = Netns::new("fs");
    let fx = Fixture::new(&ns.0, &ns.0);
    let (ev, mut st) = fx.domain(BE);
    let mut dev = HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
    assert!(dev.send(&[0u8; MTU + ETH_HLEN + 1]).is_err());
    assert!(dev.send(&[0u8; ETH_HLEN - 1]).is_err());
    let mut f = vec![0u8; MTU + ETH_HLEN];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&BACKEND_MAC);
    assert!(dev.send(&f).unwrap());
}

#[test]
fn hostile_store_values_are_refused_before_any_device_is_made() {
    if !privileged("hostile_values") {
        return;
    }
    let ns = Netns::new("hv");
    let mut fx = Fixture::new(&ns.0, &ns.0);
    let (ev, mut st) = fx.domain(BE);
    let bdir = format!("/local/domain/{BE}/backend/vif/{FE}/0");
    for (key, value) in [
        ("hosted-netns", "../../etc"),
        ("hosted-netns", "-all"),
        ("hosted-netns", "qhtest-does-not-exist"),
        ("mac", "00:16:3e:5e:6c"),
        ("ip", "10.137.0.300"),
        ("gateway", "gw"),
        ("gateway6", "10.137.0.3"),
        ("ip", "10.137.0.12 fd09::zz"),
    ] {
        let good = st
            .read(Tx::NONE, &format!("backend/vif/{FE}/0/{key}"))
            .unwrap();
        fx.dom0
            .write(Tx::NONE, &format!("{bdir}/{key}"), value.as_bytes())
            .unwrap();
        assert!(
            HostedNet::netback(&mut st, &ev, dom(FE), 0).is_err(),
            "{key}={value} accepted"
        );
        fx.dom0
            .write(Tx::NONE, &format!("{bdir}/{key}"), &good)
            .unwrap();
    }
    assert!(!ip_out(&["-n", &ns.0, "link"]).contains("eth0"));
    HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
}

#[test]
fn a_name_taken_in_the_namespace_fails_cleanly_without_leaking_the_tap() {
    if !privileged("name_taken") {
        return;
    }
    let ns = Netns::new("nt");
    let fx = Fixture::new(&ns.0, &ns.0);
    let (ev, mut st) = fx.domain(BE);
    let veth = [
        "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "vpeer",
    ];
    ip("veth", &veth).unwrap();
    let start = Instant::now();
    assert!(HostedNet::netback(&mut st, &ev, dom(FE), 0).is_err());
    assert!(
        start.elapsed() >= RENAME_PAUSE * (RENAME_TRIES - 1),
        "retried"
    );
    assert!(
        eventually(|| !ip_out(&["-n", &ns.0, "link"]).contains("qh")),
        "the temporary TAP is gone: {}",
        ip_out(&["-n", &ns.0, "link"])
    );
    ip("veth", &["-n", &ns.0, "link", "del", "eth0"]).unwrap();
    HostedNet::netback(&mut st, &ev, dom(FE), 0).unwrap();
}

#[test]
fn mac_ip_and_namespace_parsers() {
    assert_eq!(parse_mac("00:16:3e:5e:6c:00"), Some(CLIENT_MAC));
    assert_eq!(parse_mac("fe:ff:ff:ff:ff:ff\n"), Some(BACKEND_MAC));
    for bad in [
        "",
        "00:16:3e:5e:6c",
        "00:16:3e:5e:6c:00:01",
        "0:16:3e:5e:6c:00",
        "zz:16:3e:5e:6c:00",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
    assert_eq!(fmt_mac(CLIENT_MAC), "00:16:3e:5e:6c:00");
    assert_eq!(parse_ips("10.137.0.12"), Some((CLIENT_IP, None)));
    assert_eq!(
        parse_ips("10.137.0.12 fd09:24ef:4179::a89:c"),
        Some((CLIENT_IP, Some("fd09:24ef:4179::a89:c".parse().unwrap())))
    );
    assert_eq!(parse_ips("10.137.0.12 x"), None);
    assert_eq!(parse_ips("10.137.0.12 ::1 ::2"), None);
    assert_eq!(parse_ips(""), None);
    assert!(valid_netns("qubes-sim-12.work_1"));
    for bad in ["", "..", ".x", "-n", "a/b", "a b", &"x".repeat(65)] {
        assert!(!valid_netns(bad), "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn mac_round_trips(m in proptest::array::uniform6(proptest::prelude::any::<u8>())) {
        proptest::prop_assert_eq!(parse_mac(&fmt_mac(m)), Some(m));
    }

    #[test]
    fn ips_round_trip(a in proptest::prelude::any::<u32>(), b in proptest::option::of(proptest::prelude::any::<u128>())) {
        let v4 = Ipv4Addr::from(a);
        let v6 = b.map(Ipv6Addr::from);
        let s = match v6 {
            Some(v6) => format!("{v4} {v6}"),
            None => v4.to_string(),
        };
        proptest::prop_assert_eq!(parse_ips(&s), Some((v4, v6)));
    }

    #[test]
    fn hostile_vif_values_never_panic(s in "\\PC{0,80}") {
        let _ = parse_mac(&s);
        let _ = parse_ips(&s);
        if valid_netns(&s) {
            proptest::prop_assert!(!s.contains('/') && !s.starts_with('-') && s != "..");
        }
    }
}
