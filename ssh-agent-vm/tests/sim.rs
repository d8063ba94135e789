//! The vault end to end in the sim: `sshagent-unikernel` runs our hosted binary as its kernel;
//! AppVM `work` forwards a Unix socket with the shipped `qubes-ssh-agent-connect` (one
//! `qrexec-client-vm` call per connection, as the systemd socket unit does); dom0 manages keys
//! with the shipped `qvm-ssh-agent-admin`; confirmations run the shipped dom0 service.
//! Real OpenSSH tools throughout; skipped if they or python3 are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VAULT_BIN: &str = env!("CARGO_BIN_EXE_ssh-agent-vm");
const VAULT: &str = "sshagent-unikernel";
const DEADLINE: Duration = Duration::from_secs(60);

fn rpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qubes-rpc")
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The sim binary, next to ours in the target directory (built if missing).
fn sim_exe() -> PathBuf {
    let dir = Path::new(VAULT_BIN).parent().unwrap().to_path_buf();
    let exe = dir.join("qubes-sim");
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "qubes-sim"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let ok = c.status().is_ok_and(|s| s.success());
        assert!(
            ok && exe.exists(),
            "cannot build qubes-sim next to {VAULT_BIN}"
        );
    }
    exe
}

const FORWARDER: &str = r#"
import os, signal, socket, subprocess, sys
path, script = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(path)
l.listen(64)
print("listening", flush=True)
while True:
    c, _ = l.accept()
    subprocess.Popen([script], stdin=c.fileno(), stdout=c.fileno())
    c.close()
"#;

struct Sim {
    exe: PathBuf,
    dir: PathBuf,
    daemon: Child,
    forwarders: Vec<Child>,
}

