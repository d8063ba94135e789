//! The hosted firewall in the sim with real Linux peers: sys-net and two clients as network
//! namespaces (needs root, ip, curl, dig, dnsmasq, python3; skipped otherwise).
//!
//! sys-net serves HTTP on 192.0.2.80 (standing for the internet) and on its own address, and DNS
//! (dnsmasq) on 10.139.1.1; clients `work` and `work2` sit behind `fw-unikernel`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const FW: &str = env!("CARGO_BIN_EXE_firewall");
const DEADLINE: Duration = Duration::from_secs(30);

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn usable() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        && ["ip", "curl", "dig", "dnsmasq", "python3"]
            .iter()
            .all(|p| have(p))
}

/// The qubes-sim binary next to ours, built if missing.
fn sim_exe() -> PathBuf {
    let dir = Path::new(FW).parent().unwrap();
    let exe = dir.join("qubes-sim");
    if !exe.exists() {
        let target = dir.parent().unwrap();
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-p", "qubes-sim", "--target-dir"])
            .arg(target);
        if dir.ends_with("release") {
            c.arg("--release");
        }
        assert!(c.status().unwrap().success(), "building qubes-sim failed");
    }
    exe
}

struct World {
    exe: PathBuf,
    dir: PathBuf,
    daemon: Child,
    log: PathBuf,
    /// Our processes inside namespaces (servers), killed on drop.
    procs: Vec<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        // Closing the lifeline stops the sim, which removes its namespaces.
        drop(self.daemon.stdin.take());
        let t = Instant::now();
        while t.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl World {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg(prog).env("QUBES_SIM_DIR", &self.dir);
        c
    }

    fn run(&self, prog: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut c = self.cmd(prog);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut i = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                i.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, prog: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(prog, args, None);
        assert_eq!(
            code,
            0,
            "{prog} {args:?}: {err}\nsim log:\n{}\nfirewall console:\n{}",
            self.log(),
            self.console()
        );
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("vms/fw-unikernel/console.log")).unwrap_or_default()
    }

    /// (the firewall's address, sys-net's) from the firewall's "uplink up: A via B" line.
    fn uplink_ips(&self) -> (String, String) {
        let c = self.console();
        let l = c
            .lines()
            .find_map(|l| l.split("uplink up: ").nth(1))
            .unwrap_or_else(|| panic!("no uplink line:\n{c}"));
        let (a, b) = l.split_once(" via ").unwrap();
        (a.trim().to_string(), b.trim().to_string())
    }

    /// The network namespace of a started qube, from its process.
    fn netns(&self, vm: &str) -> String {
        let needle = format!("started qube '{vm}' (domid ");
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("{vm} not started:\n{log}"));
        let pid = line.rsplit("pid ").next().unwrap().trim_end_matches(')');
        let out = Command::new("ip")
            .args(["netns", "identify", pid])
            .output()
            .unwrap();
        let ns = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!ns.is_empty(), "no netns for {vm} (pid {pid})");
        ns
    }

    fn spawn_in(&mut self, ns: &str, cwd: &Path, args: &[&str]) {
        let c = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push(c);
    }
}

fn in_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn sh(ns: &str, cmd: &str) {
    let (ok, _) = in_ns(ns, &["sh", "-c", cmd]);
    assert!(ok, "{cmd} in {ns}");
}

/// `curl` from `ns`; the body on success.
fn curl(ns: &str, url: &str, extra: &[&str]) -> Option<String> {
    let mut args = vec!["curl", "-sS", "-m", "2"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out) = in_ns(ns, &args);
    ok.then_some(out)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < DEADLINE {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out: {what}");
}

fn boot() -> World {
    let dir = std::env::temp_dir().join(format!("fw-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy.d")).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../qubes-rpc/policy.d/90-unikernel-firewall.policy"
        ),
        dir.join("policy.d/90-unikernel-firewall.policy"),
    )
    .unwrap();
    start_sim(
        dir,
        &[
            &["qvm-create", "--label", "blue", "work2"],
            &["qvm-prefs", "work2", "netvm", "fw-unikernel"],
        ],
    )
}

