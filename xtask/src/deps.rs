//! Installs what a command needs on a fresh Debian 12 machine (as root), once per machine.

use std::process::Command;

use anyhow::{bail, Result};

use crate::run;

/// Debian packages the test command needs: the real libxenvchan and its headers (interop), a C
/// compiler for the interop programs, QEMU for the image boot test.
const TEST_PACKAGES: &[&str] = &[
    "libxen-dev",
    "libxenmisc4.17",
    "gcc",
    "pkg-config",
    "qemu-system-x86",
    "openssh-client",
    "rpm",
    "python3",
    // The flows' real peers: network namespaces and TAP set-up, sys-net's HTTP/DNS and sshd,
    // the clients (curl, dig), and an independent KeePass writer for the import test.
    "iproute2",
    "curl",
    "dnsmasq-base",
    "bind9-dnsutils",
    "openssh-server",
    "python3-pykeepass",
    // The sim's GUI daemon shows windows in a real X server when DISPLAY is set (tested on Xvfb).
    "xvfb",
];

fn have_packages(pkgs: &[&str]) -> bool {
    pkgs.iter().all(|p| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
            .unwrap_or(false)
    })
}

/// `apt-get update` then `apt-get install -y` whatever of `pkgs` is missing.
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    if have_packages(pkgs) {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        bail!("missing Debian packages {pkgs:?}: run this command as root so it can apt-get install them");
    }
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Everything `cargo xtask test` needs.
pub fn ensure_test_deps() -> Result<()> {
    apt_install(TEST_PACKAGES)
}

/// cargo-fuzz, installed from crates.io if absent.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        run(Command::new("cargo").args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            "0.13.2",
        ]))?;
    }
    Ok(())
}
