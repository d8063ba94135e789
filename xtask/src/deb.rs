//! The template package as a .deb for Debian templates: the VM package's files of
//! `rpm/files.list`, built reproducibly with dpkg-deb, and the checks `rpm check` runs on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::rpm::{output, Entry, Source, VM};
use crate::run;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The RPM's `Release: 1`, as the Debian revision: both packages carry the same version.
const REVISION: &str = "1";
const MAINTAINER: &str =
    "Qubes unikernel bundle maintainers <maintainers@users.noreply.r-seed-3dce4f6c.example>";
/// qvm-open-in-vm is qubes-core-agent's; it pulls in qrexec-client-vm (qubes-core-qrexec)
/// and qubesdb-read (qubesdb-vm). The scripts need nothing else beyond Essential packages
/// (bash, coreutils, findutils, grep): no python3, no socat.
const DEPENDS: &str = "qubes-core-agent";
/// Only `qpass -c` uses a clipboard tool, and any one of these does.
const SUGGESTS: &str = "xclip | wl-clipboard | xsel";

/// `NAME_VERSION-REVISION_all.deb`.
pub fn deb_name() -> String {
    format!("{VM}_{VERSION}-{REVISION}_all.deb")
}

/// Summary and description of the package, from its RPM spec (one text for both formats).
fn spec_text(root: &Path) -> Result<(String, Vec<String>)> {
    let path = root.join(format!("rpm/{VM}.spec"));
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("Summary:"))
        .map(|s| s.trim().to_string())
        .with_context(|| format!("{}: no Summary", path.display()))?;
    let body: Vec<String> = text
        .lines()
        .skip_while(|l| l.trim() != "%description")
        .skip(1)
        .take_while(|l| !l.starts_with('%'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let start = body
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |i| i + 1);
    Ok((summary, body[start..end].to_vec()))
}

/// `DEBIAN/control`, fields in dpkg's usual order.
fn control(root: &Path, installed_kib: u64) -> Result<String> {
    let (summary, body) = spec_text(root)?;
    let mut c = format!(
        "Package: {VM}\nVersion: {VERSION}-{REVISION}\nArchitecture: all\n\
         Maintainer: {MAINTAINER}\nInstalled-Size: {installed_kib}\nDepends: {DEPENDS}\n\
         Suggests: {SUGGESTS}\nSection: admin\nPriority: optional\nDescription: {summary}\n"
    );
    for l in body {
        // An empty line of the long description is written ` .` (Debian policy 5.6.13).
        if l.is_empty() {
            c.push_str(" .\n");
        } else {
            c.push_str(&format!(" {l}\n"));
        }
    }
    Ok(c)
}

/// Sets the mtime of `p` and, for a directory, of everything below it (children first, so
/// nothing changes a directory's time after it was set). dpkg-deb 1.21 clamps newer times to
/// SOURCE_DATE_EPOCH itself; older releases do not.
fn set_mtimes(p: &Path, t: SystemTime) -> Result<()> {
    if p.is_dir() {
        let mut kids: Vec<PathBuf> = fs::read_dir(p)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        kids.sort();
        for k in kids {
            set_mtimes(&k, t)?;
        }
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    }
    fs::File::open(p)
        .and_then(|f| f.set_modified(t))
        .with_context(|| format!("setting the mtime of {}", p.display()))
}

/// `DEBIAN/conffiles`: the `config` entries, which must be under /etc (dpkg would keep any
/// conffile as the admin's, but Debian policy allows them there only).
fn conffiles(files: &[Entry]) -> Result<String> {
    let mut out = String::new();
    for e in files.iter().filter(|e| e.config) {
        if !e.dest.starts_with("/etc/") {
            bail!("{} is marked config but is not under /etc", e.dest);
        }
        out.push_str(&e.dest);
        out.push('\n');
    }
    Ok(out)
}

