//! The dom0-set ruleset of `qubes.UnikernelFirewallRuleset`: port forwards, extra inter-VM allows
//! and drop-vs-reject per client, parsed from bounded line text; applied whole or not at all.

use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use crate::rules::{PortRange, Proto};

/// Largest ruleset text accepted (the RPC reads no more than this).
pub const MAX_TEXT: usize = 64 * 1024;
/// Most entries of each kind.
pub const MAX_ENTRIES: usize = 256;

/// Connections to our uplink address on `port` go to `client:to_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub proto: Proto,
    pub port: u16,
    pub client: IpAddr,
    pub to_port: u16,
}

/// Client `src` may open flows to client `dst` (optionally only this protocol and ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterVmAllow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Option<Proto>,
    pub ports: Option<PortRange>,
}

impl InterVmAllow {
    /// True if this allow covers a new flow `src -> dst` of `proto` to `dport`.
    pub fn covers(&self, src: IpAddr, dst: IpAddr, proto: Proto, dport: Option<u16>) -> bool {
        self.src == src
            && self.dst == dst
            && self.proto.is_none_or(|p| p == proto)
            && self
                .ports
                .is_none_or(|r| dport.is_some_and(|d| r.contains(d)))
    }
}

/// Everything the ruleset RPC sets. The empty ruleset is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub forwards: Vec<PortForward>,
    pub allows: Vec<InterVmAllow>,
    /// Clients whose denied packets get an ICMP prohibited error instead of silence.
    pub reject: Vec<IpAddr>,
}

/// What was wrong with a ruleset line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RulesetErrorKind {
    TooLong,
    NotUtf8,
    UnknownVerb,
    /// Too few or too many words for the verb.
    WordCount,
    BadProto,
    BadPort,
    BadAddress,
    /// Two forwards of the same protocol and port.
    DuplicateForward,
    TooMany,
}

/// A ruleset refused as a whole; `line` is 1-based (0 for the whole text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulesetError {
    pub line: usize,
    pub kind: RulesetErrorKind,
}

impl fmt::Display for RulesetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RulesetErrorKind::TooLong => "ruleset too long",
            RulesetErrorKind::NotUtf8 => "ruleset is not UTF-8",
            RulesetErrorKind::UnknownVerb => "unknown verb (forward, allow, reject)",
            RulesetErrorKind::WordCount => "wrong number of words",
            RulesetErrorKind::BadProto => "bad protocol",
            RulesetErrorKind::BadPort => "bad port",
            RulesetErrorKind::BadAddress => "bad address",
            RulesetErrorKind::DuplicateForward => "port already forwarded",
            RulesetErrorKind::TooMany => "too many entries",
        };
        write!(f, "line {}: {what}", self.line)
    }
}

impl core::error::Error for RulesetError {}

fn proto(s: &str, icmp_ok: bool) -> Option<Proto> {
    match s {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "icmp" if icmp_ok => Some(Proto::Icmp),
        _ => None,
    }
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

fn range(s: &str) -> Option<PortRange> {
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(s)?, port(s)?),
    };
    (lo <= hi).then_some(PortRange { lo, hi })
}

