//! `cargo xtask build` and `boot-test`: freestanding Xen images from the host's only target
//! (x86_64-unknown-linux-gnu), their ELF-note check, and a QEMU PVH boot test of each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[path = "build_elf.rs"]
mod build_elf;
#[path = "xen_test.rs"]
mod xen_test;

pub use xen_test::xen_test;

/// The images `cargo xtask build` makes (package names).
pub const IMAGES: &[&str] = &["xen-smoke"];

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Images get their own target dir: their RUSTFLAGS differ from host builds, and sharing one
/// dir would rebuild every dependency each time one switches.
const IMAGE_TARGET_DIR: &str = "target/image-build";

/// The freestanding flags (see shared/reference/freestanding.md): static, no red zone (our
/// crates; the precompiled core keeps it, so nothing may interrupt on our stack), our linker
/// script, no C runtime, and the `xen_image` cfg that turns on the boot code.
fn rustflags(root: &Path) -> String {
    let ld = root.join("platform/xen/link.ld");
    let mut f = vec![
        "-C relocation-model=static".to_string(),
        "-C force-frame-pointers=yes".into(),
        "-C no-redzone=yes".into(),
        "--cfg xen_image".into(),
    ];
    for a in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,-z,noexecstack",
        "-Wl,--no-dynamic-linker",
    ] {
        f.push(format!("-C link-arg={a}"));
    }
    f.push(format!("-C link-arg=-Wl,-T,{}", ld.display()));
    f.join(" ")
}

/// `cargo <sub>` for the images with the freestanding environment.
pub fn image_cargo(root: &Path, sub: &str) -> Command {
    let mut c = crate::cargo();
    c.current_dir(root)
        .arg(sub)
        .args([
            "--profile",
            "image",
            "--target",
            TARGET,
            "--target-dir",
            IMAGE_TARGET_DIR,
        ])
        .env("RUSTFLAGS", rustflags(root))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    c
}

/// Where an image lands.
pub fn image_path(root: &Path, name: &str) -> PathBuf {
    root.join("target/unikernels").join(name).join("vmlinuz")
}

/// Builds every unikernel image into `target/unikernels/<name>/vmlinuz` (stripped; the
/// unstripped ELF stays in target/image-build) and checks its Xen notes.
pub fn build_images(root: &Path) -> Result<()> {
    let mut cmd = image_cargo(root, "build");
    for name in IMAGES {
        cmd.args(["-p", name]);
    }
    crate::run(&mut cmd)?;
    for name in IMAGES {
        let built = root
            .join(IMAGE_TARGET_DIR)
            .join(TARGET)
            .join("image")
            .join(name);
        let out = image_path(root, name);
        std::fs::create_dir_all(out.parent().expect("has a parent"))?;
        let status = Command::new("objcopy")
            .arg("--strip-all")
            .arg(&built)
            .arg(&out)
            .status()
            .context("running objcopy (binutils)")?;
        if !status.success() {
            bail!("objcopy --strip-all {} failed", built.display());
        }
        let bytes = std::fs::read(&out)?;
        let notes = build_elf::check_image(&bytes).with_context(|| format!("{}", out.display()))?;
        println!(
            "image {name}: {} ({} KiB stripped, {} KiB loaded); PVH entry {:#x}, PV entry {:#x}, hypercall page {:#x}",
            out.strip_prefix(root).unwrap_or(&out).display(),
            bytes.len() / 1024,
            notes.loaded / 1024,
            notes.phys32_entry,
            notes.pv_entry,
            notes.hypercall_page
        );
    }
    Ok(())
}

/// What the no-Xen path must print (serial), in order.
const EXPECT: &[&str] = &[
    "platform-xen: PVH entry reached Rust",
    "platform-xen: cmdline \"boot-test console=serial\"",
    "platform-xen: heap ",
    "platform-xen: no Xen hypervisor",
];
/// `(0x10 << 1) | 1`: the code the no-Xen path writes to isa-debug-exit.
const EXIT_OK: i32 = 33;
/// `(0x31 << 1) | 1`: the panic handler's code without Xen.
const EXIT_PANIC: i32 = 99;

/// `(0x32 << 1) | 1`: the CPU-exception handler's code without Xen.
const EXIT_FAULT: i32 = 101;

/// One boot of the test: command line, lines expected in order, expected exit status.
struct Case {
    what: &'static str,
    cmdline: &'static str,
    expect: &'static [&'static str],
    status: i32,
}

