//! `cargo xtask rpm`: the dom0 package (kernels, policy, dom0 tools) and the template package
//! (AppVM-side files; also as a .deb), built reproducibly, plus the checks CI runs on them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{build, deb, deps, run};

/// The packages (spec name → the manifest's package column).
pub const DOM0: &str = "qubes-unikernel-bundle";
/// The template-side package.
pub const VM: &str = "qubes-unikernel-bundle-vm";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the package checks leave the first of their two builds (the flow tests install it).
pub const CHECK_DIR: &str = "target/rpm-check/a";

/// Image (workspace package) → kernel directory under /var/lib/qubes/vm-kernels.
pub const KERNELS: &[(&str, &str)] = &[
    ("firewall", "unikernel-firewall"),
    ("ssh-agent-vm", "unikernel-ssh-agent"),
    ("passman", "unikernel-passman"),
    ("fb-viewer", "unikernel-fb-viewer"),
];

/// One installed file: destination path, mode, and where its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path in the installed system.
    pub dest: String,
    /// Permission bits.
    pub mode: u32,
    /// The bytes.
    pub source: Source,
    /// `%config(noreplace)`: policy the admin may edit.
    pub config: bool,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file of the repository or the build.
    File(PathBuf),
    /// Bytes made here (the empty initramfs).
    Bytes(Vec<u8>),
}

/// An empty gzip stream, as Qubes expects an `initramfs` beside each kernel (fixed header: no
/// name, mtime 0, so the bytes never change).
fn empty_gzip() -> Vec<u8> {
    vec![
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x02, 0x03, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
    ]
}

/// Reads `rpm/files.list`: `PACKAGE MODE SOURCE DEST [config]` per line, `#` comments.
fn manifest(root: &Path) -> Result<Vec<(String, Entry)>> {
    let path = root.join("rpm/files.list");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let (pkg, mode, src, dest) = match f.as_slice() {
            [p, m, s, d] | [p, m, s, d, "config"] => (*p, *m, *s, *d),
            _ => bail!(
                "{}:{}: want `PACKAGE MODE SOURCE DEST [config]`",
                path.display(),
                n + 1
            ),
        };
        if pkg != DOM0 && pkg != VM {
            bail!("{}:{}: unknown package {pkg}", path.display(), n + 1);
        }
        let mode = u32::from_str_radix(mode, 8)
            .with_context(|| format!("{}:{}: bad mode {mode}", path.display(), n + 1))?;
        if !dest.starts_with('/') || dest.contains("..") {
            bail!("{}:{}: destination must be absolute", path.display(), n + 1);
        }
        let src = root.join(src);
        if !src.is_file() {
            bail!("{}:{}: {} is missing", path.display(), n + 1, src.display());
        }
        out.push((
            pkg.to_string(),
            Entry {
                dest: dest.to_string(),
                mode,
                source: Source::File(src),
                config: f.len() == 5,
            },
        ));
    }
    Ok(out)
}

/// Every file of both packages, sorted by destination.
pub fn entries(root: &Path) -> Result<BTreeMap<&'static str, Vec<Entry>>> {
    let mut m: BTreeMap<&'static str, Vec<Entry>> = BTreeMap::new();
    for (image, dir) in KERNELS {
        let k = root.join("target/unikernels").join(image).join("vmlinuz");
        if !k.is_file() {
            continue;
        }
        let base = format!("/var/lib/qubes/vm-kernels/{dir}");
        m.entry(DOM0).or_default().push(Entry {
            dest: format!("{base}/vmlinuz"),
            mode: 0o644,
            source: Source::File(k),
            config: false,
        });
        m.entry(DOM0).or_default().push(Entry {
            dest: format!("{base}/initramfs"),
            mode: 0o644,
            source: Source::Bytes(empty_gzip()),
            config: false,
        });
    }
    for (pkg, e) in manifest(root)? {
        let key = if pkg == DOM0 { DOM0 } else { VM };
        m.entry(key).or_default().push(e);
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| a.dest.cmp(&b.dest));
    }
    Ok(m)
}

/// The commit time of HEAD: every timestamp in the packages is this, so rebuilding the same
/// commit gives the same bytes.
pub fn source_date_epoch(root: &Path) -> Result<String> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return Ok(v);
    }
    let o = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .context("running git log")?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || s.is_empty() {
        bail!("cannot read HEAD's commit time: set SOURCE_DATE_EPOCH");
    }
    Ok(s)
}

/// Directories the package owns (the kernel dirs), for `%dir`.
fn owned_dirs(files: &[Entry]) -> Vec<String> {
    let mut d: Vec<String> = files
        .iter()
        .filter_map(|e| {
            e.dest
                .strip_prefix("/var/lib/qubes/vm-kernels/")
                .and_then(|r| r.split('/').next())
                .map(|k| format!("/var/lib/qubes/vm-kernels/{k}"))
        })
        .collect();
    d.sort();
    d.dedup();
    d
}