/// Builds the .deb of `files` into `out` with every timestamp at `epoch`; returns its path.
pub fn build_deb(
    root: &Path,
    work: &Path,
    out: &Path,
    files: &[Entry],
    epoch: &str,
) -> Result<PathBuf> {
    let secs: u64 = epoch
        .parse()
        .with_context(|| format!("SOURCE_DATE_EPOCH {epoch:?} is not a number"))?;
    let stage = work.join(format!("stage-{VM}-deb"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let conffiles = conffiles(files)?;
    let mut kib = 0u64;
    let mut rel = Vec::new();
    for e in files {
        let r = e.dest.trim_start_matches('/');
        let p = stage.join(r);
        fs::create_dir_all(p.parent().context("a destination has a parent")?)?;
        match &e.source {
            Source::File(s) => {
                fs::copy(s, &p).with_context(|| format!("copying {}", s.display()))?;
            }
            Source::Bytes(b) => fs::write(&p, b)?,
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))?;
        kib += fs::metadata(&p)?.len().div_ceil(1024);
        rel.push(r.to_string());
    }
    // One KiB per directory besides the files, as dpkg-gencontrol counts.
    let dirs: BTreeSet<&str> = rel
        .iter()
        .flat_map(|r| r.match_indices('/').map(move |(i, _)| &r[..i]))
        .collect();
    kib += dirs.len() as u64;
    // No maintainer scripts, as the RPM has no scriptlets: desktop-file-utils' dpkg trigger
    // on /usr/share/applications refreshes mimeinfo.cache (Fedora's file trigger likewise).
    fs::write(debian.join("control"), control(root, kib)?)?;
    if !conffiles.is_empty() {
        fs::write(debian.join("conffiles"), conffiles)?;
    }
    rel.sort();
    let sums = output(
        Command::new("md5sum")
            .current_dir(&stage)
            .arg("--")
            .args(&rel),
    )?;
    fs::write(debian.join("md5sums"), sums)?;
    for f in fs::read_dir(&debian)? {
        fs::set_permissions(f?.path(), fs::Permissions::from_mode(0o644))?;
    }
    set_mtimes(&stage, SystemTime::UNIX_EPOCH + Duration::from_secs(secs))?;
    fs::create_dir_all(out)?;
    let deb = out.join(deb_name());
    // gzip rather than xz: its output does not depend on how many threads the encoder used.
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zgzip", "-z9"])
        .arg(&stage)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", epoch)
        .env("TZ", "UTC")
        .env("LC_ALL", "C"))?;
    Ok(deb)
}

/// `dpkg-deb --contents`: the regular files (path → mode) and the directories (path → mode),
/// each owned by root/root and dated `epoch`.
fn deb_listing(deb: &Path, epoch: &str) -> Result<(BTreeMap<String, u32>, BTreeMap<String, u32>)> {
    let date = output(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .arg(format!("--date=@{epoch}")),
    )?;
    let text = output(
        Command::new("dpkg-deb")
            .arg("--contents")
            .arg(deb)
            .env("TZ", "UTC"),
    )?;
    let (mut files, mut dirs) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        // -rwxr-xr-x root/root      7391 2026-11-27 17:04 ./usr/bin/qpass
        let f: Vec<&str> = line.split_whitespace().collect();
        let [perm, owner, _size, day, time, path] = f.as_slice() else {
            bail!("unexpected dpkg-deb --contents line {line:?}");
        };
        if *owner != "root/root" {
            bail!("{path} is owned by {owner}, not root/root");
        }
        if format!("{day} {time}") != date.trim() {
            bail!(
                "{path} is dated {day} {time}, not SOURCE_DATE_EPOCH ({})",
                date.trim()
            );
        }
        let mode = mode_bits(perm).with_context(|| format!("mode of {path}"))?;
        let dest = path.trim_start_matches('.').trim_end_matches('/');
        match perm.as_bytes().first() {
            Some(b'-') => files.insert(dest.to_string(), mode),
            Some(b'd') if dest.is_empty() => None,
            Some(b'd') => dirs.insert(dest.to_string(), mode),
            _ => bail!("{path}: neither a regular file nor a directory"),
        };
    }
    Ok((files, dirs))
}

