//! Builds what the interop tests and benches run: the xen-shims (three shared libraries
//! linked from one static archive), the C peer over the real libxenvchan, our Rust peer and
//! the hosted xenstored. Release builds throughout.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// Paths of everything built.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// Directory holding `libxengnttab.so.1`, `libxenevtchn.so.1`, `libxenstore.so.4`.
    pub shim_dir: PathBuf,
    /// The C peer linked against Debian's libxenvchan.
    pub c_peer: PathBuf,
    /// Our peer (`platform/hosted/examples/vchan_peer.rs`).
    pub rust_peer: PathBuf,
    /// The hosted xenstored.
    pub xenstored: PathBuf,
}

/// The shim libraries: file name (= soname) and symbol-version script.
const SHIMS: &[(&str, &str)] = &[
    ("libxengnttab.so.1", "libxengnttab.map"),
    ("libxenevtchn.so.1", "libxenevtchn.map"),
    ("libxenstore.so.4", "libxenstore.map"),
];

/// What the Rust standard library needs when linked from a static archive
/// (`rustc --print native-static-libs`).
const RUST_NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The global symbols a version script exports (`name;` entries except `local`).
fn exported(map: &str) -> Vec<String> {
    map.split(|c: char| c.is_whitespace() || c == '{' || c == '}')
        .filter_map(|w| w.strip_suffix(';'))
        .filter(|w| !w.is_empty() && *w != "local" && !w.contains(':') && !w.contains('*'))
        .map(str::to_string)
        .collect()
}

/// Builds everything (release) and returns where it is.
pub fn build(root: &Path) -> Result<Artifacts> {
    crate::deps::apt_install(&["libxen-dev", "libxenmisc4.17", "gcc"])?;
    run(crate::cargo().args(["build", "--release", "-p", "xen-shims", "--lib"]))?;
    run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "platform-hosted",
        "--example",
        "vchan_peer",
        "--bin",
        "hosted-xenstored",
    ]))?;
    let rel = target_dir(root).join("release");
    let out = rel.join("interop");
    std::fs::create_dir_all(&out)?;
    let archive = rel.join("libxen_shims.a");
    for (lib, map) in SHIMS {
        let map_path = root.join("platform/xen-shims/vers").join(map);
        let text =
            std::fs::read_to_string(&map_path).with_context(|| format!("reading {map_path:?}"))?;
        let mut cmd = Command::new("gcc");
        cmd.args(["-shared", "-o"])
            .arg(out.join(lib))
            .arg(format!("-Wl,-soname,{lib}"))
            .arg(format!("-Wl,--version-script={}", map_path.display()))
            .arg("-Wl,--gc-sections");
        // Pull exactly the exported entry points (and what they need) out of the archive.
        for sym in exported(&text) {
            cmd.arg(format!("-Wl,-u,{sym}"));
        }
        cmd.arg(&archive).args(RUST_NATIVE_LIBS);
        run(&mut cmd)?;
    }
    let c_peer = out.join("vchan_peer_c");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&c_peer)
        .arg(root.join("tests/interop/vchan_peer.c"))
        .arg("-lxenvchan"))?;
    Ok(Artifacts {
        shim_dir: out,
        c_peer,
        rust_peer: rel.join("examples/vchan_peer"),
        xenstored: rel.join("hosted-xenstored"),
    })
}

#[cfg(test)]
mod tests {
    use super::exported;

    #[test]
    fn version_script_exports_are_listed() {
        let m = "VERS_1.0 {\n global:\n  a_b; c;\n local: *;\n};\n";
        assert_eq!(exported(m), ["a_b", "c"]);
    }
}
