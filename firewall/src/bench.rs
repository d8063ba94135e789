//! The firewall core's cost per packet (rule match + NAT, 100 rules per client) next to an empty
//! forward measured in the same run; clock-agnostic so `cargo xtask bench firewall` can drive it.

use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

use platform_api::Instant;

use crate::classify::{ClientAddrs, ClientId, Firewall, Limits};
use crate::config::NetConfig;
use crate::packet;
use crate::router::{Link, Router, RouterLimits};
use crate::rules::{parse_rule, Action, RuleSet};

/// Rules per client in the measured configuration.
pub const RULES_PER_CLIENT: usize = 100;
/// Flows the established-traffic pass cycles through.
const FLOWS: u16 = 64;

/// Nanoseconds per packet of each pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchReport {
    pub packets: usize,
    /// Parse + Ethernet rewrite only (what any forwarder does): the baseline.
    pub empty_forward_ns: f64,
    /// Router, established flows both ways (NAT lookup + rewrite + checksums).
    pub established_ns: f64,
    /// Router, every packet a new flow: 100 rules scanned, NAT entry made (LRU eviction at the bound).
    pub new_flow_ns: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "firewall core, {} rules/client, {} packets per pass: empty forward {:.1} ns/packet, \
             established (NAT) {:.1} ns/packet ({:.2}x), new flow (rules + NAT insert) {:.1} ns/packet ({:.2}x)",
            RULES_PER_CLIENT,
            self.packets,
            self.empty_forward_ns,
            self.established_ns,
            self.established_ns / self.empty_forward_ns.max(0.001),
            self.new_flow_ns,
            self.new_flow_ns / self.empty_forward_ns.max(0.001),
        )
    }
}

fn cfg() -> NetConfig {
    NetConfig {
        own_ip: Ipv4Addr::new(10, 138, 5, 9),
        uplink_gateway: Ipv4Addr::new(10, 138, 0, 1),
        upstream_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), None],
        own_ip6: None,
        uplink_gateway6: None,
        client_gateway: Ipv4Addr::new(10, 138, 5, 9),
        client_gateway6: None,
        client_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), None],
        connected: Vec::new(),
        mapped: Vec::new(),
    }
}

fn client_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 137, 0, 7 + i as u8)
}

/// 99 rules that do not match the traffic (each cheap to reject on a different field), then accept.
fn rules() -> RuleSet {
    let mut rules = Vec::with_capacity(RULES_PER_CLIENT);
    for i in 0..RULES_PER_CLIENT - 1 {
        let text = match i % 3 {
            0 => alloc::format!("action=drop dst4=203.0.{}.{}/32", i / 250, i % 250),
            1 => alloc::format!("action=drop proto=tcp dstports={}-{}", 2000 + i, 2000 + i),
            _ => alloc::format!("action=drop dst4=198.18.{}.0/24 proto=udp", i),
        };
        if let Ok(r) = parse_rule(&text) {
            rules.push(r);
        }
    }
    if let Ok(r) = parse_rule("action=accept") {
        rules.push(r);
    }
    RuleSet {
        rules,
        policy: Action::Drop,
    }
}

