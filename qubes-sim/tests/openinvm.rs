//! qvm-open-in-dvm end to end: the file goes to a new disposable's qubes.OpenInVM with the
//! 256-byte name header, the disposable's application edits it, the edit comes back.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::sim::Sim;
use common::State;

fn sim(tag: &str, opener: &str) -> Sim {
    let state = State::new(tag);
    state.ok("qvm-create", &["--label", "red", "work"]);
    state.ok("qvm-create", &["--label", "red", "dvm"]);
    state.ok("qvm-prefs", &["dvm", "template_for_dispvms", "True"]);
    state.ok("qvm-prefs", &["work", "default_dispvm", "dvm"]);
    let pol = state.path().join("policy.d");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("30-test.policy"),
        "qubes.OpenInVM * work @dispvm allow target=@dispvm:dvm\n",
    )
    .unwrap();
    let dvm = state.path().join("vms").join("dvm");
    std::fs::create_dir_all(&dvm).unwrap();
    let p = dvm.join("open-file");
    std::fs::write(&p, opener).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sim = Sim::boot(state);
    sim.ok("qvm-start", &["work"]);
    sim
}

fn wait_no_disposables(sim: &Sim) {
    let end = Instant::now() + Duration::from_secs(10);
    while sim.ok("qvm-ls", &[]).contains("disp") {
        assert!(Instant::now() < end, "a disposable was left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_edit_in_the_disposable_comes_back() {
    let sim = sim(
        "open-edit",
        "#!/bin/sh\nprintf ' edited in %s as %s' \"$QUBES_SIM_VM_NAME\" \"$(basename \"$1\")\" >> \"$1\"\n",
    );
    let doc = sim.path().join("vms").join("work").join("doc.txt");
    std::fs::write(&doc, "hello").unwrap();
    let (code, _, err) = sim.run_in("work", "qvm-open-in-dvm", &[doc.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}\n{}", sim.log());
    assert_eq!(
        std::fs::read_to_string(&doc).unwrap(),
        "hello edited in disp1 as doc.txt"
    );
    wait_no_disposables(&sim);
}

#[test]
fn an_unchanged_file_is_left_alone() {
    let sim = sim("open-view", "#!/bin/sh\ntest -s \"$1\"\n");
    let doc = sim.path().join("vms").join("work").join("pic.png");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&doc, &data).unwrap();
    let ino = std::fs::metadata(&doc).unwrap().ino();
    let (code, _, err) = sim.run_in("work", "qvm-open-in-dvm", &[doc.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::metadata(&doc).unwrap().ino(),
        ino,
        "the file was rewritten"
    );
    assert_eq!(std::fs::read(&doc).unwrap(), data);
    wait_no_disposables(&sim);
}

#[test]
fn a_name_with_a_slash_is_refused_by_the_editor() {
    let sim = sim("open-hostile", "#!/bin/sh\necho pwned > \"$1\"\n");
    let mut c = sim.in_vm("work", "qrexec-client-vm");
    c.args(["@dispvm", "qubes.OpenInVM"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut field = [0u8; 256];
    field[..13].copy_from_slice(b"../../escaped");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&field).unwrap();
    stdin.write_all(b"data").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(!sim.path().join("vms").join("escaped").exists());
    // The editor's stderr comes back over the call.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid file name"), "{err}");
    wait_no_disposables(&sim);
}

#[test]
fn view_only_sends_the_prefixed_name_and_takes_nothing_back() {
    // The opener edits the file anyway; with --view-only nothing comes back.
    let sim = sim(
        "open-viewonly",
        "#!/bin/sh\nbasename \"$1\" > \"$QUBES_SIM_VM_DIR/../work/seen-name\"\necho changed >> \"$1\"\n",
    );
    let doc = sim.path().join("vms").join("work").join("pic.png");
    std::fs::write(&doc, "picture").unwrap();
    let (code, _, err) = sim.run_in(
        "work",
        "qvm-open-in-dvm",
        &["--view-only", doc.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}\n{}", sim.log());
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), "picture");
    let seen = sim.path().join("vms").join("work").join("seen-name");
    assert_eq!(
        std::fs::read_to_string(seen).unwrap(),
        "view-only-pic.png\n"
    );
    wait_no_disposables(&sim);
    // qvm-open-in-vm takes the flag before its target.
    let (code, _, err) = sim.run_in(
        "work",
        "qvm-open-in-vm",
        &["--view-only", "@dispvm", doc.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), "picture");
    wait_no_disposables(&sim);
}
