//! OpenSSH's client tools against an agent socket (passphrases from an askpass script) and a
//! loopback sshd on a free port that is known to listen before a login is tried.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::DEADLINE;

/// Whether `tool` can be run at all (OpenSSH tools have no `--version`).
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok() || Command::new(tool).arg("-?").output().is_ok()
}

/// The installed sshd, if any (Debian package openssh-server).
pub fn sshd_exe() -> Option<&'static str> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// The current user's name (logins into the loopback sshd are as that user).
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `type base64` of a key's `.pub` file, the form `ssh-add -L` lists.
pub fn public(key: &Path) -> String {
    let s = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    s.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// OpenSSH tools run in `dir` (their `HOME`); passphrase prompts answer from an askpass script.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Working directory and `HOME` of every tool; keys are generated here.
    pub dir: PathBuf,
}

impl Tools {
    /// Writes the askpass script into `dir` (which must exist).
    pub fn new(dir: &Path) -> Tools {
        let askpass = dir.join("askpass");
        std::fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$TEST_PASSPHRASE\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        Tools {
            dir: dir.to_path_buf(),
        }
    }

    /// Makes `c` answer passphrase prompts with `pass` and run in [`Tools::dir`].
    pub fn askpass(&self, c: &mut Command, pass: &str) {
        c.env("SSH_ASKPASS", self.dir.join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "none")
            .env("TEST_PASSPHRASE", pass)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
    }

    /// Runs `tool ARGS` against the agent at `sock`; prompts answer `pass`.
    pub fn run(&self, sock: &Path, pass: &str, tool: &str, args: &[&str]) -> Output {
        let mut c = Command::new(tool);
        c.args(args).env("SSH_AUTH_SOCK", sock);
        self.askpass(&mut c, pass);
        c.output().unwrap()
    }

    /// [`Tools::run`] that must succeed; its stdout.
    pub fn ok(&self, sock: &Path, pass: &str, tool: &str, args: &[&str]) -> String {
        let o = self.run(sock, pass, tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A new key without passphrase at `<dir>/<name>` (`bits` as `ssh-keygen -b`).
    pub fn keygen(&self, name: &str, kind: &str, bits: Option<&str>) -> PathBuf {
        let p = self.dir.join(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
            .arg(&p);
        if let Some(b) = bits {
            c.args(["-b", b]);
        }
        assert!(c.status().unwrap().success(), "ssh-keygen {kind} {name}");
        p
    }

    /// The agent's keys as `type base64`, sorted.
    pub fn listed(&self, sock: &Path) -> Vec<String> {
        let o = self.run(sock, "", "ssh-add", &["-L"]);
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    }

    /// `ssh-keygen -Y sign` through the agent, then `-Y verify` against the public key; false
    /// if the agent did not sign (a wrong signature fails the test).
    pub fn sign_verify(&self, sock: &Path, key: &Path) -> bool {
        let data = self.dir.join("data.txt");
        std::fs::write(&data, b"signed through the vault\n").unwrap();
        let _ = std::fs::remove_file(self.dir.join("data.txt.sig"));
        let pubkey = key.with_extension("pub");
        let o = self.run(
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
        std::fs::write(&signers, format!("me@test {}\n", public(key))).unwrap();
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

    /// `ssh` as [`user`] into the loopback sshd on `port` with the agent key whose public half
    /// is `key.pub`, running `echo logged-in`; output piped.
    pub fn login(&self, sock: &Path, key: &Path, port: u16) -> Command {
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
            .arg(format!("{}@127.0.0.1", user()))
            .args(["echo", "logged-in"])
            .env("SSH_AUTH_SOCK", sock)
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// A loopback sshd with its own host key, accepting given keys for [`user`]; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// The port it listens on, 127.0.0.1.
    pub port: u16,
    /// Its host key as `type base64`.
    pub host_pub: String,
    /// Its log (`-e`), kept in a file so that it never blocks on a full pipe.
    pub log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd (`None` if not installed) for `keys` on a free port and returns once it
    /// logged that it listens. A port taken between choosing and binding is retried.
    pub fn start(dir: &Path, name: &str, keys: &[PathBuf]) -> Option<Sshd> {
        let exe = sshd_exe()?;
        let host = dir.join(format!("host_{name}"));
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen for the host key");
        let auth = dir.join(format!("authorized_keys_{name}"));
        let ak: String = keys
            .iter()
            .map(|k| std::fs::read_to_string(k.with_extension("pub")).unwrap())
            .collect();
        std::fs::write(&auth, ak).unwrap();
        // sshd refuses to start without its privilege separation directory (Debian: /run/sshd).
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_pub = public(&host);
        let log = dir.join(format!("sshd_{name}.log"));
        let mut tries = Vec::new();
        for _ in 0..5 {
            // The kernel's choice of a free port; released just before sshd binds it.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(exe)
                .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
                .args(["-o", "ListenAddress=127.0.0.1", "-h"])
                .arg(&host)
                .arg("-o")
                .arg(format!("AuthorizedKeysFile={}", auth.display()))
                .args(["-o", "StrictModes=no", "-o", "UsePAM=no"])
                .args(["-o", "PasswordAuthentication=no"])
                .args(["-o", "KbdInteractiveAuthentication=no"])
                // Parallel logins: no random early drop of unauthenticated connections.
                .args(["-o", "MaxStartups=100", "-o", "MaxSessions=100"])
                .arg("-o")
                .arg(format!(
                    "PidFile={}",
                    dir.join(format!("sshd_{name}.pid")).display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (listening, said) = wait_listening(&mut child, &log);
            if listening {
                return Some(Sshd {
                    child,
                    port,
                    host_pub,
                    log,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            tries.push(format!("port {port}: {said}"));
        }
        panic!("sshd did not start: {tries:#?}");
    }
}

/// Reads sshd's stderr until "Server listening on" (true) or its end (false), then copies the
/// rest into `log` from a thread; returns what sshd said up to then.
fn wait_listening(child: &mut Child, log: &Path) -> (bool, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let mut file = std::fs::File::create(log).unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut said = String::new();
        let mut line = String::new();
        let mut told = false;
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = std::io::Write::write_all(&mut file, line.as_bytes());
            if !told {
                said.push_str(&line);
                if line.contains("Server listening on") {
                    let _ = tx.send((true, std::mem::take(&mut said)));
                    told = true;
                }
            }
            line.clear();
        }
        if !told {
            let _ = tx.send((false, said));
        }
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| (false, "no word from sshd in time".into()))
}
