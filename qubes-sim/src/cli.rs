//! The qvm-* stand-ins: Qubes' command-line syntax over the registry (and, for power state and
//! qrexec, the running sim). Errors are one line: `qvm-create: error: …`, exit status 1 or 2.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::admin::{self, Request};
use crate::registry::{parse_size, Class, Registry, PREF_NAMES};

/// Environment variable naming the sim's state directory.
pub const ENV_STATE: &str = "QUBES_SIM_DIR";

/// The state directory: `$QUBES_SIM_DIR`, else `/tmp/qubes-sim-<uid name>`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os(ENV_STATE) {
        Some(d) => PathBuf::from(d),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            std::env::temp_dir().join(format!("qubes-sim-{user}"))
        }
    }
}

/// A usage error (exit status 2, like argparse).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(Usage(msg.into()).into())
}

/// Splits `--opt value`, `--opt=value` and `-o value` options from positional arguments.
struct Args {
    rest: std::collections::VecDeque<String>,
}

impl Args {
    fn new(args: &[String]) -> Args {
        Args {
            rest: args.iter().cloned().collect(),
        }
    }

    fn next(&mut self) -> Option<String> {
        self.rest.pop_front()
    }

    /// The value of an option just taken (`--x=v` or the next argument).
    fn value(&mut self, opt: &str, inline: Option<&str>) -> Result<String> {
        match inline {
            Some(v) => Ok(v.to_string()),
            None => match self.next() {
                Some(v) => Ok(v),
                None => usage(format!("argument {opt}: expected one argument")),
            },
        }
    }
}

fn split_opt(a: &str) -> (&str, Option<&str>) {
    match a.split_once('=') {
        Some((o, v)) if o.starts_with("--") => (o, Some(v)),
        _ => (a, None),
    }
}

/// Runs a qvm-* command; returns its exit status.
pub fn run(prog: &str, args: &[String]) -> Result<i32> {
    let state = state_dir();
    match prog {
        "qvm-create" => qvm_create(&state, args),
        "qvm-prefs" => qvm_prefs(&state, args),
        "qvm-features" => qvm_features(&state, args),
        "qvm-volume" => qvm_volume(&state, args),
        "qvm-ls" => qvm_ls(&state, args),
        "qvm-tags" => qvm_tags(&state, args),
        "qvm-start" => power(&state, args, |vm| Request::Start { vm }),
        "qvm-kill" => power(&state, args, |vm| Request::Kill { vm }),
        "qvm-shutdown" => qvm_shutdown(&state, args),
        "qvm-remove" => qvm_remove(&state, args),
        "qvm-run" => crate::dom0call::qvm_run(&state, args),
        "qvm-firewall" => crate::firewall::qvm_firewall(&state, args),
        "qvm-gui-input" => qvm_gui_input(&state, args),
        _ => usage(format!("unknown command {prog:?}")),
    }
}

fn qvm_create(state: &Path, args: &[String]) -> Result<i32> {
    let mut a = Args::new(args);
    let (mut class, mut label, mut template, mut name) = (Class::AppVM, None, None, None);
    let mut props = Vec::new();
    while let Some(arg) = a.next() {
        let (opt, inline) = split_opt(&arg);
        match opt {
            "-C" | "--class" => {
                let v = a.value(opt, inline)?;
                class = Class::from_name(&v)
                    .ok_or_else(|| Usage(format!("no such domain class: {v:?}")))?;
            }
            "-l" | "--label" => label = Some(a.value(opt, inline)?),
            "-t" | "--template" => template = Some(a.value(opt, inline)?),
            "-P" | "--prop" | "--property" => {
                let v = a.value(opt, inline)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| Usage(format!("property must be NAME=VALUE: {v:?}")))?;
                props.push((k.to_string(), val.to_string()));
            }
            o if o.starts_with('-') => return usage(format!("unrecognized arguments: {o}")),
            _ if name.is_some() => return usage(format!("unrecognized arguments: {arg}")),
            _ => name = Some(arg),
        }
    }
    let Some(name) = name else {
        return usage("the following arguments are required: VMNAME");
    };
    let Some(label) = label else {
        return usage("--label option is mandatory");
    };
    Registry::update(state, |reg| {
        reg.create(&name, class, &label)?;
        let mut apply = || -> Result<()> {
            if let Some(t) = &template {
                reg.set_pref(&name, "template", t)?;
            }
            for (k, v) in &props {
                reg.set_pref(&name, k, v)?;
            }
            Ok(())
        };
        // A failed property leaves nothing behind, as qubesd removes the half-made qube.
        if let Err(e) = apply() {
            reg.domains.remove(&name);
            return Err(e);
        }
        Ok(())
    })?;
    Ok(0)
}

