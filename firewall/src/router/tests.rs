use super::*;
use crate::classify::tests::{
    a4, a6, b4, cfg, echo, eth, fw, ip, ip_of, ipv4, ipv6, rules, tcp, tcp4, udp, udp4, A, B,
    CLIENT_MAC as CMAC, OWN, OWN6,
};
use crate::dns::tests::a_response;
use crate::packet::FlowKey;
use crate::rules::RuleSet;
use crate::ruleset::Ruleset;
use crate::Limits;
use alloc::string::ToString;

const UPLINK_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x42];
const GW_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
const SYSNET_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const T: Instant = Instant(0);

fn router() -> Router {
    let mut f = fw();
    // Client B (no rules yet) stays deny-all; client links are registered through the router.
    f.remove_client(A);
    f.remove_client(B);
    let mut r = Router::new(f, UPLINK_MAC, RouterLimits::DEFAULT);
    let a = ClientAddrs {
        ip4: Some(a4()),
        ip6: Some(a6()),
    };
    let b = ClientAddrs {
        ip4: Some(b4()),
        ip6: None,
    };
    r.add_client(A, a, CMAC).unwrap();
    r.add_client(B, b, CMAC).unwrap();
    r
}

fn arp(op: u16, smac: [u8; 6], sip: &str, tip: &str) -> Vec<u8> {
    let mut p = alloc::vec![0, 1, 8, 0, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&smac);
    p.extend_from_slice(&sip.parse::<core::net::Ipv4Addr>().unwrap().octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tip.parse::<core::net::Ipv4Addr>().unwrap().octets());
    let mut f = eth(0x0806, &p);
    f[6..12].copy_from_slice(&smac);
    f
}

/// Router whose uplink gateway MAC is already learned.
fn ready() -> Router {
    let mut r = router();
    let mut reply = arp(2, SYSNET_MAC, "10.138.0.1", OWN);
    assert_eq!(r.handle(T, Link::Uplink, &mut reply), None);
    assert_eq!(r.gateway_mac(), Some(SYSNET_MAC));
    r
}

fn from_sysnet(mut f: Vec<u8>) -> Vec<u8> {
    f[..6].copy_from_slice(&UPLINK_MAC);
    f[6..12].copy_from_slice(&SYSNET_MAC);
    f
}

#[test]
fn client_arp_for_gateway_answered_with_gateway_mac() {
    let mut r = router();
    let mut f = arp(1, CMAC, "10.137.0.7", OWN);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), Some(Link::Client(A)));
    assert_eq!(&f[..6], &CMAC);
    assert_eq!(&f[6..12], &GW_MAC);
    assert_eq!(&f[14 + 6..14 + 8], &[0, 2]);
    assert_eq!(&f[14 + 8..14 + 14], &GW_MAC);
}

#[test]
fn echo_to_gateway_answered() {
    let mut r = router();
    let mut f = ipv4("10.137.0.7", OWN, 1, &echo(8, 77));
    assert_eq!(r.handle(T, Link::Client(A), &mut f), Some(Link::Client(A)));
    let p = ip_of(&f);
    assert_eq!((p.src, p.dst), (ip(OWN), ip("10.137.0.7")));
    assert_eq!(f[34], 0, "echo reply");
    assert_eq!(r.counters().replied, 1);
}

#[test]
fn uplink_frames_held_until_gateway_answers_arp() {
    let mut r = router();
    let mut f = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    // The poll asks for the gateway's MAC.
    let next = r.poll(T);
    let (link, req) = r.poll_transmit().unwrap();
    assert_eq!(link, Link::Uplink);
    assert_eq!(&req[..6], &[0xff; 6]);
    assert_eq!(&req[6..12], &UPLINK_MAC);
    assert_eq!(&req[38..42], &[10, 138, 0, 1]);
    assert_eq!(next, Some(Instant(ARP_RETRY)));
    // The answer releases the held frame with the learned MAC.
    let mut reply = arp(2, SYSNET_MAC, "10.138.0.1", OWN);
    assert_eq!(r.handle(T, Link::Uplink, &mut reply), None);
    let (link, held) = r.poll_transmit().unwrap();
    assert_eq!(link, Link::Uplink);
    assert_eq!(&held[..6], &SYSNET_MAC);
    assert_eq!(&held[6..12], &UPLINK_MAC);
    assert_eq!(ip_of(&held).src, ip(OWN));
    // Later frames go straight out.
    let mut f = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), Some(Link::Uplink));
    assert_eq!(&f[..6], &SYSNET_MAC);
}

