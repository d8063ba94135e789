//! qubes-dom0d as dom0 on the hosted backend against the workspace's hosted unikernels: this
//! test plays the toolstack (xenstored, the domain's xenstore home, its vbd, the process), the
//! binary plays dom0's daemons. Every wait has a deadline; a failure prints the VM's console.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use platform_api::{Access, DomId, Events, Perm, Store, Tx};
use platform_hosted::store::{self, Daemon as Xenstored};

const DEADLINE: Duration = Duration::from_secs(90);
static SEQ: AtomicU32 = AtomicU32::new(0);

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds the unikernels' hosted binaries and runloop's examples once, into this test's own
/// target directory, so that no stale binary is used.
fn build_once() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target = profile_dir().parent().unwrap().to_path_buf();
        let release = profile_dir().ends_with("release");
        for args in [
            &["build", "-q", "-p", "runloop", "--example", "echo_vm"][..],
            &[
                "build",
                "-q",
                "-p",
                "ssh-agent-vm",
                "-p",
                "passman",
                "-p",
                "fb-viewer",
                "--bins",
            ][..],
        ] {
            let mut c = Command::new(env!("CARGO"));
            c.args(args)
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                c.arg("--release");
            }
            assert!(c.status().unwrap().success(), "cargo {args:?} failed");
        }
    });
}

fn binary(rel: &str) -> PathBuf {
    build_once();
    let p = profile_dir().join(rel);
    assert!(p.is_file(), "{} missing after the build", p.display());
    p
}

fn dom(n: u32) -> DomId {
    DomId::new(n).unwrap()
}

/// The toolstack's view of one hosted domain.
struct Lab {
    dir: PathBuf,
    run: PathBuf,
    domid: u32,
    name: String,
    xs: Option<Xenstored>,
    vm: Option<Child>,
}

const VBD_DEVID: u32 = 51728;