fn qvm_prefs(state: &Path, args: &[String]) -> Result<i32> {
    let mut a = Args::new(args);
    let (mut reset, mut pos) = (false, Vec::new());
    while let Some(arg) = a.next() {
        match arg.as_str() {
            "-D" | "--default" => reset = true,
            "--get" | "-g" | "--set" | "-s" => {}
            o if o.starts_with('-') && o.len() > 1 => {
                return usage(format!("unrecognized arguments: {o}"))
            }
            _ => pos.push(arg),
        }
    }
    match (pos.as_slice(), reset) {
        ([vm], false) => {
            let reg = Registry::load(state)?;
            let d = reg.get(vm)?;
            let width = PREF_NAMES.iter().map(|p| p.len()).max().unwrap_or(0);
            for p in PREF_NAMES {
                println!("{p:<width$}  -  {}", d.get_pref(p)?);
            }
            Ok(0)
        }
        ([vm, prop], false) => {
            println!("{}", Registry::load(state)?.get(vm)?.get_pref(prop)?);
            Ok(0)
        }
        ([vm, prop, value], false) => {
            Registry::update(state, |reg| reg.set_pref(vm, prop, value))?;
            refresh_qdb(state)
        }
        ([vm, prop], true) => {
            let default = crate::registry::Domain::new("x", 1, Class::AppVM, "red");
            let value = default.get_pref(prop)?;
            Registry::update(state, |reg| reg.set_pref(vm, prop, &value))?;
            refresh_qdb(state)
        }
        ([], _) => usage("the following arguments are required: VMNAME"),
        _ => usage("unrecognized arguments"),
    }
}

fn is_feature_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn qvm_features(state: &Path, args: &[String]) -> Result<i32> {
    let mut a = Args::new(args);
    let (mut unset, mut pos) = (false, Vec::new());
    while let Some(arg) = a.next() {
        match arg.as_str() {
            "-D" | "--unset" | "--delete" => unset = true,
            o if o.starts_with('-') && o.len() > 1 => {
                return usage(format!("unrecognized arguments: {o}"))
            }
            _ => pos.push(arg),
        }
    }
    match (pos.as_slice(), unset) {
        ([vm], false) => {
            let reg = Registry::load(state)?;
            let d = reg.get(vm)?;
            let width = d.features.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in &d.features {
                println!("{k:<width$}  {v}");
            }
            Ok(0)
        }
        ([vm, feat], false) => {
            let reg = Registry::load(state)?;
            match reg.get(vm)?.features.get(feat) {
                Some(v) => {
                    println!("{v}");
                    Ok(0)
                }
                // qvm-features prints nothing and fails for a missing feature.
                None => Ok(1),
            }
        }
        ([vm, feat, value], false) => {
            if !is_feature_name(feat) {
                bail!("invalid feature name: {feat:?}");
            }
            if value.contains(['\n', '\0']) {
                bail!("invalid value for feature {feat:?}");
            }
            Registry::update(state, |reg| {
                let d = reg
                    .domains
                    .get_mut(vm)
                    .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
                if d.features.len() >= 1024 && !d.features.contains_key(feat) {
                    bail!("too many features on {vm:?}");
                }
                d.features.insert(feat.clone(), value.clone());
                Ok(())
            })?;
            refresh_qdb(state)
        }
        ([vm, feat], true) => {
            Registry::update(state, |reg| {
                let d = reg
                    .domains
                    .get_mut(vm)
                    .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
                d.features.remove(feat);
                Ok(())
            })?;
            refresh_qdb(state)
        }
        ([], _) => usage("the following arguments are required: VMNAME"),
        _ => usage("unrecognized arguments"),
    }
}

