//! `qvm-firewall` rule text from QubesDB -> typed [`Rule`]s and per-client [`RuleSet`]s (parse only).
//! Format: qubesdb.md §5 [QA `qubes/firewall.py`]; a malformed rule set becomes deny-all, never allow.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest rule text we look at; dom0 rules are well under 200 bytes.
pub const MAX_RULE_LEN: usize = 1024;
/// Longest DNS name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;
/// Most numbered rules accepted for one client before the set is refused (deny-all).
pub const MAX_RULES: usize = 4096;

/// What a matching rule (or the policy) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
}

/// The `proto=` of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// An address prefix (`dst4`, `dst6`, or an IP/CIDR `dsthost`); host bits are cleared on parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Builds a prefix, clearing host bits; `None` if `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, len })
    }

    /// True if `ip` (same family) lies inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match Cidr::new(ip, self.len) {
            Some(c) => c.addr == self.addr,
            None => false,
        }
    }

    fn parse(s: &str, v4: bool, v6: bool) -> Option<Self> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        if (addr.is_ipv4() && !v4) || (addr.is_ipv6() && !v6) {
            return None;
        }
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => width,
            // Digits only: `u8::from_str` would also take a leading '+'.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse().ok()?
            }
            Some(_) => return None,
        };
        Cidr::new(addr, len)
    }
}

/// Where a rule's destination must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dst {
    Any,
    Net(Cidr),
    /// A DNS name (lower-case, `[a-z0-9._-]`), matched through the resolver cache.
    Host(String),
}

/// An inclusive destination port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// One parsed `qvm-firewall` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub dst: Dst,
    pub proto: Option<Proto>,
    pub ports: Option<PortRange>,
    pub icmp_type: Option<u8>,
    /// `specialtarget=dns`: destination is one of the virtual DNS servers, port 53.
    pub dns_only: bool,
}

impl Rule {
    /// The default Qubes firewall: a single `action=accept`.
    pub const ACCEPT_ALL: Rule = Rule {
        action: Action::Accept,
        dst: Dst::Any,
        proto: None,
        ports: None,
        icmp_type: None,
        dns_only: false,
    };
}

/// A rule key, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Action,
    Proto,
    Dst4,
    Dst6,
    DstHost,
    DstPorts,
    IcmpType,
    SpecialTarget,
}

impl Key {
    fn from_name(s: &str) -> Option<Key> {
        Some(match s {
            "action" => Key::Action,
            "proto" => Key::Proto,
            "dst4" => Key::Dst4,
            "dst6" => Key::Dst6,
            "dsthost" => Key::DstHost,
            "dstports" => Key::DstPorts,
            "icmptype" => Key::IcmpType,
            "specialtarget" => Key::SpecialTarget,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Key::Action => "action",
            Key::Proto => "proto",
            Key::Dst4 => "dst4",
            Key::Dst6 => "dst6",
            Key::DstHost => "dsthost",
            Key::DstPorts => "dstports",
            Key::IcmpType => "icmptype",
            Key::SpecialTarget => "specialtarget",
        }
    }
}

/// Why one rule's text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleError {
    TooLong,
    NotUtf8,
    Empty,
    /// A token without `=`.
    NotKeyValue,
    UnknownKey,
    DuplicateKey(Key),
    BadValue(Key),
    MissingAction,
    /// More than one of `dst4`, `dst6`, `dsthost`.
    ConflictingDst,
    /// `dstports` without `proto=tcp|udp`.
    PortsNeedTcpUdp,
    /// `icmptype` without `proto=icmp`.
    IcmpTypeNeedsIcmp,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::TooLong => write!(f, "rule longer than {MAX_RULE_LEN} bytes"),
            RuleError::NotUtf8 => f.write_str("rule is not UTF-8"),
            RuleError::Empty => f.write_str("empty rule"),
            RuleError::NotKeyValue => f.write_str("token is not key=value"),
            RuleError::UnknownKey => f.write_str("unknown rule key"),
            RuleError::DuplicateKey(k) => write!(f, "key {} given twice", k.name()),
            RuleError::BadValue(k) => write!(f, "bad value for {}", k.name()),
            RuleError::MissingAction => f.write_str("rule has no action"),
            RuleError::ConflictingDst => f.write_str("more than one of dst4/dst6/dsthost"),
            RuleError::PortsNeedTcpUdp => f.write_str("dstports needs proto=tcp or proto=udp"),
            RuleError::IcmpTypeNeedsIcmp => f.write_str("icmptype needs proto=icmp"),
        }
    }
}

impl core::error::Error for RuleError {}

fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOST_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses one rule (`key=value` tokens separated by spaces, in any order).
pub fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    if text.len() > MAX_RULE_LEN {
        return Err(RuleError::TooLong);
    }
    let mut action = None;
    let mut dst = None;
    let mut proto = None;
    let mut ports = None;
    let mut icmp_type = None;
    let mut dns_only = false;
    let mut seen: u16 = 0;
    let mut any = false;
    for tok in text.split_ascii_whitespace() {
        any = true;
        let (k, v) = tok.split_once('=').ok_or(RuleError::NotKeyValue)?;
        let key = Key::from_name(k).ok_or(RuleError::UnknownKey)?;
        let bit = 1u16 << (key as u16);
        if seen & bit != 0 {
            return Err(RuleError::DuplicateKey(key));
        }
        seen |= bit;
        let bad = RuleError::BadValue(key);
        match key {
            Key::Action => {
                action = Some(match v {
                    "accept" => Action::Accept,
                    "drop" => Action::Drop,
                    _ => return Err(bad),
                })
            }
            Key::Proto => {
                proto = Some(match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" => Proto::Icmp,
                    _ => return Err(bad),
                })
            }
            Key::Dst4 | Key::Dst6 | Key::DstHost => {
                if dst.is_some() {
                    return Err(RuleError::ConflictingDst);
                }
                let (v4, v6) = (key != Key::Dst6, key != Key::Dst4);
                dst = Some(match Cidr::parse(v, v4, v6) {
                    Some(c) => Dst::Net(c),
                    None if key == Key::DstHost && valid_host(v) => {
                        let mut h = String::from(v);
                        h.make_ascii_lowercase();
                        Dst::Host(h)
                    }
                    None => return Err(bad),
                });
            }
            Key::DstPorts => {
                let (lo, hi) = v.split_once('-').ok_or(bad)?;
                let (lo, hi) = (parse_port(lo).ok_or(bad)?, parse_port(hi).ok_or(bad)?);
                if lo > hi {
                    return Err(bad);
                }
                ports = Some(PortRange { lo, hi });
            }
            Key::IcmpType => {
                if v.is_empty() || v.len() > 3 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad);
                }
                icmp_type = Some(v.parse::<u8>().map_err(|_| bad)?);
            }
            Key::SpecialTarget => {
                if v != "dns" {
                    return Err(bad);
                }
                dns_only = true;
            }
        }
    }
    if !any {
        return Err(RuleError::Empty);
    }
    let action = action.ok_or(RuleError::MissingAction)?;
    if ports.is_some() && !matches!(proto, Some(Proto::Tcp | Proto::Udp)) {
        return Err(RuleError::PortsNeedTcpUdp);
    }
    if icmp_type.is_some() && proto != Some(Proto::Icmp) {
        return Err(RuleError::IcmpTypeNeedsIcmp);
    }
    Ok(Rule {
        action,
        dst: dst.unwrap_or(Dst::Any),
        proto,
        ports,
        icmp_type,
        dns_only,
    })
}

/// A client's rules in evaluation order, then the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub policy: Action,
}

impl RuleSet {
    /// Nothing passes: used before a client's rules arrive and when they are malformed.
    pub fn deny_all() -> Self {
        RuleSet {
            rules: Vec::new(),
            policy: Action::Drop,
        }
    }

    /// The Qubes default firewall (`action=accept`, policy drop).
    pub fn accept_all() -> Self {
        RuleSet {
            rules: alloc::vec![Rule::ACCEPT_ALL],
            policy: Action::Drop,
        }
    }
}

/// Why a client's rule directory was refused (and replaced by deny-all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSetError {
    /// Rule `NNNN` did not parse.
    Rule {
        number: u16,
        error: RuleError,
    },
    /// `policy` is neither `drop` nor `accept`.
    BadPolicy,
    /// A key under the client's directory that is neither `policy` nor four digits.
    UnknownEntry,
    /// Two entries for the same rule number.
    DuplicateNumber(u16),
    TooManyRules,
}

impl fmt::Display for RuleSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSetError::Rule { number, error } => write!(f, "rule {number:04}: {error}"),
            RuleSetError::BadPolicy => f.write_str("policy is neither drop nor accept"),
            RuleSetError::UnknownEntry => f.write_str("unknown key in the rule directory"),
            RuleSetError::DuplicateNumber(n) => write!(f, "rule {n:04} given twice"),
            RuleSetError::TooManyRules => write!(f, "more than {MAX_RULES} rules"),
        }
    }
}

impl core::error::Error for RuleSetError {}

fn rule_number(name: &str) -> Option<u16> {
    if name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// Builds a client's rule set from the entries under `/qubes-firewall/<ip>/` (`name` is the part after
/// that prefix). Rules run in numeric order and gaps are fine; any error gives deny-all plus the error.
pub fn ruleset_from_entries<'a, I>(entries: I) -> (RuleSet, Option<RuleSetError>)
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    match try_ruleset(entries) {
        Ok(set) => (set, None),
        Err(e) => (RuleSet::deny_all(), Some(e)),
    }
}

fn try_ruleset<'a, I>(entries: I) -> Result<RuleSet, RuleSetError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut numbered: Vec<(u16, Rule)> = Vec::new();
    let mut policy = Action::Drop;
    for (name, value) in entries {
        if name == "policy" {
            policy = match value {
                b"drop" => Action::Drop,
                b"accept" => Action::Accept,
                _ => return Err(RuleSetError::BadPolicy),
            };
            continue;
        }
        let number = rule_number(name).ok_or(RuleSetError::UnknownEntry)?;
        if numbered.len() >= MAX_RULES {
            return Err(RuleSetError::TooManyRules);
        }
        let text = core::str::from_utf8(value).map_err(|_| RuleSetError::Rule {
            number,
            error: RuleError::NotUtf8,
        })?;
        let rule = parse_rule(text).map_err(|error| RuleSetError::Rule { number, error })?;
        numbered.push((number, rule));
    }
    numbered.sort_by_key(|(n, _)| *n);
    if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(RuleSetError::DuplicateNumber(w[0].0));
    }
    Ok(RuleSet {
        rules: numbered.into_iter().map(|(_, r)| r).collect(),
        policy,
    })
}

#[cfg(test)]
mod tests;