impl Ruleset {
    /// Parses the RPC's text. One entry per line, `#` starts a comment:
    /// `forward tcp|udp <port> <client-ip> <client-port>`,
    /// `allow <src-ip> <dst-ip> [tcp|udp|icmp [<port>|<lo>-<hi>]]`, `reject <client-ip>`.
    pub fn parse(text: &[u8]) -> Result<Ruleset, RulesetError> {
        let whole = |kind| RulesetError { line: 0, kind };
        if text.len() > MAX_TEXT {
            return Err(whole(RulesetErrorKind::TooLong));
        }
        let text = core::str::from_utf8(text).map_err(|_| whole(RulesetErrorKind::NotUtf8))?;
        let mut r = Ruleset::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            let err = |kind| RulesetError { line: i + 1, kind };
            let mut w = [""; 6];
            let mut n = 0;
            for word in line.split_ascii_whitespace() {
                *w.get_mut(n).ok_or(err(RulesetErrorKind::WordCount))? = word;
                n += 1;
            }
            let ip = |s: &str| {
                s.parse::<IpAddr>()
                    .map_err(|_| err(RulesetErrorKind::BadAddress))
            };
            match (w[0], n) {
                ("", 0) => continue,
                ("forward", 5) => {
                    let f = PortForward {
                        proto: proto(w[1], false).ok_or(err(RulesetErrorKind::BadProto))?,
                        port: port(w[2]).ok_or(err(RulesetErrorKind::BadPort))?,
                        client: ip(w[3])?,
                        to_port: port(w[4]).ok_or(err(RulesetErrorKind::BadPort))?,
                    };
                    if r.forwards
                        .iter()
                        .any(|o| o.proto == f.proto && o.port == f.port)
                    {
                        return Err(err(RulesetErrorKind::DuplicateForward));
                    }
                    if r.forwards.len() >= MAX_ENTRIES {
                        return Err(err(RulesetErrorKind::TooMany));
                    }
                    r.forwards.push(f);
                }
                ("allow", 3..=5) => {
                    let p = match n {
                        3 => None,
                        _ => Some(proto(w[3], true).ok_or(err(RulesetErrorKind::BadProto))?),
                    };
                    let ports = match n {
                        5 if p != Some(Proto::Icmp) => {
                            Some(range(w[4]).ok_or(err(RulesetErrorKind::BadPort))?)
                        }
                        5 => return Err(err(RulesetErrorKind::BadPort)),
                        _ => None,
                    };
                    if r.allows.len() >= MAX_ENTRIES {
                        return Err(err(RulesetErrorKind::TooMany));
                    }
                    r.allows.push(InterVmAllow {
                        src: ip(w[1])?,
                        dst: ip(w[2])?,
                        proto: p,
                        ports,
                    });
                }
                ("reject", 2) => {
                    if r.reject.len() >= MAX_ENTRIES {
                        return Err(err(RulesetErrorKind::TooMany));
                    }
                    r.reject.push(ip(w[1])?);
                }
                ("forward" | "allow" | "reject", _) => {
                    return Err(err(RulesetErrorKind::WordCount))
                }
                _ => return Err(err(RulesetErrorKind::UnknownVerb)),
            }
        }
        Ok(r)
    }

    /// The forward for a packet reaching our uplink address on `proto`/`port`.
    pub fn forward_for(&self, proto: Proto, port: u16) -> Option<&PortForward> {
        self.forwards
            .iter()
            .find(|f| f.proto == proto && f.port == port)
    }

    /// True if some allow covers the new flow `src -> dst`.
    pub fn allows(&self, src: IpAddr, dst: IpAddr, proto: Proto, dport: Option<u16>) -> bool {
        self.allows.iter().any(|a| a.covers(src, dst, proto, dport))
    }

    /// True if denied packets from `client` are refused with an ICMP error.
    pub fn rejects(&self, client: IpAddr) -> bool {
        self.reject.contains(&client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        let text = b"# dom0's ruleset\n\
            forward tcp 8080 10.137.0.7 80\n\
            forward udp 5353 fd09:24ef:4179::a89:7 53  # v6 client\n\
            \n\
            allow 10.137.0.7 10.137.0.8\n\
            allow 10.137.0.7 10.137.0.8 tcp 22\n\
            allow 10.137.0.8 10.137.0.7 udp 1000-2000\n\
            allow 10.137.0.8 10.137.0.7 icmp\n\
            reject 10.137.0.7\n";
        let r = Ruleset::parse(text).unwrap();
        assert_eq!(
            r.forwards,
            [
                PortForward {
                    proto: Proto::Tcp,
                    port: 8080,
                    client: ip("10.137.0.7"),
                    to_port: 80
                },
                PortForward {
                    proto: Proto::Udp,
                    port: 5353,
                    client: ip("fd09:24ef:4179::a89:7"),
                    to_port: 53
                },
            ]
        );
        assert_eq!(r.allows.len(), 4);
        assert_eq!(r.allows[0].proto, None);
        assert_eq!(r.allows[1].ports, Some(PortRange { lo: 22, hi: 22 }));
        assert_eq!(r.allows[2].ports, Some(PortRange { lo: 1000, hi: 2000 }));
        assert_eq!(r.allows[3].proto, Some(Proto::Icmp));
        assert_eq!(r.reject, [ip("10.137.0.7")]);
        assert_eq!(r.forward_for(Proto::Tcp, 8080).unwrap().to_port, 80);
        assert!(r.forward_for(Proto::Udp, 8080).is_none());
        let (a, b) = (ip("10.137.0.7"), ip("10.137.0.8"));
        assert!(r.allows(a, b, Proto::Udp, Some(9)));
        assert!(r.allows(b, a, Proto::Udp, Some(1500)));
        assert!(!r.allows(b, a, Proto::Tcp, Some(1500)));
        assert!(!r.allows(b, a, Proto::Udp, Some(999)));
        assert!(r.rejects(a) && !r.rejects(b));
        assert_eq!(Ruleset::parse(b"").unwrap(), Ruleset::default());
    }

    #[test]
    fn hostile_ruleset_refused_with_line() {
        let cases: &[(&[u8], usize, RulesetErrorKind)] = &[
            (b"bogus 1", 1, RulesetErrorKind::UnknownVerb),
            (
                b"\nforward tcp 80 10.137.0.7",
                2,
                RulesetErrorKind::WordCount,
            ),
            (
                b"forward icmp 80 10.137.0.7 80",
                1,
                RulesetErrorKind::BadProto,
            ),
            (b"forward tcp 0 10.137.0.7 80", 1, RulesetErrorKind::BadPort),
            (
                b"forward tcp 65536 10.137.0.7 80",
                1,
                RulesetErrorKind::BadPort,
            ),
            (
                b"forward tcp +80 10.137.0.7 80",
                1,
                RulesetErrorKind::BadPort,
            ),
            (
                b"forward tcp 80 10.137.0 80",
                1,
                RulesetErrorKind::BadAddress,
            ),
            (
                b"forward tcp 80 10.137.0.7 80\nforward tcp 80 10.137.0.8 80",
                2,
                RulesetErrorKind::DuplicateForward,
            ),
            (
                b"allow 10.137.0.7 10.137.0.8 tcp 30-20",
                1,
                RulesetErrorKind::BadPort,
            ),
            (
                b"allow 10.137.0.7 10.137.0.8 icmp 3",
                1,
                RulesetErrorKind::BadPort,
            ),
            (
                b"allow 10.137.0.7 10.137.0.8 tcp 1 2 3",
                1,
                RulesetErrorKind::WordCount,
            ),
            (b"reject", 1, RulesetErrorKind::WordCount),
            (b"\xff", 0, RulesetErrorKind::NotUtf8),
        ];
        for (text, line, kind) in cases {
            assert_eq!(
                Ruleset::parse(text),
                Err(RulesetError {
                    line: *line,
                    kind: *kind
                }),
                "{}",
                alloc::string::String::from_utf8_lossy(text)
            );
        }
        let big = alloc::vec![b' '; MAX_TEXT + 1];
        assert_eq!(
            Ruleset::parse(&big).unwrap_err().kind,
            RulesetErrorKind::TooLong
        );
        let mut many = alloc::string::String::new();
        for _ in 0..=MAX_ENTRIES {
            many.push_str("reject 10.137.0.7\n");
        }
        assert_eq!(
            Ruleset::parse(many.as_bytes()).unwrap_err(),
            RulesetError {
                line: MAX_ENTRIES + 1,
                kind: RulesetErrorKind::TooMany
            }
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Ruleset::parse(&s);
        }
    }
}
