//! `cargo xtask xen-test`: boots the smoke image as PV and PVH domUs on real Xen 4.17 (Debian
//! packages: debootstrap'd dom0, `xen-hypervisor-4.17-amd64`) inside QEMU TCG, and reports the
//! checks the dom0 script (tests/xen/dom0-test.sh, then dom0-apps.sh) prints, one line each.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[path = "xen_flows.rs"]
mod xen_flows;

/// Lab modes: (domU type, QEMU CPU). PV runs use qemu64 (Linux user space in dom0 is flaky with
/// `-cpu max`). PVH needs an emulated SVM with nested paging (Debian's Xen has no shadow
/// paging); with Debian's QEMU 7.2, `-cpu max` crashes the PV dom0 at its first page fault
/// (Xen 4.17.7, kernel 6.1.0-56), so PVH runs add just `svm` and `npt` to qemu64.
/// Both add RDRAND: `platform_xen::env` refuses to start without an entropy source.
const RUNS: &[(&str, &str)] = &[
    ("pv", "qemu64,+rdrand"),
    ("pvh", "qemu64,+svm,+npt,+rdrand"),
];

/// `XEN_TEST_CPU` overrides the QEMU CPU of every run (for probing which model works).
fn cpu_for(default: &'static str) -> String {
    std::env::var("XEN_TEST_CPU").unwrap_or_else(|_| default.to_string())
}

/// Each boot is bounded: Xen + dom0 under TCG take 1.5 to 4 minutes, the vchan, net and block
/// checks 3 to 20 more (the vchan client role on a loaded host is the long one).
const BOOT_TIMEOUT_S: &str = "2400";

/// Builds the lab (once), installs the images and the dom0 script, boots each mode.
pub fn xen_test(root: &Path) -> Result<()> {
    crate::deps::apt_install(&[
        "debootstrap",
        "e2fsprogs",
        "qemu-system-x86",
        "gzip",
        "cpio",
        "busybox-static",
    ])?;
    super::build_images(root)?;
    let tools = dom0_tools(root)?;
    let lab = lab_dir(root);
    let rootfs = lab.join("rootfs");
    fs::create_dir_all(&lab)?;
    if !lab.join("rootfs.done").exists() {
        let t = Instant::now();
        crate::run(Command::new(root.join("tests/xen/rootfs.sh")).arg(&rootfs))?;
        println!(
            "xen-test: dom0 root built in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    // Packages added to rootfs.sh's EXTRA list since the root was built (no-op otherwise).
    crate::run(
        Command::new(root.join("tests/xen/rootfs.sh"))
            .arg("--extra")
            .arg(&rootfs),
    )?;
    install(root, &lab, &tools)?;
    let boot = lab.join("boot");
    fs::create_dir_all(&boot)?;
    boot_files(&rootfs, &boot)?;
    let img = lab.join("dom0.img");
    let _ = fs::remove_file(&img);
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "xenroot", "-d"])
            .arg(&rootfs)
            .arg(&img)
            .arg("3G"),
    )?;

    let (mut passed, mut failed) = (0, 0);
    let mut benches = Vec::new();
    // XEN_TEST_MODES=pvh (or pv) runs one mode only, for quicker iteration.
    let only = std::env::var("XEN_TEST_MODES").unwrap_or_default();
    for (mode, cpu) in RUNS
        .iter()
        .filter(|(m, _)| only.is_empty() || only.split(',').any(|o| o == *m))
    {
        let log = lab.join(format!("serial-{mode}.log"));
        let t = Instant::now();
        let cpu = &cpu_for(cpu);
        let status = qemu(&boot, &img, mode, cpu, &log)?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let (p, f) = report(mode, &text);
        benches.extend(bench_lines(&text));
        passed += p;
        failed += f;
        println!(
            "xen-test {mode}: QEMU (-cpu {cpu}) ran {:.0} s, {status}; serial log {}",
            t.elapsed().as_secs_f64(),
            log.strip_prefix(root).unwrap_or(&log).display()
        );
    }
    for b in &benches {
        println!("{b}");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} real-Xen checks failed");
    }
    Ok(())
}

/// The unikernel images the lab boots.
const IMAGES: &[&str] = &[
    "xen-smoke",
    "passman",
    "ssh-agent-vm",
    "fb-viewer",
    "firewall",
];

