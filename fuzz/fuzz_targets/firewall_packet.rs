//! Arbitrary frames from two clients and the uplink through the router (classify, NAT, uplink
//! ARP/NDP, own DNS queries, ruleset forwards/allows/reject), with rule reloads, ruleset changes,
//! timers and replies built from what we forwarded; checks the bounds and what leaves each link.
#![no_main]

use arbitrary::Arbitrary;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use firewall::packet::{self, Parsed};
use firewall::rules::{parse_rule, RuleSet};
use firewall::router::{Link, Router, RouterLimits};
use firewall::ruleset::Ruleset;
use firewall::{ClientAddrs, ClientId, Firewall, Limits, NetConfig};
use libfuzzer_sys::fuzz_target;
use platform_api::Instant;

const NAT_MAX: usize = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    FromClient { b: bool, frame: Vec<u8> },
    /// A well-formed frame from a client (so the fuzzer need not find checksums and addresses).
    Synth { b: bool, v6: bool, proto: u8, to: u8, sport: u16, dport: u16, payload: Vec<u8>, flip_at: u16, flip: u8 },
    /// A well-formed reply from the far end of the last uplink flow, with this payload.
    AnswerLast { payload: Vec<u8> },
    FromUplink { frame: Vec<u8> },
    /// Reply (from the far end) to the last frame we sent on the uplink, then flip one byte.
    ReplyToLast { flip_at: u16, flip: u8 },
    /// Reload client A's (or B's) rules from text lines.
    Reload { b: bool, rules: String },
    Tick { secs: u16 },
    RemoveAdd { b: bool },
    /// A ruleset from text, or a well-formed one naming our clients.
    SetRuleset { text: Vec<u8> },
    KnownRuleset { reject: bool, port: u16 },
    /// Run the timers and send what they made.
    Poll,
    /// Answer (from the uplink) the last DNS query the firewall sent, with this payload.
    AnswerOwnQuery { payload: Vec<u8> },
    /// A new flow from the uplink to the forwarded port.
    Forwarded { sport: u16, port: u16, payload: Vec<u8> },
}

fn cfg() -> NetConfig {
    NetConfig {
        own_ip: Ipv4Addr::new(10, 138, 5, 9),
        uplink_gateway: Ipv4Addr::new(10, 138, 0, 1),
        upstream_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), Some(Ipv4Addr::new(10, 139, 1, 2))],
        own_ip6: Some(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa8a, 0x509)),
        uplink_gateway6: None,
        client_gateway: Ipv4Addr::new(10, 138, 5, 9),
        client_gateway6: Some(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa8a, 0x509)),
        client_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), Some(Ipv4Addr::new(10, 139, 1, 2))],
        connected: Vec::new(),
        mapped: Vec::new(),
    }
}

fn addrs(b: bool) -> ClientAddrs {
    if b {
        ClientAddrs { ip4: Some(Ipv4Addr::new(10, 137, 0, 8)), ip6: None }
    } else {
        ClientAddrs {
            ip4: Some(Ipv4Addr::new(10, 137, 0, 7)),
            ip6: Some(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa89, 7)),
        }
    }
}

fn id(b: bool) -> ClientId {
    ClientId(u32::from(b))
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn ip6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa89, last))
}

/// Ethernet + IPv4/IPv6 + transport: proto 0 TCP, 1 UDP, 2 echo request, 3 echo reply, else an
/// ICMP error quoting `payload`.
fn build(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let mut l4 = Vec::new();
    let next = match proto % 5 {
        0 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
            6
        }
        1 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            17
        }
        p => {
            let ty = match (p, v6) {
                (2, false) => 8,
                (2, true) => 128,
                (3, false) => 0,
                (3, true) => 129,
                (_, false) => 3,
                (_, true) => 1,
            };
            let id = if p == 3 { dport } else { sport };
            l4.extend_from_slice(&[ty, 0, 0, 0]);
            l4.extend_from_slice(&id.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            if v6 { 58 } else { 1 }
        }
    };
    l4.extend_from_slice(payload);
    let mut f = vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x16, 0x3e, 0x5e, 0x6c, 0];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[8, 0, 0x45, 0]);
            f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1, 0, 0, 64, next, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let c = ip_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[next, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => return f,
    }
    f.extend_from_slice(&l4);
    f
}

