//! Policy glue: the `policy.d` directory read from disk, the system model from the registry
//! and power states, and the `ask` prompt hook (an answer from a file or the environment).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use qubes::policy::{
    CallTarget, Limits, Policy, PolicyError, PolicySource, Qube, QubeType, SourceError, System,
};

use crate::registry::{Class, Registry};

/// The policy directory inside the state directory.
pub const POLICY_DIR: &str = "policy.d";
/// The `ask` answer: `allow`, `allow:<qube>`, `deny`, or `tty` to ask the person at the sim's
/// terminal (first line of `<state>/ask`, else this environment variable of the sim, else deny
/// as if the user closed the dialog).
pub const ENV_ASK: &str = "QUBES_SIM_ASK";
/// Largest policy file read.
const MAX_FILE: u64 = 1 << 20;

/// Policy files from the real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsSource;

impl PolicySource for FsSource {
    fn read_file(&self, path: &str) -> Result<String, SourceError> {
        let meta = fs::metadata(path).map_err(|_| SourceError::NotFound)?;
        if !meta.is_file() {
            return Err(SourceError::NotAFile);
        }
        let mut s = String::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE).read_to_string(&mut s))
            .map_err(|_| SourceError::Unreadable)?;
        Ok(s)
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let rd = fs::read_dir(dir).map_err(|_| SourceError::NotADirectory)?;
        Ok(rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
}

/// Extra policy directories, `:`-separated (empty: none); unset means the project's
/// `qubes-rpc/policy.d` when it exists.
pub const ENV_POLICY_DIRS: &str = "QUBES_SIM_POLICY_DIRS";
/// dom0's service directories, `:`-separated; unset means the project's
/// `qubes-rpc/dom0-services` when it exists. `<state>/dom0/qubes-rpc` is searched last.
pub const ENV_DOM0_RPC: &str = "QUBES_SIM_DOM0_RPC";

/// The project's `qubes-rpc/` directory (policy files and per-app service files).
pub fn project_rpc_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).join("qubes-rpc")
}

fn dirs_from_env(var: &str, default: PathBuf) -> Vec<PathBuf> {
    match std::env::var_os(var) {
        Some(v) => std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        None => Some(default).filter(|d| d.is_dir()).into_iter().collect(),
    }
}

/// The other policy directories: [`ENV_POLICY_DIRS`], or the project's `qubes-rpc/policy.d`.
pub fn extra_policy_dirs() -> Vec<PathBuf> {
    dirs_from_env(ENV_POLICY_DIRS, project_rpc_dir().join(POLICY_DIR))
}

/// dom0's `qubes-rpc` directories, first found wins.
pub fn dom0_rpc_dirs(state: &Path) -> Vec<PathBuf> {
    let mut v = dirs_from_env(ENV_DOM0_RPC, project_rpc_dir().join("dom0-services"));
    v.push(state.join("dom0").join("qubes-rpc"));
    v
}

/// Loads the policy: `<state>/policy.d`, then [`extra_policy_dirs`].
pub fn load(state: &Path) -> Result<Policy, PolicyError> {
    load_with(state, &extra_policy_dirs())
}

/// Loads `<state>/policy.d` and `extra`: the files of all of them in file-name order, as in
/// `/etc/qubes/policy.d`; a file of the state directory shadows a same-named one.
pub fn load_with(state: &Path, extra: &[PathBuf]) -> Result<Policy, PolicyError> {
    let dirs: Vec<String> = std::iter::once(state.join(POLICY_DIR))
        .chain(extra.iter().cloned())
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    Policy::load(&FsSource, &refs, Limits::DEFAULT)
}

fn kind(c: Class) -> QubeType {
    match c {
        Class::AppVM => QubeType::AppVM,
        Class::TemplateVM => QubeType::TemplateVM,
        Class::StandaloneVM => QubeType::StandaloneVM,
        Class::DispVM => QubeType::DispVM,
        Class::AdminVM => QubeType::AdminVM,
    }
}