/// Builds one package from `files` into `out`; returns the .rpm path.
fn build_one(
    root: &Path,
    work: &Path,
    out: &Path,
    name: &str,
    files: &[Entry],
    epoch: &str,
) -> Result<PathBuf> {
    let stage = work.join(format!("stage-{name}"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let mut list = String::new();
    for d in owned_dirs(files) {
        list.push_str(&format!("%dir %attr(0755,root,root) {d}\n"));
    }
    for e in files {
        let p = stage.join(e.dest.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap())?;
        match &e.source {
            Source::File(s) => {
                fs::copy(s, &p).with_context(|| format!("copying {}", s.display()))?;
            }
            Source::Bytes(b) => fs::write(&p, b)?,
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))?;
        let cfg = if e.config { "%config(noreplace) " } else { "" };
        list.push_str(&format!(
            "{cfg}%attr({:04o},root,root) {}\n",
            e.mode, e.dest
        ));
    }
    let list_path = work.join(format!("{name}.files"));
    fs::write(&list_path, list)?;
    let spec = root.join(format!("rpm/{name}.spec"));
    let topdir = work.join(format!("top-{name}"));
    if topdir.exists() {
        fs::remove_dir_all(&topdir)?;
    }
    fs::create_dir_all(&topdir)?;
    let def = |k: &str, v: &str| ["--define".to_string(), format!("{k} {v}")];
    let mut c = Command::new("rpmbuild");
    c.arg("-bb")
        .args(def("_topdir", &topdir.to_string_lossy()))
        .args(def("_rpmdir", &out.to_string_lossy()))
        .args(def(
            "_build_name_fmt",
            "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
        ))
        .args(def("_buildhost", "reproducible"))
        .args(def("use_source_date_epoch_as_buildtime", "1"))
        .args(def("clamp_mtime_to_source_date_epoch", "1"))
        .args(def("_binary_payload", "w9.gzdio"))
        .args(def("_build_id_links", "none"))
        .args(def("bundle_version", VERSION))
        .args(def("bundle_stage", &stage.to_string_lossy()))
        .args(def("bundle_files", &list_path.to_string_lossy()))
        .arg(&spec)
        .env("SOURCE_DATE_EPOCH", epoch)
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    run(&mut c)?;
    let rpm = out.join(format!("{name}-{VERSION}-1.noarch.rpm"));
    if !rpm.is_file() {
        bail!("rpmbuild did not produce {}", rpm.display());
    }
    Ok(rpm)
}

fn sha256_hex(p: &Path) -> Result<String> {
    let b = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Sha256::digest(&b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect())
}

/// Builds both packages into `out` from the images already built.
pub fn build_packages(root: &Path, out: &Path, epoch: &str) -> Result<Vec<PathBuf>> {
    deps::apt_install(&["rpm"])?;
    let all = entries(root)?;
    fs::create_dir_all(out)?;
    let work = root.join("target/rpm-work");
    fs::create_dir_all(&work)?;
    let mut rpms = Vec::new();
    for name in [DOM0, VM] {
        let files = all.get(name).cloned().unwrap_or_default();
        rpms.push(build_one(root, &work, out, name, &files, epoch)?);
    }
    Ok(rpms)
}

/// `cargo xtask rpm`: images, then both packages, then the sha256 of every kernel.
pub fn rpm(root: &Path) -> Result<()> {
    build::build_images(root)?;
    let out = root.join("target/rpm");
    let epoch = source_date_epoch(root)?;
    let rpms = build_packages(root, &out, &epoch)?;
    let deb = build_vm_deb(root, &out, &epoch)?;
    for (image, dir) in KERNELS {
        let k = root.join("target/unikernels").join(image).join("vmlinuz");
        if k.is_file() {
            println!("sha256 {}  {dir}/vmlinuz", sha256_hex(&k)?);
        } else {
            println!("missing {dir}/vmlinuz: the {image} image is not built yet");
        }
    }
    for r in rpms.iter().chain([&deb]) {
        println!("built {}", r.display());
    }
    Ok(())
}

/// The template package as a .deb (Debian templates), from the same entries as its RPM.
pub fn build_vm_deb(root: &Path, out: &Path, epoch: &str) -> Result<PathBuf> {
    let files = entries(root)?.get(VM).cloned().unwrap_or_default();
    let work = root.join("target/rpm-work");
    fs::create_dir_all(&work)?;
    deb::build_deb(root, &work, out, &files, epoch)
}

/// Results of the package checks, one line each, then `N passed, N failed`.
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn check(&mut self, what: &str, r: Result<()>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("ok   {what}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {what}: {e:#}");
            }
        }
        let _ = std::io::stdout().flush();
    }
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `rpm -qlp --dump` of `rpm` equals the expected files and modes.
fn check_listing(rpm: &Path, files: &[Entry]) -> Result<()> {
    let dump = output(Command::new("rpm").args(["-qp", "--dump"]).arg(rpm))?;
    let mut got: BTreeMap<String, u32> = BTreeMap::new();
    for line in dump.lines() {
        // path size mtime digest mode owner group isconfig isdoc rdev symlink
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            bail!("unexpected rpm --dump line {line:?}");
        }
        let mode = u32::from_str_radix(f[4], 8)?;
        got.insert(f[0].to_string(), mode & 0o7777);
    }
    let mut want: BTreeMap<String, u32> = files.iter().map(|e| (e.dest.clone(), e.mode)).collect();
    for d in owned_dirs(files) {
        want.insert(d, 0o755);
    }
    if got != want {
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .collect();
        bail!("listing differs: unexpected {extra:?}, missing {missing:?}");
    }
    Ok(())
}

