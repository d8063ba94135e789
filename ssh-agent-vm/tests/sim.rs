//! The vault end to end in the sim: `sshagent-unikernel` runs our hosted binary as its kernel;
//! AppVM `work` forwards a Unix socket with the shipped `qubes-ssh-agent-connect` (one
//! `qrexec-client-vm` call per connection, as the systemd socket unit does); dom0 manages keys
//! with the shipped `qvm-ssh-agent-admin`; confirmations run the shipped dom0 service.
//! Real OpenSSH tools throughout; skipped if they or python3 are missing.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sim_support::openssh::{self, public, Sshd, Tools};

const VAULT_BIN: &str = env!("CARGO_BIN_EXE_ssh-agent-vm");
const VAULT: &str = "sshagent-unikernel";

fn rpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qubes-rpc")
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

/// The sim with the vault, `work` and `other`, plus OpenSSH tools in its state directory.
struct Sim {
    sim: sim_support::Sim,
    ssh: Tools,
}

impl Deref for Sim {
    type Target = sim_support::Sim;
    fn deref(&self) -> &sim_support::Sim {
        &self.sim
    }
}

impl Sim {
    fn boot(tag: &str, kernelopts: &str) -> Sim {
        let mut sim = sim_support::Sim::new(VAULT_BIN, &format!("sshvault-{tag}"));
        // Only `work` may reach keyring `work`; everything else falls to the shipped default deny.
        sim.write(
            "policy.d/30-test.policy",
            &format!("qubes.SshAgent +work work {VAULT} allow\n"),
            false,
        );
        sim.write("forwarder.py", FORWARDER, false);
        sim.ok(&["qvm-create", "--label", "red", "work"]);
        sim.ok(&["qvm-create", "--label", "red", "other"]);
        sim.ok(&["qvm-create", "--label", "black", VAULT]);
        sim.ok(&["qvm-prefs", VAULT, "kernel", VAULT_BIN]);
        sim.ok(&["qvm-prefs", VAULT, "kernelopts", kernelopts]);
        sim.start_daemon();
        sim.ok(&["qvm-start", "work"]);
        sim.ok(&["qvm-start", "other"]);
        sim.ok(&["qvm-start", VAULT]);
        sim.wait_console(VAULT, "ssh-agent vault ready", 1);
        let ssh = Tools::new(&sim.dir);
        Sim { sim, ssh }
    }

    fn console(&self) -> String {
        self.sim.console(VAULT)
    }

    /// Starts the shipped forwarder inside `qube` on `<dir>/<qube>.sock`, for `keyring`.
    fn forward(&mut self, qube: &str, keyring: &str) -> PathBuf {
        let sock = self.dir.join(format!("{qube}.sock"));
        let mut child = self
            .in_qube_cmd(qube, "python3")
            .arg(self.dir.join("forwarder.py"))
            .arg(&sock)
            .arg(rpc_dir().join("ssh-agent/qubes-ssh-agent-connect"))
            .env("HOME", self.vm_dir(qube))
            .env("SSH_VAULT", VAULT)
            .env("SSH_KEYRING", keyring)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        self.sim.adopt(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        sock
    }

    /// An OpenSSH tool in a qube, through its forwarder socket.
    fn tool(&self, sock: &Path, pass: &str, tool: &str, args: &[&str]) -> Output {
        self.ssh.run(sock, pass, tool, args)
    }

    /// dom0's `qvm-ssh-agent-admin KEYRING ARGS...`.
    fn admin(&self, pass: &str, keyring: &str, args: &[&str]) -> Output {
        let mut c = Command::new("python3");
        c.arg(rpc_dir().join("ssh-agent/dom0/qvm-ssh-agent-admin"))
            .arg(keyring)
            .args(args)
            .env("QVM_RUN", format!("{} qvm-run", self.exe.display()))
            .env("QUBES_SIM_DIR", &self.dir);
        self.ssh.askpass(&mut c, pass);
        c.output().unwrap()
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
        self.ssh.keygen(name, kind, Some(bits))
    }

    fn public(&self, key: &Path) -> String {
        public(key)
    }

    fn listed(&self, sock: &Path) -> Vec<String> {
        self.ssh.listed(sock)
    }

    fn sign_verify(&self, sock: &Path, key: &Path) -> bool {
        self.ssh.sign_verify(sock, key)
    }

    fn confirm_answer(&self, a: &str) {
        self.write("confirm-answer", &format!("{a}\n"), false);
    }
}

#[test]
fn split_ssh_through_qrexec_in_the_sim() {
    if !openssh::have("ssh-add") || Command::new("python3").arg("-V").output().is_err() {
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
    const PARALLEL: usize = 16;
    if let Some(sshd) = Sshd::start(&sim.dir, "login", &keys) {
        for k in &keys {
            let o = sim.ssh.login(&work, k, sshd.port).output().unwrap();
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("logged-in"),
                "login with {}: {}\nsshd:\n{}",
                k.display(),
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(&sshd.log).unwrap_or_default()
            );
        }
        let children: Vec<_> = (0..PARALLEL)
            .map(|_| sim.ssh.login(&work, &keys[0], sshd.port).spawn().unwrap())
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

    // Lifetime: listed while it lives (checked only when the listing came back within the
    // lifetime: a loaded machine may take longer), gone once it is over.
    let short = sim.keygen("id_short", "ed25519", "256");
    let life = Duration::from_secs(2);
    let added = Instant::now();
    sim.admin_ok(
        "",
        "work",
        &["run", "ssh-add", "-t", "2", short.to_str().unwrap()],
    );
    std::fs::remove_file(&short).unwrap();
    let listed = sim.listed(&work);
    if added.elapsed() < life {
        assert!(
            listed.contains(&sim.public(&short)),
            "alive within its lifetime"
        );
    }
    std::thread::sleep(life.saturating_sub(added.elapsed()));
    sim_support::wait_until(
        "the 2 s key expires",
        Duration::from_millis(100),
        || !sim.listed(&work).contains(&sim.public(&short)),
        || sim.console(),
    );

    // Restart of the unikernel: sealed until the owner's passphrase, then every stored key.
    sim.ok(&["qvm-shutdown", "--wait", VAULT]);
    sim.ok(&["qvm-start", VAULT]);
    sim.wait_console(VAULT, "ssh-agent vault ready, key store sealed", 1);
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
