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

/// runloop's echo_vm, built into this test's own target directory.
fn echo_vm() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target = profile_dir().parent().unwrap().to_path_buf();
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-q", "-p", "runloop", "--example", "echo_vm"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir().ends_with("release") {
            c.arg("--release");
        }
        assert!(c.status().unwrap().success(), "building echo_vm failed");
    });
    profile_dir().join("examples/echo_vm")
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
}

impl Lab {
    fn start() -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "qrexecd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(dir.join("policy.d")).unwrap();
        std::fs::write(dir.join("policy.d/50-test.policy"), POLICY).unwrap();
        let xs = Xenstored::spawn(&run, &[DomId::DOM0, dom(1), dom(2), dom(3)]).unwrap();
        let mut s = store::connect(&run, DomId::DOM0).unwrap();
        let mut lab = Lab {
            dir,
            run,
            xs: Some(xs),
            procs: Vec::new(),
        };
        let echo = echo_vm();
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_qubes-vm-agent"));
        for (id, name) in [(1, "vault"), (2, "work"), (3, "other")] {
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
            let mut c = if id == 1 {
                Command::new(&echo)
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
                .env("QUBES_HOSTED_CMDLINE", "")
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
        for (id, name) in [(1, "vault"), (2, "work"), (3, "other")] {
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
        ["dom0", "vault", "work", "other"]
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

    /// Waits until the agents' sockets exist (the processes are up).
    fn wait_up(&self) {
        let end = Instant::now() + DEADLINE;
        while !["dom0", "work", "other"]
            .iter()
            .all(|n| self.sock(n).exists())
        {
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
