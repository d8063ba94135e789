//! dom0's QubesDB for one running qube (a sim thread, vchan server on port 111, one
//! `qubes::qubesdb::Daemon` per connection) and the entries dom0 fills it with from the registry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use anyhow::{Context, Result};
use platform_api::{DomId, Events};
use qubes::qubesdb::{Daemon, DaemonEvent, DaemonLimits, LocalError};
use vchan::{Interest, PeerState};

use crate::chan::{Hosted, TxQueue, Vchan, TICK};
use crate::firewall::{qdb_rules, rules_of, Dst, Rule};
use crate::registry::{Class, Registry};

/// QubesDB's vchan port.
pub const PORT: u32 = 111;
/// Ring sizes of the dom0 daemon (as `qubesdb-daemon` asks).
pub const RING: usize = 4096;
/// Connections served at once; the oldest goes when a new one exceeds this (a process that
/// died without closing leaves its end open: hosted has no unmap notification).
pub const MAX_CONNS: usize = 16;
/// The virtual DNS servers Qubes gives every networked qube.
pub const DNS: [&str; 2] = ["10.139.1.1", "10.139.1.2"];

/// A change dom0 makes to a running qube's QubesDB.
#[derive(Debug)]
pub enum QdbCmd {
    /// Set a key.
    Write(String, String),
    /// Remove a key (a prefix if it ends in `/`).
    Rm(String),
    /// Reload one client's firewall (`(NNNN, rule)` with dom0's gaps); answers when queued.
    Firewall {
        /// The client's IP.
        ip: String,
        /// The rules.
        rules: Vec<(usize, String)>,
        /// Done.
        reply: Sender<()>,
    },
    /// Make the DB equal `entries` (after a registry change): changed keys are written,
    /// gone ones removed, and a client whose firewall differs gets dom0's reload sequence.
    Sync {
        /// Everything dom0 now writes for the qube ([`entries`]).
        entries: BTreeMap<String, String>,
        /// Done.
        reply: Sender<()>,
    },
}

/// One client's firewall entries in `db`: `(NNNN, rule)` and whether the commit marker is
/// there, by client IP.
type FwByIp = BTreeMap<String, (Vec<(usize, String)>, bool)>;

fn firewall_by_ip(db: &BTreeMap<String, String>) -> FwByIp {
    let mut m = FwByIp::new();
    for (k, v) in db.range("/qubes-firewall/".to_string()..) {
        let Some(rest) = k.strip_prefix("/qubes-firewall/") else {
            break;
        };
        match rest.split_once('/') {
            None => m.entry(rest.to_string()).or_default().1 = true,
            Some((ip, n)) => {
                let e = m.entry(ip.to_string()).or_default();
                if let Ok(n) = n.parse::<usize>() {
                    e.0.push((n, v.clone()));
                }
            }
        }
    }
    m
}

/// The changes that turn `master` into `target`, as primitive commands (replies unused).
fn sync_ops(master: &BTreeMap<String, String>, target: &BTreeMap<String, String>) -> Vec<QdbCmd> {
    let fw = |k: &String| k.starts_with("/qubes-firewall/");
    let mut ops = Vec::new();
    for k in master.keys().filter(|k| !fw(k) && !target.contains_key(*k)) {
        ops.push(QdbCmd::Rm(k.clone()));
    }
    for (k, v) in target.iter().filter(|(k, _)| !fw(k)) {
        if master.get(k) != Some(v) {
            ops.push(QdbCmd::Write(k.clone(), v.clone()));
        }
    }
    let (old, new) = (firewall_by_ip(master), firewall_by_ip(target));
    for ip in old.keys().filter(|ip| !new.contains_key(*ip)) {
        ops.push(QdbCmd::Rm(format!("/qubes-firewall/{ip}/")));
        ops.push(QdbCmd::Rm(format!("/qubes-firewall/{ip}")));
    }
    for (ip, (rules, _)) in &new {
        if old.get(ip).is_none_or(|(o, marker)| o != rules || !marker) {
            let (reply, _) = std::sync::mpsc::channel();
            ops.push(QdbCmd::Firewall {
                ip: ip.clone(),
                rules: rules.clone(),
                reply,
            });
        }
    }
    ops
}

