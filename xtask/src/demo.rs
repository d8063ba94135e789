//! `cargo xtask demo`: builds and boot-tests the images, then plays each flow in the simulated
//! Qubes the way a user types it, with real clients, and prints one summary line per flow.
//!
//! One function per flow. A unikernel's flow runs only when its hosted binary built; a flow
//! that cannot run here says why, and a flow that fails says so and fails the demo.
//! `XTASK_DEMO_SIM_ONLY=1` skips the image build and boot test.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{build, cargo, deps, run};

/// The hosted unikernels: (crate and binary name, qube name).
const UNIKERNELS: [(&str, &str); 4] = [
    ("firewall", "fw-unikernel"),
    ("fb-viewer", "viewer-unikernel-dvm"),
    ("ssh-agent-vm", "sshagent-unikernel"),
    ("passman", "passman-unikernel"),
];

/// Set (to anything) to skip the image build and boot test: only the simulated flows.
const ENV_SIM_ONLY: &str = "XTASK_DEMO_SIM_ONLY";

/// The sim's traffic capture, in the state directory.
const CAPTURE: &str = "capture.bin";

/// A sim daemon that is stopped (lifeline closed, then killed) on drop.
struct Sim {
    exe: PathBuf,
    state: PathBuf,
    daemon: Child,
    netns: bool,
    /// The checkout (for the bundle's files in `qubes-rpc/`).
    root: PathBuf,
}