fn qvm_tags(state: &Path, args: &[String]) -> Result<i32> {
    match args {
        [vm] | [vm, _] if args.get(1).is_none_or(|s| s == "list") => {
            for t in &Registry::load(state)?.get(vm)?.tags {
                println!("{t}");
            }
            Ok(0)
        }
        [vm, op, tags @ ..] if (op == "add" || op == "del") && !tags.is_empty() => {
            for t in tags {
                if !is_feature_name(t) || t.contains('.') {
                    bail!("invalid tag: {t:?}");
                }
            }
            Registry::update(state, |reg| {
                let d = reg
                    .domains
                    .get_mut(vm)
                    .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
                for t in tags {
                    d.tags.retain(|x| x != t);
                    if op == "add" {
                        d.tags.push(t.clone());
                    }
                }
                d.tags.sort();
                Ok(())
            })?;
            Ok(0)
        }
        _ => usage("usage: qvm-tags VMNAME [list | add TAG... | del TAG...]"),
    }
}

fn fmt_size(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (u, s) in UNITS {
        if n >= 1 << s && n.is_multiple_of(1 << s) {
            return format!("{}{u}", n >> s);
        }
    }
    format!("{n}")
}

fn qvm_volume(state: &Path, args: &[String]) -> Result<i32> {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("list", args),
    };
    match (cmd, rest) {
        ("list" | "ls", vms) => {
            let reg = Registry::load(state)?;
            println!(
                "{:<24} {:<10} {:>10} {:>3}",
                "POOL:VOLUME", "VMNAME", "SIZE", "RW"
            );
            for d in reg.domains.values() {
                if !vms.is_empty() && !vms.contains(&d.name) {
                    continue;
                }
                for (vname, v) in &d.volumes {
                    let pv = format!("{}:{}/{vname}", v.pool, d.name);
                    let rw = if v.rw { "Yes" } else { "No" };
                    println!("{pv:<24} {:<10} {:>10} {rw:>3}", d.name, fmt_size(v.size));
                }
            }
            for vm in vms {
                reg.get(vm)?;
            }
            Ok(0)
        }
        ("resize" | "extend", [target, size]) => {
            let (vm, vol) = target
                .split_once(':')
                .ok_or_else(|| Usage(format!("expected VM:VOLUME, got {target:?}")))?;
            let size = parse_size(size).ok_or_else(|| anyhow!("invalid size: {size:?}"))?;
            Registry::update(state, |reg| {
                let d = reg
                    .domains
                    .get_mut(vm)
                    .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
                let v = d
                    .volumes
                    .get_mut(vol)
                    .ok_or_else(|| anyhow!("no such volume: {vol:?}"))?;
                if !v.rw {
                    bail!("volume {vm}:{vol} is read-only");
                }
                if size < v.size {
                    bail!(
                        "for your own safety, shrinking of {vol} is disabled ({} < {})",
                        size,
                        v.size
                    );
                }
                v.size = size;
                Ok(())
            })?;
            // A hosted unikernel's image grows now; the qube sees the new size at its next
            // start (its vbd's `sectors`).
            if vol == "private" && crate::devices::private_image(state, vm).exists() {
                let reg = Registry::load(state)?;
                crate::devices::ensure_private_image(state, reg.get(vm)?)?;
            }
            Ok(0)
        }
        ("info", [target]) => {
            let (vm, vol) = target
                .split_once(':')
                .ok_or_else(|| Usage(format!("expected VM:VOLUME, got {target:?}")))?;
            let reg = Registry::load(state)?;
            let v = reg
                .get(vm)?
                .volumes
                .get(vol)
                .ok_or_else(|| anyhow!("no such volume: {vol:?}"))?;
            println!("pool            {}", v.pool);
            println!("rw              {}", v.rw);
            println!("size            {}", v.size);
            println!("snap_on_start   {}", v.snap_on_start);
            Ok(0)
        }
        _ => usage("usage: qvm-volume list [VM...] | resize VM:VOLUME SIZE | info VM:VOLUME"),
    }
}

/// The power state of every qube (all `Halted` when no sim runs).
pub fn states(state: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    Ok(admin::try_call(state, &Request::Status)?
        .map(|r| r.states)
        .unwrap_or_default())
}

