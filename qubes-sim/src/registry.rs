//! The domain registry (`qubes.xml` of a real dom0): qubes, their prefs, features and volumes,
//! persisted as JSON in the sim's state directory and replaced atomically on every change.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The registry file inside the state directory.
pub const REGISTRY_FILE: &str = "qubes.json";
/// Largest registry file we read (a real dom0 has a few hundred qubes).
const MAX_REGISTRY_BYTES: u64 = 16 << 20;
/// Most qubes one registry holds (domids are u16 in Xen; 0 is dom0).
pub const MAX_QUBES: usize = 1000;
/// Longest qube name Qubes accepts.
pub const MAX_NAME_LEN: usize = 31;

/// A qube's class (`qvm-create --class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    /// A qube based on a template.
    AppVM,
    /// A template.
    TemplateVM,
    /// A qube with its own root image.
    StandaloneVM,
    /// A disposable.
    DispVM,
    /// dom0.
    AdminVM,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 5] = [
        Class::AppVM,
        Class::TemplateVM,
        Class::StandaloneVM,
        Class::DispVM,
        Class::AdminVM,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::AppVM => "AppVM",
            Class::TemplateVM => "TemplateVM",
            Class::StandaloneVM => "StandaloneVM",
            Class::DispVM => "DispVM",
            Class::AdminVM => "AdminVM",
        }
    }

    /// The class called `s`.
    pub fn from_name(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The labels (window border colours) Qubes ships.
pub const LABELS: [&str; 8] = [
    "red", "orange", "yellow", "green", "gray", "blue", "purple", "black",
];

/// The properties `qvm-prefs` shows and sets (missing ones load as their defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    /// Kernel name in the kernels pool (empty: the VM's own).
    pub kernel: String,
    /// Kernel command line.
    pub kernelopts: String,
    /// `pv`, `pvh` or `hvm`.
    pub virt_mode: String,
    /// Initial memory in MiB.
    pub memory: u32,
    /// Maximum memory in MiB (0: no balancing).
    pub maxmem: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Whether other qubes may use it as their netvm.
    pub provides_network: bool,
    /// Its network provider (empty: none).
    pub netvm: String,
    /// Its template (AppVM/DispVM).
    pub template: String,
    /// Whether disposables may be based on it.
    pub template_for_dispvms: bool,
    /// The disposable template `@dispvm` means for its calls.
    pub default_dispvm: String,
    /// The user `DEFAULT:` commands run as.
    pub default_user: String,
    /// Seconds to wait for its qrexec agent.
    pub qrexec_timeout: u32,
    /// Whether dom0 starts it at boot.
    pub autostart: bool,
    /// A disposable removed when its call ends.
    pub auto_cleanup: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            kernel: String::new(),
            kernelopts: String::new(),
            virt_mode: "pvh".into(),
            memory: 400,
            maxmem: 4000,
            vcpus: 2,
            provides_network: false,
            netvm: String::new(),
            template: String::new(),
            template_for_dispvms: false,
            default_dispvm: String::new(),
            default_user: "user".into(),
            qrexec_timeout: 60,
            autostart: false,
            auto_cleanup: false,
        }
    }
}

/// The names `qvm-prefs` knows, in listing order.
pub const PREF_NAMES: [&str; 19] = [
    "auto_cleanup",
    "autostart",
    "class",
    "default_dispvm",
    "default_user",
    "kernel",
    "kernelopts",
    "label",
    "maxmem",
    "memory",
    "name",
    "netvm",
    "provides_network",
    "qid",
    "qrexec_timeout",
    "template",
    "template_for_dispvms",
    "vcpus",
    "virt_mode",
];

/// One volume of a qube.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Size in bytes.
    pub size: u64,
    /// Writable by the qube.
    pub rw: bool,
    /// Reset at every start (a snapshot or volatile).
    pub snap_on_start: bool,
    /// Pool name.
    pub pool: String,
}