/// Installs into a scratch root, checks the files and modes there, uninstalls, checks they
/// are gone.
fn check_install(rpm: &Path, name: &str, files: &[Entry], scratch: &Path) -> Result<()> {
    if scratch.exists() {
        fs::remove_dir_all(scratch)?;
    }
    fs::create_dir_all(scratch)?;
    run(Command::new("rpm")
        .arg("--root")
        .arg(scratch)
        .arg("--initdb"))?;
    run(Command::new("rpm")
        .arg("--root")
        .arg(scratch)
        .args(["-i", "--nodeps", "--noscripts", "--ignoreos"])
        .arg(rpm))?;
    for e in files {
        let p = scratch.join(e.dest.trim_start_matches('/'));
        let m = fs::metadata(&p)
            .with_context(|| format!("{} not installed", e.dest))?
            .permissions()
            .mode()
            & 0o7777;
        if m != e.mode {
            bail!("{} installed with mode {m:o}, want {:o}", e.dest, e.mode);
        }
        if let Source::File(s) = &e.source {
            if fs::read(s)? != fs::read(&p)? {
                bail!("{} differs from {}", e.dest, s.display());
            }
        }
    }
    let q = output(
        Command::new("rpm")
            .arg("--root")
            .arg(scratch)
            .args(["-q", name]),
    )?;
    if !q.starts_with(name) {
        bail!("rpm -q {name} says {q:?}");
    }
    run(Command::new("rpm").arg("--root").arg(scratch).args([
        "-e",
        "--nodeps",
        "--noscripts",
        name,
    ]))?;
    for e in files {
        if scratch.join(e.dest.trim_start_matches('/')).exists() {
            bail!("{} is still there after uninstall", e.dest);
        }
    }
    Ok(())
}

/// The package checks `cargo xtask test` runs after the images are built.
pub fn check(root: &Path) -> Result<()> {
    let all = entries(root)?;
    let mut r = Report {
        passed: 0,
        failed: 0,
    };
    let a = root.join(CHECK_DIR);
    let b = root.join("target/rpm-check/b");
    for d in [&a, &b] {
        if d.exists() {
            fs::remove_dir_all(d)?;
        }
    }
    let epoch = source_date_epoch(root)?;
    let mut first = build_packages(root, &a, &epoch)?;
    let mut second = build_packages(root, &b, &epoch)?;
    first.push(build_vm_deb(root, &a, &epoch)?);
    second.push(build_vm_deb(root, &b, &epoch)?);
    for (x, y) in first.iter().zip(&second) {
        let name = x.file_name().unwrap().to_string_lossy().into_owned();
        r.check(&format!("two builds of {name} are byte-identical"), {
            match (sha256_hex(x), sha256_hex(y)) {
                (Ok(h1), Ok(h2)) if h1 == h2 => Ok(()),
                (Ok(h1), Ok(h2)) => Err(anyhow::anyhow!("sha256 {h1} vs {h2}")),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        });
    }
    for (rpm, name) in first.iter().zip([DOM0, VM]) {
        let files = all.get(name).cloned().unwrap_or_default();
        r.check(
            &format!("rpm -qp --dump {name} lists exactly the expected files and modes"),
            check_listing(rpm, &files),
        );
        r.check(
            &format!("{name} installs into a scratch --root and uninstalls cleanly"),
            check_install(rpm, name, &files, &root.join("target/rpm-check/root")),
        );
    }
    let vm_files = all.get(VM).cloned().unwrap_or_default();
    let (vm_rpm, vm_deb) = (&first[1], &first[2]);
    let deb_name = deb::deb_name();
    r.check(
        &format!("dpkg-deb --contents {deb_name} lists exactly the {VM} RPM's files and modes"),
        deb::check_listing(vm_deb, vm_rpm, &vm_files, &epoch),
    );
    r.check(
        &format!("{deb_name}'s control (package, version, depends) and conffiles match the RPM"),
        deb::check_control(vm_deb, vm_rpm),
    );
    r.check(
        &format!("{deb_name} installs with dpkg --root into a scratch root and purges cleanly"),
        deb::check_install(vm_deb, &vm_files, &root.join("target/rpm-check/deb-root")),
    );
    r.check(
        &format!("{deb_name} installed: GLib opens PNGs with the viewer in an X-QUBES session, the user's mimeapps.list still wins"),
        deb::check_png_default(vm_deb, &root.join("target/rpm-check/deb-root")),
    );
    println!("packages: {} passed, {} failed", r.passed, r.failed);
    if r.failed > 0 {
        bail!("{} package check(s) failed", r.failed);
    }
    Ok(())
}