fn qvm_ls(state: &Path, args: &[String]) -> Result<i32> {
    if let Some(a) = args.iter().find(|a| a.starts_with('-')) {
        return usage(format!("unrecognized arguments: {a}"));
    }
    let reg = Registry::load(state)?;
    for vm in args {
        reg.get(vm)?;
    }
    let states = states(state)?;
    println!(
        "{:<16} {:<8} {:<13} {:<7} {:<12} NETVM",
        "NAME", "STATE", "CLASS", "LABEL", "TEMPLATE"
    );
    for d in reg.domains.values() {
        if !args.is_empty() && !args.contains(&d.name) {
            continue;
        }
        let st = if d.domid == 0 {
            "Running"
        } else {
            states.get(&d.name).map_or("Halted", String::as_str)
        };
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        println!(
            "{:<16} {:<8} {:<13} {:<7} {:<12} {}",
            d.name,
            st,
            d.class,
            d.label,
            dash(&d.prefs.template),
            dash(&d.prefs.netvm)
        );
    }
    Ok(0)
}

fn power(state: &Path, args: &[String], req: impl Fn(String) -> Request) -> Result<i32> {
    if args.is_empty() {
        return usage("the following arguments are required: VMNAME");
    }
    let reg = Registry::load(state)?;
    for vm in args {
        reg.get(vm)?;
        admin::call(state, &req(vm.clone()))?;
    }
    Ok(0)
}

fn qvm_shutdown(state: &Path, args: &[String]) -> Result<i32> {
    let mut a = Args::new(args);
    let (mut timeout, mut vms) = (60u64, Vec::new());
    while let Some(arg) = a.next() {
        let (opt, inline) = split_opt(&arg);
        match opt {
            "--wait" | "--force" => {}
            "--timeout" => {
                let v = a.value(opt, inline)?;
                timeout = v
                    .parse()
                    .map_err(|_| Usage(format!("invalid timeout: {v:?}")))?;
            }
            o if o.starts_with('-') => return usage(format!("unrecognized arguments: {o}")),
            _ => vms.push(arg),
        }
    }
    power(state, &vms, |vm| Request::ShutdownVm { vm, timeout })
}

fn qvm_remove(state: &Path, args: &[String]) -> Result<i32> {
    let force = args.iter().any(|a| a == "-f" || a == "--force");
    let vms: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if let Some(a) = args
        .iter()
        .find(|a| a.starts_with('-') && *a != "-f" && *a != "--force")
    {
        return usage(format!("unrecognized arguments: {a}"));
    }
    if vms.is_empty() {
        return usage("the following arguments are required: VMNAME");
    }
    if !force {
        eprint!(
            "This will completely remove the selected VM(s): {}\nAre you sure? [y/N] ",
            vms.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(1);
        }
    }
    let running = states(state)?;
    Registry::update(state, |reg| {
        for vm in &vms {
            let d = reg.get(vm)?;
            if d.domid == 0 {
                bail!("cannot remove dom0");
            }
            if running.contains_key(vm.as_str()) {
                bail!("qube '{vm}' is running; shut it down first");
            }
            let users: Vec<&str> = reg
                .domains
                .values()
                .filter(|o| {
                    !vms.contains(&&o.name)
                        && [&o.prefs.template, &o.prefs.netvm, &o.prefs.default_dispvm]
                            .contains(&&**vm)
                })
                .map(|o| o.name.as_str())
                .collect();
            if !users.is_empty() {
                bail!("qube '{vm}' is in use by: {}", users.join(", "));
            }
        }
        for vm in &vms {
            reg.domains.remove(vm.as_str());
        }
        Ok(())
    })?;
    for vm in vms {
        let _ = std::fs::remove_dir_all(state.join("vms").join(vm));
    }
    Ok(0)
}

/// `qvm-gui-input VM (key NAME | click X Y | close)`: input for the qube's focused window.
fn qvm_gui_input(state: &Path, args: &[String]) -> Result<i32> {
    let Some((vm, input)) = args.split_first() else {
        return usage("usage: qvm-gui-input VM (key NAME | click X Y | close)");
    };
    if input.is_empty() {
        return usage("usage: qvm-gui-input VM (key NAME | click X Y | close)");
    }
    admin::call(
        state,
        &Request::GuiInput {
            vm: vm.clone(),
            input: input.to_vec(),
        },
    )?;
    Ok(0)
}

/// Asks a running sim to bring its qubes' QubesDB in line with the changed registry.
fn refresh_qdb(state: &Path) -> Result<i32> {
    if let Some(r) = admin::try_call(state, &Request::RefreshQdb)? {
        if let Some(e) = r.error {
            bail!("{e}");
        }
    }
    Ok(0)
}