const UPLINK_MAC: [u8; 6] = [0, 0x16, 0x3e, 0x5e, 0x6c, 0x42];

fn check_out(to: Option<Link>, frame: &[u8], r: &Router, last: &mut Option<Vec<u8>>) {
    match to {
        Some(Link::Uplink) => {
            // What leaves on the uplink is from us: our MAC, and (IP) one of our addresses.
            assert_eq!(&frame[6..12], &UPLINK_MAC, "uplink frame not from our MAC");
            match packet::parse(frame) {
                Ok(Parsed::Ip(p)) => {
                    assert!(r.firewall().config().is_own(p.src), "uplink frame not from us: {p:?}");
                    *last = Some(frame.to_vec());
                }
                Ok(Parsed::Arp(_)) => {}
                Err(e) => panic!("uplink frame does not parse: {e}"),
            }
        }
        Some(Link::Client(_)) => {
            assert_eq!(&frame[6..12], &packet::GATEWAY_MAC, "client frame not from the gateway MAC");
            assert!(packet::parse(frame).is_ok(), "client frame does not parse");
        }
        None => {}
    }
}

/// Sends the router's generated frames; the last DNS query is kept.
fn drain(r: &mut Router, last_query: &mut Option<Vec<u8>>) {
    let mut n = 0;
    while let Some((link, f)) = r.poll_transmit() {
        n += 1;
        assert!(f.len() <= firewall::router::MAX_FRAME);
        assert!(packet::parse(&f).is_ok(), "generated frame does not parse");
        if link == Link::Uplink {
            if let Ok(Parsed::Ip(p)) = packet::parse(&f) {
                if p.key().is_some_and(|k| k.dport == 53) {
                    *last_query = Some(f.clone());
                }
            }
        }
    }
    assert!(n <= RouterLimits::DEFAULT.out);
}

