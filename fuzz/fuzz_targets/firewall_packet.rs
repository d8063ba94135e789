//! Arbitrary frames from two clients and the uplink through classify + NAT, with rule reloads and
//! replies built from what we forwarded; checks the NAT bound and what leaves on each link.
#![no_main]

use arbitrary::Arbitrary;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use firewall::packet::{self, Parsed};
use firewall::rules::{parse_rule, RuleSet};
use firewall::{ClientAddrs, ClientId, Firewall, Limits, NetConfig, Verdict};
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

fn check_out(v: Verdict, frame: &[u8], fw: &Firewall, last: &mut Option<Vec<u8>>) {
    if let Verdict::Reject(_) = v {
        let mut out = [0u8; 1600];
        let n = fw.emit_reject(frame, &mut out).expect("1600 bytes hold any reject");
        if n > 0 {
            assert!(packet::parse(&out[..n]).is_ok(), "reject does not parse");
        }
    }
    if v == Verdict::ToUplink {
        // What leaves on the uplink parses and carries one of our own source addresses.
        let Ok(Parsed::Ip(p)) = packet::parse(frame) else { panic!("uplink frame does not parse") };
        assert!(fw.config().is_own(p.src), "uplink frame not from us: {p:?}");
        *last = Some(frame.to_vec());
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let limits = Limits { nat_entries: NAT_MAX, dns_records: 8, clients: 4 };
    let mut fw = Firewall::new(cfg(), limits, 0x5eed);
    for b in [false, true] {
        fw.add_client(id(b), addrs(b)).unwrap();
    }
    fw.reload(Instant(0), IpAddr::V4(Ipv4Addr::new(10, 137, 0, 7)), RuleSet::accept_all());
    fw.reload(
        Instant(0),
        IpAddr::V6(Ipv6Addr::new(0xfd09, 0x24ef, 0x4179, 0, 0, 0, 0xa89, 7)),
        RuleSet::accept_all(),
    );
    let mut now = Instant(0);
    let mut last: Option<Vec<u8>> = None;
    for op in ops.into_iter().take(64) {
        match op {
            Op::FromClient { b, mut frame } => {
                let v = fw.handle_client(now, id(b), &mut frame);
                check_out(v, &frame, &fw, &mut last);
            }
            Op::Synth { b, v6, proto, to, sport, dport, payload, flip_at, flip } => {
                let (src, dst) = if v6 {
                    let dst = match to % 4 {
                        0 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                        1 => IpAddr::V6(fw.config().own_ip6.unwrap()),
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
                let v = fw.handle_client(now, id(b), &mut frame);
                check_out(v, &frame, &fw, &mut last);
            }
            Op::AnswerLast { payload } => {
                let Some(frame) = last.as_ref() else { continue };
                let Ok(Parsed::Ip(p)) = packet::parse(frame) else { continue };
                let Some(k) = p.key() else { continue };
                let r = k.reverse();
                let proto = match r.proto {
                    firewall::packet::L4::Tcp => 0,
                    firewall::packet::L4::Udp => 1,
                    firewall::packet::L4::Echo => 3,
                };
                let mut frame = build(r.src, r.dst, proto, r.sport, r.dport, &payload);
                let _ = fw.handle_uplink(now, &mut frame);
            }
            Op::FromUplink { mut frame } => {
                let _ = fw.handle_uplink(now, &mut frame);
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
                let _ = fw.handle_uplink(now, &mut frame);
            }
            Op::Reload { b, rules } => {
                let set = rules.lines().map(parse_rule).collect::<Result<Vec<_>, _>>();
                let set = match set {
                    Ok(rules) => RuleSet { rules, policy: firewall::rules::Action::Drop },
                    Err(_) => RuleSet::deny_all(),
                };
                let ip = addrs(b).ip4.map(IpAddr::V4).unwrap();
                fw.reload(now, ip, set);
            }
            Op::Tick { secs } => now = Instant(now.0 + u64::from(secs) * 1_000_000_000),
            Op::RemoveAdd { b } => {
                fw.remove_client(id(b));
                fw.add_client(id(b), addrs(b)).unwrap();
            }
        }
        assert!(fw.nat().len() <= NAT_MAX);
        assert!(fw.dns().len() <= 8);
    }
});