/// dom0's Linux tools (release, the host's glibc ≤ bookworm's): `qubes-dom0d` drives the apps,
/// platform-dom0's `dom0_probe` checks the dom0 backend itself.
fn dom0_tools(root: &Path) -> Result<[PathBuf; 2]> {
    crate::run(crate::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "qubes-dom0d",
        "-p",
        "platform-dom0",
        "--bin",
        "qubes-dom0d",
        "--example",
        "dom0_probe",
    ]))?;
    let rel = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    Ok([rel.join("qubes-dom0d"), rel.join("examples/dom0_probe")])
}

/// The lab's work dir (dom0 root, dom0.img, boot files, serial logs): `XEN_TEST_DIR`, else
/// `target/xen-lab`. Two labs running at once need two dirs (each installs into its own root).
fn lab_dir(root: &Path) -> PathBuf {
    match std::env::var_os("XEN_TEST_DIR") {
        Some(d) if !d.is_empty() => root.join(PathBuf::from(d)),
        _ => root.join("target/xen-lab"),
    }
}

/// Files of tests/xen/ that are not installed into dom0 (the rest all are, so a new dom0 script
/// sourced by dom0-test.sh needs no xtask edit).
const NOT_INSTALLED: &[&str] = &["README.md", "rootfs.sh", "xen-test.service"];

/// Puts the images, the dom0 tools, every file of tests/xen/ and the unit into the dom0 root.
fn install(root: &Path, lab: &Path, tools: &[PathBuf]) -> Result<()> {
    let rootfs = lab.join("rootfs");
    let dir = rootfs.join("usr/local/lib/xen-test");
    fs::create_dir_all(&dir)?;
    for name in IMAGES {
        fs::copy(
            super::image_path(root, name),
            dir.join(format!("{name}.vmlinuz")),
        )?;
    }
    for e in fs::read_dir(root.join("tests/xen"))? {
        let e = e?;
        let name = e.file_name();
        if !e.file_type()?.is_file() || NOT_INSTALLED.iter().any(|n| name == *n) {
            continue;
        }
        fs::copy(e.path(), dir.join(&name))?;
    }
    for t in tools {
        let name = t.file_name().context("tool path")?;
        fs::copy(t, dir.join(name)).with_context(|| format!("{}", t.display()))?;
    }
    domu_initrd(root, lab, &dir.join("linux-domu.cpio.gz"))?;
    fw_domu_initrd(root, lab, &dir.join("linux-domu-fw.cpio.gz"))?;
    xen_flows::install(root, lab, &dir)?;
    let units = rootfs.join("etc/systemd/system");
    fs::copy(
        root.join("tests/xen/xen-test.service"),
        units.join("xen-test.service"),
    )?;
    let wants = units.join("multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    let link = wants.join("xen-test.service");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/xen-test.service", link)?;
    Ok(())
}

/// The Linux PV domU's initramfs: the host's busybox-static, dom0's xen-netfront module and
/// tests/xen/domu-init.sh as /init (its kernel is dom0's own, from the same root).
fn domu_initrd(root: &Path, lab: &Path, out: &Path) -> Result<()> {
    let rootfs = &lab.join("rootfs");
    let stage = lab.join("domu-initrd");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy("/bin/busybox", stage.join("bin/busybox")).context("busybox-static")?;
    fs::copy(root.join("tests/xen/domu-init.sh"), stage.join("init"))?;
    let mods = rootfs.join("lib/modules");
    let kver = fs::read_dir(&mods)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .context("no kernel modules in the dom0 root")?;
    fs::copy(
        mods.join(&kver).join("kernel/drivers/net/xen-netfront.ko"),
        stage.join("xen-netfront.ko"),
    )
    .context("xen-netfront.ko (uncompressed) in the dom0 root")?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(out)
        .current_dir(&stage)
        .status()
        .context("cpio")?;
    if !status.success() {
        bail!("building the domU initramfs failed");
    }
    Ok(())
}