/// Whether a feature value means on (Qubes' `1`/`True`).
pub fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "True" | "true" | "yes" | "on"))
}

/// Qubes' site-local IPv6 prefix (`qubes.config.qubes_ipv6_prefix`); a qube's address is it
/// with the qube's IPv4 in the low 32 bits (`::a89:<qid hex>` for `10.137.x.y`).
pub const IPV6_PREFIX: u128 = 0xfd09_24ef_4179_0000 << 64;
/// How far a netvm chain is followed (the registry refuses loops; this bounds a corrupt one).
const MAX_NETVM_HOPS: usize = 64;

/// Whether the qube has IPv6: its own `ipv6` feature, else its netvm's, up the chain
/// (\[QA\] `features.check_with_netvm('ipv6', False)`).
pub fn ipv6_enabled(reg: &Registry, name: &str) -> bool {
    let mut cur = name;
    for _ in 0..MAX_NETVM_HOPS {
        let Ok(d) = reg.get(cur) else { return false };
        if let Some(v) = d.features.get("ipv6") {
            return truthy(Some(v));
        }
        if d.prefs.netvm.is_empty() {
            return false;
        }
        cur = &d.prefs.netvm;
    }
    false
}

/// The qube's IPv6 address when IPv6 is on for it (\[QA\] `ip6`, `get_ip6_for_vm`).
pub fn ip6(reg: &Registry, name: &str) -> Option<std::net::Ipv6Addr> {
    let d = reg.get(name).ok()?;
    let v4: std::net::Ipv4Addr = d.ip.parse().ok()?;
    let networked = d.prefs.provides_network || !d.prefs.netvm.is_empty();
    (networked && ipv6_enabled(reg, name))
        .then(|| std::net::Ipv6Addr::from(IPV6_PREFIX | u128::from(u32::from(v4))))
}

/// The IPv6 gateway a netvm gives its clients: its own IPv6 address (\[QA\] `gateway6`).
pub fn gateway6(reg: &Registry, netvm: &str) -> Option<std::net::Ipv6Addr> {
    reg.get(netvm)
        .ok()
        .filter(|n| n.prefs.provides_network)
        .and_then(|_| ip6(reg, netvm))
}

/// A client's `/qubes-gateway6` (\[QA\] `visible_gateway6`): its netvm's gateway6, if IPv6 is
/// on for the client.
pub fn visible_gateway6(reg: &Registry, name: &str) -> Option<std::net::Ipv6Addr> {
    let d = reg.get(name).ok()?;
    if d.prefs.netvm.is_empty() || !ipv6_enabled(reg, name) {
        return None;
    }
    gateway6(reg, &d.prefs.netvm)
}

/// `(NNNN, text)` for the client's IPv6 directory: as [`qdb_rules`] but with the IPv4 rules
/// skipped and the IPv6 ones kept (\[QA\] `qdb_entries(addr_family=6)`).
pub fn qdb_rules6(rules: &[Rule], now: u64) -> Vec<(usize, String)> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.expire.is_none_or(|e| e > now))
        .filter(|(_, r)| !matches!(r.dst, Some(Dst::V4(..))))
        .map(|(i, r)| (i, r.qdb_text()))
        .collect()
}

/// Every firewall directory dom0 reloads for client `name`: `(client address, rules)` for its
/// IPv4 and, with IPv6 on, its IPv6 address (\[QA\] `reload_firewall_for_vm`).
pub fn firewall_reloads(
    reg: &Registry,
    name: &str,
    now: u64,
) -> Vec<(String, Vec<(usize, String)>)> {
    let Ok(d) = reg.get(name) else {
        return Vec::new();
    };
    if d.ip.is_empty() {
        return Vec::new();
    }
    let rules = rules_of(d);
    let mut v = vec![(d.ip.clone(), qdb_rules(&rules, now))];
    if let Some(a) = ip6(reg, name) {
        v.push((a.to_string(), qdb_rules6(&rules, now)));
    }
    v
}

/// Whether the qube runs a GUI agent (`qvm-features VM gui 1`).
pub fn gui_enabled(d: &crate::registry::Domain) -> bool {
    truthy(d.features.get("gui"))
}

