//! QubesDB keys -> typed [`NetConfig`] and per-client rule sets (keys: qubesdb.md §4, firewall-netvm.md §4).
//! Reads through [`QubesDbView`] so the QubesDB agent's local copy or a test map can serve it.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rules::{ruleset_from_entries, RuleSet, RuleSetError};

/// Most addresses taken from `/connected-ips` + `/connected-ips6`, and most `/mapped-ip/` entries.
pub const MAX_CONNECTED: usize = 1024;

/// Read access to a QubesDB copy.
pub trait QubesDbView {
    /// The value of `key`, if present.
    fn read(&self, key: &str) -> Option<&[u8]>;
    /// Calls `f(rest, value)` for every key `prefix + rest`.
    fn for_each_under(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8]));
}

impl QubesDbView for BTreeMap<String, Vec<u8>> {
    fn read(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(Vec::as_slice)
    }

    fn for_each_under(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) {
        for (k, v) in self.range::<str, _>((
            core::ops::Bound::Included(prefix),
            core::ops::Bound::Unbounded,
        )) {
            match k.strip_prefix(prefix) {
                Some(rest) => f(rest, v),
                None => break,
            }
        }
    }
}

impl QubesDbView for qubes::qubesdb::Agent {
    fn read(&self, key: &str) -> Option<&[u8]> {
        qubes::qubesdb::Agent::read(self, key)
    }

    fn for_each_under(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) {
        for (path, value) in self.list(prefix) {
            if let Some(rest) = path.as_str().strip_prefix(prefix) {
                f(rest, value);
            }
        }
    }
}

/// A client that dom0 gives a fake IP (`net.fake-ip`): the netvm sees `real`, others see `visible`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedIp {
    pub real: Ipv4Addr,
    pub visible_ip: Option<Ipv4Addr>,
    pub visible_gateway: Option<Ipv4Addr>,
}

/// What the firewall needs to know about its own addresses and its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// `/qubes-ip`: our address on the uplink, the masquerade source.
    pub own_ip: Ipv4Addr,
    /// `/qubes-gateway`: the upstream netvm.
    pub uplink_gateway: Ipv4Addr,
    /// `/qubes-primary-dns`, `/qubes-secondary-dns`: where client DNS is sent upstream.
    pub upstream_dns: [Option<Ipv4Addr>; 2],
    /// `/qubes-ip6`, `/qubes-gateway6` (only with the `ipv6` feature).
    pub own_ip6: Option<Ipv6Addr>,
    pub uplink_gateway6: Option<Ipv6Addr>,
    /// `/qubes-netvm-gateway`: the gateway our clients use (our own IP; defaults to `own_ip`).
    pub client_gateway: Ipv4Addr,
    /// `/qubes-netvm-gateway6`.
    pub client_gateway6: Option<Ipv6Addr>,
    /// `/qubes-netvm-primary-dns`, `-secondary-dns`: the virtual DNS IPs clients were told.
    pub client_dns: [Option<Ipv4Addr>; 2],
    /// `/connected-ips`, `/connected-ips6`: addresses of our clients.
    pub connected: Vec<IpAddr>,
    /// `/mapped-ip/<real>/…`.
    pub mapped: Vec<MappedIp>,
}

/// Why the configuration could not be read; `&'static str` is the QubesDB key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    Missing(&'static str),
    BadValue(&'static str),
    Full { what: &'static str },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing(k) => write!(f, "QubesDB key {k} missing"),
            ConfigError::BadValue(k) => write!(f, "QubesDB key {k} has a bad value"),
            ConfigError::Full { what } => write!(f, "too many {what}"),
        }
    }
}

impl core::error::Error for ConfigError {}

fn text<'a>(db: &'a dyn QubesDbView, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
    match db.read(key) {
        None => Ok(None),
        Some(v) => core::str::from_utf8(v)
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| ConfigError::BadValue(key)),
    }
}

fn opt<T: core::str::FromStr>(
    db: &dyn QubesDbView,
    key: &'static str,
) -> Result<Option<T>, ConfigError> {
    match text(db, key)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| ConfigError::BadValue(key)),
    }
}

fn req<T: core::str::FromStr>(db: &dyn QubesDbView, key: &'static str) -> Result<T, ConfigError> {
    opt(db, key)?.ok_or(ConfigError::Missing(key))
}

fn ip_list(
    db: &dyn QubesDbView,
    key: &'static str,
    out: &mut Vec<IpAddr>,
) -> Result<(), ConfigError> {
    for word in text(db, key)?.unwrap_or("").split_ascii_whitespace() {
        if out.len() >= MAX_CONNECTED {
            return Err(ConfigError::Full {
                what: "connected IPs",
            });
        }
        out.push(word.parse().map_err(|_| ConfigError::BadValue(key))?);
    }
    Ok(())
}

