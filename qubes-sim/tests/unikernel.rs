//! Hosted unikernel qubes (contract §3): their environment and console, the private volume's
//! vbd and image, vif entries to and from a unikernel netvm, and the QubesDB a netvm and its
//! clients get. A shell script stands in for the unikernel binary.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sim::{Sim, DEADLINE};
use common::State;
use platform_api::{DomId, Store, Tx};

/// A stand-in unikernel: prints its environment on its console, records its pid, idles.
fn stand_in(state: &State, name: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = state.path().join(format!("{name}.kernel"));
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"name=$QUBES_HOSTED_NAME domid=$QUBES_HOSTED_DOMID cmdline=$QUBES_HOSTED_CMDLINE\"\necho $$ > \"$QUBES_SIM_VM_DIR/pid\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

fn unikernel(state: &State, name: &str, label: &str) {
    state.ok("qvm-create", &["--label", label, name]);
    let k = stand_in(state, name);
    state.ok("qvm-prefs", &[name, "kernel", &k]);
    state.ok("qvm-features", &[name, "qrexec", "0"]);
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        && std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

struct Xs(platform_hosted::store::HostedStore);

impl Xs {
    fn new(run: &Path) -> Xs {
        Xs(platform_hosted::store::connect(run, DomId::DOM0).unwrap())
    }

    fn read(&mut self, path: &str) -> Option<String> {
        self.0
            .read(Tx::NONE, path)
            .ok()
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn get(&mut self, path: &str) -> String {
        self.read(path)
            .unwrap_or_else(|| panic!("{path} missing from xenstore"))
    }

    /// Waits until `path` reads as `want` (None: absent).
    fn wait_for(&mut self, path: &str, want: Option<&str>) {
        let end = Instant::now() + DEADLINE;
        loop {
            let got = self.read(path);
            if got.as_deref() == want {
                return;
            }
            assert!(Instant::now() < end, "{path}: {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn wait_file(p: &Path, needle: &str) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        if s.contains(needle) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{} has no {needle:?}: {s:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn qdb(sim: &Sim, vm: &str, key: &str) -> String {
    let (code, out, err) = sim.run_in(vm, "qubesdb-read", &[key]);
    assert_eq!(code, 0, "{vm}: {key}: {err}");
    out.trim_end_matches('\n').to_string()
}

/// fw (unikernel netvm, behind Linux sys-net), work (Linux client of fw), uc (unikernel client
/// of sys-net).
fn setup(tag: &str) -> State {
    let state = State::new(tag);
    state.ok("qvm-create", &["--label", "red", "sys-net"]);
    state.ok("qvm-prefs", &["sys-net", "provides_network", "True"]);
    unikernel(&state, "fw", "green");
    state.ok("qvm-prefs", &["fw", "provides_network", "True"]);
    state.ok("qvm-prefs", &["fw", "netvm", "sys-net"]);
    state.ok("qvm-prefs", &["fw", "kernelopts", "log=debug quiet"]);
    state.ok("qvm-create", &["--label", "blue", "work"]);
    state.ok("qvm-prefs", &["work", "netvm", "fw"]);
    unikernel(&state, "uc", "black");
    state.ok("qvm-prefs", &["uc", "netvm", "sys-net"]);
    state
}

fn check_devices(netns: bool) {
    let state = setup(if netns { "uk-dev-ns" } else { "uk-dev" });
    let env: &[(&str, &str)] = if netns {
        &[("QUBES_SIM_NETNS", "1")]
    } else {
        &[]
    };
    let sim = Sim::boot_with(state, env);
    for vm in ["sys-net", "fw", "work", "uc"] {
        sim.ok("qvm-start", &[vm]);
    }
    let id = |vm: &str| sim.domid(vm);
    let (net, fw, work, uc) = (id("sys-net"), id("fw"), id("work"), id("uc"));
    let ip = |vm: &str| qdb(&sim, vm, "/qubes-ip");
    let mut xs = Xs::new(&sim.run_dir());

    // Environment and console log.
    let console = sim.path().join("vms/fw/console.log");
    wait_file(
        &console,
        &format!("name=fw domid={fw} cmdline=log=debug quiet\n"),
    );

    // vbd of the private volume: 64 MiB image in the state directory.
    let be = xs.get(&format!("/local/domain/{fw}/device/vbd/51728/backend"));
    assert_eq!(be, format!("/local/domain/0/backend/vbd/{fw}/51728"));
    let image = sim.path().join("vms/fw/private.img");
    assert_eq!(xs.get(&format!("{be}/params")), image.to_string_lossy());
    assert_eq!(xs.get(&format!("{be}/sectors")), "131072");
    assert_eq!(xs.get(&format!("{be}/sector-size")), "512");
    assert_eq!(xs.get(&format!("{be}/mode")), "w");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20);
    assert!(
        xs.read(&format!("/local/domain/{work}/device/vbd"))
            .is_none(),
        "a Linux qube gets no hosted vbd"
    );

    // vif: Linux work behind unikernel fw.
    let fe = format!("/local/domain/{work}/device/vif/0");
    let be = format!("/local/domain/{fw}/backend/vif/{work}/0");
    assert_eq!(xs.get(&format!("{fe}/backend")), be);
    assert_eq!(xs.get(&format!("{be}/frontend")), fe);
    assert_eq!(xs.get(&format!("{be}/frontend-id")), work);
    assert_eq!(xs.get(&format!("{be}/mac")), "00:16:3e:5e:6c:00");
    assert_eq!(xs.get(&format!("{be}/ip")), ip("work"));
    assert_eq!(
        xs.get(&format!("{be}/gateway")),
        qdb(&sim, "work", "/qubes-gateway")
    );
    assert_eq!(xs.get(&format!("{be}/gateway")), ip("fw"));
    // vif: unikernel uc behind Linux sys-net; fw behind sys-net likewise.
    for (client, cid) in [("uc", &uc), ("fw", &fw)] {
        let fe = format!("/local/domain/{cid}/device/vif/0");
        let be = format!("/local/domain/{net}/backend/vif/{cid}/0");
        assert_eq!(xs.get(&format!("{fe}/backend")), be, "{client}");
        assert_eq!(xs.get(&format!("{be}/ip")), ip(client));
        assert_eq!(
            xs.get(&format!("{be}/gateway")),
            qdb(&sim, "sys-net", "/qubes-netvm-gateway")
        );
    }
    let ns = |d: &str| qubes_sim::netns::ns_name(sim.path(), d.parse().unwrap());
    if netns {
        assert_eq!(
            xs.get(&format!(
                "/local/domain/{fw}/backend/vif/{work}/0/hosted-netns"
            )),
            ns(&work)
        );
        assert_eq!(
            xs.get(&format!("/local/domain/{uc}/device/vif/0/hosted-netns")),
            ns(&net)
        );
        assert!(
            xs.read(&format!("/local/domain/{work}/device/vif/0/hosted-netns"))
                .is_none(),
            "a unikernel netvm has no netns of its own to name"
        );
        // No veth for links with a unikernel end: the unikernel makes its TAP device.
        let link = std::process::Command::new("ip")
            .args(["-n", &ns(&work), "link", "show", "eth0"])
            .output()
            .unwrap();
        assert!(
            !link.status.success(),
            "work got a veth to a unikernel netvm"
        );
    } else {
        assert!(xs.read(&format!("{be}/hosted-netns")).is_none());
    }

    // QubesDB of the unikernel netvm (reference/qubesdb.md §4) and of its client.
    let fw_ip = ip("fw");
    let wip = ip("work");
    for (k, v) in [
        ("/qubes-netvm-gateway", fw_ip.as_str()),
        ("/qubes-netvm-network", fw_ip.as_str()),
        ("/qubes-netvm-netmask", "255.255.255.255"),
        ("/qubes-netvm-primary-dns", "10.139.1.1"),
        ("/qubes-netvm-secondary-dns", "10.139.1.2"),
        ("/connected-ips", wip.as_str()),
        (
            "/qubes-gateway",
            &qdb(&sim, "sys-net", "/qubes-netvm-gateway"),
        ),
        ("/qubes-netmask", "255.255.255.255"),
        ("/qubes-mac", "00:16:3e:5e:6c:00"),
        ("/qubes-primary-dns", "10.139.1.1"),
        ("/qubes-secondary-dns", "10.139.1.2"),
        ("/name", "fw"),
        ("/type", "AppVM"),
    ] {
        assert_eq!(qdb(&sim, "fw", k), v, "fw {k}");
    }
    assert_eq!(
        qdb(&sim, "fw", &format!("/qubes-firewall/{wip}/policy")),
        "drop"
    );
    assert_eq!(
        qdb(&sim, "fw", &format!("/qubes-firewall/{wip}/0000")),
        "action=accept"
    );
    assert_eq!(qdb(&sim, "fw", &format!("/qubes-firewall/{wip}")), "");
    for (k, v) in [
        ("/qubes-gateway", fw_ip.as_str()),
        ("/qubes-netmask", "255.255.255.255"),
        ("/qubes-mac", "00:16:3e:5e:6c:00"),
        ("/qubes-primary-dns", "10.139.1.1"),
    ] {
        assert_eq!(qdb(&sim, "work", k), v, "work {k}");
    }

    // A client that stops takes its link's entries with it; starting again brings them back.
    sim.ok("qvm-kill", &["work"]);
    xs.wait_for(&format!("{be}/frontend"), None);
    sim.ok("qvm-start", &["work"]);
    xs.wait_for(&format!("{be}/frontend"), Some(&fe));
    // A netvm that stops: its clients' frontends go too.
    sim.ok("qvm-kill", &["fw"]);
    xs.wait_for(&format!("{fe}/backend"), None);

    // The image persists across restarts and grows with qvm-volume resize.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .map(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"vault data", 4096))
        .unwrap()
        .unwrap();
    sim.ok("qvm-volume", &["resize", "fw:private", "128M"]);
    sim.ok("qvm-start", &["fw"]);
    let be = format!("/local/domain/0/backend/vbd/{fw}/51728");
    xs.wait_for(&format!("{be}/sectors"), Some("262144"));
    let mut buf = [0u8; 10];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&image).unwrap(),
        &mut buf,
        4096,
    )
    .unwrap();
    assert_eq!(&buf, b"vault data");
    // A resize while it runs grows the image at once (the vbd shows it at the next start).
    sim.ok("qvm-volume", &["resize", "fw:private", "192M"]);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 192 << 20);
    // fw's restart re-links its running client.
    xs.wait_for(
        &format!("{fe}/backend"),
        Some(&format!("/local/domain/{fw}/backend/vif/{work}/0")),
    );
}

#[test]
fn unikernel_devices_follow_the_toolstack_layout() {
    check_devices(false);
}

#[test]
fn unikernel_devices_with_network_namespaces() {
    if !is_root() {
        eprintln!("skipped: needs root and ip(8)");
        return;
    }
    check_devices(true);
}