/// `rwxr-xr-x` (after the type letter) → 0o755; set-id and sticky bits are refused.
fn mode_bits(perm: &str) -> Result<u32> {
    let b = perm.as_bytes();
    if b.len() != 10 {
        bail!("bad mode string {perm:?}");
    }
    let mut m = 0;
    for (i, c) in b[1..].iter().enumerate() {
        let want = b"rwxrwxrwx"[i];
        m <<= 1;
        if *c == want {
            m |= 1;
        } else if *c != b'-' {
            bail!("unexpected {:?} in mode {perm:?}", *c as char);
        }
    }
    Ok(m)
}

/// The .deb holds exactly the RPM's files with the RPM's modes (and the expected ones), only
/// the directories leading to them (0755), every entry root/root at SOURCE_DATE_EPOCH.
pub fn check_listing(deb: &Path, rpm: &Path, files: &[Entry], epoch: &str) -> Result<()> {
    let (got, dirs) = deb_listing(deb, epoch)?;
    let dump = output(Command::new("rpm").args(["-qp", "--dump"]).arg(rpm))?;
    let mut from_rpm = BTreeMap::new();
    for line in dump.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(path), Some(mode)) = (f.first(), f.get(4)) else {
            bail!("unexpected rpm --dump line {line:?}");
        };
        from_rpm.insert(path.to_string(), u32::from_str_radix(mode, 8)? & 0o7777);
    }
    let want: BTreeMap<String, u32> = files.iter().map(|e| (e.dest.clone(), e.mode)).collect();
    for (what, other) in [("the RPM", &from_rpm), ("files.list", &want)] {
        if &got != other {
            let diff = |a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>| -> Vec<String> {
                a.iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k} {v:o}"))
                    .collect()
            };
            let (extra, missing) = (diff(&got, other), diff(other, &got));
            bail!("the .deb differs from {what}: its own {extra:?}, only there {missing:?}");
        }
    }
    let mut parents = BTreeSet::new();
    for f in got.keys() {
        let mut p = Path::new(f);
        while let Some(d) = p.parent().filter(|d| *d != Path::new("/")) {
            parents.insert(d.to_string_lossy().into_owned());
            p = d;
        }
    }
    let listed: BTreeSet<String> = dirs.keys().cloned().collect();
    if listed != parents {
        bail!("directories {listed:?}, want the files' parents {parents:?}");
    }
    if let Some((d, m)) = dirs.iter().find(|(_, m)| **m != 0o755) {
        bail!("directory {d} has mode {m:o}, want 755");
    }
    Ok(())
}

/// Package, Version (the RPM's VERSION-RELEASE), Architecture, Depends, and conffiles equal to
/// the RPM's config files.
pub fn check_control(deb: &Path, rpm: &Path) -> Result<()> {
    let field = |f: &str| -> Result<String> {
        Ok(
            output(Command::new("dpkg-deb").arg("--field").arg(deb).arg(f))?
                .trim()
                .to_string(),
        )
    };
    let rpm_version = output(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{VERSION}-%{RELEASE}"])
            .arg(rpm),
    )?;
    for (f, want) in [
        ("Package", VM),
        ("Version", rpm_version.trim()),
        ("Architecture", "all"),
        ("Depends", DEPENDS),
    ] {
        let got = field(f)?;
        if got != want {
            bail!("{f}: {got:?}, want {want:?}");
        }
    }
    let rpm_conf: BTreeSet<String> =
        output(Command::new("rpm").args(["-qp", "--configfiles"]).arg(rpm))?
            .lines()
            .map(str::to_string)
            .collect();
    let deb_conf: BTreeSet<String> = output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    )
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect();
    if rpm_conf != deb_conf {
        bail!("conffiles {deb_conf:?}, the RPM's config files {rpm_conf:?}");
    }
    Ok(())
}

