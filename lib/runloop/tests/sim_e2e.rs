//! End to end on the hosted backend: the `echo_vm` example runs as a qube's kernel under a real
//! `qubes-sim daemon` (xenstored, qrexec and QubesDB daemons, policy), and Linux qubes call it
//! with `qrexec-client-vm`. Every wait has a deadline; a failure prints the logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const VM: &str = "echo-vm";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `<target>/debug` (or release): where cargo put this test's binary's siblings.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The `echo_vm` example.
fn echo_vm_exe() -> PathBuf {
    example("echo_vm")
}

/// Builds (once per test process) what the tests run: this crate's examples and the
/// `qubes-sim` binary, in this test's own target directory, so that no stale binary is used
/// (`cargo test --test sim_e2e` alone does not build examples).
fn build_once() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target = profile_dir().parent().unwrap().to_path_buf();
        let release = profile_dir().ends_with("release");
        for args in [
            &["build", "-q", "-p", "runloop", "--examples"][..],
            &["build", "-q", "-p", "qubes-sim", "--bin", "qubes-sim"][..],
        ] {
            let mut c = Command::new(env!("CARGO"));
            c.args(args)
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                c.arg("--release");
            }
            let st = c.status().expect("run cargo");
            assert!(st.success(), "cargo {args:?} failed");
        }
    });
}

fn example(name: &str) -> PathBuf {
    build_once();
    let p = profile_dir().join("examples").join(name);
    assert!(p.is_file(), "{} missing after the build", p.display());
    p
}

/// The `qubes-sim` binary (or `QUBES_SIM_EXE`).
fn sim_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("QUBES_SIM_EXE") {
        return PathBuf::from(p);
    }
    build_once();
    let p = profile_dir().join("qubes-sim");
    assert!(p.is_file(), "{} missing after the build", p.display());
    p
}

struct Sim {
    dir: PathBuf,
    exe: PathBuf,
    daemon: Option<Child>,
}

