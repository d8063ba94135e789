use super::*;
use alloc::string::ToString;
use proptest::prelude::*;

fn net(s: &str, len: u8) -> Dst {
    Dst::Net(Cidr::new(s.parse().unwrap(), len).unwrap())
}

fn rule(action: Action) -> Rule {
    Rule {
        action,
        ..Rule::ACCEPT_ALL
    }
}

/// Every form of qubesdb.md §5, as dom0 writes it and reordered.
#[test]
fn parse_every_rule_form() {
    let cases: &[(&str, Rule)] = &[
        ("action=accept", rule(Action::Accept)),
        ("action=drop", rule(Action::Drop)),
        (
            "action=accept dst4=192.168.1.0/24",
            Rule {
                dst: net("192.168.1.0", 24),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dst4=10.1.2.3/32",
            Rule {
                dst: net("10.1.2.3", 32),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=drop dst4=10.1.2.3",
            Rule {
                dst: net("10.1.2.3", 32),
                ..rule(Action::Drop)
            },
        ),
        (
            "action=accept dst6=fd09:24ef:4179::/48",
            Rule {
                dst: net("fd09:24ef:4179::", 48),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dst6=2001:db8::1",
            Rule {
                dst: net("2001:db8::1", 128),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dsthost=www.Example-1.org",
            Rule {
                dst: Dst::Host("www.example-1.org".to_string()),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dsthost=8.8.8.8",
            Rule {
                dst: net("8.8.8.8", 32),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dsthost=10.0.0.0/8",
            Rule {
                dst: net("10.0.0.0", 8),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dsthost=2001:db8::/32",
            Rule {
                dst: net("2001:db8::", 32),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept proto=tcp",
            Rule {
                proto: Some(Proto::Tcp),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept dst4=192.168.1.0/24 proto=tcp dstports=443-443",
            Rule {
                dst: net("192.168.1.0", 24),
                proto: Some(Proto::Tcp),
                ports: Some(PortRange { lo: 443, hi: 443 }),
                ..rule(Action::Accept)
            },
        ),
        (
            "dstports=1024-65535 proto=udp action=drop",
            Rule {
                proto: Some(Proto::Udp),
                ports: Some(PortRange {
                    lo: 1024,
                    hi: 65535,
                }),
                ..rule(Action::Drop)
            },
        ),
        (
            "action=accept proto=icmp",
            Rule {
                proto: Some(Proto::Icmp),
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept proto=icmp icmptype=8",
            Rule {
                proto: Some(Proto::Icmp),
                icmp_type: Some(8),
                ..rule(Action::Accept)
            },
        ),
        (
            "icmptype=255 proto=icmp action=drop",
            Rule {
                proto: Some(Proto::Icmp),
                icmp_type: Some(255),
                ..rule(Action::Drop)
            },
        ),
        (
            "action=accept specialtarget=dns",
            Rule {
                dns_only: true,
                ..rule(Action::Accept)
            },
        ),
        (
            "action=accept proto=udp specialtarget=dns dstports=53-53",
            Rule {
                proto: Some(Proto::Udp),
                ports: Some(PortRange { lo: 53, hi: 53 }),
                dns_only: true,
                ..rule(Action::Accept)
            },
        ),
        (
            "  action=accept \t dsthost=a.b  ",
            Rule {
                dst: Dst::Host("a.b".to_string()),
                ..rule(Action::Accept)
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_rule(text).as_ref(), Ok(want), "{text}");
    }
}

#[test]
fn parse_refuses_malformed_rules() {
    use RuleError as E;
    let cases: &[(&str, RuleError)] = &[
        ("", E::Empty),
        ("   ", E::Empty),
        ("action", E::NotKeyValue),
        ("action=allow", E::BadValue(Key::Action)),
        ("action=accept expire=123", E::UnknownKey),
        ("action=accept comment=hi", E::UnknownKey),
        ("Action=accept", E::UnknownKey),
        ("proto=tcp", E::MissingAction),
        ("action=accept action=drop", E::DuplicateKey(Key::Action)),
        ("action=accept proto=sctp", E::BadValue(Key::Proto)),
        ("action=accept dst4=1.2.3.4/33", E::BadValue(Key::Dst4)),
        ("action=accept dst4=1.2.3/8", E::BadValue(Key::Dst4)),
        ("action=accept dst4=::1", E::BadValue(Key::Dst4)),
        ("action=accept dst4=1.2.3.4/+8", E::BadValue(Key::Dst4)),
        ("action=accept dst6=1.2.3.4", E::BadValue(Key::Dst6)),
        ("action=accept dst6=::/129", E::BadValue(Key::Dst6)),
        ("action=accept dsthost=bad/name", E::BadValue(Key::DstHost)),
        ("action=accept dsthost=a*b", E::BadValue(Key::DstHost)),
        ("action=accept dsthost=", E::BadValue(Key::DstHost)),
        ("action=accept dst4=1.1.1.1 dsthost=a.b", E::ConflictingDst),
        (
            "action=accept proto=tcp dstports=443",
            E::BadValue(Key::DstPorts),
        ),
        (
            "action=accept proto=tcp dstports=2-1",
            E::BadValue(Key::DstPorts),
        ),
        (
            "action=accept proto=tcp dstports=1-65536",
            E::BadValue(Key::DstPorts),
        ),
        (
            "action=accept proto=tcp dstports=-1-5",
            E::BadValue(Key::DstPorts),
        ),
        ("action=accept dstports=53-53", E::PortsNeedTcpUdp),
        ("action=accept proto=icmp dstports=1-2", E::PortsNeedTcpUdp),
        (
            "action=accept proto=icmp icmptype=256",
            E::BadValue(Key::IcmpType),
        ),
        (
            "action=accept proto=icmp icmptype=-1",
            E::BadValue(Key::IcmpType),
        ),
        ("action=accept proto=tcp icmptype=8", E::IcmpTypeNeedsIcmp),
        (
            "action=accept specialtarget=ntp",
            E::BadValue(Key::SpecialTarget),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_rule(text), Err(*want), "{text}");
    }
    let long = alloc::format!("action=accept dsthost={}", "a".repeat(MAX_RULE_LEN));
    assert_eq!(parse_rule(&long), Err(E::TooLong));
    let long_host = alloc::format!("action=accept dsthost={}", "a".repeat(MAX_HOST_LEN + 1));
    assert_eq!(parse_rule(&long_host), Err(E::BadValue(Key::DstHost)));
}

#[test]
fn error_display_is_one_line() {
    let e = RuleSetError::Rule {
        number: 7,
        error: RuleError::BadValue(Key::DstPorts),
    };
    assert_eq!(e.to_string(), "rule 0007: bad value for dstports");
}

#[test]
fn ruleset_numeric_order_with_gaps() {
    // dom0 skips expired rules without renumbering: 0000, 0002, 0010 must all be read.
    let entries: [(&str, &[u8]); 4] = [
        ("0010", b"action=drop"),
        ("policy", b"drop"),
        ("0000", b"action=accept proto=tcp"),
        ("0002", b"action=accept proto=udp"),
    ];
    let (set, err) = ruleset_from_entries(entries);
    assert_eq!(err, None);
    assert_eq!(set.policy, Action::Drop);
    let protos: Vec<_> = set.rules.iter().map(|r| r.proto).collect();
    assert_eq!(protos, [Some(Proto::Tcp), Some(Proto::Udp), None]);
    assert_eq!(set.rules[2].action, Action::Drop);
}

#[test]
fn ruleset_malformed_rule_falls_back_to_deny_all() {
    let entries: [(&str, &[u8]); 3] = [
        ("policy", b"drop"),
        ("0000", b"action=accept"),
        ("0001", b"action=accept proto=gre"),
    ];
    let (set, err) = ruleset_from_entries(entries);
    assert_eq!(set, RuleSet::deny_all());
    assert_eq!(
        err,
        Some(RuleSetError::Rule {
            number: 1,
            error: RuleError::BadValue(Key::Proto)
        })
    );
}

type Entries<'a> = &'a [(&'a str, &'a [u8])];

#[test]
fn ruleset_bad_entries_fall_back_to_deny_all() {
    let cases: &[(Entries<'_>, RuleSetError)] = &[
        (&[("policy", b"maybe")], RuleSetError::BadPolicy),
        (&[("12", b"action=accept")], RuleSetError::UnknownEntry),
        (&[("extra", b"x")], RuleSetError::UnknownEntry),
        (
            &[("0001", b"\xff")],
            RuleSetError::Rule {
                number: 1,
                error: RuleError::NotUtf8,
            },
        ),
    ];
    for (entries, want) in cases {
        let (set, err) = ruleset_from_entries(entries.iter().copied());
        assert_eq!(set, RuleSet::deny_all());
        assert_eq!(err, Some(*want));
    }
}

#[test]
fn ruleset_too_many_rules_is_refused() {
    let names: Vec<String> = (0..=MAX_RULES)
        .map(|n| alloc::format!("{:04}", n % 10000))
        .collect();
    let entries = names.iter().map(|n| (n.as_str(), &b"action=accept"[..]));
    let (set, err) = ruleset_from_entries(entries);
    assert_eq!(set, RuleSet::deny_all());
    assert_eq!(err, Some(RuleSetError::TooManyRules));
}

#[test]
fn cidr_contains() {
    let c = Cidr::new("10.137.0.77".parse().unwrap(), 16).unwrap();
    assert!(c.contains("10.137.255.1".parse().unwrap()));
    assert!(!c.contains("10.138.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    let all = Cidr::new("1.2.3.4".parse().unwrap(), 0).unwrap();
    assert!(all.contains("200.1.1.1".parse().unwrap()));
}

proptest! {
    #[test]
    fn parse_rule_never_panics(s in "\\PC{0,200}") {
        let _ = parse_rule(&s);
    }

    #[test]
    fn parse_rule_never_panics_on_near_valid(
        toks in proptest::collection::vec(
            "(action|proto|dst4|dst6|dsthost|dstports|icmptype|specialtarget)=[a-z0-9./:-]{0,12}", 0..6)
    ) {
        let _ = parse_rule(&toks.join(" "));
    }

    #[test]
    fn ports_roundtrip(lo in any::<u16>(), hi in any::<u16>()) {
        let text = alloc::format!("action=accept proto=tcp dstports={lo}-{hi}");
        match parse_rule(&text) {
            Ok(r) => prop_assert_eq!(r.ports, Some(PortRange { lo, hi })),
            Err(e) => {
                prop_assert!(lo > hi);
                prop_assert_eq!(e, RuleError::BadValue(Key::DstPorts));
            }
        }
    }
}