/// Every path under `root` (relative), directories included.
fn tree(root: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            out.insert(p.strip_prefix(root)?.to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    Ok(out)
}

/// An empty scratch root with an empty dpkg database; returns the paths it holds.
fn fresh_root(scratch: &Path) -> Result<BTreeSet<String>> {
    if scratch.exists() {
        fs::remove_dir_all(scratch)?;
    }
    let admin = scratch.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d))?;
    }
    for f in ["status", "available"] {
        fs::write(admin.join(f), "")?;
    }
    tree(scratch)
}

/// dpkg acting on `scratch` as its root.
fn dpkg_in(scratch: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", scratch.display()))
        .arg("--log=/dev/null")
        .env("LC_ALL", "C");
    c
}

/// `dpkg --root` into an empty scratch root: the files land with their modes and bytes,
/// dpkg says it is installed, and `--purge` leaves nothing but dpkg's own database, without
/// a trace of the package in it.
pub fn check_install(deb: &Path, files: &[Entry], scratch: &Path) -> Result<()> {
    let before = fresh_root(scratch)?;
    let admin = scratch.join("var/lib/dpkg");
    let dpkg = || dpkg_in(scratch);
    // The scratch root has no qubes-core-agent: only the dependency check is forced.
    run(dpkg().args(["--force-depends", "-i"]).arg(deb))?;
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
    let status = output(dpkg().args(["--status", VM]))?;
    if !status.lines().any(|l| l == "Status: install ok installed") {
        bail!("dpkg --status {VM} says {status:?}");
    }
    run(dpkg().args(["--purge", VM]))?;
    let left: Vec<String> = tree(scratch)?
        .into_iter()
        .filter(|p| !p.starts_with("var/lib/dpkg/") || p.contains(VM))
        .filter(|p| !before.contains(p))
        .collect();
    if !left.is_empty() {
        bail!("left after dpkg --purge: {left:?}");
    }
    let status = fs::read_to_string(admin.join("status"))?;
    if status.lines().any(|l| l == format!("Package: {VM}")) {
        bail!("dpkg's status still lists {VM} after --purge");
    }
    Ok(())
}

/// The desktop file the PNG routing names.
const VIEWER_DESKTOP: &str = "qubes-open-in-viewer-unikernel.desktop";

/// What GLib's `gio mime image/png` (the lookup of GTK file managers and `gio open`) answers
/// as the default application, in a session with only the given directories and desktop.
fn gio_default(aux: &Path, data_dirs: &str, desktop: &str, path: &str) -> Result<Option<String>> {
    let o = output(
        Command::new("gio")
            .args(["mime", "image/png"])
            .env_clear()
            .env("PATH", path)
            .env("HOME", aux.join("home"))
            .env("XDG_CONFIG_HOME", aux.join("home/.config"))
            .env("XDG_CONFIG_DIRS", aux.join("etc/xdg"))
            .env("XDG_DATA_HOME", aux.join("home/.local/share"))
            .env("XDG_DATA_DIRS", data_dirs)
            .env("XDG_CURRENT_DESKTOP", desktop)
            .env("LC_ALL", "C"),
    )?;
    Ok(o.lines()
        .find(|l| l.starts_with("Default application for"))
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, id)| id.trim().to_string()))
}