impl Sim {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg(prog)
            .env("QUBES_SIM_DIR", &self.state)
            .stdin(Stdio::null());
        c
    }

    /// Runs a sim command; returns (exit code, stdout, stderr).
    fn run(&self, prog: &str, args: &[&str]) -> Result<(i32, String, String)> {
        let out = self
            .cmd(prog)
            .args(args)
            .output()
            .with_context(|| format!("running {prog}"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn ok(&self, prog: &str, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.run(prog, args)?;
        if code != 0 {
            bail!("{prog} {} failed ({code}): {}", args.join(" "), err.trim());
        }
        Ok(out)
    }

    /// `qvm-run -p VM CMD` in the background (a server in a qube).
    fn spawn_in(&self, vm: &str, cmd: &str) -> Result<Child> {
        self.cmd("qvm-run")
            .args(["-p", vm, cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("qvm-run")
    }

    fn vm_dir(&self, vm: &str) -> PathBuf {
        self.state.join("vms").join(vm)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.cmd("shutdown").status();
        drop(self.daemon.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn say(what: &str) {
    println!("demo: {what}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Waits up to `limit` for `f` to hold.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The demo: one summary line per flow at the end.
pub fn run_demo(root: &Path) -> Result<()> {
    deps::apt_install(&[
        "qemu-system-x86",
        "iproute2",
        "openssh-client",
        "python3",
        "rpm",
    ])?;
    let mut summary: Vec<String> = Vec::new();

    if std::env::var_os(ENV_SIM_ONLY).is_none() {
        say("building the unikernel images and booting each under QEMU's PVH loader");
        build::build_images(root)?;
        build::boot_test(root)?;
        summary.push("images: built and booted under QEMU (PVH entry, no-Xen path)".into());
    }

    say("building the simulated Qubes (qubes-sim) and the hosted unikernels");
    run(cargo().args(["build", "-q", "-p", "qubes-sim"]))?;
    let bin = target_dir(root).join("debug");
    let mut hosted: Vec<(&str, PathBuf)> = Vec::new();
    for (krate, _) in UNIKERNELS {
        if !root.join(krate).join("Cargo.toml").exists() {
            continue;
        }
        match run(cargo().args(["build", "-q", "-p", krate, "--bin", krate])) {
            Ok(()) if bin.join(krate).is_file() => hosted.push((krate, bin.join(krate))),
            Ok(()) => say(&format!("  {krate}: no hosted binary was built")),
            Err(e) => say(&format!(
                "  {krate}: does not build yet ({e:#}); its flow is left out"
            )),
        }
    }
    say("building the dom0 and template RPMs into target/rpm");
    let rpms = crate::rpm::build_packages(
        root,
        &root.join("target/rpm"),
        &crate::rpm::source_date_epoch(root)?,
    )?;
    let exe = bin.join("qubes-sim");
    let state = std::env::temp_dir().join(format!("qubes-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(state.join("policy.d"))?;
    let result = play(root, &exe, &state, &hosted, &rpms[0], &mut summary);
    let _ = std::fs::remove_dir_all(&state);
    let failed = result?;

    println!();
    println!("demo summary:");
    for line in &summary {
        println!("  {line}");
    }
    if failed > 0 {
        bail!("{failed} flow(s) failed");
    }
    Ok(())
}

/// Plays every flow; returns how many failed.
fn play(
    root: &Path,
    exe: &Path,
    state: &Path,
    hosted: &[(&str, PathBuf)],
    dom0_rpm: &Path,
    summary: &mut Vec<String>,
) -> Result<usize> {
    let (sim, installed) = start(root, exe, state, hosted, dom0_rpm)?;
    summary.push(installed);
    let mut failed = 0;
    let mut record = |name: &str, r: Result<String>| match r {
        Ok(line) => summary.push(line),
        Err(e) => {
            failed += 1;
            summary.push(format!("{name}: FAILED: {e:#}"));
        }
    };
    record("qrexec", flow_qrexec(&sim));
    record("policy", flow_policy(&sim));
    record("QubesDB", flow_qubesdb(&sim));
    record("GUI", flow_gui(&sim));
    for (krate, _) in hosted {
        match *krate {
            "firewall" => record("firewall", flow_firewall(&sim)),
            "fb-viewer" => record("viewer", flow_viewer(&sim)),
            "ssh-agent-vm" => record("ssh-agent", flow_ssh_agent(&sim)),
            "passman" => record("passman", flow_passman(&sim)),
            _ => {}
        }
    }
    say("shutting the sim down");
    drop(sim);
    record("protocols", flow_protocols(exe, state));
    std::io::stdout().flush()?;
    Ok(failed)
}

/// Creates the qubes as a user does: the Qubes ones with qvm-create, the bundle's with the
/// `qubes-unikernel-setup` installed from the dom0 RPM (flow 1), then the per-flow settings a
/// user types; starts the sim. With the firewall and as root, qubes get network namespaces.
fn start(
    root: &Path,
    exe: &Path,
    state: &Path,
    hosted: &[(&str, PathBuf)],
    dom0_rpm: &Path,
) -> Result<(Sim, String)> {
    let sim_cmd = |prog: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(exe)
            .arg(prog)
            .args(args)
            .env("QUBES_SIM_DIR", state)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "{prog} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    say("dom0: qvm-create sys-net (provides_network), personal (netvm sys-net), vault, work");
    sim_cmd(
        "qvm-create",
        &["--class", "TemplateVM", "--label", "black", "debian-12"],
    )?;
    sim_cmd("qvm-create", &["--label", "red", "sys-net"])?;
    sim_cmd("qvm-prefs", &["sys-net", "provides_network", "True"])?;
    sim_cmd("qvm-create", &["--label", "yellow", "personal"])?;
    sim_cmd("qvm-prefs", &["personal", "netvm", "sys-net"])?;
    sim_cmd("qvm-features", &["personal", "gui", "1"])?;
    sim_cmd("qvm-create", &["--label", "black", "vault"])?;
    sim_cmd("qvm-create", &["--label", "blue", "work"])?;

    // Flow 1: the dom0 RPM into a scratch root, then its one setup command, with the qvm-*
    // commands on PATH as in dom0. In the sim a qube's kernel is the hosted binary.
    let droot = state.join("dom0-root");
    std::fs::create_dir_all(&droot)?;
    run(Command::new("rpm")
        .arg("--root")
        .arg(&droot)
        .arg("--initdb"))?;
    run(Command::new("rpm")
        .arg("--root")
        .arg(&droot)
        .args(["-i", "--nodeps", "--noscripts"])
        .arg(dom0_rpm))?;
    let dom0_bin = state.join("dom0-bin");
    std::fs::create_dir_all(&dom0_bin)?;
    for c in ["qvm-create", "qvm-prefs", "qvm-features", "qvm-ls"] {
        std::os::unix::fs::symlink(exe, dom0_bin.join(c))?;
    }
    let path = std::env::join_paths(std::iter::once(dom0_bin.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut setup = Command::new(droot.join("usr/bin/qubes-unikernel-setup"));
    setup
        .env("PATH", &path)
        .env("QUBES_SIM_DIR", state)
        .stdin(Stdio::null())
        .args(["--template", "debian-12"])
        // A light KDF for the split-SSH vault: the demo runs a debug build.
        .args(["--kernelopts", "ssh-agent=kdf=argon2id:8192:1:1"]);
    let mut roles = Vec::new();
    for (krate, path) in hosted {
        let role = match *krate {
            "ssh-agent-vm" => "ssh-agent",
            k => k,
        };
        roles.push(role);
        setup
            .args(["--only", role])
            .arg("--kernel")
            .arg(format!("{role}={}", path.display()));
    }
    let installed = if roles.is_empty() {
        "install: the dom0 RPM installed; no unikernel built, so no qube was set up".to_string()
    } else {
        say(&format!(
            "dom0: rpm -i {} (scratch root), then qubes-unikernel-setup for {}",
            dom0_rpm.file_name().unwrap_or_default().to_string_lossy(),
            roles.join(", ")
        ));
        let out = setup.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in text.lines() {
            say(&format!("  {l}"));
        }
        if !out.status.success() {
            bail!(
                "qubes-unikernel-setup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        format!(
            "install: the dom0 RPM installed into a scratch root; its qubes-unikernel-setup \
             created the qubes for {} ({})",
            roles.join(", "),
            text.lines().last().unwrap_or("").trim()
        )
    };

    // What the user then types for each flow, and rules for 30-unikernel-user.policy.
    let mut user_policy = String::new();
    for (krate, _) in hosted {
        let Some((_, qube)) = UNIKERNELS.iter().find(|(k, _)| k == krate) else {
            continue;
        };
        match *krate {
            "firewall" => {
                say(&format!("dom0: qvm-prefs work netvm {qube}"));
                sim_cmd("qvm-prefs", &["work", "netvm", qube])?;
            }
            "fb-viewer" => {
                say(&format!(
                    "dom0: {qube} is work's default disposable template (GUI on)"
                ));
                sim_cmd("qvm-features", &[qube, "gui", "1"])?;
                sim_cmd("qvm-prefs", &["work", "default_dispvm", qube])?;
            }
            "ssh-agent-vm" => {
                say("dom0 policy: work may use the ssh-agent keyring `work`, after dom0 asks");
                user_policy.push_str(&format!(
                    "qubes.SshAgent +work work {qube} ask default_target={qube}\n"
                ));
            }
            "passman" => {
                say("dom0 policy: work may read the github.com password");
                user_policy.push_str(&format!("passman.Get +github.com work {qube} allow\n"));
            }
            _ => {}
        }
    }

    // A service in the vault and a policy that lets only `personal` call it.
    let svc_dir = state.join("vms/vault/qubes-rpc");
    std::fs::create_dir_all(&svc_dir)?;
    let svc = svc_dir.join("demo.Greet");
    std::fs::write(
        &svc,
        "#!/bin/sh\necho \"vault says hello to $QREXEC_REMOTE_DOMAIN (argument '$1')\"\n",
    )?;
    run(Command::new("chmod").arg("755").arg(&svc))?;
    std::fs::write(
        state.join("policy.d/30-demo.policy"),
        format!(
            "demo.Greet * personal vault allow\ndemo.Greet * @anyvm @anyvm deny\n{user_policy}"
        ),
    )?;

    let netns = is_root() && hosted.iter().any(|(k, _)| *k == "firewall");
    say(&format!(
        "starting the simulated dom0 (hosted xenstored, qrexec, QubesDB and GUI daemons{}); \
         policy: the project's qubes-rpc/policy.d and the demo's own file",
        if netns {
            ", a network namespace per qube"
        } else {
            ""
        }
    ));
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "--stdin-lifeline"])
        .env("QUBES_SIM_DIR", state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if netns {
        cmd.env("QUBES_SIM_NETNS", "1");
    }
    // dom0's `ask` dialog: a prompt on this terminal when there is one, else answered yes.
    use std::io::IsTerminal;
    let ask = if std::io::stdin().is_terminal() {
        "tty"
    } else {
        "allow"
    };
    cmd.env("QUBES_SIM_ASK", ask);
    // Every byte between the qubes and dom0 is recorded, to be decoded at the end.
    cmd.env("QUBES_SIM_CAPTURE", state.join(CAPTURE));
    let mut daemon = cmd.spawn().context("starting qubes-sim daemon")?;
    let out = daemon.stdout.take().context("daemon stdout")?;
    let sim = Sim {
        exe: exe.to_path_buf(),
        state: state.to_path_buf(),
        daemon,
        netns,
        root: root.to_path_buf(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the sim did not get ready in 60 s")?;
    if !ready.starts_with("ready") {
        bail!("unexpected first line from the sim: {ready}");
    }
    Ok((sim, installed))
}

/// A qube calls a service of another qube; policy allows it.
fn flow_qrexec(sim: &Sim) -> Result<String> {
    say("personal: qrexec-client-vm vault demo.Greet+docs");
    let greet = sim.ok(
        "qvm-run",
        &["-p", "personal", "qrexec-client-vm vault demo.Greet+docs"],
    )?;
    say(&format!("  -> {}", greet.trim()));
    if !greet.contains("hello to personal") {
        bail!("the allowed call did not reach the vault: {greet:?}");
    }
    Ok("qrexec: personal called demo.Greet in vault over real vchans; policy allowed it".into())
}

/// The same call from another qube is refused.
fn flow_policy(sim: &Sim) -> Result<String> {
    say("sys-net: qrexec-client-vm vault demo.Greet (the policy denies it)");
    let (code, _, _) = sim.run(
        "qvm-run",
        &["-p", "sys-net", "qrexec-client-vm vault demo.Greet"],
    )?;
    say(&format!("  -> exit code {code} (126 = request refused)"));
    if code != 126 {
        bail!("the denied call ended with {code}, not 126");
    }
    Ok("policy: sys-net's call was refused with exit code 126".into())
}

/// A qvm-firewall change reaches the netvm's QubesDB with dom0's commit protocol.
fn flow_qubesdb(sim: &Sim) -> Result<String> {
    say("dom0: qvm-firewall personal add action=drop proto=tcp dstports=443-443 dst4=192.0.2.1");
    sim.ok(
        "qvm-firewall",
        &[
            "personal",
            "add",
            "--before",
            "0",
            "action=drop",
            "proto=tcp",
            "dstports=443-443",
            "dst4=192.0.2.1",
        ],
    )?;
    let rules = sim.ok(
        "qvm-run",
        &[
            "-p",
            "sys-net",
            r#"for p in $(qubesdb-list -f /qubes-firewall/); do echo "$p = $(qubesdb-read $p)"; done"#,
        ],
    )?;
    for l in rules.lines() {
        say(&format!("  sys-net's QubesDB: {l}"));
    }
    if !rules.contains("dstports=443-443") {
        bail!("the new rule did not reach sys-net's QubesDB");
    }
    Ok(
        "QubesDB: a qvm-firewall change reached the netvm's QubesDB with dom0's commit protocol"
            .into(),
    )
}

/// A test GUI agent's window becomes a screenshot in dom0.
fn flow_gui(sim: &Sim) -> Result<String> {
    say("personal: a test GUI agent opens a window; dom0's GUI daemon takes a screenshot");
    let qid = sim.ok("qvm-prefs", &["personal", "qid"])?;
    // Started "inside" personal: the environment its agent gives its own processes.
    let mut agent = Command::new(&sim.exe)
        .arg("gui-test-agent")
        .env("QUBES_HOSTED_DIR", sim.state.join("run"))
        .env("QUBES_HOSTED_DOMID", qid.trim())
        .env("QUBES_SIM_VM_DIR", sim.vm_dir("personal"))
        .env_remove("QUBES_SIM_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let shot = sim.state.join("run/screenshots/personal-1.png");
    let seen = wait_for(Duration::from_secs(30), || shot.exists());
    let _ = agent.kill();
    let _ = agent.wait();
    if !seen {
        bail!("no screenshot appeared at {}", shot.display());
    }
    let kept = std::env::temp_dir().join("qubes-demo-personal-1.png");
    std::fs::copy(&shot, &kept)?;
    say(&format!("  -> screenshot saved as {}", kept.display()));
    Ok(format!(
        "GUI: a window from personal was shown by the GUI daemon (screenshot {})",
        kept.display()
    ))
}

/// work's traffic goes through the firewall unikernel to sys-net: an allowed TCP connection
/// gets through (NATed to the firewall's address), one that qvm-firewall drops does not.
fn flow_firewall(sim: &Sim) -> Result<String> {
    if !sim.netns {
        return Ok("firewall: not run here: its TAP devices need root (network namespaces)".into());
    }
    let probe = sim.exe.to_string_lossy().into_owned();
    for vm in ["sys-net", "fw-unikernel", "work"] {
        sim.ok("qvm-start", &[vm])?;
    }
    let sys_net_ip = sim
        .ok(
            "qvm-run",
            &["-p", "sys-net", "qubesdb-read /qubes-netvm-gateway"],
        )?
        .trim()
        .to_string();
    say("dom0: qvm-firewall work add action=drop proto=tcp dstports=8001");
    sim.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            "proto=tcp",
            "dstports=8001",
        ],
    )?;
    let mut results = Vec::new();
    for port in ["8000", "8001"] {
        let mut listener = sim.spawn_in("sys-net", &format!("{probe} net-probe listen {port}"))?;
        let lines = listener.stdout.take().context("listener output")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(lines).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).ok().as_deref() != Some("listening") {
            let _ = listener.kill();
            bail!("the listener in sys-net did not start");
        }
        say(&format!("work: connect to sys-net {sys_net_ip}:{port}"));
        let (code, out, _) = sim.run(
            "qvm-run",
            &[
                "-p",
                "work",
                &format!("{probe} net-probe connect {sys_net_ip} {port} hello"),
            ],
        )?;
        let seen = rx.recv_timeout(Duration::from_millis(500)).ok();
        let _ = listener.kill();
        let _ = listener.wait();
        say(&format!(
            "  -> {}; sys-net saw: {}",
            if code == 0 {
                format!("answer {:?}", out.trim())
            } else {
                format!("no connection (exit {code})")
            },
            seen.as_deref().unwrap_or("nothing")
        ));
        results.push((code == 0 && out.trim() == "pong", seen));
    }
    let (ok_8000, from) = &results[0];
    let (ok_8001, seen_8001) = &results[1];
    if !ok_8000 {
        bail!("the allowed connection to port 8000 did not get through");
    }
    if *ok_8001 || seen_8001.is_some() {
        bail!("the connection to port 8001 got through despite the drop rule");
    }
    let from = from
        .as_deref()
        .unwrap_or("")
        .rsplit(' ')
        .next()
        .unwrap_or("");
    Ok(format!(
        "firewall: work reached sys-net:8000 through fw-unikernel (sys-net saw {from}, the \
         firewall's NAT address); the qvm-firewall drop rule stopped tcp/8001"
    ))
}

/// A PNG from work opens in a fresh viewer disposable; its window becomes a screenshot; `q`
/// closes it and the disposable goes.
fn flow_viewer(sim: &Sim) -> Result<String> {
    let pic = sim.vm_dir("work").join("demo.png");
    std::fs::create_dir_all(sim.vm_dir("work"))?;
    std::fs::write(&pic, demo_png(96, 64)?)?;
    sim.ok("qvm-start", &["work"])?;
    let before: Vec<String> = list_dispvms(sim)?;
    say("work: qvm-open-in-vm --view-only @dispvm:viewer-unikernel-dvm demo.png");
    let mut open = sim.spawn_in(
        "work",
        "qvm-open-in-vm --view-only @dispvm:viewer-unikernel-dvm \"$QUBES_SIM_VM_DIR/demo.png\"",
    )?;
    let mut disp = None;
    let shot = wait_for(Duration::from_secs(60), || {
        disp = list_dispvms(sim)
            .unwrap_or_default()
            .into_iter()
            .find(|d| !before.contains(d));
        disp.as_ref().is_some_and(|d| {
            sim.state
                .join(format!("run/screenshots/{d}-1.png"))
                .exists()
        })
    });
    let Some(disp) = disp.filter(|_| shot) else {
        let _ = open.kill();
        bail!("no viewer window appeared");
    };
    let kept = std::env::temp_dir().join("qubes-demo-viewer.png");
    std::fs::copy(
        sim.state.join(format!("run/screenshots/{disp}-1.png")),
        &kept,
    )?;
    say(&format!(
        "  -> {disp} shows the picture; screenshot saved as {}",
        kept.display()
    ));
    say(&format!(
        "dom0: qvm-gui-input {disp} key q (close the viewer)"
    ));
    sim.ok("qvm-gui-input", &[&disp, "key", "q"])?;
    let ended = wait_for(Duration::from_secs(30), || {
        matches!(open.try_wait(), Ok(Some(_)))
            && !list_dispvms(sim).unwrap_or_default().contains(&disp)
    });
    if !ended {
        let _ = open.kill();
        bail!("closing the viewer did not end the call and remove {disp}");
    }
    Ok(format!(
        "viewer: work's PNG opened in disposable {disp} of viewer-unikernel-dvm (screenshot {}); \
         closing the window removed the disposable",
        kept.display()
    ))
}

/// Split SSH: dom0 opens the vault's key store and adds a key with OpenSSH's ssh-add (through
/// qvm-ssh-agent-admin); work's ssh-add and ssh-keygen use it over qrexec through the bundle's
/// forwarder; each signature of a confirm key is put to dom0's qubes.UnikernelConfirm.
fn flow_ssh_agent(sim: &Sim) -> Result<String> {
    let rpc = sim.root.join("qubes-rpc/ssh-agent");
    let admin = rpc.join("dom0/qvm-ssh-agent-admin");
    let connect = rpc.join("qubes-ssh-agent-connect");
    for f in [&admin, &connect] {
        if !f.is_file() {
            bail!("{} is missing", f.display());
        }
    }
    sim.ok("qvm-start", &["sshagent-unikernel"])?;
    sim.ok("qvm-start", &["work"])?;
    // dom0's key, made with ssh-keygen; the vault will hold it, work never sees it.
    let keys = sim.state.join("dom0-keys");
    std::fs::create_dir_all(&keys)?;
    let key = keys.join("id_demo");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "demo@work", "-f"])
        .arg(&key))?;
    let askpass = keys.join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho demo-passphrase\n")?;
    run(Command::new("chmod").arg("755").arg(&askpass))?;
    say("dom0: qvm-ssh-agent-admin work run ssh-add -X (open the key store), ssh-add -c id_demo");
    let status = Command::new("python3")
        .arg(&admin)
        .args(["work", "run", "sh", "-c"])
        .arg(format!("ssh-add -X && ssh-add -c {}", key.display()))
        .env("QVM_RUN", format!("{} qvm-run", sim.exe.display()))
        .env("QUBES_SIM_DIR", &sim.state)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("qvm-ssh-agent-admin failed ({status})");
    }
    // What systemd's socket unit does in a real AppVM: one forwarder per connection.
    let forwarder = format!(
        "python3 -c 'import os,socket,subprocess,sys\n\
         p=os.environ[\"QUBES_SIM_VM_DIR\"]+\"/agent.sock\"\n\
         s=socket.socket(socket.AF_UNIX); s.bind(p); s.listen(8); print(\"listening\", flush=True)\n\
         while True:\n    c,_=s.accept(); subprocess.Popen([sys.argv[1]], stdin=c.fileno(), stdout=c.fileno()); c.close()' {}",
        connect.display()
    );
    let mut fwd = sim.spawn_in("work", &forwarder)?;
    let mut first = String::new();
    BufReader::new(fwd.stdout.take().context("forwarder output")?).read_line(&mut first)?;
    let work = sim.vm_dir("work");
    std::fs::write(work.join("msg.txt"), "signed in the vault\n")?;
    std::fs::copy(key.with_extension("pub"), work.join("id_demo.pub"))?;
    let sign = "cd \"$QUBES_SIM_VM_DIR\" && rm -f msg.txt.sig && SSH_AUTH_SOCK=$PWD/agent.sock \
                ssh-keygen -q -Y sign -f id_demo.pub -n demo msg.txt";
    let result = (|| -> Result<(String, bool)> {
        if first.trim() != "listening" {
            bail!("the forwarder in work did not start");
        }
        say("work: SSH_AUTH_SOCK=… ssh-add -l");
        let list = sim.ok(
            "qvm-run",
            &[
                "-p",
                "work",
                "SSH_AUTH_SOCK=$QUBES_SIM_VM_DIR/agent.sock ssh-add -l",
            ],
        )?;
        say(&format!("  -> {}", list.trim()));
        if !list.contains("demo@work") {
            bail!("work's ssh-add -l does not list the vault's key");
        }
        say("work: ssh-keygen -Y sign (dom0's confirmation prompt answers allow)");
        std::fs::write(sim.state.join("confirm-answer"), "allow\n")?;
        sim.ok("qvm-run", &["-p", "work", sign])?;
        let check = Command::new("ssh-keygen")
            .args(["-Y", "check-novalidate", "-n", "demo", "-f"])
            .arg(key.with_extension("pub"))
            .arg("-s")
            .arg(work.join("msg.txt.sig"))
            .stdin(std::fs::File::open(work.join("msg.txt"))?)
            .output()?;
        let verdict = String::from_utf8_lossy(&check.stdout).trim().to_string();
        say(&format!("  -> dom0 checks the signature: {verdict}"));
        if !check.status.success() {
            bail!("the signature does not verify");
        }
        say("work: ssh-keygen -Y sign again (dom0's prompt answers deny)");
        std::fs::write(sim.state.join("confirm-answer"), "deny\n")?;
        let (code, _, _) = sim.run("qvm-run", &["-p", "work", sign])?;
        say(&format!("  -> exit code {code}"));
        let refused = code != 0;
        say("work: qrexec-client-vm sshagent-unikernel qubes.SshAgent+git (no rule for that keyring)");
        let (code, _, _) = sim.run(
            "qvm-run",
            &[
                "-p",
                "work",
                "qrexec-client-vm sshagent-unikernel qubes.SshAgent+git </dev/null",
            ],
        )?;
        say(&format!("  -> exit code {code} (126 = request refused)"));
        Ok((verdict, refused && code == 126))
    })();
    let _ = fwd.kill();
    let _ = fwd.wait();
    let (_, refusals) = result?;
    if !refusals {
        bail!("a denied signature or an unlisted keyring was not refused");
    }
    Ok("ssh-agent: dom0 stored an ed25519 key in sshagent-unikernel with ssh-add; work listed it \
        and signed with it over qubes.SshAgent+work (signature verified in dom0), each signature \
        confirmed by dom0's qubes.UnikernelConfirm (deny refused it); keyring `git` refused by policy"
        .into())
}

/// The password vault: dom0 makes the vault and stores an entry with the bundle's `qpass`
/// (passwords on stdin only); the vault is restarted and unlocked again (the entry is on its
/// private volume); work reads the one password policy lets it read, and nothing else.
fn flow_passman(sim: &Sim) -> Result<String> {
    let qpass = sim.root.join("qubes-rpc/passman/qpass");
    if !qpass.is_file() {
        bail!("{} is missing", qpass.display());
    }
    // dom0's qpass calls `qvm-run -p --service`: the sim's, first on PATH.
    let bin = sim.state.join("dom0-bin");
    std::fs::create_dir_all(&bin)?;
    let link = bin.join("qvm-run");
    if !link.exists() {
        std::os::unix::fs::symlink(&sim.exe, &link)?;
    }
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut v = vec![bin.clone()];
            v.extend(std::env::split_paths(&p));
            std::env::join_paths(v)?
        }
        None => bin.clone().into_os_string(),
    };
    let dom0 = |args: &[&str], input: &str| -> Result<String> {
        let mut c = Command::new(&qpass)
            .args(args)
            .env("PATH", &path)
            .env("QUBES_SIM_DIR", &sim.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        c.stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!("qpass {} failed ({})", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    sim.ok("qvm-start", &["passman-unikernel"])?;
    sim.ok("qvm-start", &["work"])?;
    say("dom0: qpass init (a light KDF: the demo runs a debug build), qpass add -u alice github.com");
    dom0(&["init", "--kdf", "argon2id:8192:1:1"], "demo-passphrase\n")?;
    dom0(&["unlock"], "demo-passphrase\n")?;
    dom0(&["add", "-u", "alice", "github.com"], "s3cret-for-github\n")?;
    say("dom0: qvm-shutdown passman-unikernel, qvm-start it, qpass unlock (the entry is on its disk)");
    sim.ok("qvm-shutdown", &["--wait", "passman-unikernel"])?;
    sim.ok("qvm-start", &["passman-unikernel"])?;
    dom0(&["unlock"], "demo-passphrase\n")?;
    let q = qpass.to_string_lossy();
    say("work: qpass get github.com");
    let got = sim.ok("qvm-run", &["-p", "work", &format!("{q} get github.com")])?;
    say(&format!(
        "  -> {} characters",
        got.trim_end_matches('\n').len()
    ));
    if got.trim_end() != "s3cret-for-github" {
        bail!("work did not get the stored password");
    }
    say("work: qpass ls (not allowed by policy)");
    let (code, _, _) = sim.run("qvm-run", &["-p", "work", &format!("{q} ls")])?;
    say(&format!("  -> exit code {code}"));
    if code == 0 {
        bail!("work listed the vault's entries without a rule allowing it");
    }
    Ok(
        "passman: dom0 stored github.com in passman-unikernel with qpass; after a restart and \
        unlock it was still there; work read that password over passman.Get+github.com and was \
        refused the listing by policy"
            .into(),
    )
}

/// After the sim stopped: everything the qubes (the unikernels among them) and dom0 said to
/// each other decodes as xs_wire, qrexec, QubesDB or GUI messages.
fn flow_protocols(exe: &Path, state: &Path) -> Result<String> {
    say("decoding the capture of all traffic between the qubes and dom0");
    let out = Command::new(exe)
        .arg("capture-decode")
        .arg(state.join(CAPTURE))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    say(&format!("  -> {text}"));
    if !out.status.success() {
        bail!("{text}");
    }
    Ok(format!("protocols: {text}"))
}

fn list_dispvms(sim: &Sim) -> Result<Vec<String>> {
    Ok(sim
        .ok("qvm-ls", &[])?
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("DispVM"))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect())
}

/// A small RGB gradient as a PNG.
fn demo_png(w: u32, h: u32) -> Result<Vec<u8>> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 160]);
        }
    }
    png_write::encode_rgb(w, h, &rgb).context("demo picture: PNG encoding refused")
}