#[test]
fn silent_gateway_falls_back_to_fe_ff_after_three_tries() {
    let mut r = router();
    let mut f = udp4("10.137.0.7", 5000, "1.1.1.1", 123);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    for i in 0..ARP_TRIES {
        r.poll(Instant(u64::from(i) * ARP_RETRY));
        assert_eq!(r.poll_transmit().unwrap().1.len(), 42);
    }
    r.poll(Instant(u64::from(ARP_TRIES) * ARP_RETRY));
    assert_eq!(r.gateway_mac(), Some(GW_MAC));
    let (_, held) = r.poll_transmit().unwrap();
    assert_eq!(&held[..6], &GW_MAC);
    assert!(r.take_log().unwrap().contains("does not answer ARP"));
}

#[test]
fn uplink_arp_for_own_ip_answered_with_uplink_mac() {
    let mut r = ready();
    let mut req = arp(1, SYSNET_MAC, "10.138.0.1", OWN);
    assert_eq!(r.handle(T, Link::Uplink, &mut req), None);
    let (link, rep) = r.poll_transmit().unwrap();
    assert_eq!(link, Link::Uplink);
    assert_eq!(&rep[..6], &SYSNET_MAC);
    assert_eq!(&rep[14 + 8..14 + 14], &UPLINK_MAC);
    assert_eq!(&rep[14 + 14..14 + 18], &[10, 138, 5, 9]);
    // Someone else's address is not ours to answer.
    let mut req = arp(1, SYSNET_MAC, "10.138.0.1", "10.138.0.77");
    assert_eq!(r.handle(T, Link::Uplink, &mut req), None);
    assert!(r.poll_transmit().is_none());
}

#[test]
fn tcp_nat_both_ways_with_link_addresses() {
    let mut r = ready();
    let mut out = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut out), Some(Link::Uplink));
    let k = ip_of(&out).key().unwrap();
    assert_eq!((k.src, k.dst, k.dport), (ip(OWN), ip("93.184.216.34"), 443));
    let mut back = from_sysnet(ipv4("93.184.216.34", OWN, 6, &tcp(443, k.sport)));
    assert_eq!(r.handle(T, Link::Uplink, &mut back), Some(Link::Client(A)));
    assert_eq!(&back[..6], &CMAC);
    assert_eq!(&back[6..12], &GW_MAC);
    let k = ip_of(&back).key().unwrap();
    assert_eq!((k.dst, k.dport), (ip("10.137.0.7"), 40000));
}

#[test]
fn udp_dns_forwarded_to_own_dns_and_back() {
    let mut c = cfg();
    c.upstream_dns = [Some("192.168.1.53".parse().unwrap()), None];
    let mut f = Firewall::new(c, Limits::DEFAULT, 5);
    f.reload(T, IpAddr::V4(a4()), RuleSet::accept_all());
    let mut r = Router::new(f, UPLINK_MAC, RouterLimits::DEFAULT);
    let a = ClientAddrs {
        ip4: Some(a4()),
        ip6: None,
    };
    r.add_client(A, a, CMAC).unwrap();
    let mut rep = arp(2, SYSNET_MAC, "10.138.0.1", OWN);
    let _ = r.handle(T, Link::Uplink, &mut rep);
    let q = ipv4("10.137.0.7", "10.139.1.1", 17, &udp(33333, 53, b"query"));
    let mut out = q.clone();
    assert_eq!(r.handle(T, Link::Client(A), &mut out), Some(Link::Uplink));
    let k = ip_of(&out).key().unwrap();
    assert_eq!((k.src, k.dst, k.dport), (ip(OWN), ip("192.168.1.53"), 53));
    let ans = a_response("example.org", [1, 2, 3, 4], 300);
    let mut back = from_sysnet(ipv4("192.168.1.53", OWN, 17, &udp(53, k.sport, &ans)));
    assert_eq!(r.handle(T, Link::Uplink, &mut back), Some(Link::Client(A)));
    let k = ip_of(&back).key().unwrap();
    // The client sees the answer come from the virtual address it asked.
    assert_eq!(
        (k.src, k.sport, k.dst, k.dport),
        (ip("10.139.1.1"), 53, ip("10.137.0.7"), 33333)
    );
}