impl Lab {
    /// xenstored for dom0 and `domid`, the domain's home (and a vbd of `vbd_bytes`), then
    /// `exe` started as that domain the way qubes-sim starts a hosted unikernel.
    fn start(name: &str, domid: u32, exe: &Path, cmdline: &str, vbd_bytes: Option<u64>) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "dom0d-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let xs = Xenstored::spawn(&run, &[DomId::DOM0, dom(domid)]).unwrap();
        let mut s = store::connect(&run, DomId::DOM0).unwrap();
        let home = format!("/local/domain/{domid}");
        s.write(Tx::NONE, &format!("{home}/name"), name.as_bytes())
            .unwrap();
        let own = [Perm {
            domid: dom(domid),
            access: Access::None,
        }];
        for key in ["control", "control/shutdown"] {
            let p = format!("{home}/{key}");
            s.write(Tx::NONE, &p, b"").unwrap();
            s.set_perms(Tx::NONE, &p, &own).unwrap();
        }
        if let Some(size) = vbd_bytes {
            let image = dir.join("private.img");
            std::fs::File::create(&image)
                .unwrap()
                .set_len(size)
                .unwrap();
            let fe = format!("{home}/device/vbd/{VBD_DEVID}");
            let be = format!("/local/domain/0/backend/vbd/{domid}/{VBD_DEVID}");
            let image = image.to_string_lossy().into_owned();
            let sectors = (size / 512).to_string();
            let backend = [
                ("frontend", fe.as_str()),
                ("frontend-id", &domid.to_string()),
                ("params", &image),
                ("sectors", &sectors),
                ("sector-size", "512"),
                ("mode", "w"),
                ("state", "4"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()));
            let frontend = [
                ("backend", be.as_str()),
                ("backend-id", "0"),
                ("virtual-device", &VBD_DEVID.to_string()),
                ("device-type", "disk"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()));
            for (d, owner, reader, entries) in [
                (&be, DomId::DOM0, dom(domid), &backend[..]),
                (&fe, dom(domid), DomId::DOM0, &frontend[..]),
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
        let log = std::fs::File::create(dir.join("console.log")).unwrap();
        let vm = Command::new(exe)
            .env("QUBES_HOSTED_DIR", &run)
            .env("QUBES_HOSTED_DOMID", domid.to_string())
            .env("QUBES_HOSTED_NAME", name)
            .env("QUBES_HOSTED_CMDLINE", cmdline)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let lab = Lab {
            dir,
            run,
            domid,
            name: name.to_string(),
            xs: Some(xs),
            vm: Some(vm),
        };
        let qdb = format!(
            "/name {name}\n/type AppVM\n/qubes-vm-type AppVM\n/default-user user\n\
             /qubes-gui-enabled True\n/qubes-gui-domain-xid 0\n"
        );
        std::fs::write(lab.dir.join("qubesdb"), qdb).unwrap();
        lab
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// `qubes-dom0d --domid N --name NAME --qubesdb FILE --backend hosted ARGS` with `stdin`.
    fn dom0d(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qubes-dom0d"))
            .args(["--domid", &self.domid.to_string(), "--name", &self.name])
            .arg("--qubesdb")
            .arg(self.dir.join("qubesdb"))
            .args(["--backend", "hosted", "--timeout", "60"])
            .args(args)
            .env("QUBES_HOSTED_DIR", &self.run)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A dom0d that failed early has closed its stdin: its output says why.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        // Drained while it runs: a full pipe would stall it.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "qubes-dom0d {args:?} hung\n{}\n--- console\n{}",
                    String::from_utf8_lossy(&err.join().unwrap()),
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// A successful `call`'s stdout (the remote exit code must be `code`).
    fn call(&self, service: &str, stdin: &[u8], code: i32) -> Vec<u8> {
        let out = self.dom0d(&["call", service], stdin);
        assert_eq!(
            out.status.code(),
            Some(code),
            "call {service}\n--- stderr\n{}--- console\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.console()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{service} in {}: exit code {code}", self.name)),
            "{err}"
        );
        out.stdout
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.vm.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(xs) = self.xs.take() {
            xs.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn echo_vm_call_round_trips_bytes_and_exit_code() {
    let lab = Lab::start("echo-vm", 7, &binary("examples/echo_vm"), "", None);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(lab.call("test.Echo", &data, 0), data);
    // A second dom0d (new QubesDB server, new control client) against the same VM.
    assert_eq!(lab.call("test.Upper", b"abc", 0), b"ABC");
    // Refused by the VM: qrexec's 126, passed through as our exit code.
    assert_eq!(lab.call("test.Refuse", b"x", 126), b"");
}

#[test]
fn serve_ends_when_the_domain_goes_and_reports_the_sync() {
    let lab = Lab::start("echo-vm", 8, &binary("examples/echo_vm"), "", None);
    let mut s = store::connect(&lab.run, DomId::DOM0).unwrap();
    let rm = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        s.rm(Tx::NONE, "/local/domain/8").unwrap();
    });
    let t0 = Instant::now();
    let out = lab.dom0d(&["serve", "50"], b"");
    rm.join().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line.contains("until it went away"), "{line}");
    assert!(line.contains("qubesdb synced"), "{line}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn serve_fails_when_nothing_syncs_qubesdb() {
    // `true` exits at once: no VM ever connects.
    let lab = Lab::start("nobody", 9, Path::new("/bin/true"), "", None);
    let out = lab.dom0d(&["serve", "2"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never synced QubesDB"), "{err}");
}

/// SSH_AGENTC_REQUEST_IDENTITIES, framed.
const REQUEST_IDENTITIES: [u8; 5] = [0, 0, 0, 1, 11];

#[test]
fn ssh_agent_vm_answers_request_identities() {
    let lab = Lab::start(
        "sshagent-unikernel",
        10,
        &binary("ssh-agent-vm"),
        "",
        Some(16 << 20),
    );
    let out = lab.call("qubes.SshAgent+work", &REQUEST_IDENTITIES, 0);
    // SSH_AGENT_IDENTITIES_ANSWER with no keys: length 5, type 12, count 0.
    assert_eq!(out, [0, 0, 0, 5, 12, 0, 0, 0, 0], "{}", lab.console());
}

#[test]
fn passman_init_put_get_round_trip_on_its_vbd() {
    let lab = Lab::start(
        "passman-unikernel",
        11,
        &binary("passman"),
        "passman.idle=600",
        Some(16 << 20),
    );
    lab.call(
        "passman.Init",
        b"correct horse\nkdf=argon2id:8:1:1\ntime=1700000000\n",
        0,
    );
    lab.call("passman.Put+github.com", b"hunter2\nusername: me\n", 0);
    let got = lab.call("passman.Get+github.com", b"", 0);
    assert_eq!(String::from_utf8_lossy(&got).trim_end(), "hunter2");
    // An entry that is not there is not a success.
    let out = lab.dom0d(&["call", "passman.Get+nowhere.example"], b"");
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn fb_viewer_shows_an_opened_png_in_a_mapped_window() {
    let lab = Lab::start("viewer-unikernel-dvm", 12, &binary("fb-viewer"), "", None);
    // A 40x30 picture: red left half, blue right half.
    let (w, h) = (40u32, 30u32);
    let bgrx: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            if i % w < w / 2 {
                [0, 0, 255, 0]
            } else {
                [255, 0, 0, 0]
            }
        })
        .collect();
    let picture = qubes_dom0d::png::encode_bgrx(w, h, &bgrx).unwrap();
    let file = lab.dir.join("picture.png");
    std::fs::write(&file, picture).unwrap();
    let shot = lab.dir.join("shot.png");
    let out = lab.dom0d(
        &[
            "gui-handshake",
            "--open",
            file.to_str().unwrap(),
            "--screenshot",
            shot.to_str().unwrap(),
        ],
        b"",
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}{}\n--- console\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.console()
    );
    assert!(line.contains("mapped, framebuffer"), "{line}");
    // The screenshot decodes, and shows both colours of the picture.
    let dec = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert!(info.width >= 1 && info.height >= 1);
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(3).collect();
    assert!(
        px.contains(&&[255u8, 0, 0][..]),
        "no red pixel in the window"
    );
    assert!(
        px.contains(&&[0u8, 0, 255][..]),
        "no blue pixel in the window"
    );
}

/// A hostile "VM" in a thread of this test: advertises the qrexec control channel for dom0 on
/// the hosted backend, and once dom0d attached runs `script` on it.
fn hostile_vm(
    lab: &Lab,
    script: impl FnOnce(&mut platform_api::Env<platform_hosted::Hosted>, &mut Ctrl) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (run, domid) = (lab.run.clone(), dom(lab.domid));
    let name = lab.name.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut env = platform_hosted::env_for(&run, domid, Some(name), String::new()).unwrap();
        let (mut srv, _dir) = vchan::setup::server_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            DomId::DOM0,
            512,
            4096,
            4096,
        )
        .unwrap();
        tx.send(()).unwrap();
        vchan::setup::wait_connected(&mut srv, &mut env.events, Some(DEADLINE)).unwrap();
        script(&mut env, &mut srv);
        // Stay until dom0d has given up, so that it is dom0d that ends the exchange.
        std::thread::sleep(Duration::from_secs(2));
    });
    rx.recv_timeout(DEADLINE)
        .expect("hostile VM did not advertise");
    t
}