/// Installed from the .deb, the desktop file is valid (desktop-file-validate) and GLib picks
/// the viewer for image/png in a Qubes AppVM session (XDG_CURRENT_DESKTOP=X-QUBES), while a
/// user's own choice in ~/.config/mimeapps.list still wins and nothing routes PNGs to the
/// viewer where qvm-open-in-vm is absent (TryExec).
pub fn check_png_default(deb: &Path, scratch: &Path) -> Result<()> {
    // One at a time: apt-get installs only the missing one (no upgrade of the other).
    crate::deps::apt_install(&["libglib2.0-bin"])?;
    crate::deps::apt_install(&["desktop-file-utils"])?;
    fresh_root(scratch)?;
    run(dpkg_in(scratch).args(["--force-depends", "-i"]).arg(deb))?;
    let apps = scratch.join("usr/share/applications");
    run(Command::new("desktop-file-validate").arg(apps.join(VIEWER_DESKTOP)))?;
    // A stand-in for the agent's qvm-open-in-vm, and a second PNG application the user picks.
    let aux = scratch.with_extension("session");
    if aux.exists() {
        fs::remove_dir_all(&aux)?;
    }
    for d in ["bin", "share/applications", "home/.config", "etc/xdg"] {
        fs::create_dir_all(aux.join(d))?;
    }
    let fake = aux.join("bin/qvm-open-in-vm");
    fs::write(&fake, "#!/bin/sh\nexit 0\n")?;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755))?;
    fs::write(
        aux.join("share/applications/other-viewer.desktop"),
        "[Desktop Entry]\nType=Application\nName=Other viewer\nExec=true %f\nMimeType=image/png;\n",
    )?;
    let path = format!("{}:/usr/bin:/bin", aux.join("bin").display());
    let data = format!(
        "{}:{}",
        scratch.join("usr/share").display(),
        aux.join("share").display()
    );
    let got = gio_default(&aux, &data, "X-QUBES", &path)?;
    if got.as_deref() != Some(VIEWER_DESKTOP) {
        bail!("in an X-QUBES session the PNG default is {got:?}, want {VIEWER_DESKTOP}");
    }
    let got = gio_default(&aux, &data, "X-QUBES", "/usr/bin:/bin")?;
    if got.as_deref() == Some(VIEWER_DESKTOP) {
        bail!("the viewer is the PNG default even without qvm-open-in-vm");
    }
    fs::write(
        aux.join("home/.config/mimeapps.list"),
        "[Default Applications]\nimage/png=other-viewer.desktop;\n",
    )?;
    let got = gio_default(&aux, &data, "X-QUBES", &path)?;
    if got.as_deref() != Some("other-viewer.desktop") {
        bail!("the user's ~/.config/mimeapps.list choice lost: the PNG default is {got:?}");
    }
    run(dpkg_in(scratch).args(["--purge", VM]))?;
    fs::remove_dir_all(&aux)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_bits_reads_ls_style_modes() {
        assert_eq!(mode_bits("-rwxr-xr-x").unwrap(), 0o755);
        assert_eq!(mode_bits("-rw-r--r--").unwrap(), 0o644);
        assert_eq!(mode_bits("drwx------").unwrap(), 0o700);
        assert!(mode_bits("-rwsr-xr-x").is_err());
        assert!(mode_bits("-rw-r--r").is_err());
    }

    #[test]
    fn conffiles_are_the_config_entries_and_only_under_etc() {
        let e = |dest: &str, config| Entry {
            dest: dest.into(),
            mode: 0o644,
            source: Source::Bytes(Vec::new()),
            config,
        };
        let ok = [e("/etc/a.conf", true), e("/usr/bin/b", false)];
        assert_eq!(conffiles(&ok).unwrap(), "/etc/a.conf\n");
        assert!(conffiles(&[e("/usr/share/applications/x.list", true)]).is_err());
    }

    #[test]
    fn control_carries_the_spec_description_in_debian_form() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let c = control(root, 42).unwrap();
        assert!(
            c.starts_with(&format!("Package: {VM}\nVersion: {VERSION}-1\n")),
            "{c}"
        );
        assert!(c.contains("\nInstalled-Size: 42\n"), "{c}");
        let desc = c.split_once("\nDescription: ").unwrap().1;
        let mut lines = desc.lines();
        assert!(!lines.next().unwrap().is_empty());
        let rest: Vec<&str> = lines.collect();
        assert!(!rest.is_empty());
        assert!(
            rest.iter().all(|l| l.starts_with(' ') && l.len() > 1),
            "{rest:?}"
        );
    }
}