impl Sim {
    fn new(tag: &str) -> Sim {
        let dir = std::env::temp_dir().join(format!(
            "runloop-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sim = Sim {
            dir,
            exe: sim_exe(),
            daemon: None,
        };
        sim.ok("qvm-create", &["--label", "red", "work"]);
        sim.ok("qvm-create", &["--label", "black", VM]);
        sim.ok(
            "qvm-prefs",
            &[VM, "kernel", echo_vm_exe().to_str().unwrap()],
        );
        sim.write(
            "policy.d/30-test.policy",
            "test.Denied  *  work  echo-vm  deny\n\
             test.Echo    *  echo-vm  work  allow\n\
             test.Echo    *  echo-vm  @adminvm  allow\n\
             *            *  work  echo-vm  allow\n",
            false,
        );
        let svc = |who| {
            format!("#!/bin/sh\necho \"{who} got $1 from $QREXEC_REMOTE_DOMAIN\"\ncat\nexit 5\n")
        };
        sim.write("vms/work/qubes-rpc/test.Echo", &svc("work"), true);
        sim.write("dom0/qubes-rpc/test.Echo", &svc("dom0"), true);
        sim
    }

    fn write(&self, rel: &str, text: &str, exec: bool) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if exec {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg(prog)
            .env("QUBES_SIM_DIR", &self.dir)
            // Only this test's policy and dom0 services, not the project's.
            .env("QUBES_SIM_POLICY_DIRS", "")
            .env("QUBES_SIM_DOM0_RPC", "")
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, prog: &str, args: &[&str]) -> String {
        let out = self.cmd(prog).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn boot(&mut self) {
        let log = std::fs::File::create(self.dir.join("sim.log")).unwrap();
        let mut child = self
            .cmd("daemon")
            .arg("--stdin-lifeline")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        self.daemon = Some(child);
        let line = read_line_within(out, DEADLINE).expect("sim did not get ready");
        assert!(line.starts_with("ready "), "{line}");
        self.ok("qvm-start", &["work"]);
        self.ok("qvm-start", &[VM]);
    }

    fn console(&self) -> String {
        self.console_of(VM)
    }

    fn console_of(&self, vm: &str) -> String {
        std::fs::read_to_string(self.dir.join("vms").join(vm).join("console.log"))
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        let sim = std::fs::read_to_string(self.dir.join("sim.log")).unwrap_or_default();
        format!("--- sim.log\n{sim}--- {VM} console\n{}", self.console())
    }

    fn domid(&self, vm: &str) -> String {
        self.ok("qvm-prefs", &[vm, "qid"]).trim().to_string()
    }

    /// `qrexec-client-vm TARGET SERVICE` inside `vm`, not yet started.
    fn client(&self, vm: &str, target: &str, service: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("qrexec-client-vm")
            .args([target, service])
            .env("QUBES_HOSTED_DIR", self.dir.join("run"))
            .env("QUBES_HOSTED_DOMID", self.domid(vm))
            .env("QUBES_SIM_VM_DIR", self.dir.join("vms").join(vm))
            .env_remove("QUBES_SIM_DIR");
        c
    }

    fn call(&self, service: &str, input: &[u8]) -> Done {
        run_within(self.client("work", VM, service), input, DEADLINE)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = self.cmd("shutdown").output();
            if wait_within(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug)]
struct Done {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn wait_within(c: &mut Child, d: Duration) -> Option<i32> {
    let end = Instant::now() + d;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_line_within(out: ChildStdout, d: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(d).ok()
}

fn run_within(mut c: Command, input: &[u8], d: Duration) -> Done {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let code = wait_within(&mut child, d).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        -1
    });
    let _ = feeder.join();
    Done {
        code,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn wait_console(sim: &Sim, needle: &str) {
    wait_console_of(sim, VM, needle);
}

fn wait_console_of(sim: &Sim, vm: &str, needle: &str) {
    let end = Instant::now() + DEADLINE;
    while !sim.console_of(vm).contains(needle) {
        assert!(
            Instant::now() < end,
            "{needle:?} never logged\n{}",
            sim.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn services_refusals_big_and_concurrent_calls_then_clean_shutdown() {
    let mut sim = Sim::new("main");
    sim.boot();

    // App::start ran after a full QubesDB sync (dom0 writes a dozen keys for every qube).
    // qvm-start returns at the agent's HELLO, which the loop sends before that.
    wait_console(&sim, " connect timeout ");
    let console = sim.console();
    let entries: usize = console
        .split("started: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no start line\n{}", sim.logs()));
    assert!(entries >= 5, "only {entries} QubesDB entries at start");

    let r = sim.call("test.Echo", b"hello\n");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (0, &b"hello\n"[..]),
        "{r:?}\n{}",
        sim.logs()
    );
    let r = sim.call("test.Upper+x", b"shout, please");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (0, &b"SHOUT, PLEASE"[..]),
        "{r:?}"
    );

    // Refused by the app (126), unknown to it (127), denied by policy (126).
    let r = sim.call("test.Refuse", b"ignored");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (126, &b""[..]),
        "{r:?}\n{}",
        sim.logs()
    );
    let r = sim.call("test.Nope+arg", b"ignored");
    assert_eq!((r.code, r.stdout.as_slice()), (127, &b""[..]), "{r:?}");
    let r = sim.call("test.Denied", b"");
    assert_eq!(r.code, 126, "{r:?}");
    // Still serving after those.
    let r = sim.call("test.Echo", b"again");
    assert_eq!((r.code, r.stdout.as_slice()), (0, &b"again"[..]), "{r:?}");

    // 1 MiB through one call: checksummed by the app, and echoed back intact.
    let mib = pattern(1 << 20, 7);
    let r = sim.call("test.Sum", &mib);
    let want = format!("{} {:016x}\n", mib.len(), fnv1a(&mib));
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.stdout)),
        (0, want.into()),
        "{r:?}"
    );
    let r = sim.call("test.Echo", &mib);
    assert_eq!(
        (r.code, r.stdout.len()),
        (0, mib.len()),
        "{}\n{}",
        r.stderr,
        sim.logs()
    );
    assert!(r.stdout == mib, "1 MiB echo corrupted");

    // 8 calls at once, each with its own data.
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let data = pattern(256 * 1024 + i as usize * 1000, 100 + i);
            let c = sim.client(
                "work",
                VM,
                if i % 2 == 0 {
                    "test.Echo"
                } else {
                    "test.Upper"
                },
            );
            std::thread::spawn(move || {
                let r = run_within(c, &data, DEADLINE);
                let want = if i % 2 == 0 {
                    data
                } else {
                    data.to_ascii_uppercase()
                };
                (i, r, want)
            })
        })
        .collect();
    for t in threads {
        let (i, r, want) = t.join().unwrap();
        assert_eq!(
            (r.code, r.stdout.len()),
            (0, want.len()),
            "call {i}: {}\n{}",
            r.stderr,
            sim.logs()
        );
        assert!(r.stdout == want, "call {i}: data corrupted");
    }

    // Our own calls: to a Linux qube and to dom0, relayed back to the caller.
    let r = sim.call("test.Relay+work", b"via work\n");
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.stdout)),
        (5, "work got relayed from echo-vm\nvia work\n".into()),
        "{r:?}\n{}",
        sim.logs()
    );
    let r = sim.call("test.Relay+dom0", b"via dom0\n");
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.stdout)),
        (5, "dom0 got relayed from echo-vm\nvia dom0\n".into()),
        "{r:?}\n{}",
        sim.logs()
    );
    // A relay the policy refuses: our call gets 126 and so does the caller.
    let r = sim.call("test.Relay+echo-vm", b"");
    assert_eq!(r.code, 126, "{r:?}\n{}", sim.logs());

    // A caller that dies mid-stream ends only its own call.
    let mut slow = sim.client("work", VM, "test.Sum");
    let mut slow = slow
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut slow_in = slow.stdin.take().unwrap();
    slow_in.write_all(&pattern(100_000, 3)).unwrap();
    let mut dying = sim.client("work", VM, "test.Echo");
    let mut dying = dying
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    dying
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&pattern(200_000, 4))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    dying.kill().unwrap();
    dying.wait().unwrap();
    wait_console(&sim, "ended: None");
    slow_in.write_all(&pattern(100_000, 5)).unwrap();
    drop(slow_in);
    let mut out = String::new();
    slow.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(wait_within(&mut slow, DEADLINE), Some(0), "{}", sim.logs());
    let mut both = pattern(100_000, 3);
    both.extend(pattern(100_000, 5));
    assert_eq!(out, format!("200000 {:016x}\n", fnv1a(&both)));
    let r = sim.call("test.Echo", b"still here");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (0, &b"still here"[..]),
        "{r:?}"
    );

    // qvm-shutdown: the loop stops the app and returns Ok, the process exits 0.
    sim.ok("qvm-shutdown", &["--wait", VM]);
    let console = sim.console();
    assert!(console.contains("poweroff requested"), "{}", sim.logs());
    assert!(
        console.contains("echo_vm: stopped cleanly"),
        "{}",
        sim.logs()
    );
    let log = std::fs::read_to_string(sim.dir.join("sim.log")).unwrap();
    assert!(
        log.contains(&format!("qube '{VM}'")) && log.contains("halted"),
        "{}",
        sim.logs()
    );
    assert!(!log.contains("crashed"), "{}", sim.logs());
    if std::env::var_os("RUNLOOP_E2E_SHOW").is_some() {
        eprintln!("{}", sim.logs());
    }
}