/// One qube.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Its name.
    pub name: String,
    /// Its domid while it runs in the sim (fixed at creation; dom0 is 0).
    pub domid: u32,
    /// Its class.
    pub class: Class,
    /// Its label.
    pub label: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its properties.
    pub prefs: Prefs,
    /// Its features (`qvm-features`).
    pub features: BTreeMap<String, String>,
    /// Its volumes by name.
    pub volumes: BTreeMap<String, Volume>,
    /// Its IPv4 address on its netvm's network (`10.137.x.y`), given once it needs one and
    /// kept for its life (empty: none yet).
    #[serde(default)]
    pub ip: String,
    /// Its firewall rules (`qvm-firewall`), first match wins; `None` is the default single
    /// `action=accept`.
    #[serde(default)]
    pub firewall: Option<Vec<crate::firewall::Rule>>,
}

const GIB: u64 = 1 << 30;
/// A new qube's private volume (Qubes' default).
const DEFAULT_PRIVATE: u64 = 2 * GIB;
/// A hosted unikernel's private volume unless resized (contract §3).
pub const UNIKERNEL_PRIVATE: u64 = 64 << 20;

fn default_volumes(class: Class) -> BTreeMap<String, Volume> {
    let vol = |size, rw, snap_on_start| Volume {
        size,
        rw,
        snap_on_start,
        pool: "vm-pool".into(),
    };
    let mut v = BTreeMap::new();
    match class {
        Class::AdminVM => {}
        Class::AppVM | Class::DispVM => {
            v.insert("root".into(), vol(20 * GIB, true, true));
            v.insert(
                "private".into(),
                vol(DEFAULT_PRIVATE, true, class == Class::DispVM),
            );
            v.insert("volatile".into(), vol(10 * GIB, true, true));
            v.insert("kernel".into(), vol(0, false, false));
        }
        Class::TemplateVM | Class::StandaloneVM => {
            v.insert("root".into(), vol(20 * GIB, true, false));
            v.insert("private".into(), vol(DEFAULT_PRIVATE, true, false));
            v.insert("volatile".into(), vol(10 * GIB, true, true));
            v.insert("kernel".into(), vol(0, false, false));
        }
    }
    v
}

/// Whether Qubes accepts `name` for a new qube (`qubes.vm.validate_name`).
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        bail!("VM name must start with a letter and contain only letters, digits, '_', '.' and '-': {name:?}");
    }
    if name.len() > MAX_NAME_LEN {
        bail!("VM name longer than {MAX_NAME_LEN} characters: {name:?}");
    }
    if matches!(name, "none" | "default" | "Domain-0") || name.ends_with("-dm") {
        bail!("VM name {name:?} is reserved");
    }
    Ok(())
}

/// Parses a size: bytes, or with a `K`/`M`/`G`/`T` suffix (binary, `Ki`/`KiB` also accepted).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim_end_matches('B').trim_end_matches('i') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl Domain {
    /// A new qube with Qubes' defaults for its class.
    pub fn new(name: &str, domid: u32, class: Class, label: &str) -> Domain {
        Domain {
            name: name.into(),
            domid,
            class,
            label: label.into(),
            tags: Vec::new(),
            prefs: Prefs::default(),
            features: BTreeMap::new(),
            volumes: default_volumes(class),
            ip: String::new(),
            firewall: None,
        }
    }

    /// A property's value as `qvm-prefs` prints it.
    pub fn get_pref(&self, prop: &str) -> Result<String> {
        let p = &self.prefs;
        Ok(match prop {
            "name" => self.name.clone(),
            "qid" => self.domid.to_string(),
            "class" => self.class.to_string(),
            "label" => self.label.clone(),
            "kernel" => p.kernel.clone(),
            "kernelopts" => p.kernelopts.clone(),
            "virt_mode" => p.virt_mode.clone(),
            "memory" => p.memory.to_string(),
            "maxmem" => p.maxmem.to_string(),
            "vcpus" => p.vcpus.to_string(),
            "provides_network" => p.provides_network.to_string(),
            "netvm" => p.netvm.clone(),
            "template" => p.template.clone(),
            "template_for_dispvms" => p.template_for_dispvms.to_string(),
            "default_dispvm" => p.default_dispvm.clone(),
            "default_user" => p.default_user.clone(),
            "qrexec_timeout" => p.qrexec_timeout.to_string(),
            "autostart" => p.autostart.to_string(),
            "auto_cleanup" => p.auto_cleanup.to_string(),
            _ => bail!("no such property: {prop:?}"),
        })
    }
}