#[test]
fn firewall_between_linux_clients_and_sys_net() {
    if !usable() {
        eprintln!("skipped: needs root, ip, curl, dig, dnsmasq and python3");
        return;
    }
    let mut w = boot();
    for vm in ["sys-net", "fw-unikernel", "work", "work2"] {
        w.ok("qvm-start", &[vm]);
    }
    let (net, work, work2) = (w.netns("sys-net"), w.netns("work"), w.netns("work2"));
    eventually("uplink and both client vifs up", || {
        let c = w.console();
        c.contains("uplink up: ") && c.matches("client vif").count() >= 2
    });
    let (fw_ip, net_ip) = w.uplink_ips();
    let eth0 = |ns: &str| {
        let (_, out) = in_ns(ns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        let a = out.split_whitespace().nth(3).expect("eth0 has an address");
        a.split('/').next().unwrap().to_string()
    };
    let (work_ip, work2_ip) = (eth0(&work), eth0(&work2));

    // sys-net: "the internet" at 192.0.2.80, DNS at the virtual 10.139.1.1.
    let www = w.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from sys-net\n").unwrap();
    std::fs::write(www.join("big"), vec![b'x'; 600 * 1024]).unwrap();
    sh(
        &net,
        "ip addr add 192.0.2.80/32 dev lo && ip addr add 10.139.1.1/32 dev lo",
    );
    let conf = w.dir.join("dnsmasq.conf");
    std::fs::write(
        &conf,
        "address=/example.test/192.0.2.80\naddress=/other.test/192.0.2.81\n",
    )
    .unwrap();
    let www_s = www.to_str().unwrap().to_string();
    w.spawn_in(
        &net,
        &www,
        &["python3", "-m", "http.server", "80", "--directory", &www_s],
    );
    let conf_arg = format!("--conf-file={}", conf.display());
    w.spawn_in(
        &net,
        &www,
        &[
            "dnsmasq",
            "--no-daemon",
            &conf_arg,
            "--no-resolv",
            "--no-hosts",
            "--listen-address=10.139.1.1",
            "--bind-interfaces",
        ],
    );
    // work2 serves on 8000 (for client-to-client and the port forward).
    w.spawn_in(
        &work2,
        &www,
        &[
            "python3",
            "-m",
            "http.server",
            "8000",
            "--directory",
            &www_s,
        ],
    );
    eventually("sys-net's server up", || {
        curl(&net, "http://192.0.2.80/", &[]).is_some()
    });

    // 1. curl and dig through the firewall.
    assert_eq!(
        curl(&work, "http://192.0.2.80/", &[]).as_deref(),
        Some("hello from sys-net\n")
    );
    let (ok, ans) = in_ns(
        &work,
        &[
            "dig",
            "+time=2",
            "+tries=1",
            "+short",
            "@10.139.1.1",
            "example.test",
        ],
    );
    assert!(ok && ans.trim() == "192.0.2.80", "dig: {ans}");

    // 2. A long transfer that must survive an unrelated rule change.
    let slow = Command::new("ip")
        .args([
            "netns",
            "exec",
            &work,
            "curl",
            "-sS",
            "-m",
            "20",
            "--limit-rate",
            "150k",
        ])
        .arg("-o")
        .arg(w.dir.join("big.out"))
        .arg("http://192.0.2.80/big")
        .spawn()
        .unwrap();

    // 3. qvm-firewall: deny tcp/80 to 192.0.2.80; effect on the first connection after commit.
    let t = Instant::now();
    w.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            "dst4=192.0.2.80",
            "proto=tcp",
            "dstports=80-80",
        ],
    );
    assert_eq!(
        curl(&work, "http://192.0.2.80/", &[]),
        None,
        "denied after commit"
    );
    eprintln!(
        "commit-to-effect (qvm-firewall returned to refused connection): {:?}",
        t.elapsed()
    );
    assert!(curl(&work, &format!("http://{net_ip}/"), &[]).is_some());
    let out = slow.wait_with_output().unwrap();
    // The long transfer was denied by the same change (it goes to 192.0.2.80:80): it ends.
    assert!(!out.status.success(), "denied flow went on");

    // 4. A transfer survives an unrelated change.
    w.ok("qvm-firewall", &["work", "del", "--rule-no", "0"]);
    let slow = Command::new("ip")
        .args([
            "netns",
            "exec",
            &work,
            "curl",
            "-sS",
            "-m",
            "20",
            "--limit-rate",
            "150k",
        ])
        .arg("-o")
        .arg(w.dir.join("big.out"))
        .arg("http://192.0.2.80/big")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    w.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            "dst4=198.51.100.1",
        ],
    );
    let out = slow.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "allowed transfer broken by an unrelated change"
    );
    assert_eq!(
        std::fs::metadata(w.dir.join("big.out")).unwrap().len(),
        600 * 1024
    );

    // 5. dsthost: allow a name only; the firewall resolves it itself.
    w.ok("qvm-firewall", &["work", "reset"]);
    w.ok("qvm-firewall", &["work", "del", "--rule-no", "0"]);
    w.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "action=accept",
            "dsthost=example.test",
            "proto=tcp",
        ],
    );
    w.ok("qvm-firewall", &["work", "add", "action=drop"]);
    let t = Instant::now();
    while curl(&work, "http://192.0.2.80/", &[]).is_none() {
        assert!(
            t.elapsed() < DEADLINE,
            "dsthost never allowed; rules:\n{}\nconsole:\n{}",
            w.ok("qvm-firewall", &["work", "list"]),
            w.console()
        );
    }
    assert_eq!(curl(&work, &format!("http://{net_ip}/"), &[]), None);
    w.ok("qvm-firewall", &["work", "reset"]);

    // 6. A spoofed source is dropped.
    sh(&work, "ip addr add 10.137.99.99/32 dev eth0");
    assert_eq!(
        curl(
            &work,
            "http://192.0.2.80/",
            &["--interface", "10.137.99.99"]
        ),
        None
    );

    // 7. Client-to-client: blocked, then allowed by the ruleset RPC for the pair.
    let to_work2 = format!("http://{work2_ip}:8000/");
    assert_eq!(
        curl(&work, &to_work2, &[]),
        None,
        "client-to-client open by default"
    );
    let ruleset =
        format!("allow {work_ip} {work2_ip} tcp 8000\nforward tcp 8080 {work2_ip} 8000\n");
    let (code, out, err) = w.run(
        "qvm-run",
        &[
            "-p",
            "--service",
            "fw-unikernel",
            "qubes.UnikernelFirewallRuleset",
        ],
        Some(&ruleset),
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.starts_with("ok: 1 forward(s), 1 allow(s)"), "{out}");
    assert_eq!(
        curl(&work, &to_work2, &[]).as_deref(),
        Some("hello from sys-net\n")
    );
    // The other way round is not allowed.
    w.spawn_in(
        &work,
        &www,
        &[
            "python3",
            "-m",
            "http.server",
            "8001",
            "--directory",
            &www_s,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(curl(&work2, &format!("http://{work_ip}:8001/"), &[]), None);

    // 8. The port forward: sys-net reaches work2 through the firewall's address.
    assert_eq!(
        curl(&net, &format!("http://{fw_ip}:8080/"), &[]).as_deref(),
        Some("hello from sys-net\n")
    );

    // 9. A bad ruleset is refused whole.
    let (code, out, _) = w.run(
        "qvm-run",
        &[
            "-p",
            "--service",
            "fw-unikernel",
            "qubes.UnikernelFirewallRuleset",
        ],
        Some("forward tcp 99999 1.2.3.4 80\n"),
    );
    assert_eq!(code, 1);
    assert_eq!(out, "error: line 1: bad port\n");
    let big = "# padding\n".repeat(7000);
    let (code, out, _) = w.run(
        "qvm-run",
        &[
            "-p",
            "--service",
            "fw-unikernel",
            "qubes.UnikernelFirewallRuleset",
        ],
        Some(&big),
    );
    assert_eq!(
        (code, out.as_str()),
        (1, "error: line 0: ruleset too long\n")
    );
    // A qube may not call the firewall's services (policy: dom0 only).
    let (code, out, err) = w.run(
        "qvm-run",
        &[
            "-p",
            "work",
            "qrexec-client-vm fw-unikernel qubes.UnikernelFirewallDrops",
        ],
        None,
    );
    assert_ne!(code, 0, "a qube read the drop log: {out} {err}");
    assert!(!out.contains("counters"), "{out}");

    // 10. The drop log shows what was dropped.
    let drops = w.ok(
        "qvm-run",
        &[
            "-p",
            "--service",
            "fw-unikernel",
            "qubes.UnikernelFirewallDrops",
        ],
    );
    assert!(
        drops.contains("source address is not the client's"),
        "{drops}"
    );
    assert!(drops.contains("denied by the client's rules"), "{drops}");
    assert!(drops.contains("client-to-client not allowed"), "{drops}");
    assert!(drops.contains("counters: received"), "{drops}");
    eprintln!("drop log:\n{drops}");

    // 11. Commit-to-effect latency, with reject mode so a refused connection fails at once:
    // from qvm-firewall's start (dom0 writes the rules and the commit) to the first refusal.
    let (code, out, _) = w.run(
        "qvm-run",
        &[
            "-p",
            "--service",
            "fw-unikernel",
            "qubes.UnikernelFirewallRuleset",
        ],
        Some(&format!("reject {work_ip}\n")),
    );
    assert_eq!(code, 0, "{out}");
    let mut lat = Vec::new();
    for _ in 0..5 {
        assert!(curl(&work, "http://192.0.2.80/", &[]).is_some());
        let t = Instant::now();
        w.ok(
            "qvm-firewall",
            &[
                "work",
                "add",
                "--before",
                "0",
                "action=drop",
                "dst4=192.0.2.80",
            ],
        );
        let cmd = t.elapsed();
        let (ok, _) = in_ns(&work, &["curl", "-sS", "-m", "2", "http://192.0.2.80/"]);
        let refused = t.elapsed();
        assert!(!ok, "first connection after the commit went through");
        assert!(
            refused - cmd < Duration::from_secs(1),
            "refusal was not immediate (reject mode)"
        );
        lat.push((cmd, refused));
        w.ok("qvm-firewall", &["work", "del", "--rule-no", "0"]);
    }
    lat.sort();
    eprintln!(
        "commit-to-effect: qvm-firewall {:?} (median of 5), first connection refused {:?} after its start",
        lat[2].0, lat[2].1
    );
}

/// Received bits per second of an `iperf3 -J` client run.
fn iperf_bps(json: &str) -> f64 {
    let at = json
        .find("\"sum_received\"")
        .expect("iperf3 JSON has sum_received");
    let rest = &json[at..];
    let b = rest.find("\"bits_per_second\":").expect("bits_per_second") + 18;
    rest[b..]
        .trim_start()
        .split(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn iperf_client(ns: &str, server: &str) -> f64 {
    let (ok, out) = in_ns(ns, &["iperf3", "-c", server, "-t", "5", "-J"]);
    assert!(ok, "iperf3 client failed: {out}");
    iperf_bps(&out)
}

/// The same path through Linux: client netns -> forwarding netns with nftables masquerade ->
/// server netns, veth links.
fn linux_nft_bps() -> f64 {
    let p = format!("fwb{}", std::process::id() % 100000);
    let (c, f, s) = (format!("{p}c"), format!("{p}f"), format!("{p}s"));
    let run = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    for n in [&c, &f, &s] {
        run(&["netns", "add", n]);
    }
    let script = format!(
        "set -e
ip link add {p}a netns {c} type veth peer name {p}b netns {f}
ip link add {p}d netns {f} type veth peer name {p}e netns {s}
ip -n {c} addr add 10.137.0.3/32 dev {p}a; ip -n {c} link set {p}a up; ip -n {c} link set lo up
ip -n {c} route add 10.137.0.2 dev {p}a; ip -n {c} route add default via 10.137.0.2
ip -n {f} addr add 10.137.0.2/32 dev {p}b; ip -n {f} link set {p}b up
ip -n {f} route add 10.137.0.3 dev {p}b
ip -n {f} addr add 10.138.0.2/24 dev {p}d; ip -n {f} link set {p}d up
ip -n {f} route add default via 10.138.0.1
ip -n {s} addr add 10.138.0.1/24 dev {p}e; ip -n {s} link set {p}e up; ip -n {s} link set lo up
ip -n {s} addr add 192.0.2.80/32 dev lo
ip netns exec {f} sysctl -qw net.ipv4.ip_forward=1
ip netns exec {f} nft add table ip nat
ip netns exec {f} nft add chain ip nat post '{{ type nat hook postrouting priority 100; }}'
ip netns exec {f} nft add rule ip nat post oifname {p}d masquerade
"
    );
    let st = Command::new("sh").args(["-c", &script]).status().unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &s, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let bps = st.success().then(|| iperf_client(&c, "192.0.2.80"));
    let _ = server.kill();
    let _ = server.wait();
    for n in [&c, &f, &s] {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
    }
    bps.expect("Linux comparison setup failed")
}

/// `cargo test -p firewall --test sim -- --ignored --nocapture throughput`: iperf3 TCP from
/// `work` to sys-net through the hosted firewall, and through Linux with nftables masquerade.
#[test]
#[ignore = "benchmark: run on purpose (root, iperf3, nft)"]
fn throughput_vs_linux_nftables() {
    if !usable() || !have("iperf3") || !have("nft") {
        eprintln!("skipped: needs root, iperf3, nft and the sim test's tools");
        return;
    }
    let mut w = boot();
    for vm in ["sys-net", "fw-unikernel", "work"] {
        w.ok("qvm-start", &[vm]);
    }
    let (net, work) = (w.netns("sys-net"), w.netns("work"));
    eventually("uplink and the client vif up", || {
        let c = w.console();
        c.contains("uplink up: ") && c.contains("client vif")
    });
    sh(&net, "ip addr add 192.0.2.80/32 dev lo");
    let dir = w.dir.clone();
    w.spawn_in(&net, &dir, &["iperf3", "-s"]);
    std::thread::sleep(Duration::from_millis(500));
    let fw = iperf_client(&work, "192.0.2.80");
    drop(w);
    let linux = linux_nft_bps();
    eprintln!(
        "iperf3 TCP client->sys-net, 5 s: hosted firewall {:.0} Mbit/s, Linux nftables masquerade {:.0} Mbit/s, ratio {:.3}",
        fw / 1e6,
        linux / 1e6,
        fw / linux
    );
    assert!(fw > 0.0 && linux > 0.0);
}

/// [`boot`] in its own state directory (tests run in parallel), with `extra` dom0 commands
/// after the common setup.
fn boot_tagged(tag: &str, extra: &[&[&str]]) -> World {
    let dir = std::env::temp_dir().join(format!("fw-sim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    start_sim(dir, extra)
}

/// Sets up sys-net, the firewall and `work` in the state directory `dir`, then `extra` dom0
/// commands, and starts the sim's daemon.
fn start_sim(dir: PathBuf, extra: &[&[&str]]) -> World {
    let exe = sim_exe();
    let log = dir.join("sim.log");
    let setup: &[&[&str]] = &[
        &["qvm-create", "--label", "red", "sys-net"],
        &["qvm-prefs", "sys-net", "provides_network", "True"],
        &["qvm-create", "--label", "green", "fw-unikernel"],
        &["qvm-prefs", "fw-unikernel", "kernel", FW],
        &["qvm-prefs", "fw-unikernel", "provides_network", "True"],
        &["qvm-prefs", "fw-unikernel", "netvm", "sys-net"],
        &["qvm-features", "fw-unikernel", "qrexec", "1"],
        &["qvm-create", "--label", "blue", "work"],
        &["qvm-prefs", "work", "netvm", "fw-unikernel"],
    ];
    for a in setup.iter().chain(extra) {
        let st = Command::new(&exe)
            .args(*a)
            .env("QUBES_SIM_DIR", &dir)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{a:?}");
    }
    let mut daemon = Command::new(&exe)
        .args(["daemon", "--stdin-lifeline"])
        .env("QUBES_SIM_DIR", &dir)
        .env("QUBES_SIM_NETNS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = daemon.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let w = World {
        exe,
        dir,
        daemon,
        log,
        procs: Vec::new(),
    };
    let ready = rx.recv_timeout(DEADLINE).expect("sim did not get ready");
    assert!(ready.starts_with("ready "), "{ready}");
    w
}

/// The global IPv6 address on `dev` in `ns`.
fn global_ip6(ns: &str, dev: &str) -> Option<String> {
    let (_, out) = in_ns(
        ns,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
        ],
    );
    let a = out.split_whitespace().nth(3)?;
    Some(a.split('/').next()?.to_string())
}

#[test]
fn ipv6_through_the_firewall_and_a_dst6_rule_drops_it() {
    if !usable() || !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("skipped: needs IPv6, root, ip, curl, dig, dnsmasq and python3");
        return;
    }
    let mut w = boot_tagged(
        "v6",
        &[
            &["qvm-features", "sys-net", "ipv6", "1"],
            &["qvm-features", "fw-unikernel", "ipv6", "1"],
        ],
    );
    for vm in ["sys-net", "fw-unikernel", "work"] {
        w.ok("qvm-start", &[vm]);
    }
    let (net, work) = (w.netns("sys-net"), w.netns("work"));
    eventually("uplink and the client vif up", || {
        let c = w.console();
        c.contains("uplink up: ") && c.contains("client vif")
    });
    // Qubes' addresses: the IPv4 in the low 32 bits of fd09:24ef:4179::/64.
    let work6 = global_ip6(&work, "eth0").expect("work's eth0 has an IPv6 address");
    assert!(work6.starts_with("fd09:24ef:4179::a89:"), "{work6}");
    let (_, routes) = in_ns(&work, &["ip", "-6", "route", "show", "default"]);
    let gw6 = routes
        .split_whitespace()
        .skip_while(|t| *t != "via")
        .nth(1)
        .unwrap_or_else(|| panic!("work has no IPv6 default route: {routes}"))
        .to_string();
    let (_, links) = in_ns(&net, &["ip", "-o", "link", "show"]);
    let vif = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| n.starts_with("vif"))
        .unwrap_or_else(|| panic!("no vif in sys-net: {links}"))
        .to_string();
    let net6 = global_ip6(&net, &vif).expect("sys-net's vif has its IPv6 gateway address");
    assert!(net6.starts_with("fd09:24ef:4179::a89:"), "{net6}");
    assert_ne!(gw6, net6, "work's gateway is the firewall, not sys-net");

    let www = w.dir.join("www6");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello over IPv6\n").unwrap();
    let www_s = www.to_str().unwrap().to_string();
    w.spawn_in(
        &net,
        &www,
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &net6,
            "--directory",
            &www_s,
        ],
    );
    let url = format!("http://[{net6}]:8080/");
    eventually("sys-net's IPv6 server up", || {
        curl(&net, &url, &["-6", "-g"]).is_some()
    });

    // 1. work -> fw-unikernel (NAT66) -> sys-net over IPv6.
    let mut got = None;
    eventually("curl -6 from work through the firewall", || {
        got = curl(&work, &url, &["-6", "-g"]);
        got.is_some()
    });
    assert_eq!(got.as_deref(), Some("hello over IPv6\n"));

    // 2. A dst6 rule drops it; IPv4 to sys-net is untouched by it.
    w.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            &format!("dst6={net6}"),
        ],
    );
    assert_eq!(
        curl(&work, &url, &["-6", "-g"]),
        None,
        "the dst6 rule applies to the first connection after the commit\nfirewall console:\n{}",
        w.console()
    );
    let console = w.console();
    assert!(
        console.contains(&format!("firewall rules for {work6}")),
        "the IPv6 rules were reloaded:\n{console}"
    );
    w.ok("qvm-firewall", &["work", "del", "--rule-no", "0"]);
    eventually("allowed again after the rule is gone", || {
        curl(&work, &url, &["-6", "-g"]).is_some()
    });
}