/// The firewall checks' Linux PV domUs (dom0-firewall.sh): the same busybox and xen-netfront as
/// [`domu_initrd`], tests/xen/domu-fw-init.sh as /init.
fn fw_domu_initrd(root: &Path, lab: &Path, out: &Path) -> Result<()> {
    let stage = lab.join("domu-fw-initrd");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy("/bin/busybox", stage.join("bin/busybox")).context("busybox-static")?;
    fs::copy(root.join("tests/xen/domu-fw-init.sh"), stage.join("init"))?;
    // The kernel runs /init only if it is executable, whatever the checkout's mode.
    fs::set_permissions(
        stage.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let rootfs = lab.join("rootfs");
    let mods = rootfs.join("lib/modules");
    let kver = fs::read_dir(&mods)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .context("no kernel modules in the dom0 root")?;
    fs::copy(
        mods.join(&kver).join("kernel/drivers/net/xen-netfront.ko"),
        stage.join("xen-netfront.ko"),
    )?;
    router_files(&rootfs, &kver, &stage)?;
    cpio_gz(&stage, out)
}

/// Kernel module dirs the Linux router role loads from (netback, nftables NAT) and the files
/// busybox's modprobe reads.
const ROUTER_MODULES: &[&str] = &[
    "kernel/drivers/net/xen-netback",
    "kernel/net/netfilter",
    "kernel/net/ipv4/netfilter",
    "kernel/net/ipv6/netfilter",
    "kernel/lib/libcrc32c.ko",
    "kernel/crypto/crc32c_generic.ko",
    "modules.dep",
    "modules.alias",
    "modules.builtin",
    "modules.order",
];

/// For the router role of domu-fw-init.sh (the Linux firewall the bench compares with): the
/// modules above and dom0's `nft` with the shared libraries `ldd` names (nftables is in
/// rootfs.sh's EXTRA).
fn router_files(rootfs: &Path, kver: &str, stage: &Path) -> Result<()> {
    let from = rootfs.join("lib/modules").join(kver);
    let to = stage.join("lib/modules").join(kver);
    for m in ROUTER_MODULES {
        let dst = to.join(m);
        fs::create_dir_all(dst.parent().context("module path")?)?;
        crate::run(Command::new("cp").arg("-a").arg(from.join(m)).arg(&dst))?;
    }
    let ldd = Command::new("chroot")
        .arg(rootfs)
        .args(["ldd", "/usr/sbin/nft"])
        .output()
        .context("chroot ldd nft")?;
    if !ldd.status.success() {
        bail!("ldd /usr/sbin/nft in the dom0 root failed (is nftables installed?)");
    }
    let libdir = rootfs.join("usr/lib/x86_64-linux-gnu");
    for d in ["sbin", "lib/x86_64-linux-gnu", "lib64"] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy(rootfs.join("usr/sbin/nft"), stage.join("sbin/nft"))?;
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        let Some(name) = word.strip_prefix('/').and_then(|w| w.rsplit('/').next()) else {
            continue;
        };
        if !name.contains(".so") {
            continue;
        }
        let dst = if name.starts_with("ld-linux") {
            stage.join("lib64").join(name)
        } else {
            stage.join("lib/x86_64-linux-gnu").join(name)
        };
        fs::copy(libdir.join(name), &dst).with_context(|| format!("{name} for nft"))?;
    }
    Ok(())
}

/// `find . | cpio -o -H newc | gzip` of `stage` into `out`.
fn cpio_gz(stage: &Path, out: &Path) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(out)
        .current_dir(stage)
        .status()
        .context("cpio")?;
    if !status.success() {
        bail!("building {} failed", out.display());
    }
    Ok(())
}

/// `XEN-BENCH` lines of the serial logs (dom0-firewall.sh's throughput comparison), printed
/// after the check summary.
fn bench_lines(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|l| {
            l.find("XEN-BENCH ")
                .map(|at| l[at..].trim_end().to_string())
        })
        .collect()
}

