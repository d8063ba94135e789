//! `cargo xtask demo`: what works today, played the way a user would type it. Builds and
//! boot-tests the images, then starts the simulated Qubes and runs qrexec, policy, QubesDB
//! firewall rules and a GUI window through it, printing what happened in plain words.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{build, cargo, deps, run};

/// A sim daemon that is stopped (lifeline closed, then killed) on drop.
struct Sim {
    exe: PathBuf,
    state: PathBuf,
    daemon: Child,
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

/// The demo: one summary line per part at the end.
pub fn run_demo(root: &Path) -> Result<()> {
    deps::apt_install(&["qemu-system-x86"])?;
    let mut summary: Vec<String> = Vec::new();

    say("building the unikernel images and booting each under QEMU's PVH loader");
    build::build_images(root)?;
    build::boot_test(root)?;
    summary.push("images: xen-smoke built and booted under QEMU (PVH entry, no-Xen path)".into());

    say("building the simulated Qubes (qubes-sim)");
    run(cargo().args(["build", "-q", "-p", "qubes-sim"]))?;
    let exe = target_dir(root).join("debug/qubes-sim");
    let state = std::env::temp_dir().join(format!("qubes-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(state.join("policy.d"))?;
    let result = play(&exe, &state, &mut summary);
    let _ = std::fs::remove_dir_all(&state);
    result?;

    println!();
    println!("demo summary:");
    for line in &summary {
        println!("  {line}");
    }
    println!("  not yet: the four unikernels (firewall, viewer, vaults) and the dom0 RPM, so the four user flows cannot be played yet");
    Ok(())
}

fn play(exe: &Path, state: &Path, summary: &mut Vec<String>) -> Result<()> {
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

    say("dom0: qvm-create sys-net (provides_network), work (netvm sys-net), vault");
    sim_cmd("qvm-create", &["--label", "red", "sys-net"])?;
    sim_cmd("qvm-prefs", &["sys-net", "provides_network", "True"])?;
    sim_cmd("qvm-create", &["--label", "green", "work"])?;
    sim_cmd("qvm-prefs", &["work", "netvm", "sys-net"])?;
    sim_cmd("qvm-create", &["--label", "black", "vault"])?;
    sim_cmd("qvm-features", &["work", "gui", "1"])?;

    // A service in the vault and a policy that lets only `work` call it.
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
        "demo.Greet * work vault allow\ndemo.Greet * @anyvm @anyvm deny\n",
    )?;

    say("starting the simulated dom0 (hosted xenstored, qrexec and QubesDB daemons, GUI daemon)");
    let mut daemon = Command::new(exe)
        .args(["daemon", "--stdin-lifeline"])
        .env("QUBES_SIM_DIR", state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qubes-sim daemon")?;
    let out = daemon.stdout.take().context("daemon stdout")?;
    let sim = Sim {
        exe: exe.to_path_buf(),
        state: state.to_path_buf(),
        daemon,
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

    say("work: qrexec-client-vm vault demo.Greet+docs");
    let greet = sim.ok(
        "qvm-run",
        &["-p", "work", "qrexec-client-vm vault demo.Greet+docs"],
    )?;
    say(&format!("  -> {}", greet.trim()));
    if !greet.contains("hello to work") {
        bail!("the allowed call did not reach the vault: {greet:?}");
    }
    summary
        .push("qrexec: work called demo.Greet in vault over real vchans; policy allowed it".into());

    say("sys-net: qrexec-client-vm vault demo.Greet (the policy denies it)");
    let (code, _, _) = sim.run(
        "qvm-run",
        &["-p", "sys-net", "qrexec-client-vm vault demo.Greet"],
    )?;
    say(&format!("  -> exit code {code} (126 = request refused)"));
    if code != 126 {
        bail!("the denied call ended with {code}, not 126");
    }
    summary.push("policy: sys-net's call was refused with exit code 126".into());

    say("dom0: qvm-firewall work add action=drop proto=tcp dstports=443-443 dst4=192.0.2.1");
    sim.ok(
        "qvm-firewall",
        &[
            "work",
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
    summary.push(
        "QubesDB: a qvm-firewall change reached the netvm's QubesDB with dom0's commit protocol"
            .into(),
    );

    say("work: a test GUI agent opens a window; dom0's GUI daemon takes a screenshot");
    // Started "inside" work: the environment work's agent gives its own processes.
    let qid = sim.ok("qvm-prefs", &["work", "qid"])?;
    let mut agent = Command::new(exe)
        .arg("gui-test-agent")
        .env("QUBES_HOSTED_DIR", state.join("run"))
        .env("QUBES_HOSTED_DOMID", qid.trim())
        .env("QUBES_SIM_VM_DIR", state.join("vms/work"))
        .env_remove("QUBES_SIM_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let shot = state.join("run/screenshots/work-1.png");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shot.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    if !shot.exists() {
        bail!("no screenshot appeared at {}", shot.display());
    }
    let kept = std::env::temp_dir().join("qubes-demo-work-1.png");
    std::fs::copy(&shot, &kept)?;
    say(&format!("  -> screenshot saved as {}", kept.display()));
    summary.push(format!(
        "GUI: a window from work was shown by the GUI daemon (screenshot {})",
        kept.display()
    ));

    say("shutting the sim down");
    drop(sim);
    std::io::stdout().flush()?;
    Ok(())
}