impl NetConfig {
    /// Reads the netvm configuration; `/qubes-ip` and `/qubes-gateway` are required.
    pub fn from_qubesdb(db: &dyn QubesDbView) -> Result<Self, ConfigError> {
        let own_ip: Ipv4Addr = req(db, "/qubes-ip")?;
        let mut connected = Vec::new();
        ip_list(db, "/connected-ips", &mut connected)?;
        ip_list(db, "/connected-ips6", &mut connected)?;
        Ok(NetConfig {
            own_ip,
            uplink_gateway: req(db, "/qubes-gateway")?,
            upstream_dns: [
                opt(db, "/qubes-primary-dns")?,
                opt(db, "/qubes-secondary-dns")?,
            ],
            own_ip6: opt(db, "/qubes-ip6")?,
            uplink_gateway6: opt(db, "/qubes-gateway6")?,
            client_gateway: opt(db, "/qubes-netvm-gateway")?.unwrap_or(own_ip),
            client_gateway6: opt(db, "/qubes-netvm-gateway6")?,
            client_dns: [
                opt(db, "/qubes-netvm-primary-dns")?,
                opt(db, "/qubes-netvm-secondary-dns")?,
            ],
            connected,
            mapped: mapped_ips(db)?,
        })
    }

    /// The upstream DNS server that stands for the virtual DNS IP `dst`, if `dst` is one.
    pub fn dns_target(&self, dst: IpAddr) -> Option<Ipv4Addr> {
        let IpAddr::V4(d) = dst else { return None };
        let i = self.client_dns.iter().position(|c| *c == Some(d))?;
        self.upstream_dns
            .get(i)
            .copied()
            .flatten()
            .or(self.upstream_dns[0])
    }

    /// True if `ip` is one of the virtual DNS IPs clients were told.
    pub fn is_client_dns(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(d) if self.client_dns.contains(&Some(d)))
    }

    /// True if `ip` is one of our own addresses (uplink or client-side gateway).
    pub fn is_own(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a == self.own_ip || a == self.client_gateway,
            IpAddr::V6(a) => Some(a) == self.own_ip6 || Some(a) == self.client_gateway6,
        }
    }
}