/// Callers that break the data protocol (a 2 GiB chunk, an unknown message, silence after
/// attaching) each lose their own call; a long call running alongside is unharmed.
#[test]
fn hostile_data_peer_ends_only_its_own_call() {
    let mut sim = Sim::new("hostile");
    let modes = ["oversize", "garbage", "nohello"];
    let kernel = example("hostile_caller");
    for m in modes {
        let vm = format!("evil-{m}");
        sim.ok("qvm-create", &["--label", "red", &vm]);
        sim.ok("qvm-prefs", &[&vm, "kernel", kernel.to_str().unwrap()]);
        sim.ok("qvm-prefs", &[&vm, "kernelopts", m]);
    }
    sim.ok("qvm-prefs", &[VM, "kernelopts", "connect_timeout=2"]);
    sim.write(
        "policy.d/31-hostile.policy",
        "test.Echo  *  @anyvm  echo-vm  allow\n",
        false,
    );
    sim.boot();

    let mut good = sim.client("work", VM, "test.Sum");
    let mut good = good
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut good_in = good.stdin.take().unwrap();
    good_in.write_all(&pattern(300_000, 9)).unwrap();
    for m in modes {
        let vm = format!("evil-{m}");
        sim.ok("qvm-start", &[&vm]);
        wait_console_of(&sim, &vm, "echo-vm closed the data vchan");
    }
    let console = sim.console();
    assert_eq!(
        console
            .matches("peer broke the qrexec data protocol")
            .count(),
        2,
        "{}",
        sim.logs()
    );
    assert_eq!(
        console
            .matches("never completed the data-channel handshake")
            .count(),
        1,
        "{}",
        sim.logs()
    );
    good_in.write_all(&pattern(300_000, 10)).unwrap();
    drop(good_in);
    let mut out = String::new();
    good.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(wait_within(&mut good, DEADLINE), Some(0), "{}", sim.logs());
    let mut both = pattern(300_000, 9);
    both.extend(pattern(300_000, 10));
    assert_eq!(out, format!("600000 {:016x}\n", fnv1a(&both)));
    let r = sim.call("test.Echo", b"unharmed");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (0, &b"unharmed"[..]),
        "{r:?}"
    );
    if std::env::var_os("RUNLOOP_E2E_SHOW").is_some() {
        eprintln!("{}", sim.logs());
        for m in modes {
            eprintln!("--- evil-{m}\n{}", sim.console_of(&format!("evil-{m}")));
        }
    }
}