impl Sim {
    fn boot(tag: &str, kernelopts: &str) -> Sim {
        let exe = sim_exe();
        let dir = std::env::temp_dir().join(format!("sshvault-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy.d")).unwrap();
        // Only `work` may reach keyring `work`; everything else falls to the shipped default deny.
        std::fs::write(
            dir.join("policy.d/30-test.policy"),
            format!("qubes.SshAgent +work work {VAULT} allow\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("askpass"),
            "#!/bin/sh\nprintf '%s\\n' \"$TEST_PASSPHRASE\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("forwarder.py"), FORWARDER).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(dir.join("askpass"))
            .status()
            .unwrap();
        let run = |args: &[&str]| {
            let st = Command::new(&exe)
                .args(args)
                .env("QUBES_SIM_DIR", &dir)
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{args:?}");
        };
        run(&["qvm-create", "--label", "red", "work"]);
        run(&["qvm-create", "--label", "red", "other"]);
        run(&["qvm-create", "--label", "black", VAULT]);
        run(&["qvm-prefs", VAULT, "kernel", VAULT_BIN]);
        run(&["qvm-prefs", VAULT, "kernelopts", kernelopts]);
        let log = std::fs::File::create(dir.join("sim.log")).unwrap();
        let mut daemon = Command::new(&exe)
            .args(["daemon", "--stdin-lifeline"])
            .env("QUBES_SIM_DIR", &dir)
            .env_remove("QUBES_SIM_CONFIRM_ANSWER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(daemon.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(line.starts_with("ready "), "{line}");
        let sim = Sim {
            exe,
            dir,
            daemon,
            forwarders: Vec::new(),
        };
        sim.ok(&["qvm-start", "work"]);
        sim.ok(&["qvm-start", "other"]);
        sim.start_vault();
        sim
    }

    fn start_vault(&self) {
        self.ok(&["qvm-start", VAULT]);
        self.wait_console("ssh-agent vault ready", 1);
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("vms").join(VAULT).join("console.log"))
            .unwrap_or_default()
    }

    fn wait_console(&self, what: &str, count: usize) {
        let end = Instant::now() + DEADLINE;
        while self.console().matches(what).count() < count {
            assert!(
                Instant::now() < end,
                "no {what:?} on the vault's console:\n{}\nsim log:\n{}",
                self.console(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(&self.exe)
            .args(args)
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sim.log")).unwrap_or_default()
    }

    /// Starts the shipped forwarder inside `qube` on `<dir>/<qube>.sock`, for `keyring`.
    fn forward(&mut self, qube: &str, keyring: &str) -> PathBuf {
        let vm_dir = self.dir.join("vms").join(qube);
        let sock = self.dir.join(format!("{qube}.sock"));
        let domid = self.ok(&["qvm-prefs", qube, "qid"]).trim().to_string();
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut v = vec![self.dir.join("run").join("bin")];
                v.extend(std::env::split_paths(&p));
                std::env::join_paths(v).unwrap()
            }
            None => self.dir.join("run").join("bin").into_os_string(),
        };
        let mut child = Command::new("python3")
            .arg(self.dir.join("forwarder.py"))
            .arg(&sock)
            .arg(rpc_dir().join("ssh-agent/qubes-ssh-agent-connect"))
            .env("QUBES_HOSTED_DIR", self.dir.join("run"))
            .env("QUBES_HOSTED_DOMID", domid)
            .env("QUBES_SIM_VM_DIR", &vm_dir)
            .env("QUBES_SIM_VM_NAME", qube)
            .env("PATH", path)
            .env("HOME", &vm_dir)
            .env("SSH_VAULT", VAULT)
            .env("SSH_KEYRING", keyring)
            .env_remove("QUBES_SIM_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        self.forwarders.push(child);
        sock
    }

    /// An OpenSSH tool in a qube, through its forwarder socket.
    fn tool(&self, sock: &Path, pass: &str, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .env("SSH_AUTH_SOCK", sock)
            .env("SSH_ASKPASS", self.dir.join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "none")
            .env("TEST_PASSPHRASE", pass)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// dom0's `qvm-ssh-agent-admin KEYRING ARGS...`.
    fn admin(&self, pass: &str, keyring: &str, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(rpc_dir().join("ssh-agent/dom0/qvm-ssh-agent-admin"))
            .arg(keyring)
            .args(args)
            .env("QVM_RUN", format!("{} qvm-run", self.exe.display()))
            .env("QUBES_SIM_DIR", &self.dir)
            .env("SSH_ASKPASS", self.dir.join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "none")
            .env("TEST_PASSPHRASE", pass)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn admin_ok(&self, pass: &str, keyring: &str, args: &[&str]) -> String {
        let o = self.admin(pass, keyring, args);
        assert!(
            o.status.success(),
            "qvm-ssh-agent-admin {args:?}: {}{}\nconsole:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.console()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keygen(&self, name: &str, kind: &str, bits: &str) -> PathBuf {
        let p = self.dir.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-C", name, "-f"])
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        p
    }

    fn public(&self, key: &Path) -> String {
        let s = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        s.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    fn listed(&self, sock: &Path) -> Vec<String> {
        let o = self.tool(sock, "", "ssh-add", &["-L"]);
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    }

    fn sign_verify(&self, sock: &Path, key: &Path) -> bool {
        let data = self.dir.join("data.txt");
        std::fs::write(&data, b"signed in the vault unikernel\n").unwrap();
        let _ = std::fs::remove_file(self.dir.join("data.txt.sig"));
        let pubkey = key.with_extension("pub");
        let o = self.tool(
            sock,
            "",
            "ssh-keygen",
            &[
                "-Y",
                "sign",
                "-n",
                "file",
                "-f",
                pubkey.to_str().unwrap(),
                data.to_str().unwrap(),
            ],
        );
        if !o.status.success() {
            return false;
        }
        let signers = self.dir.join("allowed_signers");
        std::fs::write(&signers, format!("me@test {}\n", self.public(key))).unwrap();
        let o = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "file", "-I", "me@test", "-f"])
            .arg(&signers)
            .arg("-s")
            .arg(self.dir.join("data.txt.sig"))
            .stdin(std::fs::File::open(&data).unwrap())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "verify: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        true
    }

    fn confirm_answer(&self, a: &str) {
        std::fs::write(self.dir.join("confirm-answer"), format!("{a}\n")).unwrap();
    }
}

/// Kills and reaps a helper process when the test ends, passed or not.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback sshd accepting `keys` for the current user; (process, port, user).
fn start_sshd(dir: &Path, keys: &[PathBuf], port: u16) -> Option<(Child, u16, String)> {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let host = dir.join("host_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host)
        .status()
        .ok()?
        .success();
    assert!(ok);
    let user = String::from_utf8(Command::new("id").arg("-un").output().ok()?.stdout)
        .ok()?
        .trim()
        .to_string();
    let auth = dir.join("authorized_keys");
    let ak: String = keys
        .iter()
        .map(|k| std::fs::read_to_string(k.with_extension("pub")).unwrap())
        .collect();
    std::fs::write(&auth, ak).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(sshd)
        .args([
            "-D",
            "-e",
            "-p",
            &port.to_string(),
            "-o",
            "ListenAddress=127.0.0.1",
            "-h",
        ])
        .arg(&host)
        .arg("-o")
        .arg(format!("AuthorizedKeysFile={}", auth.display()))
        .args([
            "-o",
            "StrictModes=no",
            "-o",
            "UsePAM=no",
            "-o",
            "PasswordAuthentication=no",
        ])
        .args(["-o", "MaxStartups=100", "-o", "MaxSessions=100"])
        .arg("-o")
        .arg(format!("PidFile={}", dir.join("sshd.pid").display()))
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some((child, port, user))
}

/// `ssh` into the loopback sshd with the vault key whose public half is `key.pub`.
fn ssh_login(sim: &Sim, sock: &Path, key: &Path, port: u16, user: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "IdentityFile={}",
            key.with_extension("pub").display()
        ))
        .arg(format!("{user}@127.0.0.1"))
        .args(["echo", "logged-in"])
        .env("SSH_AUTH_SOCK", sock)
        .env("HOME", &sim.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

impl Drop for Sim {
    fn drop(&mut self) {
        for f in &mut self.forwarders {
            let _ = f.kill();
            let _ = f.wait();
        }
        let _ = Command::new(&self.exe)
            .arg("shutdown")
            .env("QUBES_SIM_DIR", &self.dir)
            .stdin(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn split_ssh_through_qrexec_in_the_sim() {
    if !have("ssh-add", "-?") || !have("python3", "-V") {
        eprintln!("skipped: needs OpenSSH client tools and python3");
        return;
    }
    let mut sim = Sim::boot("e2e", "rsa=work kdf=argon2id:1024:1:1 confirm-timeout=20");
    let work = sim.forward("work", "work");
    let other = sim.forward("other", "work");

    assert_eq!(sim.admin_ok("", "work", &["status"]).trim(), "unformatted");
    sim.admin_ok("vault-pass", "work", &["run", "ssh-add", "-X"]);
    assert_eq!(sim.admin_ok("", "work", &["status"]).trim(), "open");
    let keys = [
        sim.keygen("id_ed25519", "ed25519", "256"),
        sim.keygen("id_ecdsa", "ecdsa", "256"),
        sim.keygen("id_rsa", "rsa", "3072"),
    ];
    for k in &keys {
        sim.admin_ok("", "work", &["run", "ssh-add", k.to_str().unwrap()]);
        std::fs::remove_file(k).unwrap();
    }
    let mut want: Vec<String> = keys.iter().map(|k| sim.public(k)).collect();
    want.sort();

    // The client lists and signs through qrexec.
    let l = sim.tool(&work, "", "ssh-add", &["-l"]);
    assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
    assert_eq!(String::from_utf8_lossy(&l.stdout).lines().count(), 3);
    assert_eq!(sim.listed(&work), want);
    for k in &keys {
        assert!(sim.sign_verify(&work, k), "sign with {}", k.display());
    }

    // ssh logins into a loopback sshd with each key, then PARALLEL at once (skipped without
    // sshd). Each login holds its agent connection, so one qrexec call, for its whole length:
    // the sim's VM agent serves 16 channels per qube ("qrexec channels full" beyond), so 16
    // here; the engine-level test (tests/openssh.rs) makes 32.
    let port = 20000 + (std::process::id() % 20000) as u16 + 1;
    const PARALLEL: usize = 16;
    if let Some((sshd, port, user)) = start_sshd(&sim.dir, &keys, port) {
        let _sshd = Reap(sshd);
        for k in &keys {
            let o = ssh_login(&sim, &work, k, port, &user).output().unwrap();
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("logged-in"),
                "login with {}: {}",
                k.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let children: Vec<_> = (0..PARALLEL)
            .map(|_| {
                ssh_login(&sim, &work, &keys[0], port, &user)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let ok = outs
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stdout).contains("logged-in"))
            .count();
        let errs: Vec<_> = outs
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(ok, PARALLEL, "parallel logins through qrexec: {errs:?}");
    } else {
        eprintln!("sshd not installed (openssh-server): logins skipped");
    }

    // A qube without policy gets nothing; a client's add is refused.
    let o = sim.tool(&other, "", "ssh-add", &["-l"]);
    assert!(
        !o.status.success(),
        "other: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(sim.listed(&other).is_empty());
    let fresh = sim.keygen("id_fresh", "ed25519", "256");
    assert!(!sim
        .tool(&work, "", "ssh-add", &[fresh.to_str().unwrap()])
        .status
        .success());
    assert_eq!(sim.listed(&work).len(), 3);

    // Lock / unlock by the owner.
    sim.admin_ok("lockpw", "work", &["run", "ssh-add", "-x"]);
    assert!(sim.listed(&work).is_empty());
    sim.admin_ok("lockpw", "work", &["run", "ssh-add", "-X"]);
    assert_eq!(sim.listed(&work), want);

    // Confirmation through dom0's qubes.UnikernelConfirm.
    let conf = sim.keygen("id_confirm", "ed25519", "256");
    sim.admin_ok(
        "",
        "work",
        &["run", "ssh-add", "-c", conf.to_str().unwrap()],
    );
    std::fs::remove_file(&conf).unwrap();
    sim.confirm_answer("deny");
    assert!(!sim.sign_verify(&work, &conf), "denied in dom0");
    sim.confirm_answer("allow");
    assert!(sim.sign_verify(&work, &conf), "allowed in dom0");

    // Lifetime.
    let short = sim.keygen("id_short", "ed25519", "256");
    sim.admin_ok(
        "",
        "work",
        &["run", "ssh-add", "-t", "2", short.to_str().unwrap()],
    );
    std::fs::remove_file(&short).unwrap();
    assert!(sim.listed(&work).contains(&sim.public(&short)));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!sim.listed(&work).contains(&sim.public(&short)), "expired");

    // Restart of the unikernel: sealed until the owner's passphrase, then every stored key.
    sim.ok(&["qvm-shutdown", "--wait", VAULT]);
    sim.ok(&["qvm-start", VAULT]);
    sim.wait_console("ssh-agent vault ready, key store sealed", 1);
    assert!(sim.listed(&work).is_empty(), "sealed after restart");
    assert_eq!(sim.admin_ok("", "work", &["status"]).trim(), "sealed");
    assert!(!sim
        .admin("wrong", "work", &["run", "ssh-add", "-X"])
        .status
        .success());
    sim.admin_ok("vault-pass", "work", &["run", "ssh-add", "-X"]);
    let mut after = want.clone();
    after.push(sim.public(&conf));
    after.sort();
    assert_eq!(sim.listed(&work), after);
    assert!(sim.sign_verify(&work, &keys[0]));
}
