//! `cargo xtask`: the one entry point for tests, image builds, benchmarks and fuzzing.
//! Each command installs the Debian packages it needs first (as root, `apt-get update` once).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod build;
mod deb;
mod demo;
mod deps;
mod interop;
mod rpm;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo            build the images and the hosted unikernels, then play the flows in the
                  simulated Qubes with real clients (firewall, split-SSH, password vault, PNG
                  viewer, plus qrexec/QubesDB/GUI basics), one summary line each
  test            install test dependencies, then fmt, clippy, unit/vector/property tests,
                  libxenvchan interop, the QEMU boot test of every image, fuzz corpus replay
  interop         Debian's real libxenvchan against our vchan over the hosted shims, both roles
  bench vchan     vchan throughput table: ours/ours, ours/libxenvchan, libxenvchan/libxenvchan
  bench firewall | ssh-agent | passman | fb-viewer | all
                  each app's table against its same-run baseline (empty forward, OpenSSH's
                  ssh-agent, the png crate and libpng), kept in target/bench/<name>.txt
  rpm             build the dom0 and template RPMs and the template .deb into target/rpm/
                  (reproducible) and print the sha256 of every kernel; `rpm check`: the
                  package checks of `test`
  build           build every unikernel image into target/unikernels/<name>/vmlinuz
  boot-test       boot every image under QEMU's PVH loader (no Xen) and check its serial output
  xen-test        boot the images on real Xen 4.17 (Debian dom0) under QEMU TCG; slow, not in CI
  fuzz list       list the fuzz targets
  fuzz TARGET [SECONDS]   run one cargo-fuzz target (no sanitizer) for SECONDS (default 60)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("demo") => demo::run_demo(&root),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("build") => build::build_images(&root),
        Some("boot-test") => build::boot_test(&root),
        Some("xen-test") => build::xen_test(&root),
        Some("interop") => interop::run(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("rpm") if args.get(1).map(String::as_str) == Some("check") => rpm::check(&root),
        Some("rpm") => rpm::rpm(&root),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}; run `cargo xtask help` for the list"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(root: &Path) -> Result<()> {
    deps::ensure_test_deps()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Images and packages first: the flow tests install the RPMs the package checks built.
    build::boot_test(root)?;
    rpm::check(root)?;
    run(cargo()
        .args(["test", "--workspace"])
        .env("FLOWS_RPM_DIR", root.join(rpm::CHECK_DIR))
        // The packages above installed pykeepass: the KDBX import test must not skip.
        .env("PASSMAN_REQUIRE_KDBX", "1"))?;
    interop::run(root)?;
    fuzz_replay(root)?;
    Ok(())
}

fn fuzz_targets(root: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(root.join("fuzz/fuzz_targets"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            v.push(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    v.sort();
    Ok(v)
}

/// Replays every committed corpus through its target once (no new inputs), as CI does.
fn fuzz_replay(root: &Path) -> Result<()> {
    let targets = fuzz_targets(root)?;
    if targets.is_empty() {
        return Ok(());
    }
    deps::ensure_cargo_fuzz()?;
    for t in &targets {
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        run(cargo()
            .current_dir(root.join("fuzz"))
            .args(["fuzz", "run", "-s", "none", t])
            .arg(&corpus)
            .args(["--", "-runs=0"]))?;
    }
    println!(
        "fuzz replay: {} targets replayed their corpora",
        targets.len()
    );
    Ok(())
}

fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let targets = fuzz_targets(root)?;
    match args.first().map(String::as_str) {
        None | Some("list") => {
            for t in targets {
                println!("{t}");
            }
            Ok(())
        }
        Some(t) => {
            if !targets.iter().any(|x| x == t) {
                bail!("no fuzz target {t:?}; `cargo xtask fuzz list` shows them");
            }
            let secs: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60);
            deps::ensure_cargo_fuzz()?;
            let corpus = root.join("fuzz/corpus").join(t);
            std::fs::create_dir_all(&corpus)?;
            run(cargo()
                .current_dir(root.join("fuzz"))
                .args(["fuzz", "run", "-s", "none", t])
                .arg(&corpus)
                .args([
                    "--".to_string(),
                    format!("-max_total_time={secs}"),
                    "-rss_limit_mb=2048".into(),
                    "-timeout=10".into(),
                    "-print_final_stats=1".into(),
                ]))
        }
    }
}