fn mapped_ips(db: &dyn QubesDbView) -> Result<Vec<MappedIp>, ConfigError> {
    let mut out: Vec<MappedIp> = Vec::new();
    let mut err = None;
    db.for_each_under("/mapped-ip/", &mut |rest, value| {
        if err.is_some() {
            return;
        }
        let Some((ip, field)) = rest.split_once('/') else {
            return;
        };
        let (Ok(real), Some(value)) = (ip.parse(), core::str::from_utf8(value).ok()) else {
            err = Some(ConfigError::BadValue("/mapped-ip/"));
            return;
        };
        let Ok(addr) = value.trim().parse::<Ipv4Addr>() else {
            err = Some(ConfigError::BadValue("/mapped-ip/"));
            return;
        };
        let idx = match out.iter().position(|m| m.real == real) {
            Some(i) => i,
            None if out.len() >= MAX_CONNECTED => {
                err = Some(ConfigError::Full { what: "mapped IPs" });
                return;
            }
            None => {
                out.push(MappedIp {
                    real,
                    visible_ip: None,
                    visible_gateway: None,
                });
                out.len() - 1
            }
        };
        if let Some(m) = out.get_mut(idx) {
            match field {
                "visible-ip" => m.visible_ip = Some(addr),
                "visible-gateway" => m.visible_gateway = Some(addr),
                _ => {}
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Reads `/qubes-firewall/<ip>/…` into a rule set (deny-all plus the error if malformed).
pub fn client_rules(db: &dyn QubesDbView, ip: IpAddr) -> (RuleSet, Option<RuleSetError>) {
    let prefix = alloc::format!("/qubes-firewall/{ip}/");
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    db.for_each_under(&prefix, &mut |rest, v| {
        // One more than the limit, so the rule-set parser sees and reports the overflow.
        if entries.len() <= crate::rules::MAX_RULES {
            entries.push((String::from(rest), Vec::from(v)));
        }
    });
    ruleset_from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

/// The client IP whose rules were committed, if `path` is a commit marker `/qubes-firewall/<ip>`.
pub fn commit_ip(path: &str) -> Option<IpAddr> {
    let ip = path.strip_prefix("/qubes-firewall/")?;
    if ip.contains('/') {
        return None;
    }
    ip.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Action, Proto};

    pub(crate) fn db(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (String::from(*k), Vec::from(v.as_bytes())))
            .collect()
    }

    fn sample() -> BTreeMap<String, Vec<u8>> {
        db(&[
            ("/qubes-ip", "10.138.5.9"),
            ("/qubes-gateway", "10.138.0.1"),
            ("/qubes-primary-dns", "10.139.1.1"),
            ("/qubes-secondary-dns", "10.139.1.2"),
            ("/qubes-netvm-gateway", "10.138.5.9"),
            ("/qubes-netvm-netmask", "255.255.255.255"),
            ("/qubes-netvm-primary-dns", "10.139.1.1"),
            ("/qubes-netvm-secondary-dns", "10.139.1.2"),
            ("/qubes-netvm-gateway6", "fd09:24ef:4179::a8a:509"),
            ("/connected-ips", "10.137.0.7 10.137.0.8"),
            ("/connected-ips6", "fd09:24ef:4179::a89:7"),
            ("/mapped-ip/10.137.0.8/visible-ip", "10.137.0.99"),
            ("/mapped-ip/10.137.0.8/visible-gateway", "10.137.0.1"),
            ("/qubes-firewall/10.137.0.7", ""),
            ("/qubes-firewall/10.137.0.7/policy", "drop"),
            ("/qubes-firewall/10.137.0.7/0000", "action=accept proto=tcp"),
            ("/qubes-firewall/10.137.0.7/0003", "action=drop"),
            ("/qubes-firewall/10.137.0.77/0000", "action=accept"),
        ])
    }

    #[test]
    fn reads_netvm_keys() {
        let c = NetConfig::from_qubesdb(&sample()).unwrap();
        assert_eq!(c.own_ip, Ipv4Addr::new(10, 138, 5, 9));
        assert_eq!(c.uplink_gateway, Ipv4Addr::new(10, 138, 0, 1));
        assert_eq!(
            c.upstream_dns,
            [
                Some(Ipv4Addr::new(10, 139, 1, 1)),
                Some(Ipv4Addr::new(10, 139, 1, 2))
            ]
        );
        assert_eq!(c.client_gateway, c.own_ip);
        assert_eq!(
            c.client_gateway6,
            Some("fd09:24ef:4179::a8a:509".parse().unwrap())
        );
        assert_eq!(c.own_ip6, None);
        assert_eq!(c.connected.len(), 3);
        assert_eq!(
            c.mapped,
            [MappedIp {
                real: Ipv4Addr::new(10, 137, 0, 8),
                visible_ip: Some(Ipv4Addr::new(10, 137, 0, 99)),
                visible_gateway: Some(Ipv4Addr::new(10, 137, 0, 1)),
            }]
        );
        assert_eq!(
            c.dns_target("10.139.1.2".parse().unwrap()),
            Some(Ipv4Addr::new(10, 139, 1, 2))
        );
        assert_eq!(c.dns_target("10.139.1.3".parse().unwrap()), None);
    }

    #[test]
    fn missing_or_bad_keys_are_named() {
        let mut d = sample();
        d.remove("/qubes-ip");
        assert_eq!(
            NetConfig::from_qubesdb(&d),
            Err(ConfigError::Missing("/qubes-ip"))
        );
        let mut d = sample();
        d.insert("/qubes-gateway".into(), b"10.1.1".to_vec());
        assert_eq!(
            NetConfig::from_qubesdb(&d),
            Err(ConfigError::BadValue("/qubes-gateway"))
        );
        let mut d = sample();
        d.insert("/connected-ips".into(), b"10.0.0.1 nonsense".to_vec());
        assert_eq!(
            NetConfig::from_qubesdb(&d),
            Err(ConfigError::BadValue("/connected-ips"))
        );
        let mut d = sample();
        d.insert("/qubes-netvm-gateway".into(), b"\xff".to_vec());
        assert_eq!(
            NetConfig::from_qubesdb(&d),
            Err(ConfigError::BadValue("/qubes-netvm-gateway"))
        );
    }

    #[test]
    fn client_rules_reads_only_that_client_with_gaps() {
        let (set, err) = client_rules(&sample(), "10.137.0.7".parse().unwrap());
        assert_eq!(err, None);
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[0].proto, Some(Proto::Tcp));
        assert_eq!(set.rules[1].action, Action::Drop);
        // No directory at all: no rules, policy drop.
        let (set, err) = client_rules(&sample(), "10.137.0.9".parse().unwrap());
        assert_eq!((set, err), (RuleSet::deny_all(), None));
    }

    #[test]
    fn reads_through_the_qubesdb_agent_copy() {
        // Local writes stand in for dom0's dump here; give them room to queue.
        let limits = qubes::qubesdb::Limits {
            max_pending_writes: 64,
            max_out: 64 * 1024,
            ..qubes::qubesdb::Limits::DEFAULT
        };
        let mut agent = qubes::qubesdb::Agent::new(limits);
        agent.connect();
        for (k, v) in sample() {
            agent.write(&k, &v).unwrap();
        }
        let direct = NetConfig::from_qubesdb(&sample()).unwrap();
        assert_eq!(NetConfig::from_qubesdb(&agent), Ok(direct));
        let ip = "10.137.0.7".parse().unwrap();
        assert_eq!(client_rules(&agent, ip), client_rules(&sample(), ip));
    }

    #[test]
    fn commit_marker_paths() {
        assert_eq!(
            commit_ip("/qubes-firewall/10.137.0.7"),
            Some("10.137.0.7".parse().unwrap())
        );
        assert_eq!(
            commit_ip("/qubes-firewall/fd09::7"),
            Some("fd09::7".parse().unwrap())
        );
        assert_eq!(commit_ip("/qubes-firewall/10.137.0.7/0000"), None);
        assert_eq!(commit_ip("/qubes-firewall/"), None);
        assert_eq!(commit_ip("/qubes-ip"), None);
    }
}
