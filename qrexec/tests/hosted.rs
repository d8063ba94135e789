//! qubes-qrexecd as dom0 for three hosted domains: a vault (runloop's echo_vm unikernel) and
//! two Linux-side agents (`qubes-vm-agent agent`), `work` and `other`. The test plays the
//! toolstack (xenstored, homes, processes); every call is typed as `qrexec-client-vm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use platform_api::{Access, DomId, Perm, Store, Tx};
use platform_hosted::store::{self, Daemon as Xenstored};

const DEADLINE: Duration = Duration::from_secs(90);
static SEQ: AtomicU32 = AtomicU32::new(0);

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// runloop's echo_vm and the ssh-agent vault's hosted binary, built once into this test's
/// own target directory.
fn build_once() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target = profile_dir().parent().unwrap().to_path_buf();
        for args in [
            &["build", "-q", "-p", "runloop", "--example", "echo_vm"][..],
            &["build", "-q", "-p", "ssh-agent-vm", "--bins"][..],
        ] {
            let mut c = Command::new(env!("CARGO"));
            c.args(args)
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir().ends_with("release") {
                c.arg("--release");
            }
            assert!(c.status().unwrap().success(), "cargo {args:?} failed");
        }
    });
}

fn echo_vm() -> PathBuf {
    build_once();
    profile_dir().join("examples/echo_vm")
}

fn ssh_agent_vm() -> PathBuf {
    build_once();
    profile_dir().join("ssh-agent-vm")
}

fn dom(n: u32) -> DomId {
    DomId::new(n).unwrap()
}

const POLICY: &str = "\
# The vault's echo is for work only; other may call work (which runs no services).
test.Echo    *  work   vault  allow
test.Upper   *  work   vault  allow
test.Refuse  *  work   vault  allow
test.Nothing *  other  work   allow
test.Ask     *  work   vault  ask default_target=vault
*            *  @anyvm @anyvm deny
";

/// xenstored, the three domains, dom0's daemon.
struct Lab {
    dir: PathBuf,
    run: PathBuf,
    xs: Option<Xenstored>,
    procs: Vec<Child>,
    vault: String,
}

/// Domain 1: a hosted unikernel.
struct Vault<'a> {
    name: &'a str,
    exe: PathBuf,
    cmdline: &'a str,
    /// A private volume of this many bytes (xvdb, 51728).
    vbd: Option<u64>,
}

const VBD_DEVID: u32 = 51728;

/// The toolstack's vbd entries for domain `id` backed by `image`.
fn add_vbd(s: &mut impl Store, id: u32, image: &Path, size: u64) {
    std::fs::File::create(image).unwrap().set_len(size).unwrap();
    let fe = format!("/local/domain/{id}/device/vbd/{VBD_DEVID}");
    let be = format!("/local/domain/0/backend/vbd/{id}/{VBD_DEVID}");
    let image = image.to_string_lossy().into_owned();
    let sectors = (size / 512).to_string();
    let (idt, devid) = (id.to_string(), VBD_DEVID.to_string());
    let backend = [
        ("frontend", fe.as_str()),
        ("frontend-id", &idt),
        ("params", &image),
        ("sectors", &sectors),
        ("sector-size", "512"),
        ("mode", "w"),
        ("state", "4"),
    ];
    let frontend = [
        ("backend", be.as_str()),
        ("backend-id", "0"),
        ("virtual-device", &devid),
        ("device-type", "disk"),
    ];
    for (d, owner, reader, entries) in [
        (&be, DomId::DOM0, dom(id), &backend[..]),
        (&fe, dom(id), DomId::DOM0, &frontend[..]),
    ] {
        let perms = [
            Perm {
                domid: owner,
                access: Access::None,
            },
            Perm {
                domid: reader,
                access: Access::Read,
            },
        ];
        s.mkdir(Tx::NONE, d).unwrap();
        s.set_perms(Tx::NONE, d, &perms).unwrap();
        for (k, v) in entries {
            let p = format!("{d}/{k}");
            s.write(Tx::NONE, &p, v.as_bytes()).unwrap();
            s.set_perms(Tx::NONE, &p, &perms).unwrap();
        }
    }
}

impl Lab {
    fn start() -> Lab {
        Self::start_with(
            Vault {
                name: "vault",
                exe: echo_vm(),
                cmdline: "",
                vbd: None,
            },
            POLICY,
        )
    }

