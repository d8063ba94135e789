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

/// A workspace member's `image.toml`: the member is a unikernel image (its `#[cfg(xen_image)]`
/// main builds), `cargo xtask build` builds it and `boot-test` boots it.
///
/// ```toml
/// memory = 32             # MiB the domain gets (boot-test gives QEMU at least this)
/// max_stripped_kib = 512  # the build fails when the stripped image is larger
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The package (and binary) name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Largest stripped size allowed, KiB.
    pub max_stripped_kib: u64,
}

/// Parses `image.toml` (flat `key = integer` lines, `#` comments). Both keys are required;
/// unknown keys are refused so a typo does not silently drop a bound.
fn parse_image_toml(name: &str, text: &str) -> Result<ImageSpec> {
    let (mut memory, mut max) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("{name}/image.toml line {}: not `key = value`", i + 1))?;
        let v: u64 = v.trim().replace('_', "").parse().with_context(|| {
            format!(
                "{name}/image.toml line {}: {} is not a number",
                i + 1,
                v.trim()
            )
        })?;
        match k.trim() {
            "memory" => memory = Some(u32::try_from(v)?),
            "max_stripped_kib" => max = Some(v),
            other => bail!("{name}/image.toml line {}: unknown key {other}", i + 1),
        }
    }
    Ok(ImageSpec {
        name: name.to_string(),
        memory_mib: memory.with_context(|| format!("{name}/image.toml has no `memory`"))?,
        max_stripped_kib: max
            .with_context(|| format!("{name}/image.toml has no `max_stripped_kib`"))?,
    })
}

/// The workspace members listed in the root Cargo.toml's `members = [...]`.
fn workspace_members(root: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let start = text.find("members").context("no workspace members")?;
    let list = &text[start..];
    let open = list.find('[').context("members is not a list")?;
    let close = list.find(']').context("members list not closed")?;
    Ok(list[open + 1..close]
        .split(',')
        .map(|m| m.split('#').next().unwrap_or("").trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect())
}

/// The `name` of a member's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let pkg = &manifest[manifest.find("[package]")?..];
    pkg.lines()
        .find_map(|l| l.trim().strip_prefix("name")?.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// Every workspace member with an `image.toml`, in workspace order.
pub fn images(root: &Path) -> Result<Vec<ImageSpec>> {
    let mut out = Vec::new();
    for m in workspace_members(root)? {
        let dir = root.join(&m);
        let Ok(spec) = std::fs::read_to_string(dir.join("image.toml")) else {
            continue;
        };
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        let name = package_name(&manifest).with_context(|| format!("{m}: no package name"))?;
        out.push(parse_image_toml(&name, &spec)?);
    }
    if out.is_empty() {
        bail!("no workspace member has an image.toml");
    }
    Ok(out)
}

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
    build_image_specs(root).map(|_| ())
}

/// [`build_images`], returning what each image's `image.toml` says.
pub fn build_image_specs(root: &Path) -> Result<Vec<ImageSpec>> {
    let specs = images(root)?;
    let mut cmd = image_cargo(root, "build");
    for s in &specs {
        cmd.args(["-p", &s.name]);
    }
    crate::run(&mut cmd)?;
    let mut too_big = Vec::new();
    for spec in &specs {
        let name = &spec.name;
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
        if bytes.len() as u64 > spec.max_stripped_kib * 1024 {
            too_big.push(format!(
                "{name} is {} KiB stripped, its image.toml allows {} KiB",
                bytes.len() / 1024,
                spec.max_stripped_kib
            ));
        }
    }
    if !too_big.is_empty() {
        bail!("{}", too_big.join("; "));
    }
    Ok(specs)
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
    let specs = build_image_specs(root)?;
    // The boot code is compiled only for images, so host clippy never sees it: lint it here.
    crate::run(
        image_cargo(root, "clippy")
            .args(["--no-deps"])
            .args(specs.iter().flat_map(|s| ["-p", s.name.as_str()]))
            .args(["-p", "platform-xen", "--", "-D", "warnings"]),
    )?;
    let mut failed = 0;
    for spec in &specs {
        let name = &spec.name;
        let img = image_path(root, name);
        let mem = format!("{}M", spec.memory_mib.max(32));
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
                    &mem,
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
    fn image_toml_needs_both_bounds_and_refuses_unknown_keys() {
        let s =
            parse_image_toml("x", "# c\nmemory = 32 # MiB\nmax_stripped_kib = 1_536\n").unwrap();
        assert_eq!((s.memory_mib, s.max_stripped_kib), (32, 1536));
        assert!(parse_image_toml("x", "memory = 32").is_err());
        assert!(parse_image_toml("x", "max_stripped_kib = 1").is_err());
        assert!(parse_image_toml("x", "memory = 32\nmax_stripped_kib = 1\nmemroy = 3").is_err());
        assert!(parse_image_toml("x", "memory = lots\nmax_stripped_kib = 1").is_err());
    }

    #[test]
    fn the_workspace_lists_xen_smoke_as_an_image() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let specs = images(root).unwrap();
        assert!(specs.iter().any(|s| s.name == "xen-smoke"), "{specs:?}");
        assert_eq!(
            package_name("[package]\nname = \"a-b\"\n"),
            Some("a-b".into())
        );
    }

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