#[test]
fn spoofed_source_dropped_and_logged() {
    let mut r = ready();
    let mut f = udp4("10.137.0.99", 1, "1.1.1.1", 53);
    assert_eq!(
        r.handle(Instant(1_500_000_000), Link::Client(A), &mut f),
        None
    );
    let d: Vec<_> = r.drops(Link::Client(A)).collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, DropReason::Spoofed);
    let mut text = String::new();
    r.drop_log_text(&mut text);
    assert_eq!(
        text,
        "client 10.137.0.7:\n  1.500 udp 10.137.0.99:1 > 1.1.1.1:53 source address is not the client's\n"
    );
}

#[test]
fn client_to_client_dropped_unless_ruleset_allows_pair() {
    let mut r = ready();
    let mut f = tcp4("10.137.0.7", 1000, "10.137.0.8", 22);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    assert_eq!(
        r.drops(Link::Client(A)).last().unwrap().reason,
        DropReason::ClientToClient
    );
    let rs = Ruleset::parse(b"allow 10.137.0.7 10.137.0.8 tcp 22").unwrap();
    r.firewall_mut().set_ruleset(T, rs);
    let mut f = tcp4("10.137.0.7", 1000, "10.137.0.8", 22);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), Some(Link::Client(B)));
    assert_eq!(&f[..6], &CMAC);
    assert_eq!(&f[6..12], &GW_MAC);
    // B answers within the flow; B cannot open its own flow to A.
    let mut back = tcp4("10.137.0.8", 22, "10.137.0.7", 1000);
    assert_eq!(
        r.handle(T, Link::Client(B), &mut back),
        Some(Link::Client(A))
    );
    let mut other = tcp4("10.137.0.8", 5, "10.137.0.7", 22);
    assert_eq!(r.handle(T, Link::Client(B), &mut other), None);
    // Another port is not allowed.
    let mut f = tcp4("10.137.0.7", 1001, "10.137.0.8", 23);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    // Taking the allow away ends the tracked flow.
    assert_eq!(r.firewall_mut().set_ruleset(T, Ruleset::default()), 1);
    let mut f = tcp4("10.137.0.7", 1000, "10.137.0.8", 22);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
}

#[test]
fn rule_change_mid_flow_ends_denied_flow_keeps_others() {
    let mut r = ready();
    let mut https = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    let mut ssh = tcp4("10.137.0.7", 40001, "93.184.216.34", 22);
    assert_eq!(r.handle(T, Link::Client(A), &mut https), Some(Link::Uplink));
    assert_eq!(r.handle(T, Link::Client(A), &mut ssh), Some(Link::Uplink));
    let ended = r.firewall_mut().reload(
        T,
        IpAddr::V4(a4()),
        rules(&["action=drop proto=tcp dstports=443-443", "action=accept"]),
    );
    assert_eq!(ended, 1);
    let mut https = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut https), None);
    assert_eq!(
        r.drops(Link::Client(A)).last().unwrap().reason,
        DropReason::RuleDenied
    );
    let mut ssh = tcp4("10.137.0.7", 40001, "93.184.216.34", 22);
    assert_eq!(r.handle(T, Link::Client(A), &mut ssh), Some(Link::Uplink));
}

#[test]
fn reject_mode_answers_denied_packet_with_icmp() {
    let mut r = ready();
    r.firewall_mut().reload(
        T,
        IpAddr::V4(a4()),
        rules(&["action=drop proto=tcp dstports=443-443", "action=accept"]),
    );
    let rs = Ruleset::parse(b"reject 10.137.0.7").unwrap();
    r.firewall_mut().set_ruleset(T, rs);
    let mut f = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    let (link, icmp) = r.poll_transmit().unwrap();
    assert_eq!(link, Link::Client(A));
    let p = ip_of(&icmp);
    assert_eq!((p.src, p.dst), (ip(OWN), ip("10.137.0.7")));
    assert_eq!(&icmp[34..36], &[3, 10], "host prohibited");
}

