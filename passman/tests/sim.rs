//! The vault end to end in the sim: `passman-unikernel` runs our hosted binary as its kernel
//! with a private volume; dom0 and the AppVMs use the shipped `qpass`; the shipped policy plus a
//! per-entry rule: `work` may read `github.com` (and list), not `bank`; `other` gets nothing.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const VAULT_BIN: &str = env!("CARGO_BIN_EXE_passman");
const VAULT: &str = "passman-unikernel";
const PASS: &str = "vault passphrase";

fn rpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qubes-rpc")
}

fn qpass() -> PathBuf {
    rpc_dir().join("passman/qpass")
}

/// The sim with the vault, `work` and `other`.
struct Sim(sim_support::Sim);

impl Deref for Sim {
    type Target = sim_support::Sim;
    fn deref(&self) -> &sim_support::Sim {
        &self.0
    }
}

impl Sim {
    fn boot(tag: &str) -> Sim {
        let mut sim = sim_support::Sim::new(VAULT_BIN, &format!("passman-sim-{tag}"));
        std::fs::copy(
            rpc_dir().join("policy.d/90-unikernel-passman.policy"),
            sim.dir.join("policy.d/90-unikernel-passman.policy"),
        )
        .unwrap();
        sim.write(
            "policy.d/30-test.policy",
            &format!(
                "passman.Get +github.com work {VAULT} allow\n\
                 passman.Otp +github.com work {VAULT} allow\n\
                 passman.List * work {VAULT} allow\n"
            ),
            false,
        );
        // dom0's qvm-run is the sim's, by name.
        std::fs::create_dir_all(sim.dir.join("dom0bin")).unwrap();
        std::os::unix::fs::symlink(&sim.exe, sim.dir.join("dom0bin/qvm-run")).unwrap();
        sim.ok(&["qvm-create", "--label", "red", "work"]);
        sim.ok(&["qvm-create", "--label", "red", "other"]);
        sim.ok(&["qvm-create", "--label", "black", VAULT]);
        sim.ok(&["qvm-prefs", VAULT, "kernel", VAULT_BIN]);
        sim.ok(&["qvm-prefs", VAULT, "kernelopts", "passman.idle=600"]);
        sim.start_daemon();
        sim.ok(&["qvm-start", "work"]);
        sim.ok(&["qvm-start", "other"]);
        let sim = Sim(sim);
        sim.start_vault(1);
        sim
    }

    fn start_vault(&self, n: usize) {
        self.ok(&["qvm-start", VAULT]);
        self.wait_console(VAULT, "passman ready", n);
    }

    fn console(&self) -> String {
        self.0.console(VAULT)
    }

