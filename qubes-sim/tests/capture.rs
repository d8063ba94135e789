//! No mock protocol paths (issue 4, item 4): with `QUBES_SIM_CAPTURE` the sim records every byte
//! between a qube's processes and dom0 (the xenstore socket through a proxy, and dom0's end of
//! every vchan); this test decodes all of it with the protocol crates, frame by frame, and
//! fails on any byte that is not xs_wire, qrexec (control or data), QubesDB or GUI.

mod common;

use std::time::{Duration, Instant};

use common::sim::{Sim, DEADLINE};
use common::State;
use qubes_sim::capture::{self, decode, Dir, Kind, Record};

#[test]
fn only_xs_wire_vchan_qrexec_qubesdb_and_gui_flow_between_qubes_and_dom0() {
    use std::os::unix::fs::PermissionsExt;
    let state = State::new("capture");
    state.ok("qvm-create", &["--label", "red", "work"]);
    state.ok("qvm-features", &["work", "gui", "1"]);
    let pol = state.path().join("policy.d");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("30-test.policy"), "test.Dom0 * work dom0 allow\n").unwrap();
    let svc = state.path().join("dom0/qubes-rpc");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(
        svc.join("test.Dom0"),
        "#!/bin/sh\necho \"dom0 got $1 from $QREXEC_REMOTE_DOMAIN\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        svc.join("test.Dom0"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Outside the state directory, which goes with the sim.
    let file = std::env::temp_dir().join(format!("qsim-capture-{}.bin", std::process::id()));
    let sim = Sim::boot_with(
        state,
        &[
            ("QUBES_SIM_CAPTURE", file.to_str().unwrap()),
            // Only the test's own policy file: the project's may name services we do not use.
            ("QUBES_SIM_POLICY_DIRS", ""),
        ],
    );
    sim.ok("qvm-start", &["work"]);
    // dom0 → qube (qrexec control and a data vchan with dom0), the qube's QubesDB client,
    // and qube → dom0 service (trigger, service connect, data vchan with dom0 as client).
    let out = sim.ok(
        "qvm-run",
        &[
            "-p",
            "work",
            "qubesdb-read /name; qrexec-client-vm dom0 test.Dom0+arg",
        ],
    );
    assert_eq!(out, "work\ndom0 got arg from work\n");
    // A GUI agent in the qube: handshake, window, dump; dom0 maps it and takes a shot.
    let mut agent = sim.in_vm("work", "gui-test-agent");
    agent.stdout(std::process::Stdio::null());
    let guard = common::sim::Guard(agent.spawn().unwrap());
    let shot = sim.run_dir().join("screenshots/work-1.png");
    let end = Instant::now() + DEADLINE;
    while !shot.exists() {
        assert!(Instant::now() < end, "no screenshot: {}", sim.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    sim.ok("qvm-gui-input", &["work", "key", "a"]);
    drop(guard);
    drop(sim);

    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let records = capture::read(&bytes).unwrap();
    let seen = decode(&records).unwrap_or_else(|e| panic!("undecodable traffic: {e}"));
    eprintln!("{seen:?} in {} records", records.len());
    assert!(
        seen.xs_requests > 10 && seen.xs_replies >= seen.xs_requests,
        "{seen:?}"
    );
    assert!(
        seen.qrexec_control >= 4,
        "HELLOs, EXEC_CMDLINE, TRIGGER, SERVICE_CONNECT: {seen:?}"
    );
    assert!(seen.qrexec_data >= 6, "{seen:?}");
    assert!(seen.qubesdb >= 10, "{seen:?}");
    // dom0 → agent: version, screen, then messages (FOCUS, KEYPRESS) beyond the handshake.
    let handshake = 4 + qubes::gui::wire::XConf::LEN;
    assert!(
        seen.gui_from_agent >= 3 && seen.gui_to_agent >= 1,
        "{seen:?}"
    );
    assert!(seen.gui_to_agent_bytes > handshake + 12, "{seen:?}");
    // Every qube-side xenstore connection went through the proxy: the sim's own (dom0) ones
    // are not in the file, so every record names the qube.
    let work = 1;
    assert!(
        records.iter().all(|r| r.domid == work),
        "records of other domains"
    );
}

#[test]
fn a_corrupted_capture_fails_to_decode() {
    // The decoder is not a rubber stamp: a stray byte in any protocol stream is refused.
    let rec = |kind, stream, data: &[u8]| Record {
        kind,
        dir: Dir::ToDom0,
        domid: 1,
        stream,
        chan: 1,
        data: data.to_vec(),
    };
    let hello = [
        0x300u32.to_le_bytes(),
        4u32.to_le_bytes(),
        3u32.to_le_bytes(),
    ]
    .concat();
    assert!(decode(&[rec(Kind::Vchan, 512, &hello)]).is_ok());
    assert!(decode(&[rec(Kind::Vchan, 512, &[&hello[..], b"x"].concat())]).is_err());
    assert!(
        decode(&[rec(Kind::Vchan, 7000, &hello)]).is_err(),
        "unknown port"
    );
    assert!(decode(&[rec(Kind::Xenstore, 1, b"GET / HTTP/1.1\r\n\r\n")]).is_err());
    assert!(decode(&[rec(Kind::Vchan, 111, &[0u8; 71])]).is_err());
    assert!(decode(&[rec(Kind::Vchan, 6000, &[9, 9, 9, 9])]).is_err());
}

/// A hosted unikernel binary built beside the sim (`cargo build -p NAME`), if there is one.
fn sibling(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(common::EXE).with_file_name(name);
    p.is_file().then_some(p)
}

#[test]
fn hosted_unikernels_speak_only_the_protocols_to_dom0() {
    let (Some(passman), Some(viewer)) = (sibling("passman"), sibling("fb-viewer")) else {
        eprintln!("skipped: build the passman and fb-viewer binaries first");
        return;
    };
    let state = State::new("capture-uk");
    state.ok(
        "qvm-create",
        &[
            "--class",
            "StandaloneVM",
            "-l",
            "black",
            "passman-unikernel",
        ],
    );
    state.ok(
        "qvm-prefs",
        &["passman-unikernel", "kernel", passman.to_str().unwrap()],
    );
    state.ok("qvm-create", &["-l", "red", "viewer-unikernel-dvm"]);
    state.ok(
        "qvm-prefs",
        &["viewer-unikernel-dvm", "kernel", viewer.to_str().unwrap()],
    );
    state.ok(
        "qvm-prefs",
        &["viewer-unikernel-dvm", "template_for_dispvms", "True"],
    );
    state.ok("qvm-features", &["viewer-unikernel-dvm", "gui", "1"]);
    state.ok("qvm-create", &["-l", "blue", "work"]);
    let pol = state.path().join("policy.d");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("30-test.policy"),
        "qubes.OpenInVM * work @dispvm:viewer-unikernel-dvm allow\n",
    )
    .unwrap();
    let rgb: Vec<u8> = (0..32 * 24)
        .flat_map(|i| [i as u8, (i * 3) as u8, 200])
        .collect();
    let png = qubes_sim::png::encode_rgb(32, 24, &rgb).unwrap();
    let work = state.path().join("vms/work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("pic.png"), png).unwrap();
    let file = std::env::temp_dir().join(format!("qsim-capture-uk-{}.bin", std::process::id()));
    let sim = Sim::boot_with(
        state,
        &[
            ("QUBES_SIM_CAPTURE", file.to_str().unwrap()),
            ("QUBES_SIM_POLICY_DIRS", ""),
        ],
    );
    // The vault: start (xenstore, QubesDB sync, qrexec HELLO), a call from dom0, power-off
    // through xenstore's control/shutdown.
    sim.ok("qvm-start", &["passman-unikernel"]);
    let (code, _, _) = sim.state.run(
        "qvm-run",
        &["-p", "--service", "passman-unikernel", "passman.List"],
    );
    assert_ne!(code, 0, "a locked vault lists nothing");
    sim.ok("qvm-shutdown", &["--wait", "passman-unikernel"]);
    // The viewer: a disposable that shows a window over the GUI protocol.
    sim.ok("qvm-start", &["work"]);
    let mut open = sim.in_vm("work", "qvm-open-in-vm");
    open.args([
        "--view-only",
        "@dispvm:viewer-unikernel-dvm",
        work.join("pic.png").to_str().unwrap(),
    ]);
    let mut open = common::sim::Guard(open.spawn().unwrap());
    let end = Instant::now() + DEADLINE;
    while !sim.run_dir().join("screenshots/disp1-1.png").exists() {
        assert!(Instant::now() < end, "no viewer window: {}", sim.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let disp: u32 = sim.domid("disp1").parse().unwrap();
    let vault: u32 = sim.domid("passman-unikernel").parse().unwrap();
    sim.ok("qvm-gui-input", &["disp1", "key", "q"]);
    let end = Instant::now() + DEADLINE;
    while open.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "the viewer call did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(open);
    drop(sim);

    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let records = capture::read(&bytes).unwrap();
    let seen = decode(&records).unwrap_or_else(|e| panic!("undecodable traffic: {e}"));
    eprintln!("{seen:?} in {} records", records.len());
    let has = |d: u32, kind: Kind, port: Option<u32>| {
        records
            .iter()
            .any(|r| r.domid == d && r.kind == kind && port.is_none_or(|p| r.stream == p))
    };
    for d in [vault, disp] {
        assert!(
            has(d, Kind::Xenstore, None),
            "domain {d}: no xenstore traffic"
        );
        assert!(
            has(d, Kind::Vchan, Some(512)),
            "domain {d}: no qrexec control"
        );
        assert!(has(d, Kind::Vchan, Some(111)), "domain {d}: no QubesDB");
    }
    assert!(
        has(disp, Kind::Vchan, Some(6000)),
        "the viewer drew nothing"
    );
    assert!(
        records
            .iter()
            .any(|r| r.domid == vault && qubes::qrexec::is_data_port(r.stream)),
        "no data channel with the vault"
    );
}