/// Checks that `value` names an existing qube other than `own` (or is empty: none).
fn check_ref(reg: &Registry, own: &str, prop: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    if value == own {
        bail!("property {prop:?} of {own:?} cannot point at itself");
    }
    if !reg.domains.contains_key(value) {
        bail!("invalid value for property {prop:?}: no such domain: {value:?}");
    }
    Ok(())
}

/// All qubes and the next domid to hand out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The next domid `create` gives.
    pub next_domid: u32,
    /// Qubes by name; always holds dom0.
    pub domains: BTreeMap<String, Domain>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut domains = BTreeMap::new();
        let mut dom0 = Domain::new("dom0", 0, Class::AdminVM, "black");
        dom0.prefs.virt_mode = String::new();
        domains.insert("dom0".into(), dom0);
        Registry {
            next_domid: 1,
            domains,
        }
    }
}

impl Registry {
    /// The registry file of a state directory.
    pub fn path(state: &Path) -> PathBuf {
        state.join(REGISTRY_FILE)
    }

    /// Loads the registry; a missing file is a fresh one (dom0 only).
    pub fn load(state: &Path) -> Result<Registry> {
        let path = Self::path(state);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if meta.len() > MAX_REGISTRY_BYTES {
            bail!(
                "{} is larger than {MAX_REGISTRY_BYTES} bytes",
                path.display()
            );
        }
        let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let reg: Registry = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a valid registry", path.display()))?;
        if !reg.domains.contains_key("dom0") {
            bail!("{} has no dom0", path.display());
        }
        Ok(reg)
    }