fuzz_target!(|ops: Vec<Op>| {
    let limits = Limits { nat_entries: NAT_MAX, nat_per_client: 12, dns_records: 8, clients: 4 };
    let mut fw = Firewall::new(cfg(), limits, 0x5eed);
    fw.reload(Instant(0), IpAddr::V4(Ipv4Addr::new(10, 137, 0, 7)), RuleSet::accept_all());
    fw.reload(
        Instant(0),
        IpAddr::V6(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa89, 7)),
        RuleSet::accept_all(),
    );
    let mut r = Router::new(fw, UPLINK_MAC, RouterLimits::DEFAULT);
    for b in [false, true] {
        r.add_client(id(b), addrs(b), [0, 0x16, 0x3e, 0x5e, 0x6c, 0]).unwrap();
    }
    // The gateway answers ARP, so uplink frames leave at once (held frames are tested apart).
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1]);
    arp.extend_from_slice(&[10, 138, 0, 1, 0, 0, 0, 0, 0, 0, 10, 138, 5, 9]);
    assert_eq!(r.handle(Instant(0), Link::Uplink, &mut arp), None);
    let mut now = Instant(0);
    let mut last: Option<Vec<u8>> = None;
    let mut last_query: Option<Vec<u8>> = None;
    for op in ops.into_iter().take(64) {
        match op {
            Op::FromClient { b, mut frame } => {
                let to = r.handle(now, Link::Client(id(b)), &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
            Op::Synth { b, v6, proto, to, sport, dport, payload, flip_at, flip } => {
                let (src, dst) = if v6 {
                    let dst = match to % 4 {
                        0 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                        1 => IpAddr::V6(r.firewall().config().own_ip6.unwrap()),
                        2 => ip6(8),
                        _ => ip6(7),
                    };
                    (ip6(if b { 8 } else { 7 }), dst)
                } else {
                    let dst = match to % 6 {
                        0 => ip4([93, 184, 216, 34]),
                        1 => ip4([10, 139, 1, 1]),
                        2 => ip4([10, 139, 1, 2]),
                        3 => ip4([10, 138, 5, 9]),
                        4 => ip4([10, 137, 0, 7]),
                        _ => ip4([10, 137, 0, 8]),
                    };
                    (ip4(if b { [10, 137, 0, 8] } else { [10, 137, 0, 7] }), dst)
                };
                let mut frame = build(src, dst, proto, sport, dport, &payload);
                if let Some(x) = frame.get_mut(usize::from(flip_at)) {
                    *x ^= flip;
                }
                let to = r.handle(now, Link::Client(id(b)), &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
            Op::AnswerLast { payload } => {
                let Some(frame) = last.as_ref() else { continue };
                let Ok(Parsed::Ip(p)) = packet::parse(frame) else { continue };
                let Some(k) = p.key() else { continue };
                let rk = k.reverse();
                let proto = match rk.proto {
                    firewall::packet::L4::Tcp => 0,
                    firewall::packet::L4::Udp => 1,
                    firewall::packet::L4::Echo => 3,
                };
                let mut frame = build(rk.src, rk.dst, proto, rk.sport, rk.dport, &payload);
                let to = r.handle(now, Link::Uplink, &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
            Op::FromUplink { mut frame } => {
                let to = r.handle(now, Link::Uplink, &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
            Op::ReplyToLast { flip_at, flip } => {
                let Some(mut frame) = last.clone() else { continue };
                if let Ok(Parsed::Ip(p)) = packet::parse(&frame) {
                    if let Some(k) = p.key() {
                        let _ = packet::rewrite(&mut frame, &p, &k.reverse());
                    }
                }
                if let Some(x) = frame.get_mut(usize::from(flip_at)) {
                    *x ^= flip;
                }
                let to = r.handle(now, Link::Uplink, &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
            Op::Reload { b, rules } => {
                let set = rules.lines().map(parse_rule).collect::<Result<Vec<_>, _>>();
                let set = match set {
                    Ok(rules) => RuleSet { rules, policy: firewall::rules::Action::Drop },
                    Err(_) => RuleSet::deny_all(),
                };
                let ip = addrs(b).ip4.map(IpAddr::V4).unwrap();
                r.firewall_mut().reload(now, ip, set);
            }
            Op::Tick { secs } => now = Instant(now.0 + u64::from(secs) * 1_000_000_000),
            Op::RemoveAdd { b } => {
                r.remove_client(id(b));
                r.add_client(id(b), addrs(b), [0, 0x16, 0x3e, 0x5e, 0x6c, 0]).unwrap();
            }
            Op::SetRuleset { text } => {
                if let Ok(rs) = Ruleset::parse(&text) {
                    r.firewall_mut().set_ruleset(now, rs);
                }
            }
            Op::KnownRuleset { reject, port } => {
                let mut t = format!(
                    "forward tcp {p} 10.137.0.8 80\nforward udp {p} fd09:24ef:4179::a89:7 53\nallow 10.137.0.7 10.137.0.8\n",
                    p = port.max(1)
                );
                if reject {
                    t.push_str("reject 10.137.0.7\nreject 10.137.0.8\n");
                }
                r.firewall_mut().set_ruleset(now, Ruleset::parse(t.as_bytes()).unwrap());
            }
            Op::Poll => {
                let _ = r.poll(now);
            }
            Op::AnswerOwnQuery { payload } => {
                let Some(q) = last_query.as_ref() else { continue };
                let Ok(Parsed::Ip(p)) = packet::parse(q) else { continue };
                let Some(k) = p.key() else { continue };
                let mut msg = q.get(42..44).map(|b| b.to_vec()).unwrap_or_default();
                msg.extend_from_slice(&payload);
                let mut frame = build(k.dst, k.src, 1, 53, k.sport, &msg);
                let to = r.handle(now, Link::Uplink, &mut frame);
                assert_eq!(to, None, "an answer to our own query went somewhere");
            }
            Op::Forwarded { sport, port, payload } => {
                let own = IpAddr::V4(r.firewall().config().own_ip);
                let mut frame = build(ip4([10, 138, 0, 1]), own, 0, sport, port, &payload);
                let to = r.handle(now, Link::Uplink, &mut frame);
                check_out(to, &frame, &r, &mut last);
            }
        }
        drain(&mut r, &mut last_query);
        while r.take_log().is_some() {}
        assert!(r.firewall().nat().len() <= NAT_MAX);
        assert!(r.firewall().dns().len() <= 8);
        for l in [Link::Uplink, Link::Client(id(false)), Link::Client(id(true))] {
            assert!(r.drops(l).count() <= RouterLimits::DEFAULT.drops_per_link);
        }
    }
});