const CASES: &[Case] = &[
    Case {
        what: "PVH boot to Rust and clean exit",
        cmdline: "boot-test console=serial",
        expect: EXPECT,
        status: EXIT_OK,
    },
    Case {
        what: "panic reaches the console and the exit device",
        cmdline: "boot-test boot-test=panic",
        expect: &[
            "platform-xen: PVH entry reached Rust",
            "panic: ",
            "boot-test=panic requested",
        ],
        status: EXIT_PANIC,
    },
    Case {
        what: "stack overflow stopped by the guard page",
        cmdline: "boot-test boot-test=overflow",
        expect: &[
            "platform-xen: overflowing the stack into its guard page",
            "platform-xen: CPU exception 14 (page fault)",
            "(stack overflow into the guard page)",
        ],
        status: EXIT_FAULT,
    },
];

/// Boots each image under QEMU's PVH loader (TCG): the image must reach Rust, report its boot
/// facts on the serial port, find no Xen, and exit through isa-debug-exit with the success code;
/// two more boots check the panic path and the stack guard page.
pub fn boot_test(root: &Path) -> Result<()> {
    crate::deps::apt_install(&["qemu-system-x86"])?;
    build_images(root)?;
    // The boot code is compiled only for images, so host clippy never sees it: lint it here.
    crate::run(
        image_cargo(root, "clippy")
            .args(["--no-deps"])
            .args(IMAGES.iter().flat_map(|n| ["-p", n]))
            .args(["-p", "platform-xen", "--", "-D", "warnings"]),
    )?;
    let mut failed = 0;
    for name in IMAGES {
        let img = image_path(root, name);
        for case in CASES {
            let t0 = Instant::now();
            let out = Command::new("timeout")
                .args([
                    "60",
                    "qemu-system-x86_64",
                    "-accel",
                    "tcg",
                    "-cpu",
                    "max,vendor=GenuineIntel",
                ])
                .args([
                    "-m",
                    "128M",
                    "-no-reboot",
                    "-serial",
                    "stdio",
                    "-monitor",
                    "none",
                ])
                .args([
                    "-display",
                    "none",
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=0x04",
                ])
                .arg("-kernel")
                .arg(&img)
                .args(["-append", case.cmdline])
                .output()
                .context("running qemu-system-x86_64")?;
            let took = t0.elapsed();
            let serial = String::from_utf8_lossy(&out.stdout).replace('\r', "");
            match check_boot(&serial, out.status.code(), case) {
                Ok(()) => println!("boot-test {name}: ok, {} in {}", case.what, secs(took)),
                Err(why) => {
                    failed += 1;
                    println!(
                        "boot-test {name}: FAIL, {} ({why}) after {}",
                        case.what,
                        secs(took)
                    );
                    println!(
                        "--- serial ---\n{serial}--- stderr ---\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} boot(s) failed the QEMU PVH boot test");
    }
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn check_boot(serial: &str, code: Option<i32>, case: &Case) -> std::result::Result<(), String> {
    let mut at = 0;
    for want in case.expect {
        match serial[at..].find(want) {
            Some(i) => at += i + want.len(),
            None => return Err(format!("serial output lacks {want:?}")),
        }
    }
    if case.status != EXIT_PANIC && serial.contains("panic:") {
        return Err("the image panicked".into());
    }
    match code {
        Some(c) if c == case.status => Ok(()),
        Some(124) => Err("timed out after 60 s".into()),
        other => Err(format!("exit status {other:?}, expected {}", case.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_check_wants_every_line_in_order_and_the_exit_code() {
        let ok = &CASES[0];
        let good = EXPECT.join("\n");
        assert_eq!(check_boot(&good, Some(33), ok), Ok(()));
        assert!(check_boot(&good, Some(1), ok).is_err());
        assert!(check_boot(&good, Some(124), ok).is_err());
        let reversed: Vec<&str> = EXPECT.iter().rev().copied().collect();
        assert!(check_boot(&reversed.join("\n"), Some(33), ok).is_err());
        assert!(check_boot(&format!("{good}\npanic: x"), Some(33), ok).is_err());
        let panic = &CASES[1];
        let text = "platform-xen: PVH entry reached Rust\npanic: boot-test=panic requested";
        assert_eq!(check_boot(text, Some(99), panic), Ok(()));
        assert!(check_boot(text, Some(33), panic).is_err());
    }
}
