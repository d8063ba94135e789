//! Issue 4, item 3: a crashed qube process is reported (with its console's last lines) and does
//! not hang the sim; its namespace, TAP device, xenstore entries and shared pages go with it;
//! after the sim exits nothing is left. Run twice in a row over the same state directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sim::{Sim, DEADLINE};
use common::State;
use platform_api::{DomId, Store, Tx};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        && std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn namespaces(prefix: &str) -> Vec<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Live (non-zombie) processes of a run directory (their hosted environment names it).
fn processes_in(run: &Path) -> Vec<u32> {
    let needle = format!("QUBES_HOSTED_DIR={}", run.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state_of(sim: &Sim, vm: &str) -> String {
    sim.ok("qvm-ls", &[vm])
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string()
}

/// A stand-in unikernel netvm: makes a TAP device in its namespace when it has one (as a
/// hosted netback does), says who it is on its console, records its pid, idles.
fn setup(state: &State, netns: bool) {
    use std::os::unix::fs::PermissionsExt;
    let k = state.path().join("fw.kernel");
    std::fs::write(
        &k,
        "#!/bin/sh\ncase \"$QUBES_HOSTED_CMDLINE\" in *tap=uk0*) ip tuntap add dev uk0 mode tap && ip link set uk0 up;; esac\necho \"fw up as $QUBES_HOSTED_NAME\"\necho $$ > \"$QUBES_SIM_VM_DIR/pid\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o755)).unwrap();
    state.ok("qvm-create", &["--label", "green", "fw"]);
    state.ok("qvm-prefs", &["fw", "provides_network", "True"]);
    state.ok("qvm-prefs", &["fw", "kernel", k.to_str().unwrap()]);
    state.ok("qvm-features", &["fw", "qrexec", "0"]);
    if netns {
        // Only inside its namespace: without one it would make the device in ours.
        state.ok("qvm-prefs", &["fw", "kernelopts", "tap=uk0"]);
    }
    state.ok("qvm-create", &["--label", "blue", "work"]);
    state.ok("qvm-prefs", &["work", "netvm", "fw"]);
}

fn round(state: State, netns: bool, n: u32) -> State {
    let env: &[(&str, &str)] = if netns {
        &[("QUBES_SIM_NETNS", "1")]
    } else {
        &[]
    };
    let sim = Sim::boot_with(state, env);
    let prefix = qubes_sim::netns::prefix(sim.path());
    let run = sim.run_dir();
    sim.ok("qvm-start", &["fw"]);
    sim.ok("qvm-start", &["work"]);
    let fw = sim.domid("fw");
    let work = sim.domid("work");
    let fw_ns = qubes_sim::netns::ns_name(sim.path(), fw.parse().unwrap());
    let pid_file = sim.path().join("vms/fw/pid");
    until("fw's pid", || pid_file.exists());
    if netns {
        until("fw's TAP device", || {
            ip(&["-n", &fw_ns, "-o", "link"]).contains("uk0")
        });
    }
    let mut xs = platform_hosted::store::connect(&run, DomId::DOM0).unwrap();
    let vif = format!("/local/domain/{fw}/backend/vif/{work}/0/frontend");
    assert!(xs.read(Tx::NONE, &vif).is_ok(), "round {n}: no vif");

    // The crash: SIGKILL, as a panicking or faulting unikernel dies.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    until("fw to show as Crashed", || {
        state_of(&sim, "fw") == "Crashed"
    });
    let log = sim.log();
    let report = format!("qube 'fw' (domid {fw}) crashed: signal: 9");
    let line = log
        .lines()
        .find(|l| l.contains(&report))
        .unwrap_or_else(|| panic!("round {n}: no crash report: {log}"));
    assert!(line.contains("console: fw up as fw"), "{line}");
    // Its traces are gone: xenstore home and its vif backend, namespace and TAP, pages.
    assert!(xs.read(Tx::NONE, &vif).is_err(), "round {n}: vif left");
    assert!(xs
        .read(Tx::NONE, &format!("/local/domain/{fw}/name"))
        .is_err());
    assert!(!run.join(format!("gnt/d{fw}")).exists());
    if netns {
        assert!(
            !namespaces(&prefix).contains(&fw_ns),
            "round {n}: fw's netns left"
        );
        assert!(
            !ip(&["-o", "link"]).contains("uk0"),
            "round {n}: fw's TAP moved to the root namespace"
        );
    }
    // The sim did not hang: it serves the others and restarts the crashed qube.
    assert_eq!(sim.ok("qvm-run", &["-p", "work", "echo alive"]), "alive\n");
    sim.ok("qvm-start", &["fw"]);
    assert_eq!(state_of(&sim, "fw"), "Running");
    until("fw's new pid", || pid_file.exists());
    until("the vif again", || xs.read(Tx::NONE, &vif).is_ok());
    drop(xs);

    // The sim exits promptly and leaves nothing behind.
    let t = Instant::now();
    let state = sim.stop();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        !run.exists(),
        "round {n}: run directory (pages, sockets) left"
    );
    assert!(processes_in(&run).is_empty(), "round {n}: processes left");
    if netns {
        assert!(namespaces(&prefix).is_empty(), "round {n}: namespaces left");
        assert!(!ip(&["-o", "link"]).contains("uk0"), "round {n}: TAP left");
    }
    state
}

fn twice(netns: bool) {
    let state = State::new(if netns { "life-ns" } else { "life" });
    setup(&state, netns);
    let state = round(state, netns, 1);
    let state = round(state, netns, 2);
    // The private image of the unikernel outlived both runs.
    assert!(state.path().join("vms/fw/private.img").exists());
}

#[test]
fn crashes_are_reported_and_nothing_is_left_twice_in_a_row() {
    twice(false);
}

#[test]
fn crashes_are_reported_and_nothing_is_left_with_namespaces_twice_in_a_row() {
    if !is_root() {
        eprintln!("skipped: needs root and ip(8)");
        return;
    }
    twice(true);
}