type Ctrl = vchan::Server<platform_hosted::grants::GrantMem, platform_hosted::events::HostedPort>;

/// A control message header: type, body length (little-endian u32s).
fn header(ty: u32, len: u32) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn write_all(env: &mut platform_api::Env<platform_hosted::Hosted>, v: &mut Ctrl, data: &[u8]) {
    vchan::setup::write_all_blocking(v, &mut env.events, data, Some(DEADLINE)).unwrap();
}

/// The agent declares a control message far above the protocol's maximum: dom0d ends at once
/// with one error line (no allocation of the declared length, no wait until the timeout).
#[test]
fn hostile_control_length_is_refused_before_allocating() {
    let lab = Lab::start("hostile", 13, Path::new("/bin/true"), "", None);
    let vm = hostile_vm(&lab, |env, v| write_all(env, v, &header(0x300, u32::MAX)));
    let t0 = Instant::now();
    let out = lab.dom0d(&["call", "test.Echo"], b"x");
    vm.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("qubes-dom0d: error: qrexec control channel: protocol:"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// The agent says HELLO, then attaches to the call's data channel and closes it without an
/// exit code: the call fails with one line instead of waiting for the timeout.
#[test]
fn hostile_data_channel_closed_before_exit_code_fails_the_call() {
    let lab = Lab::start("hostile", 14, Path::new("/bin/true"), "", None);
    let vm = hostile_vm(&lab, move |env, v| {
        let mut hello = header(0x300, 4);
        hello.extend_from_slice(&3u32.to_le_bytes());
        write_all(env, v, &hello);
        // EXEC_CMDLINE names the data port (after dom0d's own HELLO).
        let mut got = Vec::new();
        let port = loop {
            let mut buf = [0u8; 4096];
            let n =
                vchan::setup::read_blocking(v, &mut env.events, &mut buf, Some(DEADLINE)).unwrap();
            assert!(n > 0, "dom0d closed the control channel");
            got.extend_from_slice(&buf[..n]);
            let word = |i: usize| {
                got.get(i..i + 4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            };
            // HELLO: 8-byte header + version; then EXEC_CMDLINE: header, domain, port, command.
            if let (Some(0x300), Some(0x200), Some(port)) = (word(0), word(12), word(24)) {
                break port;
            }
        };
        let end = Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            match vchan::setup::client_init(
                &mut env.grants,
                &mut env.events,
                &mut env.store,
                DomId::DOM0,
                port,
            ) {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < end, "data channel: {e}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        c.close().unwrap();
    });
    let t0 = Instant::now();
    let out = lab.dom0d(&["call", "test.Echo"], b"x");
    vm.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("qubes-dom0d: error: the call's data channel:"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// `serve` follows its entries file: a firewall rule changed in it reaches a connected VM as
/// dom0's reload sequence (the rules, then the commit marker), and the serve line counts it.
/// The VM's QubesDB client is a thread of this test (`qubes::qubesdb::Agent` over vchan).
#[test]
fn serve_pushes_a_changed_entries_file_to_the_vm() {
    let lab = Lab::start("fw-unikernel", 15, Path::new("/bin/true"), "", None);
    let ip = "10.137.0.9";
    let rules = |rule: &str| {
        format!(
            "/name fw-unikernel\n/qubes-firewall/{ip}/policy drop\n/qubes-firewall/{ip}/0000 {rule}\n/qubes-firewall/{ip}\n"
        )
    };
    std::fs::write(lab.dir.join("qubesdb"), rules("action=accept")).unwrap();
    let mut dom0d = Command::new(env!("CARGO_BIN_EXE_qubes-dom0d"))
        .args(["--domid", "15", "--qubesdb"])
        .arg(lab.dir.join("qubesdb"))
        .args(["--backend", "hosted", "serve", "60"])
        .env("QUBES_HOSTED_DIR", &lab.run)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut env = platform_hosted::env_for(
        &lab.run,
        dom(15),
        Some("fw-unikernel".into()),
        String::new(),
    )
    .unwrap();
    let end = Instant::now() + DEADLINE;
    let mut c = loop {
        match vchan::setup::client_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            DomId::DOM0,
            111,
        ) {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < end, "no QubesDB server: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut agent = qubes::qubesdb::Agent::new(qubes::qubesdb::Limits::DEFAULT);
    agent.connect();
    let rule_key = format!("/qubes-firewall/{ip}/0000");
    let mut commits = 0;
    let mut pump_until =
        |agent: &mut qubes::qubesdb::Agent,
         what: &str,
         done: &dyn Fn(&qubes::qubesdb::Agent, usize) -> bool| {
            let mut buf = vec![0u8; 8192];
            while !done(agent, commits) {
                assert!(Instant::now() < end, "waited in vain for {what}");
                let n = c
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("waited in vain for {what}: {e}"));
                assert_eq!(agent.handle_input(&buf[..n]).unwrap(), n);
                while let Some(n) = agent.poll_transmit(&mut buf) {
                    let out = buf[..n].to_vec();
                    vchan::setup::write_all_blocking(&mut c, &mut env.events, &out, Some(DEADLINE))
                        .unwrap();
                }
                while let Some(ev) = agent.poll_event() {
                    if let qubes::qubesdb::Event::FirewallCommit(_) = ev {
                        commits += 1;
                    }
                }
                if c.prepare_wait(vchan::Interest {
                    read: true,
                    write: false,
                })
                .unwrap()
                {
                    let _ = env.events.wait(Some(Duration::from_millis(20)));
                }
            }
        };
    pump_until(&mut agent, "the first sync", &|a, n| {
        a.read(&rule_key) == Some(&b"action=accept"[..]) && n >= 1
    });
    std::fs::write(lab.dir.join("qubesdb"), rules("action=drop proto=tcp")).unwrap();
    pump_until(&mut agent, "the changed rule and its commit", &|a, n| {
        a.read(&rule_key) == Some(&b"action=drop proto=tcp"[..]) && n >= 2
    });
    // Removing the entries file ends the serve cleanly (the lab's way to stop it early).
    std::fs::remove_file(lab.dir.join("qubesdb")).unwrap();
    let out = loop {
        if dom0d.try_wait().unwrap().is_some() {
            break dom0d.wait_with_output().unwrap();
        }
        if Instant::now() >= end {
            let _ = dom0d.kill();
            panic!("serve did not end after its entries file was removed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line.contains("1 reload(s)"), "{line}");
    assert!(
        line.contains("until its entries file was removed"),
        "{line}"
    );
}