#[test]
fn port_forward_from_uplink_reaches_client_and_replies_return() {
    let mut r = ready();
    let rs = Ruleset::parse(b"forward tcp 8080 10.137.0.7 80").unwrap();
    r.firewall_mut().set_ruleset(T, rs);
    let mut syn = from_sysnet(ipv4("10.138.0.1", OWN, 6, &tcp(50000, 8080)));
    assert_eq!(r.handle(T, Link::Uplink, &mut syn), Some(Link::Client(A)));
    let k = ip_of(&syn).key().unwrap();
    assert_eq!(
        k,
        FlowKey {
            proto: crate::packet::L4::Tcp,
            src: ip("10.138.0.1"),
            sport: 50000,
            dst: ip("10.137.0.7"),
            dport: 80
        }
    );
    let mut ack = tcp4("10.137.0.7", 80, "10.138.0.1", 50000);
    assert_eq!(r.handle(T, Link::Client(A), &mut ack), Some(Link::Uplink));
    let k = ip_of(&ack).key().unwrap();
    assert_eq!(
        (k.src, k.sport, k.dst, k.dport),
        (ip(OWN), 8080, ip("10.138.0.1"), 50000)
    );
    // A client rule reload does not end the forwarded flow; removing the forward does.
    r.firewall_mut()
        .reload(T, IpAddr::V4(a4()), rules(&["action=drop"]));
    let mut ack = tcp4("10.137.0.7", 80, "10.138.0.1", 50000);
    assert_eq!(r.handle(T, Link::Client(A), &mut ack), Some(Link::Uplink));
    assert_eq!(r.firewall_mut().set_ruleset(T, Ruleset::default()), 1);
    let mut syn = from_sysnet(ipv4("10.138.0.1", OWN, 6, &tcp(50000, 8080)));
    assert_eq!(r.handle(T, Link::Uplink, &mut syn), None);
    // An unforwarded port stays closed.
    let mut syn = from_sysnet(ipv4("10.138.0.1", OWN, 6, &tcp(50001, 8081)));
    assert_eq!(r.handle(T, Link::Uplink, &mut syn), None);
    assert_eq!(
        r.drops(Link::Uplink).last().unwrap().reason,
        DropReason::NoFlow
    );
}

#[test]
fn dsthost_rule_resolved_by_own_query() {
    let mut r = ready();
    r.firewall_mut().reload(
        T,
        IpAddr::V4(a4()),
        rules(&["action=accept dsthost=example.com proto=tcp"]),
    );
    // Before the name resolves the rule matches nothing.
    let mut f = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
    r.poll(T);
    let mut query = None;
    while let Some((link, q)) = r.poll_transmit() {
        assert_eq!(link, Link::Uplink);
        let p = ip_of(&q);
        if p.key().unwrap().dport == 53 && q[q.len() - 3] == 1 {
            query = Some(q);
        }
    }
    let q = query.expect("an A query for example.com");
    assert_eq!(&q[..6], &SYSNET_MAC);
    let k = ip_of(&q).key().unwrap();
    let mut ans = a_response("example.com", [93, 184, 216, 34], 300);
    ans[..2].copy_from_slice(&q[42..44]);
    let server = k.dst.to_string();
    let mut back = from_sysnet(ipv4(&server, OWN, 17, &udp(53, k.sport, &ans)));
    assert_eq!(
        r.handle(T, Link::Uplink, &mut back),
        None,
        "our own answer is consumed"
    );
    let logs: Vec<String> = core::iter::from_fn(|| r.take_log()).collect();
    assert!(
        logs.iter().any(|l| l == "dsthost example.com: 1 record(s)"),
        "{logs:?}"
    );
    let mut f = tcp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), Some(Link::Uplink));
    let mut f = tcp4("10.137.0.7", 40001, "93.184.216.35", 443);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
}