/// The policy's view of the registry; `running` names the qubes that run now.
pub fn system(reg: &Registry, running: &BTreeMap<String, bool>) -> System {
    let mut sys = System::new();
    for d in reg.domains.values().filter(|d| d.domid != 0) {
        let mut q = Qube::new(&d.name, kind(d.class));
        q.tags = d.tags.clone();
        if !d.prefs.default_dispvm.is_empty() {
            q = q.default_dispvm(&d.prefs.default_dispvm);
        }
        q.template_for_dispvms = d.prefs.template_for_dispvms;
        q.running = running.get(&d.name).copied().unwrap_or(false);
        sys.add(q);
    }
    sys
}

/// What an answer line picks: `allow` takes the default target (or the only choice),
/// `allow:<name>` a listed choice by name; anything else refuses.
pub fn choose(
    answer: &str,
    targets: &[CallTarget],
    default: Option<&CallTarget>,
) -> Option<CallTarget> {
    let answer = answer.trim();
    match answer.strip_prefix("allow:") {
        Some(name) => targets.iter().find(|t| t.to_string() == name).cloned(),
        None if answer == "allow" => match (default, targets) {
            (Some(d), _) => Some(d.clone()),
            (None, [only]) => Some(only.clone()),
            _ => None,
        },
        None => None,
    }
}

/// The prompt hook's answer for an `ask` with these choices: the chosen target, or `None`.
pub fn ask(
    state: &Path,
    question: &str,
    targets: &[CallTarget],
    default: Option<&CallTarget>,
) -> Option<CallTarget> {
    let answer = fs::read_to_string(state.join("ask"))
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .or_else(|| std::env::var(ENV_ASK).ok())
        .unwrap_or_else(|| "deny".into());
    let answer = if answer.trim() == "tty" {
        ask_tty(question, targets, default)
    } else {
        answer
    };
    let choice = choose(&answer, targets, default);
    eprintln!(
        "qubes-sim: ask: {question}: choices {:?} -> {}",
        targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        choice
            .as_ref()
            .map_or("deny".to_string(), ToString::to_string)
    );
    choice
}

/// Dom0's confirmation dialog as a terminal prompt on `/dev/tty`: the answer in the hook's
/// words (`allow`, `allow:<qube>` or `deny`). No terminal, or no answer, is a deny.
fn ask_tty(question: &str, targets: &[CallTarget], default: Option<&CallTarget>) -> String {
    use std::io::{BufRead, Read, Write};
    let Ok(tty) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        eprintln!("qubes-sim: ask: no terminal to ask on; denied");
        return "deny".into();
    };
    let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let dflt = default.map_or_else(
        || names.first().cloned().unwrap_or_default(),
        |d| d.to_string(),
    );
    let mut out = &tty;
    let _ = write!(
        out,
        "\ndom0 asks: {question}\n  targets: {}\n  allow to {dflt}? [y = yes, a target name, anything else = no]: ",
        names.join(", ")
    );
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::BufReader::new(&tty).take(256).read_line(&mut line);
    match line.trim() {
        "y" | "Y" | "yes" if !dflt.is_empty() => format!("allow:{dflt}"),
        t if names.iter().any(|n| n == t) => format!("allow:{t}"),
        _ => "deny".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: &str) -> CallTarget {
        CallTarget::Qube(n.into())
    }

    #[test]
    fn ask_answers_pick_only_offered_targets() {
        let two = [q("a"), q("b")];
        assert_eq!(choose("allow", &two, Some(&q("b"))), Some(q("b")));
        assert_eq!(
            choose("allow", &two, None),
            None,
            "ambiguous without a default"
        );
        assert_eq!(choose("allow", &[q("a")], None), Some(q("a")));
        assert_eq!(choose(" allow:a\n", &two, Some(&q("b"))), Some(q("a")));
        assert_eq!(choose("allow:c", &two, Some(&q("b"))), None, "not offered");
        assert_eq!(choose("deny", &two, Some(&q("b"))), None);
        assert_eq!(choose("", &two, Some(&q("b"))), None);
        assert_eq!(choose("yes", &two, Some(&q("b"))), None);
    }

    #[test]
    fn missing_policy_directory_fails_closed() {
        let dir = std::env::temp_dir().join(format!("qsim-nopolicy-{}", std::process::id()));
        assert!(load(&dir).is_err());
    }
}
