//! Flow 3 (split-SSH) on the lab's real Xen: dom0's `qubes-qrexecd` and `qubes-vm-agent`, and
//! the Linux AppVM's initramfs (busybox, the agent, OpenSSH's client and server from the root).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// OpenSSH programs the AppVM runs (from the dom0 root: openssh-client, openssh-server).
const SSH_PROGRAMS: &[&str] = &[
    "usr/bin/ssh",
    "usr/bin/ssh-add",
    "usr/bin/ssh-keygen",
    "usr/sbin/sshd",
];

/// Kernel modules the AppVM loads for user-space vchan (platform-dom0 in a domU).
const MODULES: &[&str] = &[
    "drivers/xen/xen-evtchn.ko",
    "drivers/xen/xen-gntdev.ko",
    "drivers/xen/xen-gntalloc.ko",
];

/// Builds the qrexec tools (release, the host's glibc), installs them into dom0's lib dir `dir`
/// and builds `dir/linux-work.cpio.gz` (the AppVM's initramfs) from the root in `lab`.
pub fn install(root: &Path, lab: &Path, dir: &Path) -> Result<()> {
    crate::run(crate::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "qubes-qrexec",
        "--bins",
    ]))?;
    let rel = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let (qrexecd, agent) = (rel.join("qubes-qrexecd"), rel.join("qubes-vm-agent"));
    for t in [&qrexecd, &agent] {
        let name = t.file_name().context("tool path")?;
        fs::copy(t, dir.join(name)).with_context(|| format!("{}", t.display()))?;
    }
    // The project's shipped policy (dom0-flows.sh adds the lab's allow rule in front of it).
    let policy = dir.join("policy.d");
    let _ = fs::remove_dir_all(&policy);
    fs::create_dir_all(&policy)?;
    for e in fs::read_dir(root.join("qubes-rpc/policy.d"))? {
        let e = e?;
        if e.file_name().to_string_lossy().ends_with(".policy") {
            fs::copy(e.path(), policy.join(e.file_name()))?;
        }
    }
    let rootfs = lab.join("rootfs");
    // openssh-server's unit would start an sshd in the lab's dom0: only the AppVM runs one.
    let unit = rootfs.join("etc/systemd/system/ssh.service");
    let _ = fs::remove_file(&unit);
    std::os::unix::fs::symlink("/dev/null", &unit)?;
    work_initrd(root, &rootfs, &agent, &dir.join("linux-work.cpio.gz"))
}

/// The AppVM's initramfs: tests/xen/domu-work-init.sh as /init, busybox-static, the agent (also
/// as qrexec-client-vm), OpenSSH with the shared libraries they need, the vchan modules.
fn work_initrd(root: &Path, rootfs: &Path, agent: &Path, out: &Path) -> Result<()> {
    let stage = root.join("target/xen-lab-work-initrd");
    let stage = std::env::var_os("XEN_TEST_DIR")
        .map(|d| root.join(PathBuf::from(d)).join("work-initrd"))
        .unwrap_or(stage);
    let _ = fs::remove_dir_all(&stage);
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc",
        "root/.ssh",
        "run/sshd",
        "var/empty",
        "usr/bin",
        "usr/sbin",
        "lib",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy("/bin/busybox", stage.join("bin/busybox")).context("busybox-static")?;
    fs::copy(root.join("tests/xen/domu-work-init.sh"), stage.join("init"))?;
    fs::copy(agent, stage.join("usr/bin/qubes-vm-agent"))?;
    std::os::unix::fs::symlink("qubes-vm-agent", stage.join("usr/bin/qrexec-client-vm"))?;
    fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n",
    )?;
    fs::write(stage.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let mut elves: Vec<PathBuf> = vec![agent.to_path_buf()];
    for p in SSH_PROGRAMS {
        let src = rootfs.join(p);
        if !src.exists() {
            bail!(
                "{} is missing from the dom0 root (openssh-client/openssh-server in rootfs.sh's EXTRA)",
                src.display()
            );
        }
        fs::copy(&src, stage.join(p))?;
        elves.push(src);
    }
    for lib in needed_libs(rootfs, &elves)? {
        let rel = lib
            .strip_prefix(rootfs)
            .context("library outside the root")?;
        let dst = stage.join(rel);
        fs::create_dir_all(dst.parent().context("library path")?)?;
        // Copied as files (the root's symlinks point at versioned names).
        fs::copy(&lib, &dst).with_context(|| format!("{}", lib.display()))?;
    }
    let loader = "lib64/ld-linux-x86-64.so.2";
    fs::create_dir_all(stage.join("lib64"))?;
    fs::copy(rootfs.join(loader), stage.join(loader)).context("the dynamic loader")?;
    let mods = rootfs.join("lib/modules");
    let kver = fs::read_dir(&mods)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .context("no kernel modules in the dom0 root")?;
    for m in MODULES {
        let src = mods.join(&kver).join("kernel").join(m);
        let name = Path::new(m).file_name().context("module name")?;
        fs::copy(&src, stage.join(name)).with_context(|| format!("{}", src.display()))?;
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(out)
        .current_dir(&stage)
        .status()
        .context("cpio")?;
    if !status.success() {
        bail!("building the AppVM initramfs failed");
    }
    Ok(())
}

/// The shared libraries (transitively) needed by `elves`, found in the root's library dirs.
fn needed_libs(rootfs: &Path, elves: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let dirs = [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib",
        "usr/lib",
    ];
    let mut found = BTreeSet::new();
    let mut todo: Vec<PathBuf> = elves.to_vec();
    while let Some(elf) = todo.pop() {
        let out = Command::new("objdump")
            .arg("-p")
            .arg(&elf)
            .output()
            .context("objdump (binutils)")?;
        if !out.status.success() {
            bail!("objdump -p {} failed", elf.display());
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("NEEDED") {
                continue;
            }
            let Some(name) = w.next() else { continue };
            if name.starts_with("ld-linux") {
                continue;
            }
            let lib = dirs
                .iter()
                .map(|d| rootfs.join(d).join(name))
                .find(|p| p.exists())
                .with_context(|| format!("{name} (needed by {}) not in the root", elf.display()))?;
            if found.insert(lib.clone()) {
                todo.push(lib);
            }
        }
    }
    Ok(found)
}