    /// `qpass ARGS` in dom0 with `stdin`.
    fn dom0(&self, args: &[&str], stdin: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("dom0bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("bash");
        c.arg(qpass())
            .args(args)
            .env("QUBES_SIM_DIR", &self.dir)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn dom0_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.dom0(args, stdin);
        assert!(
            out.status.success(),
            "dom0 qpass {args:?}: {}\nconsole:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.console()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A shell command line in `qube` (qvm-run -p), returning (exit code, stdout, stderr).
    fn in_qube(&self, qube: &str, cmd: &str) -> (i32, String, String) {
        let out = Command::new(&self.exe)
            .args(["qvm-run", "-p", qube, cmd])
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn qpass_in(&self, qube: &str, args: &str) -> (i32, String, String) {
        self.in_qube(
            qube,
            &format!("QPASS_VAULT={VAULT} bash {} {args} 2>&1", qpass().display()),
        )
    }

    /// Sets the vault clock by unlocking again with an explicit time.
    fn set_clock(&self, unix: u64) {
        let out = Command::new(&self.exe)
            .args(["qvm-run", "-p", "--service", VAULT, "passman.Unlock"])
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                std::io::Write::write_all(
                    &mut c.stdin.take().unwrap(),
                    format!("{PASS}\ntime={unix}\n").as_bytes(),
                )?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn qpass_through_the_sim_with_per_entry_policy_and_audit() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("SKIPPED: bash missing");
        return;
    }
    let sim = Sim::boot("qpass");
    let pw = format!("{PASS}\n");

    // dom0: create the vault, lock, unlock, add two entries.
    sim.dom0_ok(&["init", "--kdf", "argon2id:8:1:1"], &pw);
    sim.dom0_ok(&["lock"], "");
    assert_eq!(sim.dom0_ok(&["status"], ""), "locked\n");
    let wrong = sim.dom0(&["unlock"], "nope\n");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    std::thread::sleep(Duration::from_millis(1100)); // the one-second back-off
    sim.dom0_ok(&["unlock"], &pw);
    sim.dom0_ok(
        &[
            "add",
            "-u",
            "alice",
            "--url",
            "https://github.com",
            "--otp",
            "github.com",
        ],
        "gh-secret\notpauth://totp/GitHub:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8\n",
    );
    sim.dom0_ok(&["add", "bank"], "bank-secret\n");

    // work: github.com yes, bank no.
    let (code, out, _) = sim.qpass_in("work", "get github.com");
    assert_eq!((code, out.as_str()), (0, "gh-secret\n"));
    let (code, out, _) = sim.qpass_in("work", "ls");
    assert_eq!((code, out.as_str()), (0, "bank\ngithub.com\n"));
    let (code, out, _) = sim.qpass_in("work", "get bank");
    assert_ne!(code, 0, "work read bank: {out}");
    assert!(!out.contains("bank-secret"));
    // RFC 6238 appendix B (SHA1, 8 digits) at vector times, each 29 s from its step's end.
    for (t, want) in [(1234567890u64, "89005924"), (1111111111, "14050471")] {
        sim.set_clock(t);
        let (code, out, _) = sim.qpass_in("work", "otp github.com");
        assert_eq!(
            (code, out.as_str()),
            (0, format!("{want}\n").as_str()),
            "t={t}"
        );
    }
    // Clipboard: copied, then cleared after the timeout. Every copy is also appended to
    // `clip-history`: the 1 s clearing may come before this test reads the clipboard on a
    // loaded machine, the history still shows the secret was copied (and only by the copy).
    let clip = sim.dir.join("clip");
    let history = sim.dir.join("clip-history");
    let (code, out, _) = sim.in_qube(
        "work",
        &format!(
            "QPASS_VAULT={VAULT} QPASS_CLIP_TIMEOUT=1 QPASS_CLIP_COPY='tee {c} >> {h}' \
             QPASS_CLIP_PASTE='cat {c}' bash {q} get -c github.com 2>&1",
            c = clip.display(),
            h = history.display(),
            q = qpass().display()
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("gh-secret"), "secret printed with -c: {out}");
    assert_eq!(std::fs::read_to_string(&history).unwrap(), "gh-secret");
    sim_support::wait_until(
        "the clipboard is cleared",
        Duration::from_millis(100),
        || {
            std::fs::read_to_string(&clip)
                .unwrap_or_default()
                .is_empty()
        },
        || format!("clipboard: {:?}", std::fs::read_to_string(&clip)),
    );
    assert_eq!(std::fs::read_to_string(&history).unwrap(), "gh-secret");
    // work may not manage.
    let (code, _, _) = sim.in_qube(
        "work",
        &format!(
            "printf 'x\\n' | QPASS_VAULT={VAULT} bash {} add evil",
            qpass().display()
        ),
    );
    assert_ne!(code, 0);

    // other: nothing at all.
    for cmd in ["get github.com", "ls", "otp github.com", "get bank"] {
        let (code, out, _) = sim.qpass_in("other", cmd);
        assert_ne!(code, 0, "other {cmd}: {out}");
        assert!(!out.contains("secret"), "other {cmd}: {out}");
    }

    // dom0: generate, delete, list.
    let generated = sim.dom0_ok(&["generate", "new.site", "20", "lud"], "");
    assert_eq!(generated.trim_end().len(), 20, "{generated}");
    sim.dom0_ok(&["rm", "bank"], "");
    assert_eq!(sim.dom0_ok(&["ls"], ""), "github.com\nnew.site\n");
    let _ = sim.dom0_ok(&["status"], "");
    let (code, _, _) = sim.qpass_in("work", "get bank");
    assert_ne!(code, 0);

    // Bulk: a pass import over 64 KiB of stdin, an export over 64 KiB of stdout, re-imported.
    let plain = sim.dir.join("pass-plain");
    for i in 0..300 {
        let d = plain.join(format!("bulk{}", i % 3));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("site{i}")),
            format!("pw-{i}\nlogin: user{i}\n{}\n", "n".repeat(300)),
        )
        .unwrap();
    }
    let out = sim.dom0_ok(&["import-pass", plain.to_str().unwrap()], "");
    assert_eq!(out, "imported 300 entries\n");
    let (code, out, _) = sim.in_qube(
        "work",
        &format!(
            "qrexec-client-vm {VAULT} passman.Get+bulk2.site299 2>&1 </dev/null; echo \" $?\""
        ),
    );
    assert_eq!(code, 0);
    assert!(
        out.ends_with(" 126\n"),
        "work read an entry policy does not give it: {out}"
    );
    let backup = sim.dir.join("backup.qvault");
    sim.dom0_ok(&["export", backup.to_str().unwrap()], "backup pass\n");
    let size = std::fs::metadata(&backup).unwrap().len();
    assert!(size > 100_000, "backup of {size} bytes");
    let out = sim.dom0_ok(
        &["import-backup", backup.to_str().unwrap()],
        "backup pass\n",
    );
    assert_eq!(out, "imported 302 entries\n");
    assert_eq!(
        sim.dom0_ok(&["field", "bulk1.site7", "username"], ""),
        "user7\n"
    );

    // Audit log: each access the vault served, by whom.
    let audit = sim.dom0_ok(&["audit"], "");
    for want in [
        "work passman.Get github.com ok",
        "work passman.List - ok",
        "work passman.Otp github.com ok",
        "dom0 passman.Put bank ok",
        "dom0 passman.Delete bank ok",
        "dom0 passman.Generate new.site ok",
        "dom0 passman.Unlock - wrong-passphrase",
    ] {
        assert!(audit.contains(want), "audit lacks {want:?}:\n{audit}");
    }
    assert!(
        !audit.contains("other "),
        "policy-denied calls reached the vault:\n{audit}"
    );

    // Restart: locked, then everything is back after unlock.
    sim.ok(&["qvm-shutdown", "--wait", VAULT]);
    let _ = std::fs::remove_file(sim.dir.join("vms").join(VAULT).join("console.log"));
    sim.start_vault(1);
    let (code, _, _) = sim.qpass_in("work", "get github.com");
    assert_ne!(code, 0, "vault open after restart");
    sim.dom0_ok(&["unlock"], &pw);
    let (code, out, _) = sim.qpass_in("work", "get github.com");
    assert_eq!((code, out.as_str()), (0, "gh-secret\n"));
    let audit = sim.dom0_ok(&["audit"], "");
    assert!(audit.contains("dom0 passman.Delete bank ok"), "{audit}");
}

/// Bench (`cargo test --release -p passman --test sim -- --ignored --nocapture`): mean time of
/// `qrexec-client-vm passman-unikernel passman.Get+github.com` run in `work`, 50 calls.
#[test]
#[ignore = "benchmark"]
fn bench_get_latency_through_the_sim() {
    let sim = Sim::boot("bench");
    let pw = format!("{PASS}\n");
    sim.dom0_ok(&["init", "--kdf", "argon2id:8:1:1"], &pw);
    sim.dom0_ok(&["add", "github.com"], "gh-secret\n");
    let n = 50;
    let (code, out, err) = sim.in_qube(
        "work",
        &format!(
            "s=$(date +%s%N); i=0; while [ $i -lt {n} ]; do \
             qrexec-client-vm {VAULT} passman.Get+github.com >/dev/null || exit 1; i=$((i+1)); done; \
             e=$(date +%s%N); echo $(( (e - s) / {n} / 1000 ))"
        ),
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("get_through_sim_qrexec {} us", out.trim());
    // The same loop against a shell service in a built-in qube, for comparison.
    let svc = sim.dir.join("vms/other/qubes-rpc/test.Echo");
    std::fs::write(&svc, "#!/bin/sh\necho hi\n").unwrap();
    Command::new("chmod").arg("+x").arg(&svc).status().unwrap();
    std::fs::write(
        sim.dir.join("policy.d/20-bench.policy"),
        "test.Echo * work other allow\n",
    )
    .unwrap();
    let (code, out, err) = sim.in_qube(
        "work",
        &format!(
            "s=$(date +%s%N); i=0; while [ $i -lt {n} ]; do \
             qrexec-client-vm other test.Echo >/dev/null || exit 1; i=$((i+1)); done; \
             e=$(date +%s%N); echo $(( (e - s) / {n} / 1000 ))"
        ),
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("shell_service_through_sim_qrexec {} us", out.trim());
}