#[test]
fn ipv6_out_and_back_and_uplink_ndp_answered() {
    let mut r = ready();
    let mut out = ipv6(&a6().to_string(), "2001:db8::1", 6, &tcp(40000, 80));
    assert_eq!(r.handle(T, Link::Client(A), &mut out), Some(Link::Uplink));
    let k = ip_of(&out).key().unwrap();
    assert_eq!(k.src, ip(OWN6));
    let mut back = from_sysnet(ipv6("2001:db8::1", OWN6, 6, &tcp(80, k.sport)));
    assert_eq!(r.handle(T, Link::Uplink, &mut back), Some(Link::Client(A)));
    assert_eq!(ip_of(&back).dst, IpAddr::V6(a6()));
    // sys-net's neighbour solicitation for our address.
    let mut ns = alloc::vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&OWN6.parse::<core::net::Ipv6Addr>().unwrap().octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&SYSNET_MAC);
    let mut f = from_sysnet(ipv6("fe80::1", "ff02::1:ff0a:509", 58, &ns));
    assert_eq!(r.handle(T, Link::Uplink, &mut f), Some(Link::Uplink));
    assert_eq!(&f[..6], &SYSNET_MAC);
    assert_eq!(&f[6..12], &UPLINK_MAC);
    assert_eq!(f[54], 136, "neighbour advertisement");
    assert_eq!(&f[54 + 26..54 + 32], &UPLINK_MAC);
}

#[test]
fn drop_log_bounded_per_link_and_gone_with_client() {
    let mut r = ready();
    for i in 0..1000u16 {
        let mut f = udp4("10.137.0.99", i, "1.1.1.1", 53);
        let _ = r.handle(T, Link::Client(A), &mut f);
    }
    assert_eq!(
        r.drops(Link::Client(A)).count(),
        RouterLimits::DEFAULT.drops_per_link
    );
    assert_eq!(r.drops(Link::Client(A)).last().unwrap().sport, 999);
    r.remove_client(A);
    assert_eq!(r.drops(Link::Client(A)).count(), 0);
    // A removed client's frames are dropped and do not start a new log.
    let mut f = udp4("10.137.0.7", 1, "1.1.1.1", 53);
    assert_eq!(r.handle(T, Link::Client(A), &mut f), None);
}

#[test]
fn nat_flood_through_router_stays_within_bound() {
    let mut f = Firewall::new(
        cfg(),
        Limits {
            nat_entries: 500,
            ..Limits::DEFAULT
        },
        1,
    );
    f.reload(T, IpAddr::V4(a4()), RuleSet::accept_all());
    let mut r = Router::new(f, UPLINK_MAC, RouterLimits::DEFAULT);
    r.add_client(
        A,
        ClientAddrs {
            ip4: Some(a4()),
            ip6: None,
        },
        CMAC,
    )
    .unwrap();
    let mut rep = arp(2, SYSNET_MAC, "10.138.0.1", OWN);
    let _ = r.handle(T, Link::Uplink, &mut rep);
    for i in 0..20_000u32 {
        let dst = alloc::format!("198.51.{}.{}", (i >> 8) & 0xff, i & 0xff);
        let mut f = udp4("10.137.0.7", (i % 60000) as u16 + 1, &dst, 9);
        assert_eq!(
            r.handle(Instant(u64::from(i)), Link::Client(A), &mut f),
            Some(Link::Uplink)
        );
        assert!(r.firewall().nat().len() <= 500);
    }
    assert_eq!(r.firewall().nat().len(), 500);
    assert!(r.queued() <= RouterLimits::DEFAULT.out);
}

#[test]
fn mac_parsing() {
    assert_eq!(parse_mac("00:16:3e:5e:6c:00"), Some(CMAC));
    assert_eq!(parse_mac(" fe:ff:ff:ff:ff:ff\n"), Some(GW_MAC));
    for bad in [
        "",
        "00:16:3e:5e:6c",
        "00:16:3e:5e:6c:00:01",
        "0:16:3e:5e:6c:00",
        "zz:16:3e:5e:6c:00",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}