/// Everything dom0 writes for `name` at its start (\[QA\] `create_qdb_entries`), firewall
/// entries of its clients included when it provides network.
pub fn entries(reg: &Registry, name: &str, now: u64) -> Result<BTreeMap<String, String>> {
    let d = reg.get(name)?;
    let mut e = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        e.insert(k.to_string(), v.to_string());
    };
    put("/name", name);
    put("/type", d.class.as_str());
    put("/default-user", &d.prefs.default_user);
    let updateable = matches!(d.class, Class::TemplateVM | Class::StandaloneVM);
    put(
        "/qubes-vm-updateable",
        if updateable { "True" } else { "False" },
    );
    put(
        "/qubes-vm-persistence",
        match d.class {
            Class::DispVM => "none",
            Class::AppVM => "rw-only",
            _ => "full",
        },
    );
    put("/qubes-debug-mode", "0");
    put("/qubes-timezone", "UTC");
    put("/qubes-block-devices", "");
    put("/qubes-usb-devices", "");
    put("/keyboard-layout", "us++");
    if let Some(t) = reg.template_chain(name).last() {
        put("/qubes-base-template", t);
    }
    for (k, v) in &d.features {
        if let Some(svc) = k.strip_prefix("service.") {
            put(
                &format!("/qubes-service/{svc}"),
                if truthy(Some(v)) { "1" } else { "0" },
            );
        }
    }
    let gui = gui_enabled(d);
    put("/qubes-gui-enabled", if gui { "True" } else { "False" });
    if gui {
        // The GUI domain is dom0 in the sim, and it always runs.
        put("/qubes-gui-domain-xid", "0");
    }
    let netvm = (!d.prefs.netvm.is_empty())
        .then(|| reg.get(&d.prefs.netvm).ok())
        .flatten()
        .filter(|n| !n.ip.is_empty());
    if let (Some(n), false) = (netvm, d.ip.is_empty()) {
        put("/qubes-ip", &d.ip);
        put("/qubes-netmask", "255.255.255.255");
        put("/qubes-gateway", &n.ip);
        put("/qubes-primary-dns", DNS[0]);
        put("/qubes-secondary-dns", DNS[1]);
        put("/qubes-mac", &mac(d.domid));
        if let Some(a) = ip6(reg, name) {
            put("/qubes-ip6", &a.to_string());
        }
        if let Some(g) = visible_gateway6(reg, name) {
            put("/qubes-gateway6", &g.to_string());
        }
    }
    if d.prefs.provides_network && !d.ip.is_empty() {
        put("/qubes-netvm-network", &d.ip);
        put("/qubes-netvm-gateway", &d.ip);
        put("/qubes-netvm-netmask", "255.255.255.255");
        put("/qubes-netvm-primary-dns", DNS[0]);
        put("/qubes-netvm-secondary-dns", DNS[1]);
        if let Some(g) = gateway6(reg, name) {
            put("/qubes-netvm-gateway6", &g.to_string());
        }
        let mut clients: Vec<_> = reg
            .clients(name)
            .into_iter()
            .filter(|c| !c.ip.is_empty())
            .collect();
        clients.sort_by_key(|c| c.ip.parse::<std::net::Ipv4Addr>().ok());
        let ips: Vec<&str> = clients.iter().map(|c| c.ip.as_str()).collect();
        put("/connected-ips", &ips.join(" "));
        let ips6: Vec<String> = clients
            .iter()
            .filter_map(|c| ip6(reg, &c.name))
            .map(|a| a.to_string())
            .collect();
        put("/connected-ips6", &ips6.join(" "));
        for c in clients {
            for (ip, rules) in firewall_reloads(reg, &c.name, now) {
                e.extend(firewall_entries(&ip, &rules));
            }
        }
    }
    Ok(e)
}

/// A qube's MAC: Qubes 4's default for every qube (`qubesvm.py`, property `mac`), since each
/// link is its own point-to-point network.
pub fn mac(_qid: u32) -> String {
    "00:16:3e:5e:6c:00".to_string()
}