/// An Ethernet/IPv4/TCP frame with correct checksums.
fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = alloc::vec![0u8; 14 + 20 + 20 + 32];
    f[..6].copy_from_slice(&packet::GATEWAY_MAC);
    f[6..12].copy_from_slice(&[0, 0x16, 0x3e, 0x5e, 0x6c, 0]);
    f[12..14].copy_from_slice(&[8, 0]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&72u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = !smoltcp::wire::checksum::data(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut f[34..54];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x10;
    t[14..16].copy_from_slice(&[0xff, 0xff]);
    let mut tcp = smoltcp::wire::TcpPacket::new_unchecked(&mut f[34..]);
    tcp.fill_checksum(&src.into(), &dst.into());
    f
}

fn router(nat: usize) -> Router {
    let fw = Firewall::new(
        cfg(),
        Limits {
            nat_entries: nat,
            ..Limits::DEFAULT
        },
        0x5eed,
    );
    let mut r = Router::new(fw, [0, 0x16, 0x3e, 0x5e, 0x6c, 0x42], RouterLimits::DEFAULT);
    for i in 0..2 {
        let a = ClientAddrs {
            ip4: Some(client_ip(i)),
            ip6: None,
        };
        let _ = r.add_client(ClientId(i), a, [0, 0x16, 0x3e, 0x5e, 0x6c, 0]);
        let _ = r
            .firewall_mut()
            .reload(Instant(0), IpAddr::V4(client_ip(i)), rules());
    }
    // The uplink gateway's ARP reply, so frames leave at once.
    let mut arp = alloc::vec![0xffu8; 6];
    arp.extend_from_slice(&[
        2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1,
    ]);
    arp.extend_from_slice(&[10, 138, 0, 1, 0, 0, 0, 0, 0, 0, 10, 138, 5, 9]);
    let _ = r.handle(Instant(0), Link::Uplink, &mut arp);
    r
}

/// Runs the three passes of `packets` packets each; `now_ns` is a monotonic clock in nanoseconds.
pub fn run(packets: usize, now_ns: &mut dyn FnMut() -> u64) -> BenchReport {
    let packets = packets.max(1);
    let remote = Ipv4Addr::new(93, 184, 216, 34);
    let out_frames: Vec<(ClientId, Vec<u8>)> = (0..FLOWS)
        .map(|i| {
            let c = u32::from(i % 2);
            (ClientId(c), tcp_frame(client_ip(c), 40000 + i, remote, 443))
        })
        .collect();

    // Baseline: parse and rewrite the Ethernet addresses.
    let mut buf = alloc::vec![0u8; 128];
    let t0 = now_ns();
    let mut sink = 0usize;
    for i in 0..packets {
        let (_, f) = &out_frames[i % out_frames.len()];
        let b = &mut buf[..f.len()];
        b.copy_from_slice(f);
        if let Ok(packet::Parsed::Ip(p)) = packet::parse(b) {
            sink = sink.wrapping_add(usize::from(p.key().map_or(0, |k| k.sport)));
        }
        let _ = packet::set_macs(b, [2, 0, 0, 0, 0, 1], [0, 0x16, 0x3e, 0x5e, 0x6c, 0x42]);
        sink = sink.wrapping_add(usize::from(b[0]));
    }
    let empty = (now_ns() - t0) as f64 / packets as f64;

    // Established flows, both directions.
    let mut r = router(Limits::DEFAULT.nat_entries);
    let mut replies = Vec::new();
    for (c, f) in &out_frames {
        let mut b = f.clone();
        if r.handle(Instant(1), Link::Client(*c), &mut b) == Some(Link::Uplink) {
            if let Ok(packet::Parsed::Ip(p)) = packet::parse(&b) {
                if let Some(k) = p.key() {
                    let (IpAddr::V4(s), IpAddr::V4(d)) = (k.dst, k.src) else {
                        continue;
                    };
                    replies.push(tcp_frame(s, k.dport, d, k.sport));
                }
            }
        }
    }
    let t0 = now_ns();
    for i in 0..packets {
        let n = i / 2 % out_frames.len();
        let (link, f) = if i % 2 == 0 || replies.is_empty() {
            let (c, f) = &out_frames[n];
            (Link::Client(*c), f)
        } else {
            (Link::Uplink, &replies[n % replies.len()])
        };
        let b = &mut buf[..f.len()];
        b.copy_from_slice(f);
        sink = sink.wrapping_add(r.handle(Instant(2), link, b).is_some() as usize);
    }
    let established = (now_ns() - t0) as f64 / packets as f64;

    // Every packet a new flow: distinct source ports and destinations.
    let mut r = router(Limits::DEFAULT.nat_entries);
    let frames: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let dst = Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8);
            tcp_frame(client_ip(i % 2), 1024 + (i as u16), dst, 443)
        })
        .collect();
    let t0 = now_ns();
    for i in 0..packets {
        let f = &frames[i % frames.len()];
        let b = &mut buf[..f.len()];
        b.copy_from_slice(f);
        // A new source port each round, so the flow is new every time.
        let sport = 1024u16
            .wrapping_add((i / frames.len()) as u16 * 7)
            .max(1024);
        b[34..36].copy_from_slice(&sport.wrapping_add((i % frames.len()) as u16).to_be_bytes());
        let link = Link::Client(ClientId((i % 2) as u32));
        sink = sink.wrapping_add(r.handle(Instant(3), link, b).is_some() as usize);
    }
    let new_flow = (now_ns() - t0) as f64 / packets as f64;
    core::hint::black_box(sink);
    BenchReport {
        packets,
        empty_forward_ns: empty,
        established_ns: established,
        new_flow_ns: new_flow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_forward_what_they_measure() {
        let mut r = router(100);
        assert_eq!(
            r.firewall().rules_for(IpAddr::V4(client_ip(0))).rules.len(),
            RULES_PER_CLIENT
        );
        let mut f = tcp_frame(client_ip(0), 40000, Ipv4Addr::new(93, 184, 216, 34), 443);
        assert_eq!(
            r.handle(Instant(0), Link::Client(ClientId(0)), &mut f),
            Some(Link::Uplink)
        );
        let mut t = 0u64;
        let rep = run(2000, &mut || {
            t += 1000;
            t
        });
        assert_eq!(rep.packets, 2000);
        assert!(rep.empty_forward_ns > 0.0 && rep.new_flow_ns > 0.0);
    }
}
