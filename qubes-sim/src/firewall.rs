//! Qubes firewall rules (`qvm-firewall`): parsing and validation as qubesd does, the rule text
//! dom0 writes to the netvm's QubesDB, and the `qvm-firewall` stand-in over the registry.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::admin::{self, Request};
use crate::cli::Usage;
use crate::registry::Registry;

/// Most rules one qube keeps (dom0 numbers them with four digits).
pub const MAX_RULES: usize = 10_000;
/// Longest comment kept.
pub const MAX_COMMENT: usize = 1024;

/// Where a rule's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dst {
    /// A DNS name the netvm resolves.
    Host(String),
    /// An IPv4 network.
    V4(Ipv4Addr, u8),
    /// An IPv6 network.
    V6(Ipv6Addr, u8),
}

/// One rule; fields absent in the rule text are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `accept` (true) or `drop`.
    pub accept: bool,
    /// `dsthost`/`dst4`/`dst6`.
    pub dst: Option<Dst>,
    /// `tcp`, `udp` or `icmp`.
    pub proto: Option<String>,
    /// `dstports` as an inclusive range.
    pub dstports: Option<(u16, u16)>,
    /// `icmptype`.
    pub icmptype: Option<u8>,
    /// `specialtarget=dns`.
    pub dns: bool,
    /// `expire`: seconds since the epoch after which the rule is dropped.
    pub expire: Option<u64>,
    /// `comment` (never sent to the netvm).
    pub comment: Option<String>,
}

impl Rule {
    /// The default firewall's one rule.
    pub fn accept_all() -> Rule {
        Rule {
            accept: true,
            dst: None,
            proto: None,
            dstports: None,
            icmptype: None,
            dns: false,
            expire: None,
            comment: None,
        }
    }

    /// Parses `key=value` tokens (`comment=` takes the rest of its token). `now` makes a
    /// relative `expire=+SECONDS` absolute.
    pub fn parse(tokens: &[&str], now: u64) -> Result<Rule> {
        let mut r = Rule::accept_all();
        let mut action = None;
        let mut seen = Vec::new();
        for t in tokens.iter().flat_map(|t| split_tokens(t)) {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid rule element {t:?} (KEY=VALUE expected)"))?;
            if seen.contains(&k) {
                bail!("duplicate rule element {k:?}");
            }
            seen.push(k);
            let bad = || anyhow!("invalid value for {k}: {v:?}");
            match k {
                "action" => {
                    action = Some(match v {
                        "accept" => true,
                        "drop" => false,
                        _ => return Err(bad()),
                    })
                }
                "dsthost" | "dst4" | "dst6" => {
                    if r.dst.is_some() {
                        bail!("more than one destination (dsthost/dst4/dst6)");
                    }
                    r.dst = Some(parse_dst(k, v).ok_or_else(bad)?);
                }
                "proto" if matches!(v, "tcp" | "udp" | "icmp") => r.proto = Some(v.into()),
                "proto" => return Err(bad()),
                "dstports" => r.dstports = Some(parse_ports(v).ok_or_else(bad)?),
                "icmptype" => r.icmptype = Some(v.parse().map_err(|_| bad())?),
                "specialtarget" if v == "dns" => r.dns = true,
                "specialtarget" => return Err(bad()),
                "expire" => r.expire = Some(parse_expire(v, now).ok_or_else(bad)?),
                "comment" if v.len() <= MAX_COMMENT && !v.contains(['\n', '\0']) => {
                    r.comment = Some(v.into())
                }
                "comment" => return Err(bad()),
                _ => bail!("unknown rule element {k:?}"),
            }
        }
        r.accept = action.ok_or_else(|| anyhow!("rule without action"))?;
        match (&r.proto, r.dstports, r.icmptype) {
            (Some(p), Some(_), _) if p != "tcp" && p != "udp" => {
                bail!("dstports valid only for tcp and udp")
            }
            (None, Some(_), _) => bail!("dstports valid only for tcp and udp"),
            (Some(p), _, Some(_)) if p != "icmp" => bail!("icmptype valid only for icmp"),
            (None, _, Some(_)) => bail!("icmptype valid only for icmp"),
            _ => {}
        }
        Ok(r)
    }

    /// The text dom0 writes to QubesDB: no expire and no comment, Qubes' token order.
    pub fn qdb_text(&self) -> String {
        let mut t = vec![format!(
            "action={}",
            if self.accept { "accept" } else { "drop" }
        )];
        match &self.dst {
            Some(Dst::Host(h)) => t.push(format!("dsthost={h}")),
            Some(Dst::V4(a, l)) => t.push(format!("dst4={a}/{l}")),
            Some(Dst::V6(a, l)) => t.push(format!("dst6={a}/{l}")),
            None => {}
        }
        if let Some(p) = &self.proto {
            t.push(format!("proto={p}"));
        }
        if self.dns {
            t.push("specialtarget=dns".into());
        }
        if let Some((lo, hi)) = self.dstports {
            t.push(format!("dstports={lo}-{hi}"));
        }
        if let Some(i) = self.icmptype {
            t.push(format!("icmptype={i}"));
        }
        t.join(" ")
    }