/// The keys of one client's firewall after a reload: policy, rules, commit marker.
pub fn firewall_entries(ip: &str, rules: &[(usize, String)]) -> Vec<(String, String)> {
    let base = format!("/qubes-firewall/{ip}");
    let mut v = vec![(format!("{base}/policy"), "drop".to_string())];
    v.extend(
        rules
            .iter()
            .map(|(i, r)| (format!("{base}/{i:04}"), r.clone())),
    );
    v.push((base, String::new()));
    v
}

/// dom0's reload sequence (\[QA\] `reload_firewall_for_vm`) on one connection: the crate's
/// [`Daemon::reload_firewall`] when the numbering has no gaps, else the same messages by hand.
fn reload(d: &mut Daemon, ip: &str, rules: &[(usize, String)]) -> Result<(), LocalError> {
    if rules.iter().enumerate().all(|(i, (n, _))| i == *n) {
        let texts: Vec<&str> = rules.iter().map(|(_, r)| r.as_str()).collect();
        return d.reload_firewall(ip, &texts);
    }
    d.rm(&format!("/qubes-firewall/{ip}/"))?;
    for (k, v) in firewall_entries(ip, rules) {
        d.write(&k, v.as_bytes())?;
    }
    Ok(())
}

struct Conn {
    v: Vchan,
    d: Daemon,
    out: TxQueue,
    inbuf: Vec<u8>,
    in_len: usize,
}

impl Conn {
    /// One step: input, events, output. `Ok(progress)`; an error ends this connection only.
    fn step(&mut self, name: &str) -> Result<bool> {
        let mut progress = false;
        if self.in_len < self.inbuf.len() {
            let n = self.v.read(&mut self.inbuf[self.in_len..])?;
            self.in_len += n;
            progress |= n > 0;
        }
        if self.in_len > 0 {
            let n = self.d.handle_input(&self.inbuf[..self.in_len])?;
            self.inbuf.copy_within(n..self.in_len, 0);
            self.in_len -= n;
            progress |= n > 0;
        }
        while let Some(ev) = self.d.poll_event() {
            if let DaemonEvent::VmWriteRefused(p) | DaemonEvent::Refused(p) = ev {
                eprintln!("qubes-sim: qubesdb of '{name}': refused {p:?}");
            }
        }
        self.out.fill(|b| self.d.poll_transmit(b));
        progress |= self.out.flush(&mut self.v)?;
        Ok(progress)
    }
}

/// The daemon thread's body: serves `domid`'s QubesDB until `stop` (the qube went away).
/// `ready` gets the first advertisement's outcome (the qube starts only after it).
pub fn run(
    run: &Path,
    name: &str,
    domid: DomId,
    initial: BTreeMap<String, String>,
    stop: &AtomicBool,
    cmds: &Receiver<QdbCmd>,
    ready: Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    if let Err(e) = serve(run, name, domid, initial, stop, cmds, &mut ready) {
        if let Some(r) = ready.take() {
            let _ = r.send(Err(format!("{e:#}")));
        } else if !stop.load(Ordering::Relaxed) {
            eprintln!("qubes-sim: qubesdb of '{name}': {e:#}");
        }
    }
}