/// Xen (gunzipped: QEMU's multiboot loader wants the ELF), dom0's kernel and initrd.
fn boot_files(rootfs: &Path, boot: &Path) -> Result<()> {
    let xen = Command::new("gunzip")
        .arg("-c")
        .arg(rootfs.join("boot/xen-4.17-amd64.gz"))
        .output()
        .context("gunzip")?;
    if !xen.status.success() {
        bail!("cannot unpack boot/xen-4.17-amd64.gz from the dom0 root");
    }
    fs::write(boot.join("xen"), xen.stdout)?;
    let mut kernels: Vec<String> = fs::read_dir(rootfs.join("boot"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    let k = kernels.last().context("no kernel in the dom0 root")?;
    let ver = k.trim_start_matches("vmlinuz-");
    fs::copy(rootfs.join("boot").join(k), boot.join("vmlinuz"))?;
    fs::copy(
        rootfs.join(format!("boot/initrd.img-{ver}")),
        boot.join("initrd.img"),
    )?;
    Ok(())
}

fn qemu(boot: &Path, img: &Path, mode: &str, cpu: &str, log: &Path) -> Result<String> {
    let xen_args = "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all \
                    dom0_mem=1024M,max:1024M dom0_max_vcpus=2";
    // QEMU splits -initrd at commas, so dom0's arguments have none.
    // XEN_TEST_QUICK=1: no vchan, 100 UDP datagrams (for iterating; not a lab result).
    let quick = if std::env::var("XEN_TEST_QUICK").is_ok_and(|v| v == "1") {
        " xentest.quick=1"
    } else {
        ""
    };
    // XEN_TEST_ONLY=firewall: only the firewall checks (dom0-firewall.sh), for iterating.
    let only = match std::env::var("XEN_TEST_ONLY").as_deref() {
        Ok("firewall") => " xentest.only=firewall",
        Ok("flows") => " xentest.only=flows",
        _ => "",
    };
    let dom0 = format!(
        "{} root=LABEL=xenroot ro console=hvc0 xentest.mode={mode}{quick}{only},{}",
        boot.join("vmlinuz").display(),
        boot.join("initrd.img").display()
    );
    let out = fs::File::create(log)?;
    let status = Command::new("timeout")
        .args([
            "-k",
            "10",
            BOOT_TIMEOUT_S,
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            cpu,
        ])
        .args(["-m", "2048", "-smp", "2", "-kernel"])
        .arg(boot.join("xen"))
        .args(["-append", xen_args, "-initrd", &dom0])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=root,format=raw,cache=unsafe",
            img.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=root", "-nic", "none"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running qemu-system-x86_64")?;
    Ok(match status.code() {
        Some(124) => "killed by the timeout".into(),
        Some(c) => format!("exit {c}"),
        None => "killed".into(),
    })
}

/// Prints the dom0 script's check lines for `mode`; returns (passed, failed). A run that did not
/// reach the end counts as one more failure.
fn report(mode: &str, serial: &str) -> (usize, usize) {
    let (mut p, mut f, mut done) = (0, 0, false);
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        let Some(at) = line.find("XEN-TEST ") else {
            continue;
        };
        let mut w = line[at + 9..].splitn(4, ' ');
        let (m, check, verdict, detail) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
        );
        if m != mode {
            continue;
        }
        match (check, verdict) {
            ("done", _) => done = true,
            ("timing", _) => println!("time  {mode:<4} {verdict} {detail}"),
            (_, "ok") => {
                p += 1;
                println!("ok    {mode:<4} {check:<22} {detail}");
            }
            (_, "FAIL") => {
                f += 1;
                println!("FAIL  {mode:<4} {check:<22} {detail}");
            }
            _ => {}
        }
    }
    if !done {
        f += 1;
        println!(
            "FAIL  {mode:<4} {:<22} the dom0 test did not finish (see the serial log)",
            "run"
        );
    }
    (p, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_checks_of_its_mode_and_requires_done() {
        let log = "noise\nXEN-TEST pv create ok rc=0\r\n[  1.0] XEN-TEST pv boot FAIL late\nXEN-TEST pvh boot ok x\nXEN-TEST pv done\n";
        assert_eq!(report("pv", log), (1, 1));
        assert_eq!(report("pvh", log), (1, 1), "no done line for pvh");
    }

    #[test]
    fn bench_lines_are_kept_from_their_marker_on() {
        let log = "[ 9.1] XEN-BENCH firewall-pv unikernel=1 MB/s linux=2 MB/s ratio=0.50\r\nXEN-TEST pv x ok\n";
        assert_eq!(
            bench_lines(log),
            ["XEN-BENCH firewall-pv unikernel=1 MB/s linux=2 MB/s ratio=0.50"]
        );
        assert!(bench_lines("XEN-TEST pv done\n").is_empty());
    }
}
