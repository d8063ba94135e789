//! qrexec end to end: a real sim (`qubes-sim daemon`), qubes as processes on the hosted
//! backend, calls through xs_wire, vchan and qrexec only. Every wait has a deadline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{State, EXE};

const DEADLINE: Duration = Duration::from_secs(30);

/// A running sim with dom0 and two AppVMs, work (domid 1) and vault (domid 2).
struct Sim {
    state: State,
    daemon: Option<Child>,
    log: PathBuf,
}

const ECHO: &str = "#!/bin/sh\nprintf 'arg=%s from=%s env=%s\\n' \"$1\" \"$QREXEC_REMOTE_DOMAIN\" \"$QREXEC_SERVICE_ARGUMENT\"\ncat\nexit 3\n";

impl Sim {
    fn new(tag: &str, policy: &str) -> Sim {
        let state = State::new(tag);
        state.ok("qvm-create", &["--label", "red", "work"]);
        state.ok("qvm-create", &["--label", "black", "vault"]);
        let mut sim = Sim {
            log: state.path().join("sim.log"),
            state,
            daemon: None,
        };
        sim.policy(policy);
        sim.service("vault", "test.Echo", ECHO);
        sim.boot();
        sim
    }

    fn path(&self) -> &Path {
        self.state.path()
    }

    fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    fn policy(&self, text: &str) {
        let dir = self.path().join("policy.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("30-test.policy"), text).unwrap();
    }

    fn service(&self, vm: &str, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path().join("vms").join(vm).join("qubes-rpc");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Starts the daemon and waits for its `ready` line.
    fn boot(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut child = self
            .state
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
    }

    /// Stops the daemon (admin shutdown), waits for it; returns its exit status.
    fn stop(&mut self) -> i32 {
        let Some(mut child) = self.daemon.take() else {
            return 0;
        };
        let _ = self.state.run("shutdown", &[]);
        let code = wait_within(&mut child, DEADLINE);
        code.unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sim did not stop within {DEADLINE:?}")
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn domid(&self, vm: &str) -> String {
        self.state.ok("qvm-prefs", &[vm, "qid"]).trim().to_string()
    }

    /// A process inside `vm`: the environment its agent gives to its own children.
    fn in_vm(&self, vm: &str, prog: &str) -> Command {
        let mut c = Command::new(EXE);
        c.arg(prog)
            .env("QUBES_HOSTED_DIR", self.run_dir())
            .env("QUBES_HOSTED_DOMID", self.domid(vm))
            .env("QUBES_SIM_VM_DIR", self.path().join("vms").join(vm))
            .env_remove("QUBES_SIM_DIR");
        c
    }

    /// `qrexec-client-vm TARGET SERVICE` from `vm` (started first) with `input` on stdin.
    fn call(&self, vm: &str, target: &str, service: &str, input: &[u8]) -> Done {
        self.state.ok("qvm-start", &[vm]);
        let mut c = self.in_vm(vm, "qrexec-client-vm");
        c.args([target, service]);
        run_within(c, input, DEADLINE)
    }

    fn state_of(&self, vm: &str) -> String {
        let ls = self.state.ok("qvm-ls", &[vm]);
        ls.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = self.state.run("shutdown", &[]);
            if wait_within(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A finished process.
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

/// Runs `c` feeding `input`, collecting output, killing it after `d`.
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
    let code = match wait_within(&mut child, d) {
        Some(c) => c,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command did not finish within {d:?}");
        }
    };
    let _ = feeder.join();
    Done {
        code,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Pids of live processes whose environment names `run` as their hosted directory.
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
        // A zombie has been killed and only waits for its parent; it holds nothing.
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

#[test]
fn allowed_call_returns_output_and_exit_code() {
    let sim = Sim::new("allow", "test.Echo  *  work  vault  allow\n");
    let r = sim.call("work", "vault", "test.Echo+hello", b"ping\n");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "arg=hello from=work env=hello\nping\n",
        "stderr: {}\nlog: {}",
        r.stderr,
        sim.log()
    );
    assert_eq!(r.code, 3);
    assert_eq!(
        sim.state_of("vault"),
        "Running",
        "the target was autostarted"
    );
}

#[test]
fn denied_call_exits_126_and_runs_nothing() {
    let sim = Sim::new(
        "deny",
        "test.Echo  *  work  vault  deny\ntest.Mark * work vault deny\n",
    );
    sim.service(
        "vault",
        "test.Mark",
        "#!/bin/sh\ntouch \"$QUBES_SIM_VM_DIR/ran\"\n",
    );
    let r = sim.call("work", "vault", "test.Mark", b"");
    assert_eq!(r.code, 126, "{r:?}");
    assert_eq!(r.stdout, b"");
    assert!(r.stderr.contains("Request refused"), "{}", r.stderr);
    let r = sim.call("work", "vault", "test.Echo+x", b"");
    assert_eq!(r.code, 126);
    assert!(
        !sim.path().join("vms/vault/ran").exists(),
        "the service ran"
    );
    assert_eq!(
        sim.state_of("vault"),
        "Halted",
        "a denied call started the target"
    );
    assert!(sim.log().contains("denied by policy"), "{}", sim.log());
}

#[test]
fn ask_is_answered_by_the_hook() {
    let sim = Sim::new(
        "ask",
        "test.Echo  *  work  @anyvm  ask default_target=vault\n",
    );
    std::fs::write(sim.path().join("ask"), "allow\n").unwrap();
    let r = sim.call("work", "vault", "test.Echo+a", b"");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (3, &b"arg=a from=work env=a\n"[..]),
        "{r:?}"
    );
    std::fs::write(sim.path().join("ask"), "deny\n").unwrap();
    let r = sim.call("work", "vault", "test.Echo+b", b"");
    assert_eq!(r.code, 126);
    std::fs::write(sim.path().join("ask"), "allow:vault\n").unwrap();
    let r = sim.call("work", "vault", "test.Echo+c", b"");
    assert_eq!(r.code, 3, "{r:?} {}", sim.log());
    assert!(sim.log().contains("ask: test.Echo+b"), "{}", sim.log());
}

#[test]
fn missing_service_exits_127() {
    let sim = Sim::new("missing", "*  *  work  vault  allow\n");
    let r = sim.call("work", "vault", "test.Missing+arg", b"input");
    assert_eq!(r.code, 127, "{r:?}");
    assert_eq!(r.stdout, b"");
    // The qube still serves calls afterwards.
    let r = sim.call("work", "vault", "test.Echo", b"");
    assert_eq!(r.code, 3);
}

fn pattern(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    data
}

/// Both directions full at once: stdin keeps coming while stdout backs up. Two ends that
/// each stop reading while their own output is stuck would deadlock here.
#[test]
fn sixteen_mebibytes_both_ways_at_once_do_not_deadlock() {
    let sim = Sim::new("16mib", "test.Cat  *  work  vault  allow\n");
    sim.service("vault", "test.Cat", "#!/bin/sh\nexec cat\n");
    let data = pattern(16 << 20);
    let r = sim.call("work", "vault", "test.Cat", &data);
    assert_eq!((r.code, r.stdout.len()), (0, data.len()), "{}", r.stderr);
    assert!(r.stdout == data, "data corrupted (qube to qube)");
    let d = run_within(
        {
            let mut c = sim.state.cmd("qvm-run");
            c.args(["-p", "vault", "cat"]);
            c
        },
        &data,
        DEADLINE,
    );
    assert_eq!((d.code, d.stdout.len()), (0, data.len()), "{}", d.stderr);
    assert!(d.stdout == data, "data corrupted (dom0 to qube)");
}

#[test]
fn one_mebibyte_round_trip_is_intact() {
    let sim = Sim::new("mib", "test.Cat  *  work  vault  allow\n");
    sim.service("vault", "test.Cat", "#!/bin/sh\nexec cat\n");
    let mut data = vec![0u8; 1 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let r = sim.call("work", "vault", "test.Cat", &data);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.len(), data.len());
    assert!(r.stdout == data, "data corrupted");
}

#[test]
fn dom0_runs_commands_and_services_in_a_qube() {
    let sim = Sim::new("qvmrun", "");
    let d = run_within(
        {
            let mut c = sim.state.cmd("qvm-run");
            c.args(["-p", "work", "echo hi from $QREXEC_REMOTE_DOMAIN; exit 4"]);
            c
        },
        b"",
        DEADLINE,
    );
    assert_eq!(
        (d.code, d.stdout.as_slice()),
        (4, &b"hi from dom0\n"[..]),
        "{d:?}"
    );
    let d = run_within(
        {
            let mut c = sim.state.cmd("qvm-run");
            c.args(["--pass-io", "--service", "vault", "test.Echo+abc"]);
            c
        },
        b"xyz",
        DEADLINE,
    );
    assert_eq!(
        String::from_utf8_lossy(&d.stdout),
        "arg=abc from=dom0 env=abc\nxyz"
    );
    assert_eq!(d.code, 3);
    let (code, _, err) = sim
        .state
        .run("qvm-run", &["--no-autostart", "-p", "nosuch", "true"]);
    assert_eq!(code, 1, "{err}");
    sim.state.ok("qvm-kill", &["work"]);
    let (code, _, err) = sim
        .state
        .run("qvm-run", &["--no-autostart", "-p", "work", "true"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "qvm-run: error: qube 'work' is not running\n")
    );
}

#[test]
fn crash_is_reported_and_does_not_hang() {
    let sim = Sim::new(
        "crash",
        "test.Sleep * work vault allow\ntest.Echo * work vault allow\n",
    );
    sim.service(
        "vault",
        "test.Sleep",
        "#!/bin/sh\necho $PPID > agent.pid\necho started\nexec sleep 60\n",
    );
    sim.state.ok("qvm-start", &["work"]);
    let mut c = sim.in_vm("work", "qrexec-client-vm");
    let mut child = c
        .args(["vault", "test.Sleep"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = read_line_within(child.stdout.take().unwrap(), DEADLINE);
    assert_eq!(line.as_deref(), Some("started\n"));
    let pid = std::fs::read_to_string(sim.path().join("vms/vault/agent.pid")).unwrap();
    let st = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let code = wait_within(&mut child, Duration::from_secs(10));
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(125), "the caller hung or got the wrong status");
    let end = Instant::now() + Duration::from_secs(5);
    while sim.state_of("vault") != "Crashed" && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sim.state_of("vault"), "Crashed");
    assert!(
        sim.log().contains("qube 'vault' (domid 2) crashed"),
        "{}",
        sim.log()
    );
    // The service died with its qube.
    let end = Instant::now() + Duration::from_secs(5);
    while processes_in(&sim.run_dir()).iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with("sleep"))
    }) {
        assert!(Instant::now() < end, "the crashed qube's service survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The sim still works: the next call restarts vault.
    let r = sim.call("work", "vault", "test.Echo", b"again");
    assert_eq!(
        (r.code, r.stdout.as_slice()),
        (3, &b"arg= from=work env=\nagain"[..]),
        "{r:?}"
    );
}

#[test]
fn two_runs_in_a_row_leave_nothing_behind() {
    let mut sim = Sim::new("twice", "test.Echo * work vault allow\n");
    for round in 0..2 {
        if round == 1 {
            sim.boot();
        }
        let r = sim.call("work", "vault", "test.Echo+r", b"");
        assert_eq!(r.code, 3, "round {round}: {r:?}");
        let run = sim.run_dir();
        assert!(
            !processes_in(&run).is_empty(),
            "round {round}: no qube processes seen"
        );
        assert_eq!(sim.stop(), 0, "round {round}");
        assert!(!run.exists(), "round {round}: run dir left behind");
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_in(&run);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < end,
                "round {round}: processes left: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn qube_calls_a_dom0_service() {
    let sim = Sim::new("dom0svc", "test.Dom0  *  work  @adminvm  allow\n");
    sim.service(
        "../dom0",
        "test.Dom0",
        "#!/bin/sh\necho \"dom0 got $1 from $QREXEC_REMOTE_DOMAIN\"\ncat\nexit 7\n",
    );
    let r = sim.call("work", "dom0", "test.Dom0+z", b"payload");
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (7, "dom0 got z from work\npayload"),
        "{r:?} {}",
        sim.log()
    );
    // The data port went back to the caller's daemon: many more calls still work.
    for i in 0..20 {
        let r = sim.call("work", "@adminvm", &format!("test.Dom0+n{i}"), b"");
        assert_eq!(r.code, 7, "call {i}: {r:?}");
    }
    let r = sim.call("work", "dom0", "test.Missing", b"");
    assert_eq!(r.code, 126, "no rule: refused before reaching dom0");
}

/// Not a test of its own: the body of a hostile qube. The sim runs it as the qube's process
/// (its `kernel` is a script re-executing this binary with `QSIM_HOSTILE` set); it serves
/// the control vchan like an agent and then breaks the protocol.
#[test]
fn hostile_qube_helper() {
    let Ok(mode) = std::env::var("QSIM_HOSTILE") else {
        return;
    };
    use platform_api::DomId;
    use qubes_sim::chan::{Hosted, Vchan};
    let frame = |ty: u32, body: &[u8], len: u32| {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v
    };
    let hello = frame(0x300, &3u32.to_le_bytes(), 4);
    let bytes = match mode.as_str() {
        "garbage" => [hello, frame(0x9999, &[], 0)].concat(),
        "huge" => [hello, frame(0x212, &[], 0xFFFF_FFF0)].concat(),
        _ => Vec::new(),
    };
    let mut h = Hosted::from_env().unwrap();
    let mut v = Vchan::serve(&mut h, DomId::DOM0, 512, 4096, 4096).unwrap();
    let mut off = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if off < bytes.len() {
            off += v.write(&bytes[off..]).unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hostile qube `vm` whose agent behaves as `mode`; `timeout` is its `qrexec_timeout` (short
/// only where the timeout is what is tested: under load a slow start would look like silence).
fn hostile(sim: &Sim, vm: &str, mode: &str, timeout: &str) {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let script = sim.path().join(format!("{vm}.kernel"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nQSIM_HOSTILE={mode} exec {} --exact hostile_qube_helper --nocapture -q\n",
            exe.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    sim.state.ok("qvm-create", &["-l", "red", vm]);
    sim.state
        .ok("qvm-prefs", &[vm, "kernel", script.to_str().unwrap()]);
    sim.state.ok("qvm-prefs", &[vm, "qrexec_timeout", timeout]);
}

#[test]
fn hostile_control_messages_kill_only_that_qube() {
    let sim = Sim::new("hostile", "");
    for (vm, mode) in [("evil", "garbage"), ("evil2", "huge")] {
        hostile(&sim, vm, mode, "60");
        let (code, _, err) = sim.state.run("qvm-start", &[vm]);
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                format!("qvm-start: error: qube '{vm}' died while starting\n").as_str()
            ),
            "{}",
            sim.log()
        );
        let end = Instant::now() + DEADLINE;
        while sim.state_of(vm) != "Crashed" {
            assert!(Instant::now() < end, "{vm} not stopped: {}", sim.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = sim.log();
    assert_eq!(log.matches("agent broke the protocol").count(), 2, "{log}");
    let d = run_within(
        {
            let mut c = sim.state.cmd("qvm-run");
            c.args(["-p", "vault", "echo still here"]);
            c
        },
        b"",
        DEADLINE,
    );
    assert_eq!(
        (d.code, d.stdout.as_slice()),
        (0, &b"still here\n"[..]),
        "{d:?}"
    );
}

#[test]
fn silent_qube_times_out_and_is_killed() {
    let sim = Sim::new("silent", "");
    hostile(&sim, "mute", "silent", "2");
    let t = Instant::now();
    let (code, _, err) = sim.state.run("qvm-start", &["mute"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "qvm-start: error: qube 'mute': no qrexec agent after 2s\n"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(sim.state_of("mute"), "Halted");
    // The killed group may take a moment to be reaped: wait for it, with a deadline.
    let end = Instant::now() + Duration::from_secs(10);
    while !processes_in(&sim.run_dir()).is_empty() {
        assert!(Instant::now() < end, "{:?}", processes_in(&sim.run_dir()));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn qrexec_client_runs_a_raw_command_line() {
    let sim = Sim::new("qrexec-client", "");
    let d = run_within(
        {
            let mut c = sim.state.cmd("qrexec-client");
            c.args(["-d", "vault", "user:QUBESRPC test.Echo+q dom0"]);
            c
        },
        b"in",
        DEADLINE,
    );
    assert_eq!(
        String::from_utf8_lossy(&d.stdout),
        "arg=q from=dom0 env=q\nin"
    );
    assert_eq!(d.code, 3);
    let (code, _, _) = sim
        .state
        .run("qrexec-client", &["-d", "vault", "no-user-part"]);
    assert_eq!(code, 2);
}

#[test]
fn shutdown_asks_through_xenstore_and_halts() {
    let sim = Sim::new("shutdown", "");
    sim.state.ok("qvm-start", &["work"]);
    assert_eq!(sim.state_of("work"), "Running");
    let t = Instant::now();
    sim.state.ok("qvm-shutdown", &["--wait", "work"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(sim.state_of("work"), "Halted");
    let log = sim.log();
    assert!(log.contains("poweroff requested"), "{log}");
    assert!(log.contains("qube 'work' (domid 1) halted"), "{log}");
    assert!(!log.contains("crashed"), "{log}");
    let (code, _, err) = sim.state.run("qvm-shutdown", &["work"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "qvm-shutdown: error: qube 'work' is not running\n")
    );
    // It starts again.
    sim.state.ok("qvm-start", &["work"]);
    assert_eq!(sim.state_of("work"), "Running");
}

#[test]
fn killed_sim_takes_its_qubes_along_and_restarts_clean() {
    let mut sim = Sim::new(
        "sigkill",
        "test.Sleep * work vault allow\ntest.Echo * work vault allow\n",
    );
    sim.service(
        "vault",
        "test.Sleep",
        "#!/bin/sh\necho started\nexec sleep 60\n",
    );
    sim.state.ok("qvm-start", &["work"]);
    let mut c = sim.in_vm("work", "qrexec-client-vm");
    let mut call = c
        .args(["vault", "test.Sleep"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = read_line_within(call.stdout.take().unwrap(), DEADLINE);
    assert_eq!(line.as_deref(), Some("started\n"));
    let mut daemon = sim.daemon.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let run = sim.run_dir();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        // The caller in work is ours, not the sim's: only the qubes' own processes count.
        let left: Vec<u32> = processes_in(&run)
            .into_iter()
            .filter(|&p| p != call.id())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < end, "orphans of a killed sim: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        wait_within(&mut call, Duration::from_secs(10)).is_some(),
        "caller hung"
    );
    assert!(run.exists(), "a killed sim cannot clean up");
    sim.boot();
    let r = sim.call("work", "vault", "test.Echo+again", b"");
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn dispvm_call_creates_serves_and_removes_a_disposable() {
    let sim = Sim::new(
        "dispvm",
        "test.Echo  *  work  @dispvm:dvm  allow\ntest.Echo * work @dispvm allow target=@dispvm:dvm\n",
    );
    sim.state.ok("qvm-create", &["-l", "red", "dvm"]);
    sim.state
        .ok("qvm-prefs", &["dvm", "template_for_dispvms", "True"]);
    sim.state
        .ok("qvm-prefs", &["work", "default_dispvm", "dvm"]);
    // The service comes from the disposable's template.
    sim.service("dvm", "test.Echo", ECHO);
    for target in ["@dispvm:dvm", "@dispvm"] {
        let r = sim.call("work", target, "test.Echo+d", b"one-shot");
        assert_eq!(
            (r.code, String::from_utf8_lossy(&r.stdout).as_ref()),
            (3, "arg=d from=work env=d\none-shot"),
            "{target}: {r:?}\n{}",
            sim.log()
        );
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let ls = sim.state.ok("qvm-ls", &[]);
        if !ls.contains("disp") {
            break;
        }
        assert!(Instant::now() < end, "disposables left: {ls}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = sim.log();
    assert_eq!(log.matches("removed").count(), 2, "{log}");
    assert!(!sim.path().join("vms/disp1").exists());
    // dvm itself was never started: a disposable is a qube of its own.
    assert_eq!(sim.state_of("dvm"), "Halted");
}

#[test]
fn a_second_sim_on_the_same_state_is_refused() {
    let sim = Sim::new("second", "");
    let (code, out, err) = sim.state.run("daemon", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("a sim is already running in"), "{err}");
    assert!(
        sim.run_dir().join("sim.sock").exists(),
        "the refused sim removed the live run dir"
    );
    let (code, _, _) = sim.state.run("qvm-start", &["work"]);
    assert_eq!(code, 0);
}

#[test]
fn killed_caller_stops_the_service() {
    let sim = Sim::new(
        "callerdies",
        "test.Sleep * work vault allow\ntest.Echo * work vault allow\n",
    );
    sim.service(
        "vault",
        "test.Sleep",
        "#!/bin/sh\necho $$ > service.pid\necho started\nexec sleep 60\n",
    );
    sim.state.ok("qvm-start", &["work"]);
    let mut c = sim.in_vm("work", "qrexec-client-vm");
    let mut call = c
        .args(["vault", "test.Sleep"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = read_line_within(call.stdout.take().unwrap(), DEADLINE);
    assert_eq!(line.as_deref(), Some("started\n"));
    let pid = std::fs::read_to_string(sim.path().join("vms/vault/service.pid")).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    assert!(proc_dir.exists());
    call.kill().unwrap();
    call.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() {
        assert!(Instant::now() < end, "the service outlived its caller");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = sim.call("work", "vault", "test.Echo", b"");
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn killed_qvm_run_stops_the_command_in_the_qube() {
    let sim = Sim::new("qvmrundies", "");
    let mut c = sim.state.cmd("qvm-run");
    let mut run = c
        .args([
            "-p",
            "vault",
            "echo $$ > shell.pid; echo started; exec sleep 60",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = read_line_within(run.stdout.take().unwrap(), DEADLINE);
    assert_eq!(line.as_deref(), Some("started\n"));
    let pid = std::fs::read_to_string(sim.path().join("vms/vault/shell.pid")).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    assert!(proc_dir.exists());
    run.kill().unwrap();
    run.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() {
        assert!(Instant::now() < end, "the command outlived qvm-run");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn concurrent_calls_beyond_the_channel_limit_all_end() {
    let sim = Sim::new(
        "concurrent",
        "test.Slow * work vault allow\ntest.Echo * work vault allow\n",
    );
    sim.service("vault", "test.Slow", "#!/bin/sh\nsleep 1\necho done\n");
    sim.state.ok("qvm-start", &["work", "vault"]);
    let t = Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut c = sim.in_vm("work", "qrexec-client-vm");
            c.args(["vault", "test.Slow"]);
            std::thread::spawn(move || run_within(c, b"", DEADLINE))
        })
        .collect();
    let done: Vec<Done> = calls.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = done
        .iter()
        .filter(|d| d.code == 0 && d.stdout == b"done\n")
        .count();
    // The agents take 16 channels each; the rest are turned away at once, not left hanging.
    assert!(ok >= 16, "{ok} of 20 succeeded: {done:?}\n{}", sim.log());
    for d in done.iter().filter(|d| d.code != 0) {
        assert!(d.stderr.contains("qrexec channels"), "{d:?}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    // No accepted call lost its vchan (a racy cleanup once removed a neighbour's keys).
    assert!(!sim.log().contains("never connected"), "{}", sim.log());
    // The slots come back (the caller's before its client has the status; the target's a
    // moment after, hence half of them).
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut c = sim.in_vm("work", "qrexec-client-vm");
            c.args(["vault", "test.Echo"]);
            std::thread::spawn(move || run_within(c, b"", DEADLINE))
        })
        .collect();
    for h in calls {
        let d = h.join().unwrap();
        assert_eq!(d.code, 3, "{d:?}");
    }
    // A tight sequential loop never trips over its own previous call.
    for i in 0..20 {
        let r = sim.call("work", "vault", "test.Echo", b"");
        assert_eq!(r.code, 3, "call {i}: {r:?}");
    }
}