fn serve(
    run: &Path,
    name: &str,
    domid: DomId,
    mut master: BTreeMap<String, String>,
    stop: &AtomicBool,
    cmds: &Receiver<QdbCmd>,
    ready: &mut Option<Sender<Result<(), String>>>,
) -> Result<()> {
    let mut h = Hosted::new(run, DomId::DOM0)?;
    let mut listener: Option<Vchan> = None;
    let mut conns: Vec<Conn> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;
        if listener.is_none() {
            listener =
                Some(Vchan::serve(&mut h, domid, PORT, RING, RING).context("advertise port 111")?);
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
        }
        if let Some(mut l) = listener.take() {
            match l.peer_state() {
                Ok(PeerState::Waiting) => listener = Some(l),
                Ok(_) => {
                    l.tidy(&mut h);
                    conns.push(accept(l, &master));
                    if conns.len() > MAX_CONNS {
                        let old = conns.remove(0);
                        old.v.shutdown(&mut h);
                    }
                    progress = true;
                }
                Err(_) => l.shutdown(&mut h),
            }
        }
        while let Ok(cmd) = cmds.try_recv() {
            progress = true;
            match cmd {
                QdbCmd::Sync { entries, reply } => {
                    for op in sync_ops(&master, &entries) {
                        apply(&op, &mut master, &mut conns, &mut h);
                    }
                    let _ = reply.send(());
                }
                QdbCmd::Firewall { ref reply, .. } => {
                    apply(&cmd, &mut master, &mut conns, &mut h);
                    let _ = reply.send(());
                }
                _ => apply(&cmd, &mut master, &mut conns, &mut h),
            }
        }
        let mut i = 0;
        while i < conns.len() {
            match conns[i].step(name) {
                Ok(p) => {
                    progress |= p;
                    i += 1;
                }
                Err(e) => {
                    let c = conns.remove(i);
                    if !matches!(e.downcast_ref(), Some(vchan::Error::PeerClosed)) {
                        eprintln!("qubes-sim: qubesdb of '{name}': connection dropped: {e:#}");
                    }
                    c.v.shutdown(&mut h);
                }
            }
        }
        if !progress {
            let mut sleep = true;
            for c in conns.iter_mut() {
                let interest = Interest {
                    read: true,
                    write: c.out.pending() > 0,
                };
                sleep &= c.v.prepare_wait(interest).unwrap_or(false);
            }
            if sleep {
                // A connecting client notifies our port; commands come within a tick.
                h.events.wait(Some(TICK)).context("event wait")?;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(())
}

fn accept(v: Vchan, master: &BTreeMap<String, String>) -> Conn {
    let mut d = Daemon::new(DaemonLimits::DEFAULT);
    for (k, val) in master {
        // Not connected yet: goes into the dump, cannot be refused for room.
        let _ = d.write(k, val.as_bytes());
    }
    d.connect();
    Conn {
        v,
        d,
        out: TxQueue::new(RING * 4),
        inbuf: vec![0u8; 8192],
        in_len: 0,
    }
}

/// Applies a change to the master copy and to every connection; a connection whose queues
/// cannot take it is dropped (its client reconnects and syncs the master copy).
fn apply(
    cmd: &QdbCmd,
    master: &mut BTreeMap<String, String>,
    conns: &mut Vec<Conn>,
    h: &mut Hosted,
) {
    match cmd {
        QdbCmd::Write(k, v) => {
            master.insert(k.clone(), v.clone());
        }
        QdbCmd::Rm(k) => remove(master, k),
        QdbCmd::Firewall { ip, rules, .. } => {
            remove(master, &format!("/qubes-firewall/{ip}/"));
            master.extend(firewall_entries(ip, rules));
        }
        QdbCmd::Sync { .. } => return,
    }
    let mut i = 0;
    while i < conns.len() {
        let d = &mut conns[i].d;
        let r = match cmd {
            QdbCmd::Write(k, v) => d.write(k, v.as_bytes()),
            QdbCmd::Rm(k) => d.rm(k),
            QdbCmd::Firewall { ip, rules, .. } => reload(d, ip, rules),
            QdbCmd::Sync { .. } => Ok(()),
        };
        match r {
            Ok(()) => i += 1,
            Err(e) => {
                eprintln!(
                    "qubes-sim: qubesdb: dropping a connection that cannot take a change: {e}"
                );
                conns.remove(i).v.shutdown(h);
            }
        }
    }
}

fn remove(master: &mut BTreeMap<String, String>, k: &str) {
    if k.ends_with('/') {
        master.retain(|p, _| !p.starts_with(k));
    } else {
        master.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Rule;

    fn reg() -> Registry {
        let mut r = Registry::default();
        r.create("net", Class::AppVM, "red").unwrap();
        r.set_pref("net", "provides_network", "True").unwrap();
        r.create("work", Class::AppVM, "blue").unwrap();
        r.set_pref("work", "netvm", "net").unwrap();
        r.create("offline", Class::AppVM, "blue").unwrap();
        r
    }

    fn names(ops: &[QdbCmd]) -> Vec<String> {
        ops.iter()
            .map(|o| match o {
                QdbCmd::Write(k, v) => format!("W {k}={v}"),
                QdbCmd::Rm(k) => format!("R {k}"),
                QdbCmd::Firewall { ip, rules, .. } => format!("F {ip} {}", rules.len()),
                QdbCmd::Sync { .. } => "S".into(),
            })
            .collect()
    }

    #[test]
    fn sync_writes_only_differences_and_reloads_changed_firewalls() {
        let mut r = reg();
        let before = entries(&r, "net", 0).unwrap();
        assert!(sync_ops(&before, &before).is_empty());
        r.create("mail", Class::AppVM, "red").unwrap();
        r.set_pref("mail", "netvm", "net").unwrap();
        r.set_pref("work", "netvm", "").unwrap();
        let after = entries(&r, "net", 0).unwrap();
        assert_eq!(
            names(&sync_ops(&before, &after)),
            [
                "W /connected-ips=10.137.0.4",
                "R /qubes-firewall/10.137.0.2/",
                "R /qubes-firewall/10.137.0.2",
                "F 10.137.0.4 1",
            ]
        );
    }

    #[test]
    fn addresses_follow_the_qid_and_stay() {
        let mut r = reg();
        assert_eq!(r.get("net").unwrap().ip, "10.137.0.1");
        assert_eq!(r.get("work").unwrap().ip, "10.137.0.2");
        assert_eq!(r.get("offline").unwrap().ip, "");
        assert!(
            !r.ensure_ip("work").unwrap(),
            "a second call changed the address"
        );
        r.set_pref("work", "netvm", "").unwrap();
        r.set_pref("work", "netvm", "net").unwrap();
        assert_eq!(r.get("work").unwrap().ip, "10.137.0.2");
    }

    #[test]
    fn client_and_netvm_entries_are_those_of_qubes() {
        let mut r = reg();
        r.domains.get_mut("work").unwrap().firewall = Some(vec![
            Rule::parse(&["action=accept proto=tcp dstports=443"], 0).unwrap(),
            Rule::parse(&["action=accept dst6=::1"], 0).unwrap(),
            Rule::parse(&["action=drop"], 0).unwrap(),
        ]);
        let w = entries(&r, "work", 0).unwrap();
        assert_eq!(w["/name"], "work");
        assert_eq!(w["/type"], "AppVM");
        assert_eq!(w["/default-user"], "user");
        assert_eq!(w["/qubes-ip"], "10.137.0.2");
        assert_eq!(w["/qubes-netmask"], "255.255.255.255");
        assert_eq!(w["/qubes-gateway"], "10.137.0.1");
        assert_eq!(w["/qubes-primary-dns"], "10.139.1.1");
        assert_eq!(w["/qubes-secondary-dns"], "10.139.1.2");
        assert_eq!(w["/qubes-mac"], "00:16:3e:5e:6c:00");
        assert!(!w.keys().any(|k| k.starts_with("/qubes-netvm")));
        let n = entries(&r, "net", 0).unwrap();
        assert_eq!(n["/qubes-netvm-gateway"], "10.137.0.1");
        assert_eq!(n["/qubes-netvm-netmask"], "255.255.255.255");
        assert_eq!(n["/connected-ips"], "10.137.0.2");
        let fw: Vec<(&str, &str)> = n
            .iter()
            .filter(|(k, _)| k.starts_with("/qubes-firewall"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            fw,
            [
                ("/qubes-firewall/10.137.0.2", ""),
                (
                    "/qubes-firewall/10.137.0.2/0000",
                    "action=accept proto=tcp dstports=443-443"
                ),
                ("/qubes-firewall/10.137.0.2/0002", "action=drop"),
                ("/qubes-firewall/10.137.0.2/policy", "drop"),
            ]
        );
        assert!(!entries(&r, "offline", 0).unwrap().contains_key("/qubes-ip"));
    }

    /// net -> fw -> work, as in the firewall's sim test.
    fn chain() -> Registry {
        let mut r = reg();
        r.create("fw", Class::AppVM, "green").unwrap();
        r.set_pref("fw", "provides_network", "True").unwrap();
        r.set_pref("fw", "netvm", "net").unwrap();
        r.set_pref("work", "netvm", "fw").unwrap();
        r
    }

    fn feature(r: &mut Registry, vm: &str, v: &str) {
        r.domains
            .get_mut(vm)
            .unwrap()
            .features
            .insert("ipv6".into(), v.into());
    }

    fn v6(r: &Registry, vm: &str) -> String {
        let ip: std::net::Ipv4Addr = r.get(vm).unwrap().ip.parse().unwrap();
        let [_, _, a, b] = ip.octets();
        format!("fd09:24ef:4179::a89:{:x}", u16::from_be_bytes([a, b]))
    }

    #[test]
    fn no_ipv6_key_without_the_feature() {
        let r = chain();
        for vm in ["net", "fw", "work"] {
            let e = entries(&r, vm, 0).unwrap();
            for k in ["/qubes-ip6", "/qubes-gateway6", "/qubes-netvm-gateway6"] {
                assert!(!e.contains_key(k), "{vm} has {k}");
            }
            assert!(
                !e.keys().any(|k| k.starts_with("/qubes-firewall/fd09")),
                "{vm}"
            );
        }
        assert_eq!(entries(&r, "fw", 0).unwrap()["/connected-ips6"], "");
    }

    #[test]
    fn ipv6_from_the_netvm_feature_gives_qubes_addresses_and_gateways() {
        let mut r = chain();
        feature(&mut r, "net", "1");
        let (net6, fw6, work6) = (v6(&r, "net"), v6(&r, "fw"), v6(&r, "work"));
        assert_eq!(
            ip6(&r, "work").unwrap(),
            "fd09:24ef:4179::a89:2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap(),
            "the qid's IPv4 in the low 32 bits"
        );
        let n = entries(&r, "net", 0).unwrap();
        assert!(!n.contains_key("/qubes-ip6"), "sys-net has no netvm");
        assert_eq!(n["/qubes-netvm-gateway6"], net6);
        assert_eq!(n["/connected-ips6"], fw6);
        let f = entries(&r, "fw", 0).unwrap();
        assert_eq!(f["/qubes-ip6"], fw6);
        assert_eq!(f["/qubes-gateway6"], net6);
        assert_eq!(f["/qubes-netvm-gateway6"], fw6);
        assert_eq!(f["/connected-ips6"], work6);
        let w = entries(&r, "work", 0).unwrap();
        assert_eq!(w["/qubes-ip6"], work6);
        assert_eq!(w["/qubes-gateway6"], fw6);
        assert!(!w.contains_key("/qubes-netvm-gateway6"));
        // A qube's own feature wins over its netvm's.
        feature(&mut r, "work", "");
        let w = entries(&r, "work", 0).unwrap();
        assert!(!w.contains_key("/qubes-ip6") && !w.contains_key("/qubes-gateway6"));
        assert_eq!(entries(&r, "fw", 0).unwrap()["/connected-ips6"], "");
    }

    #[test]
    fn each_address_family_gets_its_own_firewall_directory_with_dom0_gaps() {
        let mut r = chain();
        feature(&mut r, "net", "1");
        r.domains.get_mut("work").unwrap().firewall = Some(vec![
            Rule::parse(&["action=drop dst6=fd00::/8"], 0).unwrap(),
            Rule::parse(&["action=drop dst4=192.0.2.0/24"], 0).unwrap(),
            Rule::parse(&["action=accept dsthost=example.test"], 0).unwrap(),
            Rule::parse(&["action=drop"], 0).unwrap(),
        ]);
        let reloads = firewall_reloads(&r, "work", 0);
        assert_eq!(
            reloads,
            [
                (
                    "10.137.0.2".to_string(),
                    vec![
                        (1, "action=drop dst4=192.0.2.0/24".to_string()),
                        (2, "action=accept dsthost=example.test".to_string()),
                        (3, "action=drop".to_string()),
                    ]
                ),
                (
                    v6(&r, "work"),
                    vec![
                        (0, "action=drop dst6=fd00::/8".to_string()),
                        (2, "action=accept dsthost=example.test".to_string()),
                        (3, "action=drop".to_string()),
                    ]
                ),
            ]
        );
        let f = entries(&r, "fw", 0).unwrap();
        let base = format!("/qubes-firewall/{}", v6(&r, "work"));
        assert_eq!(f[&base], "", "the IPv6 commit marker");
        assert_eq!(f[&format!("{base}/0000")], "action=drop dst6=fd00::/8");
        assert_eq!(f[&format!("{base}/policy")], "drop");
        assert!(!f.contains_key(&format!("{base}/0001")));
    }
}