    fn start_with(vault: Vault<'_>, policy: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "qrexecd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(dir.join("policy.d")).unwrap();
        std::fs::write(dir.join("policy.d/50-test.policy"), policy).unwrap();
        let xs = Xenstored::spawn(&run, &[DomId::DOM0, dom(1), dom(2), dom(3)]).unwrap();
        let mut s = store::connect(&run, DomId::DOM0).unwrap();
        let mut lab = Lab {
            dir,
            run,
            xs: Some(xs),
            procs: Vec::new(),
            vault: vault.name.to_string(),
        };
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_qubes-vm-agent"));
        for (id, name) in [(1, vault.name), (2, "work"), (3, "other")] {
            let home = format!("/local/domain/{id}");
            s.write(Tx::NONE, &format!("{home}/name"), name.as_bytes())
                .unwrap();
            let own = [Perm {
                domid: dom(id),
                access: Access::None,
            }];
            for key in ["control", "control/shutdown"] {
                let p = format!("{home}/{key}");
                s.write(Tx::NONE, &p, b"").unwrap();
                s.set_perms(Tx::NONE, &p, &own).unwrap();
            }
            std::fs::write(
                lab.dir.join(format!("{name}.qdb")),
                format!("/name {name}\n/type AppVM\n/qubes-vm-type AppVM\n/default-user user\n"),
            )
            .unwrap();
            if let (1, Some(size)) = (id, vault.vbd) {
                add_vbd(&mut s, id, &lab.dir.join("private.img"), size);
            }
            let mut c = if id == 1 {
                Command::new(&vault.exe)
            } else {
                let mut c = Command::new(&agent);
                c.args(["agent", "--backend", "hosted", "--socket"])
                    .arg(lab.sock(name));
                c
            };
            let log = std::fs::File::create(lab.dir.join(format!("{name}.log"))).unwrap();
            let child = c
                .env("QUBES_HOSTED_DIR", &lab.run)
                .env("QUBES_HOSTED_DOMID", id.to_string())
                .env("QUBES_HOSTED_NAME", name)
                .env(
                    "QUBES_HOSTED_CMDLINE",
                    if id == 1 { vault.cmdline } else { "" },
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            lab.procs.push(child);
        }
        let log = std::fs::File::create(lab.dir.join("dom0.log")).unwrap();
        let mut d = Command::new(env!("CARGO_BIN_EXE_qubes-qrexecd"));
        d.args(["--backend", "hosted", "--policy-dir"])
            .arg(lab.dir.join("policy.d"))
            .arg("--socket")
            .arg(lab.sock("dom0"));
        for (id, name) in [(1, vault.name), (2, "work"), (3, "other")] {
            d.arg("--domain").arg(format!(
                "{name}:{id}:{}",
                lab.dir.join(format!("{name}.qdb")).display()
            ));
        }
        let child = d
            .env("QUBES_HOSTED_DIR", &lab.run)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        lab.procs.push(child);
        lab
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    fn logs(&self) -> String {
        ["dom0", &self.vault, "work", "other"]
            .iter()
            .map(|n| {
                let t =
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                format!("--- {n}\n{t}")
            })
            .collect()
    }

    /// `qrexec-client-vm TARGET SERVICE` in `from` (`dom0`: dom0's own call) with `stdin`.
    fn call(&self, from: &str, target: &str, service: &str, stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qubes-vm-agent"))
            .args(["client-vm", target, service])
            .env("QUBES_QREXEC_AGENT_SOCK", self.sock(from))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let id = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(DEADLINE) {
            Ok(o) => o.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").arg(id.to_string()).status();
                panic!("{from}: {service} in {target} hung\n{}", self.logs());
            }
        };
        w.join().unwrap();
        out
    }

    /// Waits until the callers' agents serve calls. Their socket files are not enough: one exists
    /// from bind(), a moment before listen(), and an agent forwards calls only once dom0's
    /// daemon connected to it (which also means the daemon's socket listens).
    fn wait_up(&self) {
        let end = Instant::now() + DEADLINE;
        while !["work", "other"].iter().all(|n| {
            std::fs::read_to_string(self.dir.join(format!("{n}.log")))
                .is_ok_and(|l| l.contains("dom0's qrexec daemon connected"))
        }) {
            assert!(
                Instant::now() < end,
                "agents never started\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in self.procs.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(xs) = self.xs.take() {
            xs.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn vm_to_vm_calls_are_routed_by_policy_with_data_both_ways() {
    let lab = Lab::start();
    lab.wait_up();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let out = lab.call("work", "vault", "test.Echo", &data);
    assert_eq!(code(&out), Some(0), "{}", lab.logs());
    assert!(
        out.stdout == data,
        "echo differs ({} bytes back)\n{}",
        out.stdout.len(),
        lab.logs()
    );
    let out = lab.call("work", "vault", "test.Upper", b"split ssh");
    assert_eq!((code(&out), &out.stdout[..]), (Some(0), &b"SPLIT SSH"[..]));
    // The vault's own refusal passes through as the remote exit code.
    let out = lab.call("work", "vault", "test.Refuse", b"x");
    assert_eq!(code(&out), Some(126), "{}", lab.logs());
    // A call to a Linux agent that runs no such service: 127 from the agent.
    let out = lab.call("other", "work", "test.Nothing", b"");
    assert_eq!(code(&out), Some(127), "{}", lab.logs());
    // Many calls in a row reuse the ports: the agents report every channel's end.
    for i in 0..20u8 {
        let out = lab.call("work", "vault", "test.Echo", &[i; 100]);
        assert_eq!(
            (code(&out), out.stdout),
            (Some(0), vec![i; 100]),
            "{}",
            lab.logs()
        );
    }
}

#[test]
fn policy_denial_is_service_refused_and_exit_126() {
    let lab = Lab::start();
    lab.wait_up();
    let out = lab.call("other", "vault", "test.Echo", b"secret?");
    assert_eq!(code(&out), Some(126), "{}", lab.logs());
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Request refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No dialog in this daemon: `ask` refuses; an unknown target refuses.
    assert_eq!(code(&lab.call("work", "vault", "test.Ask", b"")), Some(126));
    assert_eq!(
        code(&lab.call("work", "nosuchvm", "test.Echo", b"")),
        Some(126)
    );
    let log = std::fs::read_to_string(lab.dir.join("dom0.log")).unwrap();
    assert!(
        log.contains("test.Echo from other to vault: refused: denied by policy"),
        "{log}"
    );
    // The allowed caller still gets through after the refusals.
    let out = lab.call("work", "vault", "test.Echo", b"ok");
    assert_eq!(
        (code(&out), &out.stdout[..]),
        (Some(0), &b"ok"[..]),
        "{}",
        lab.logs()
    );
}

#[test]
fn dom0_calls_from_its_socket_and_vm_agents_reconnect() {
    let lab = Lab::start();
    lab.wait_up();
    let out = lab.call("dom0", "vault", "test.Upper", b"abc");
    assert_eq!(
        (code(&out), &out.stdout[..]),
        (Some(0), &b"ABC"[..]),
        "{}",
        lab.logs()
    );
    // dom0 calling a Linux agent: 127 (it runs no services).
    assert_eq!(
        code(&lab.call("dom0", "work", "test.Nothing", b"")),
        Some(127)
    );
    // A malformed request line is answered with an error, not a hang.
    let mut s = std::os::unix::net::UnixStream::connect(lab.sock("work")).unwrap();
    s.write_all(b"HELLO there\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("ERROR malformed request"), "{answer}");
}

/// Runs `cmd` (a `sh -c` line) with `env`, bounded; (exit code, stdout + stderr).
fn sh(cmd: &str, env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut c = Command::new("timeout");
    c.args(["60", "sh", "-c", cmd]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// A forwarder process: each connection to `listen` is `service` in `target` through `agent`.
fn forwarder(lab: &mut Lab, listen: &Path, agent: &Path, target: &str, service: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_qubes-vm-agent"))
        .args(["forward", "--listen"])
        .arg(listen)
        .arg("--agent")
        .arg(agent)
        .args(["--target", target, "--service", service])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.procs.push(child);
    let end = Instant::now() + DEADLINE;
    while !listen.exists() {
        assert!(Instant::now() < end, "forwarder never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn split_ssh_key_lives_in_the_vault_and_work_signs_through_the_forwarder() {
    if Command::new("ssh-add").arg("-h").output().is_err() {
        eprintln!("skipped: no ssh-add (openssh-client)");
        return;
    }
    let policy = "qubes.SshAgent * work sshagent-unikernel allow\n\
                  qubes.SshAgent * @anyvm @anyvm deny\n";
    let mut lab = Lab::start_with(
        Vault {
            name: "sshagent-unikernel",
            exe: ssh_agent_vm(),
            cmdline: "kdf=argon2id:8:1:1",
            vbd: Some(16 << 20),
        },
        policy,
    );
    lab.wait_up();
    let d = lab.dir.clone();
    let (admin, work_ssh, other_ssh) = (
        d.join("admin-ssh.sock"),
        d.join("work-ssh.sock"),
        d.join("other-ssh.sock"),
    );
    let (dom0, work, other) = (lab.sock("dom0"), lab.sock("work"), lab.sock("other"));
    forwarder(
        &mut lab,
        &admin,
        &dom0,
        "sshagent-unikernel",
        "qubes.SshAgentAdmin+work",
    );
    forwarder(
        &mut lab,
        &work_ssh,
        &work,
        "sshagent-unikernel",
        "qubes.SshAgent+work",
    );
    forwarder(
        &mut lab,
        &other_ssh,
        &other,
        "sshagent-unikernel",
        "qubes.SshAgent+work",
    );
    let key = d.join("id_ed25519");
    let askpass = d.join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho vault-passphrase\n").unwrap();
    let (c, out) = sh(
        &format!(
            "chmod 755 {a} && ssh-keygen -q -t ed25519 -N '' -C flows@work -f {k} && \
             SSH_ASKPASS={a} SSH_ASKPASS_REQUIRE=force DISPLAY=none ssh-add -X && ssh-add {k} && rm {k}",
            a = askpass.display(),
            k = key.display()
        ),
        &[("SSH_AUTH_SOCK", &admin)],
    );
    assert_eq!(c, Some(0), "dom0 loading the key: {out}\n{}", lab.logs());
    let (c, listed) = sh("ssh-add -l", &[("SSH_AUTH_SOCK", &work_ssh)]);
    assert_eq!(c, Some(0), "work's ssh-add -l: {listed}\n{}", lab.logs());
    assert!(
        listed.contains("flows@work") && listed.contains("ED25519"),
        "{listed}"
    );
    // A signature made by the vault for work, checked against the public key.
    let msg = d.join("msg");
    std::fs::write(&msg, b"split ssh on the hosted backend\n").unwrap();
    let (c, out) = sh(
        &format!(
            "ssh-keygen -Y sign -f {k}.pub -n flows {m} && \
             echo \"flows@work $(cat {k}.pub)\" > {d}/allowed && \
             ssh-keygen -Y verify -f {d}/allowed -I flows@work -n flows -s {m}.sig < {m}",
            k = key.display(),
            m = msg.display(),
            d = d.display()
        ),
        &[("SSH_AUTH_SOCK", &work_ssh)],
    );
    assert_eq!(c, Some(0), "sign in work, verify: {out}\n{}", lab.logs());
    assert!(out.contains("Good \"flows\" signature"), "{out}");
    // other: refused by policy, no key listed.
    let (c, out) = sh("ssh-add -l", &[("SSH_AUTH_SOCK", &other_ssh)]);
    assert_ne!(c, Some(0), "other must not reach the vault: {out}");
    assert!(!out.contains("flows@work"), "{out}");
    let log = std::fs::read_to_string(d.join("dom0.log")).unwrap();
    assert!(
        log.contains(
            "qubes.SshAgent+work from other to sshagent-unikernel: refused: denied by policy"
        ),
        "{log}"
    );
}

#[test]
fn calls_held_for_a_target_that_is_not_up_are_bounded_per_caller() {
    // The vault's domain exists but its agent never connects (`true` exits at once).
    let lab = Lab::start_with(
        Vault {
            name: "vault",
            exe: PathBuf::from("/bin/true"),
            cmdline: "",
            vbd: None,
        },
        "test.Echo * work vault allow\n",
    );
    lab.wait_up();
    let mut held = Vec::new();
    for _ in 0..20 {
        let c = Command::new(env!("CARGO_BIN_EXE_qubes-vm-agent"))
            .args(["client-vm", "vault", "test.Echo"])
            .env("QUBES_QREXEC_AGENT_SOCK", lab.sock("work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        held.push(c);
    }
    // 16 wait for the target; the other 4 are refused at once.
    let end = Instant::now() + DEADLINE;
    let refused = loop {
        let done: Vec<Option<i32>> = held
            .iter_mut()
            .filter_map(|c| c.try_wait().unwrap().map(|s| s.code()))
            .collect();
        if done.len() >= 4 || Instant::now() >= end {
            break done;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    let still = held
        .iter_mut()
        .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
        .count();
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(refused, vec![Some(126); 4], "{}", lab.logs());
    assert_eq!(still, 16, "{}", lab.logs());
    let log = std::fs::read_to_string(lab.dir.join("dom0.log")).unwrap();
    assert_eq!(
        log.matches("refused: too many calls wait for targets")
            .count(),
        4,
        "{log}"
    );
}

#[test]
fn a_local_client_declaring_an_oversized_frame_ends_its_call_with_125() {
    let lab = Lab::start();
    lab.wait_up();
    let mut s = std::os::unix::net::UnixStream::connect(lab.sock("work")).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"CALL vault test.Echo\n").unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        std::io::Read::read_exact(&mut s, &mut b).unwrap();
        line.push(b[0]);
    }
    assert_eq!(line, b"CONNECTED\n", "{}", lab.logs());
    // A 4 GiB stdin frame: refused from its header, nothing allocated for it.
    s.write_all(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    let exit = qubes_qrexec::local::frame(qubes_qrexec::local::TAG_EXIT, &125i32.to_le_bytes());
    assert!(rest.ends_with(&exit), "{rest:?}\n{}", lab.logs());
    // The agent serves the next call.
    let out = lab.call("work", "vault", "test.Upper", b"next");
    assert_eq!(
        (code(&out), &out.stdout[..]),
        (Some(0), &b"NEXT"[..]),
        "{}",
        lab.logs()
    );
}
