//! `qubes.OpenInVM` both halves, as Qubes' qopen-in-vm / vm-file-editor speak it: the caller
//! sends a 256-byte NUL-padded file name, then the file; the editor sends it back if changed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::agent::{ENV_TEMPLATE_DIRS, ENV_VM_DIR};
use crate::cli::Usage;

/// `DVM_FILENAME_SIZE`: the name field, NUL-padded, last byte always NUL.
pub const NAME_LEN: usize = 256;
/// Largest file either side takes (the real tools have no bound; a sim should).
pub const MAX_FILE: u64 = 1 << 30;
/// The program a qube opens files with (in its own directory or a template's).
pub const OPENER: &str = "open-file";

/// The name field for `path`: its base name, cut from the left to 255 bytes as qopen-in-vm
/// does, NUL-padded.
pub fn name_field(path: &Path) -> Result<[u8; NAME_LEN]> {
    name_field_with(path, "")
}

/// `qopen-in-vm --view-only` sends the base name behind this prefix and takes nothing back.
pub const VIEW_ONLY_PREFIX: &str = "view-only-";

/// [`name_field`] with `prefix` before the base name.
pub fn name_field_with(path: &Path, prefix: &str) -> Result<[u8; NAME_LEN]> {
    let base = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let named = [prefix.as_bytes(), base.as_encoded_bytes()].concat();
    let b = named.as_slice();
    let b = b.get(b.len().saturating_sub(NAME_LEN - 1)..).unwrap_or(b);
    let mut f = [0u8; NAME_LEN];
    f[..b.len()].copy_from_slice(b);
    Ok(f)
}

/// The file name in a received name field: up to its first NUL (the last byte is forced to
/// NUL), refused if empty, `.`/`..` or containing `/`.
pub fn parse_name(field: &[u8; NAME_LEN]) -> Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN - 1);
    let name = std::str::from_utf8(&field[..end]).map_err(|_| anyhow!("file name is not UTF-8"))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        bail!("invalid file name {name:?}");
    }
    Ok(name.to_string())
}

/// `qvm-open-in-vm [--view-only] TARGET FILE` / `qvm-open-in-dvm [--view-only] FILE` inside
/// a qube: the file goes to the target's `qubes.OpenInVM`; what comes back (an edited copy)
/// replaces it, unless `--view-only`.
pub fn open_in_vm(target: &str, args: &[String]) -> Result<i32> {
    let usage = || {
        Usage(
            "usage: qvm-open-in-vm [--view-only] TARGET FILE (qvm-open-in-dvm [--view-only] FILE)"
                .into(),
        )
    };
    let (view_only, target, file) = match (target, args) {
        ("--view-only", [t, f]) => (true, t.as_str(), f),
        ("--view-only", _) => return Err(usage().into()),
        (t, [f]) => (false, t, f),
        ("@dispvm", [v, f]) if v == "--view-only" => (true, "@dispvm", f),
        _ => return Err(usage().into()),
    };
    let path = PathBuf::from(file);
    let field = name_field_with(&path, if view_only { VIEW_ONLY_PREFIX } else { "" })?;
    let data = std::fs::read(&path).with_context(|| format!("cannot read {file}"))?;
    let exe = std::env::current_exe().context("own executable")?;
    let mut child = Command::new(exe)
        .args(["qrexec-client-vm", target, "qubes.OpenInVM"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("qrexec-client-vm")?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        stdin.write_all(&field)?;
        stdin.write_all(&data)
        // Dropped: EOF tells the editor the file is complete.
    });
    let mut back = Vec::new();
    child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout"))?
        .take(MAX_FILE + 1)
        .read_to_end(&mut back)?;
    let status = child.wait()?;
    let _ = feeder.join();
    let code = crate::agent::status_code(status);
    if code != 0 {
        eprintln!("qvm-open-in-vm: the call failed with status {code}");
        return Ok(code);
    }
    if view_only {
        return Ok(0);
    }
    if back.len() as u64 > MAX_FILE {
        bail!("the edited file is larger than {MAX_FILE} bytes");
    }
    if !back.is_empty() {
        let tmp = path.with_file_name(format!(".{}.qvm-open", std::process::id()));
        std::fs::write(&tmp, &back).and_then(|()| std::fs::rename(&tmp, &path))?;
    }
    Ok(0)
}

fn opener() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(ENV_VM_DIR)
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(t) = std::env::var_os(ENV_TEMPLATE_DIRS) {
        dirs.extend(std::env::split_paths(&t));
    }
    dirs.iter()
        .map(|d| d.join(OPENER))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no application to open files with ({OPENER})"))
}

/// The service side (`vm-file-editor`): stores the file in a private directory, runs the
/// qube's `open-file` on it, and sends it back if the application changed it.
pub fn vm_file_editor() -> Result<i32> {
    let mut stdin = std::io::stdin().lock();
    let mut field = [0u8; NAME_LEN];
    stdin.read_exact(&mut field).context("file name")?;
    field[NAME_LEN - 1] = 0;
    let name = parse_name(&field)?;
    let base = std::env::var_os(ENV_VM_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("tmp")
        .join(format!("vm-file-editor-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let r = edit(&mut stdin, &base.join(&name));
    let _ = std::fs::remove_dir_all(&base);
    r
}

fn edit(stdin: &mut impl Read, path: &Path) -> Result<i32> {
    let mut data = Vec::new();
    stdin.take(MAX_FILE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE {
        bail!("file larger than {MAX_FILE} bytes");
    }
    std::fs::write(path, &data)?;
    let status = Command::new(opener()?)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("run the opener")?;
    if !status.success() {
        eprintln!("vm-file-editor: the application failed: {status}");
    }
    let after = std::fs::read(path).unwrap_or_default();
    if after != data {
        std::io::stdout().write_all(&after)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_field_round_trips_and_cuts_long_names_from_the_left() {
        let f = name_field(Path::new("/home/user/report.pdf")).unwrap();
        assert_eq!(&f[..11], b"report.pdf\0");
        assert!(f[10..].iter().all(|&b| b == 0));
        assert_eq!(parse_name(&f).unwrap(), "report.pdf");
        let long = format!("/x/{}.txt", "a".repeat(300));
        let f = name_field(Path::new(&long)).unwrap();
        assert_eq!(f[NAME_LEN - 1], 0);
        let n = parse_name(&f).unwrap();
        assert_eq!(n.len(), NAME_LEN - 1);
        assert!(n.ends_with(".txt"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc/passwd", b"\xff\xfe"] {
            let mut f = [0u8; NAME_LEN];
            f[..bad.len()].copy_from_slice(bad);
            assert!(parse_name(&f).is_err(), "{bad:?} accepted");
        }
        // No NUL at all: the name ends at byte 255, as the C editor forces it.
        let f = [b'a'; NAME_LEN];
        assert_eq!(parse_name(&f).unwrap().len(), NAME_LEN - 1);
    }
}