    /// Whether `other` is the same rule, comment aside (`qvm-firewall del RULE`).
    pub fn same(&self, other: &Rule) -> bool {
        Rule {
            comment: None,
            ..self.clone()
        } == Rule {
            comment: None,
            ..other.clone()
        }
    }
}

/// The full rule text, as `qvm-firewall list --raw` prints it.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qdb_text())?;
        if let Some(e) = self.expire {
            write!(f, " expire=@{e}")?;
        }
        if let Some(c) = &self.comment {
            write!(f, " comment={c}")?;
        }
        Ok(())
    }
}

/// A token, or the tokens of a whole rule passed as one argument; `comment=` keeps the rest.
fn split_tokens(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = arg.trim();
    while !rest.is_empty() {
        if rest.starts_with("comment=") {
            out.push(rest);
            break;
        }
        match rest.split_once(char::is_whitespace) {
            Some((t, r)) => {
                out.push(t);
                rest = r.trim_start();
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

fn parse_dst(key: &str, v: &str) -> Option<Dst> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (v, None),
    };
    if let Ok(a) = addr.parse::<Ipv4Addr>() {
        let l = len.unwrap_or(32);
        return (key != "dst6" && l <= 32).then_some(Dst::V4(a, l));
    }
    if let Ok(a) = addr.parse::<Ipv6Addr>() {
        let l = len.unwrap_or(128);
        return (key != "dst4" && l <= 128).then_some(Dst::V6(a, l));
    }
    let host_ok = key == "dsthost"
        && len.is_none()
        && !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    host_ok.then(|| Dst::Host(v.into()))
}

fn parse_ports(v: &str) -> Option<(u16, u16)> {
    let (lo, hi) = v.split_once('-').unwrap_or((v, v));
    let (lo, hi) = (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

fn parse_expire(v: &str, now: u64) -> Option<u64> {
    if let Some(s) = v.strip_prefix('+') {
        return now.checked_add(s.parse().ok()?);
    }
    v.strip_prefix('@').unwrap_or(v).parse().ok()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The rules of a qube (the default when it has none set).
pub fn rules_of(d: &crate::registry::Domain) -> Vec<Rule> {
    d.firewall
        .clone()
        .unwrap_or_else(|| vec![Rule::accept_all()])
}

/// `(NNNN, text)` for the netvm's QubesDB: every rule numbered in order, expired rules and
/// IPv6 ones skipped without renumbering, as dom0 leaves gaps (\[QA\] `Firewall.qdb_entries`).
pub fn qdb_rules(rules: &[Rule], now: u64) -> Vec<(usize, String)> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.expire.is_none_or(|e| e > now))
        .filter(|(_, r)| !matches!(r.dst, Some(Dst::V6(..))))
        .map(|(i, r)| (i, r.qdb_text()))
        .collect()
}

/// `qvm-firewall VMNAME [list [--raw] | add [--before N] RULE… | del (--rule-no N | RULE…) |
/// reset]`; a change is pushed to the qube's netvm when the sim runs it.
pub fn qvm_firewall(state: &Path, args: &[String]) -> Result<i32> {
    let mut pos = Vec::new();
    let mut before = None;
    let mut rule_no = None;
    let mut raw = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |opt: &str| -> Result<usize> {
            let v = it
                .next()
                .ok_or_else(|| Usage(format!("argument {opt}: expected one argument")))?;
            Ok(v.parse()
                .map_err(|_| Usage(format!("argument {opt}: invalid int value: {v:?}")))?)
        };
        match a.as_str() {
            "--before" => before = Some(value("--before")?),
            "--rule-no" => rule_no = Some(value("--rule-no")?),
            "--raw" => raw = true,
            "--reload" => {}
            o if o.starts_with("--") && pos.len() < 2 => {
                return Err(Usage(format!("unrecognized arguments: {o}")).into())
            }
            _ => pos.push(a.as_str()),
        }
    }
    let Some((vm, rest)) = pos.split_first() else {
        return Err(Usage("the following arguments are required: VMNAME".into()).into());
    };
    let (cmd, rule_args) = rest
        .split_first()
        .map_or(("list", &[][..]), |(c, r)| (*c, r));
    let now = now();
    match cmd {
        "list" => {
            let reg = Registry::load(state)?;
            print!("{}", list(&rules_of(reg.get(vm)?), raw));
            return Ok(0);
        }
        "add" => {
            let rule = Rule::parse(rule_args, now).map_err(|e| Usage(format!("{e}")))?;
            Registry::update(state, |reg| {
                let mut rules = rules_of(reg.get(vm)?);
                if rules.len() >= MAX_RULES {
                    bail!("too many firewall rules (at most {MAX_RULES})");
                }
                let at = before.unwrap_or(rules.len());
                if at > rules.len() {
                    bail!("rule number {at} out of range");
                }
                rules.insert(at, rule);
                set_rules(reg, vm, rules)
            })?;
        }
        "del" => {
            let target = match (rule_no, rule_args.is_empty()) {
                (Some(n), true) => Ok(n),
                (None, false) => {
                    Err(Rule::parse(rule_args, now).map_err(|e| Usage(format!("{e}")))?)
                }
                _ => return Err(Usage("either --rule-no or a rule is needed".into()).into()),
            };
            Registry::update(state, |reg| {
                let mut rules = rules_of(reg.get(vm)?);
                let i = match &target {
                    Ok(n) if *n < rules.len() => *n,
                    Ok(n) => bail!("rule number {n} out of range"),
                    Err(r) => rules
                        .iter()
                        .position(|x| x.same(r))
                        .ok_or_else(|| anyhow!("Rule not found"))?,
                };
                rules.remove(i);
                set_rules(reg, vm, rules)
            })?;
        }
        "reset" => Registry::update(state, |reg| {
            reg.get(vm)?;
            if let Some(d) = reg.domains.get_mut(*vm) {
                d.firewall = None;
            }
            Ok(())
        })?,
        c => return Err(Usage(format!("invalid choice: {c:?} (add, del, list, reset)")).into()),
    }
    // qubesd reloads the firewall of a running netvm's client at once.
    let req = Request::ReloadFirewall { vm: vm.to_string() };
    if let Some(r) = admin::try_call(state, &req)? {
        if let Some(e) = r.error {
            bail!("{e}");
        }
    }
    Ok(0)
}

fn set_rules(reg: &mut Registry, vm: &str, rules: Vec<Rule>) -> Result<()> {
    let d = reg
        .domains
        .get_mut(vm)
        .ok_or_else(|| anyhow!("no such domain: {vm:?}"))?;
    d.firewall = Some(rules);
    Ok(())
}

/// `qvm-firewall VM list` (a table, `-` for absent fields) or `--raw` (one rule text a line).
pub fn list(rules: &[Rule], raw: bool) -> String {
    if raw {
        return rules.iter().map(|r| format!("{r}\n")).collect();
    }
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let mut rows = vec![[
        "NO",
        "ACTION",
        "HOST",
        "PROTOCOL",
        "PORT(S)",
        "SPECIAL TARGET",
        "ICMP TYPE",
        "EXPIRE",
        "COMMENT",
    ]
    .map(String::from)];
    for (i, r) in rules.iter().enumerate() {
        rows.push([
            i.to_string(),
            if r.accept { "accept" } else { "drop" }.into(),
            dash(r.dst.as_ref().map(|d| match d {
                Dst::Host(h) => h.clone(),
                Dst::V4(a, l) => format!("{a}/{l}"),
                Dst::V6(a, l) => format!("{a}/{l}"),
            })),
            dash(r.proto.clone()),
            dash(r.dstports.map(|(lo, hi)| format!("{lo}-{hi}"))),
            dash(r.dns.then(|| "dns".into())),
            dash(r.icmptype.map(|i| i.to_string())),
            dash(r.expire.map(|e| format!("@{e}"))),
            dash(r.comment.clone()),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        Rule::parse(&[s], 1000).unwrap()
    }

    #[test]
    fn qdb_text_normalizes_like_qubesd() {
        assert_eq!(rule("action=accept").qdb_text(), "action=accept");
        assert_eq!(
            rule("dstports=443 proto=tcp action=drop dsthost=192.168.1.0/24").qdb_text(),
            "action=drop dst4=192.168.1.0/24 proto=tcp dstports=443-443"
        );
        assert_eq!(
            rule("action=accept dsthost=10.1.2.3").qdb_text(),
            "action=accept dst4=10.1.2.3/32"
        );
        assert_eq!(
            rule("action=accept specialtarget=dns").qdb_text(),
            "action=accept specialtarget=dns"
        );
        assert_eq!(
            rule("action=accept proto=icmp icmptype=8 comment=ping me").to_string(),
            "action=accept proto=icmp icmptype=8 comment=ping me"
        );
        assert_eq!(
            rule("action=accept dsthost=example.com expire=+60").to_string(),
            "action=accept dsthost=example.com expire=@1060"
        );
    }

    #[test]
    fn invalid_rules_are_refused() {
        for bad in [
            "dsthost=example.com",
            "action=maybe",
            "action=accept dstports=80",
            "action=accept proto=icmp dstports=80",
            "action=accept proto=tcp icmptype=3",
            "action=accept proto=tcp dstports=90-80",
            "action=accept proto=tcp dstports=0",
            "action=accept dst4=::1",
            "action=accept dst4=1.2.3.4/33",
            "action=accept dsthost=Bad_Name!",
            "action=accept specialtarget=ntp",
            "action=accept action=drop",
            "action=accept dst4=1.2.3.4 dsthost=x.org",
            "action=accept icmptype=300 proto=icmp",
            "action=accept colour=blue",
            "action=accept garbage",
        ] {
            assert!(Rule::parse(&[bad], 0).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn qdb_numbering_keeps_gaps_for_expired_and_ipv6_rules() {
        let rules = vec![
            rule("action=accept dst4=10.0.0.0/8"),
            rule("action=accept dst6=::1"),
            rule("action=drop proto=tcp dstports=22 expire=@999"),
            rule("action=accept proto=udp dstports=53 expire=@2000"),
            rule("action=drop"),
        ];
        assert_eq!(
            qdb_rules(&rules, 1000),
            vec![
                (0, "action=accept dst4=10.0.0.0/8".to_string()),
                (3, "action=accept proto=udp dstports=53-53".to_string()),
                (4, "action=drop".to_string()),
            ]
        );
    }

    /// A small deterministic generator (no extra dependency for the property tests).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n.max(1)
        }
    }

    fn random_rule(g: &mut Lcg) -> Rule {
        let mut r = Rule::accept_all();
        r.accept = g.next(2) == 0;
        r.dst = match g.next(4) {
            0 => None,
            1 => Some(Dst::Host(format!("h{}.example.org", g.next(1000)))),
            2 => Some(Dst::V4(
                Ipv4Addr::from(g.next(1 << 32) as u32),
                g.next(33) as u8,
            )),
            _ => Some(Dst::V6(
                Ipv6Addr::from(u128::from(g.next(u64::MAX)) << 64),
                g.next(129) as u8,
            )),
        };
        match g.next(4) {
            0 => {}
            1 => r.proto = Some("icmp".into()),
            2 => r.proto = Some("tcp".into()),
            _ => r.proto = Some("udp".into()),
        }
        match r.proto.as_deref() {
            Some("icmp") if g.next(2) == 0 => r.icmptype = Some(g.next(256) as u8),
            Some("tcp" | "udp") if g.next(2) == 0 => {
                let lo = 1 + g.next(65535) as u16;
                r.dstports = Some((lo, lo + g.next(u64::from(65535 - lo) + 1) as u16));
            }
            _ => {}
        }
        r.dns = g.next(3) == 0;
        r.expire = (g.next(3) == 0).then(|| g.next(1 << 40));
        r.comment = (g.next(3) == 0).then(|| format!("note {} with spaces", g.next(100)));
        r
    }

    #[test]
    fn property_rule_text_round_trips() {
        let mut g = Lcg(7);
        for _ in 0..5000 {
            let r = random_rule(&mut g);
            let text = r.to_string();
            assert_eq!(Rule::parse(&[&text], 0).unwrap(), r, "{text}");
            // The QubesDB text parses back to the same rule minus expire and comment.
            let q = Rule::parse(&[&r.qdb_text()], 0).unwrap();
            assert!(
                q.same(&Rule {
                    expire: None,
                    ..r.clone()
                }) && q.comment.is_none(),
                "{text}"
            );
        }
    }

    #[test]
    fn property_random_input_is_refused_or_parsed_never_a_panic() {
        let mut g = Lcg(11);
        let alphabet: Vec<char> = "=action accept drop dsthost dst4 dst6 proto tcp icmp dstports \
            icmptype specialtarget dns expire comment 0123456789./:-+@ \u{e9}\u{0}\n"
            .chars()
            .collect();
        for _ in 0..20000 {
            let len = g.next(80) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[g.next(alphabet.len() as u64) as usize])
                .collect();
            if let Ok(r) = Rule::parse(&[&s], u64::MAX) {
                // Whatever parses prints as something that parses to the same rule.
                assert_eq!(Rule::parse(&[&r.to_string()], 0).unwrap(), r, "{s:?}");
            }
        }
    }

    #[test]
    fn del_matches_rules_regardless_of_comment() {
        assert!(rule("action=drop proto=tcp dstports=22 comment=x")
            .same(&rule("proto=tcp dstports=22-22 action=drop")));
        assert!(!rule("action=drop").same(&rule("action=accept")));
    }

    #[test]
    fn list_shows_dashes_for_absent_fields() {
        let out = list(&[Rule::accept_all()], false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NO  ACTION"), "{out}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0", "accept", "-", "-", "-", "-", "-", "-", "-"]
        );
        assert_eq!(list(&[Rule::accept_all()], true), "action=accept\n");
    }
}