    /// Writes the registry atomically (a temporary file renamed over the old one).
    pub fn save(&self, state: &Path) -> Result<()> {
        fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
        let path = Self::path(state);
        let tmp = state.join(format!(".{REGISTRY_FILE}.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self)?;
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// Runs `f` on the registry under the state directory's lock, saving it if `f` succeeds.
    pub fn update<R>(state: &Path, f: impl FnOnce(&mut Registry) -> Result<R>) -> Result<R> {
        let _lock = Lock::take(state)?;
        let mut reg = Self::load(state)?;
        let r = f(&mut reg)?;
        reg.save(state)?;
        Ok(r)
    }

    /// The qube called `name`.
    pub fn get(&self, name: &str) -> Result<&Domain> {
        self.domains
            .get(name)
            .ok_or_else(|| anyhow!("no such domain: {name:?}"))
    }

    /// The qube with domid `domid`.
    pub fn by_domid(&self, domid: u32) -> Option<&Domain> {
        self.domains.values().find(|d| d.domid == domid)
    }

    /// Creates a qube.
    pub fn create(&mut self, name: &str, class: Class, label: &str) -> Result<&mut Domain> {
        validate_name(name)?;
        if self.domains.contains_key(name) {
            bail!("VM name '{name}' already exists");
        }
        if class == Class::AdminVM {
            bail!("there is only one AdminVM (dom0)");
        }
        if !LABELS.contains(&label) {
            bail!("no such label: {label:?} (one of {})", LABELS.join(", "));
        }
        if self.domains.len() >= MAX_QUBES {
            bail!("too many qubes (at most {MAX_QUBES})");
        }
        // The lowest free id: disposables come and go, ids must not run out.
        let used: std::collections::BTreeSet<u32> =
            self.domains.values().map(|d| d.domid).collect();
        let domid = (1..0x7ff0)
            .find(|i| !used.contains(i))
            .ok_or_else(|| anyhow!("no free domain ids left"))?;
        self.next_domid = self.next_domid.max(domid + 1);
        let d = Domain::new(name, domid, class, label);
        Ok(self.domains.entry(name.into()).or_insert(d))
    }

    /// Creates a disposable `dispN` from the disposable template `template` (its prefs, its
    /// label; removed after its call).
    pub fn create_dispvm(&mut self, template: &str) -> Result<String> {
        let t = self.get(template)?.clone();
        if !t.prefs.template_for_dispvms {
            bail!("'{template}' is not a template for disposables");
        }
        let name = (1..10_000)
            .map(|n| format!("disp{n}"))
            .find(|n| !self.domains.contains_key(n))
            .ok_or_else(|| anyhow!("no free disposable name"))?;
        let d = self.create(&name, Class::DispVM, &t.label)?;
        d.prefs = Prefs {
            template: template.into(),
            template_for_dispvms: false,
            autostart: false,
            auto_cleanup: true,
            ..t.prefs
        };
        d.tags = t.tags;
        // Features such as `gui` come from the template (Qubes reads them with
        // check_with_template), so a disposable of a GUI template gets a GUI.
        d.features = t.features;
        Ok(name)
    }

    /// Gives `name` an address if it has a netvm or provides network and has none yet:
    /// `10.137.<qid/256>.<qid%256>` as Qubes derives it from the qid, else the lowest free
    /// one. Returns whether the registry changed.
    pub fn ensure_ip(&mut self, name: &str) -> Result<bool> {
        let d = self.get(name)?;
        let needs = !d.prefs.netvm.is_empty() || d.prefs.provides_network;
        if !needs || !d.ip.is_empty() {
            return Ok(false);
        }
        let used: std::collections::BTreeSet<&str> =
            self.domains.values().map(|d| d.ip.as_str()).collect();
        let addr = |n: u32| format!("10.137.{}.{}", n >> 8, n & 0xff);
        let qid = d.domid;
        let ip = std::iter::once(qid)
            .chain(2..0x7ff0)
            .filter(|n| n & 0xff != 0 && n & 0xff != 0xff)
            .map(addr)
            .find(|ip| !used.contains(ip.as_str()))
            .ok_or_else(|| anyhow!("no free address in 10.137.0.0/16"))?;
        if let Some(d) = self.domains.get_mut(name) {
            d.ip = ip;
        }
        Ok(true)
    }

    /// The qubes whose netvm is `netvm`, running or not, by name.
    pub fn clients(&self, netvm: &str) -> Vec<&Domain> {
        self.domains
            .values()
            .filter(|d| d.prefs.netvm == netvm)
            .collect()
    }

    /// The qube's templates, nearest first (a disposable: its template, then that one's).
    pub fn template_chain(&self, name: &str) -> Vec<String> {
        let mut chain = Vec::new();
        let mut cur = self.domains.get(name);
        while let Some(t) = cur
            .map(|d| d.prefs.template.as_str())
            .filter(|t| !t.is_empty())
        {
            if chain.iter().any(|c| c == t) || chain.len() >= 8 || t == name {
                break;
            }
            chain.push(t.to_string());
            cur = self.domains.get(t);
        }
        chain
    }

    /// Sets a property (`qvm-prefs VM PROP VALUE`), validating it like qubesd does.
    pub fn set_pref(&mut self, vm: &str, prop: &str, value: &str) -> Result<()> {
        let class = self.get(vm)?.class;
        let bad = || anyhow!("invalid value for property {prop:?}: {value:?}");
        let num = || value.parse::<u32>().map_err(|_| bad());
        let flag = || parse_bool(value).ok_or_else(bad);
        match prop {
            "name" | "qid" | "class" => bail!("property {prop:?} is read-only"),
            "netvm" | "template" | "default_dispvm" => check_ref(self, vm, prop, value)?,
            _ => {}
        }
        if prop == "template" && !value.is_empty() {
            let t = self.get(value)?;
            if t.class != Class::TemplateVM
                && !(class == Class::DispVM && t.prefs.template_for_dispvms)
            {
                bail!("invalid value for property \"template\": {value:?} is not a template");
            }
        }
        if prop == "netvm" && !value.is_empty() && !self.get(value)?.prefs.provides_network {
            bail!("invalid value for property \"netvm\": {value:?} does not provide network");
        }
        self.set_pref_unchecked(vm, prop, value, &bad, &num, &flag)?;
        if matches!(prop, "netvm" | "provides_network") {
            self.ensure_ip(vm)?;
        }
        Ok(())
    }

    fn set_pref_unchecked(
        &mut self,
        vm: &str,
        prop: &str,
        value: &str,
        bad: &dyn Fn() -> anyhow::Error,
        num: &dyn Fn() -> Result<u32>,
        flag: &dyn Fn() -> Result<bool>,
    ) -> Result<()> {
        let d = self
            .domains
            .get_mut(vm)
            .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
        let p = &mut d.prefs;
        match prop {
            "label" if LABELS.contains(&value) => d.label = value.into(),
            "label" => return Err(bad()),
            "kernel" => {
                // A hosted unikernel's private volume starts small (the vaults' 64 MiB) unless
                // it was resized already; the image file is made at start.
                if value.starts_with('/') {
                    if let Some(v) = d
                        .volumes
                        .get_mut("private")
                        .filter(|v| v.size == DEFAULT_PRIVATE)
                    {
                        v.size = UNIKERNEL_PRIVATE;
                    }
                }
                p.kernel = value.into()
            }
            "kernelopts" => p.kernelopts = value.into(),
            "virt_mode" if matches!(value, "pv" | "pvh" | "hvm") => p.virt_mode = value.into(),
            "virt_mode" => return Err(bad()),
            "memory" => p.memory = num().and_then(|n| (n > 0).then_some(n).ok_or_else(bad))?,
            "maxmem" => p.maxmem = num()?,
            "vcpus" => {
                p.vcpus = num().and_then(|n| (1..=64).contains(&n).then_some(n).ok_or_else(bad))?
            }
            "qrexec_timeout" => p.qrexec_timeout = num()?,
            "provides_network" => p.provides_network = flag()?,
            "template_for_dispvms" => p.template_for_dispvms = flag()?,
            "autostart" => p.autostart = flag()?,
            "auto_cleanup" => p.auto_cleanup = flag()?,
            "netvm" => p.netvm = value.into(),
            "template" => p.template = value.into(),
            "default_dispvm" => p.default_dispvm = value.into(),
            "default_user" if !value.is_empty() && !value.contains([':', '\0']) => {
                p.default_user = value.into()
            }
            "default_user" => return Err(bad()),
            _ => bail!("no such property: {prop:?}"),
        }
        Ok(())
    }
}

/// A lock file held while the registry is read, changed and written.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

/// How long [`Lock::take`] waits for another holder.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl Lock {
    /// Takes the lock of `state`, waiting up to ten seconds.
    pub fn take(state: &Path) -> Result<Lock> {
        fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
        Self::at(state.join(".lock"))
    }

    /// Takes the lock file `path` (created while held), waiting up to ten seconds.
    pub fn at(path: PathBuf) -> Result<Lock> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && Instant::now() < deadline => {
                    // A holder that was killed never removes its lock.
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let dead = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                    if dead {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_holders_lock_is_broken() {
        let dir = std::env::temp_dir().join(format!("qsim-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // No process has pid 0x7fffffff (above pid_max).
        fs::write(dir.join(".lock"), "2147483647").unwrap();
        let t = Instant::now();
        let lock = Lock::take(&dir).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(lock);
        assert!(!dir.join(".lock").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_follow_qubes_rules() {
        assert!(validate_name("work").is_ok());
        assert!(validate_name("sys-net.2_a").is_ok());
        for bad in ["", "1vm", "a b", "x/y", "none", "dom0-dm", &"a".repeat(32)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("3MiB"), Some(3 << 20));
        assert_eq!(parse_size("2Ki"), Some(2048));
        assert_eq!(parse_size("1X"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn create_refuses_duplicates_and_bad_labels() {
        let mut r = Registry::default();
        assert_eq!(r.create("work", Class::AppVM, "red").unwrap().domid, 1);
        assert_eq!(r.create("vault", Class::AppVM, "black").unwrap().domid, 2);
        let e = r.create("work", Class::AppVM, "red").unwrap_err();
        assert_eq!(e.to_string(), "VM name 'work' already exists");
        assert!(r.create("x", Class::AppVM, "pink").is_err());
        assert!(r.create("dom0", Class::AppVM, "red").is_err());
    }

    #[test]
    fn disposables_reuse_ids_and_follow_their_template() {
        let mut r = Registry::default();
        r.create("fedora", Class::TemplateVM, "black").unwrap();
        r.create("dvm", Class::AppVM, "red").unwrap();
        r.set_pref("dvm", "template", "fedora").unwrap();
        assert!(
            r.create_dispvm("dvm").is_err(),
            "not a disposable template yet"
        );
        r.set_pref("dvm", "template_for_dispvms", "True").unwrap();
        r.set_pref("dvm", "memory", "777").unwrap();
        let d1 = r.create_dispvm("dvm").unwrap();
        let d2 = r.create_dispvm("dvm").unwrap();
        assert_eq!((d1.as_str(), d2.as_str()), ("disp1", "disp2"));
        let disp = r.get("disp1").unwrap();
        assert_eq!(
            (disp.class, disp.domid, disp.prefs.memory),
            (Class::DispVM, 3, 777)
        );
        assert!(disp.prefs.auto_cleanup && !disp.prefs.template_for_dispvms);
        assert_eq!(r.template_chain("disp1"), ["dvm", "fedora"]);
        r.domains.remove("disp1");
        assert_eq!(r.create("x", Class::AppVM, "red").unwrap().domid, 3);
    }

    #[test]
    fn old_registry_files_load_with_default_prefs() {
        let json = r#"{"next_domid":2,"domains":{"dom0":{"name":"dom0","domid":0,
            "class":"AdminVM","label":"black","tags":[],"prefs":{"memory":1},
            "features":{},"volumes":{}}}}"#;
        let r: Registry = serde_json::from_str(json).unwrap();
        let p = &r.get("dom0").unwrap().prefs;
        assert_eq!((p.memory, p.vcpus, p.auto_cleanup), (1, 2, false));
    }

    #[test]
    fn prefs_are_validated() {
        let mut r = Registry::default();
        r.create("work", Class::AppVM, "red").unwrap();
        r.create("fedora", Class::TemplateVM, "black").unwrap();
        r.set_pref("work", "memory", "512").unwrap();
        assert_eq!(r.get("work").unwrap().get_pref("memory").unwrap(), "512");
        assert!(r.set_pref("work", "memory", "lots").is_err());
        assert!(r.set_pref("work", "vcpus", "0").is_err());
        assert!(r.set_pref("work", "template", "nosuch").is_err());
        assert!(r.set_pref("fedora", "template", "work").is_err());
        r.set_pref("work", "template", "fedora").unwrap();
        assert!(r.set_pref("work", "netvm", "fedora").is_err());
        assert!(r.set_pref("work", "qid", "7").is_err());
        assert!(r.set_pref("work", "nonsense", "7").is_err());
        for p in PREF_NAMES {
            assert!(r.get("work").unwrap().get_pref(p).is_ok(), "{p}");
        }
    }
}
