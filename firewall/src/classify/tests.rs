use super::*;
use crate::dns::tests::a_response;
use crate::packet::{parse, GATEWAY_MAC};
use crate::rules::{parse_rule, ruleset_from_entries};
use alloc::vec::Vec;
use proptest::prelude::*;
use smoltcp::wire::{checksum, Ipv4Packet, UdpPacket};

pub(crate) const CLIENT_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00];
pub(crate) const A: ClientId = ClientId(1);
pub(crate) const B: ClientId = ClientId(2);
pub(crate) const T0: Instant = Instant(0);

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn a4() -> Ipv4Addr {
    "10.137.0.7".parse().unwrap()
}
pub(crate) fn b4() -> Ipv4Addr {
    "10.137.0.8".parse().unwrap()
}
pub(crate) fn a6() -> Ipv6Addr {
    "fd09:24ef:4179::a89:7".parse().unwrap()
}
pub(crate) const OWN: &str = "10.138.5.9";
pub(crate) const OWN6: &str = "fd09:24ef:4179::a8a:509";

pub(crate) fn cfg() -> NetConfig {
    NetConfig {
        own_ip: OWN.parse().unwrap(),
        uplink_gateway: "10.138.0.1".parse().unwrap(),
        upstream_dns: [
            Some("10.139.1.1".parse().unwrap()),
            Some("10.139.1.2".parse().unwrap()),
        ],
        own_ip6: Some("fd09:24ef:4179::a8a:509".parse().unwrap()),
        uplink_gateway6: None,
        client_gateway: OWN.parse().unwrap(),
        client_gateway6: Some(OWN6.parse().unwrap()),
        client_dns: [
            Some("10.139.1.1".parse().unwrap()),
            Some("10.139.1.2".parse().unwrap()),
        ],
        connected: alloc::vec![IpAddr::V4(a4()), IpAddr::V4(b4())],
        mapped: Vec::new(),
    }
}

pub(crate) fn rules(lines: &[&str]) -> RuleSet {
    RuleSet {
        rules: lines.iter().map(|l| parse_rule(l).unwrap()).collect(),
        policy: Action::Drop,
    }
}

/// Firewall with clients A (v4+v6) and B; A accepts all, B has no rules yet (deny-all).
pub(crate) fn fw() -> Firewall {
    let mut f = Firewall::new(cfg(), Limits::DEFAULT, 0x1234_5678);
    f.add_client(
        A,
        ClientAddrs {
            ip4: Some(a4()),
            ip6: Some(a6()),
        },
    )
    .unwrap();
    f.add_client(
        B,
        ClientAddrs {
            ip4: Some(b4()),
            ip6: None,
        },
    )
    .unwrap();
    assert_eq!(f.reload(T0, IpAddr::V4(a4()), RuleSet::accept_all()), 0);
    assert_eq!(f.reload(T0, IpAddr::V6(a6()), RuleSet::accept_all()), 0);
    f
}

pub(crate) fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GATEWAY_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(crate) fn ipv4(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = alloc::vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    h.extend_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    let c = !checksum::data(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

pub(crate) fn ipv6(src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = alloc::vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(l4);
    eth(0x86dd, &h)
}

pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub(crate) fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub(crate) fn echo(ty: u8, id: u16) -> Vec<u8> {
    let mut e = alloc::vec![ty, 0, 0, 0];
    e.extend_from_slice(&id.to_be_bytes());
    e.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    e
}

pub(crate) fn udp4(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    ipv4(src, dst, 17, &udp(sport, dport, b"hello"))
}

pub(crate) fn tcp4(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    ipv4(src, dst, 6, &tcp(sport, dport))
}

pub(crate) fn ip_of(frame: &[u8]) -> packet::IpPacket {
    match parse(frame).unwrap() {
        Parsed::Ip(p) => p,
        Parsed::Arp(_) => panic!("not IP"),
    }
}

pub(crate) fn checksums_ok_v4_udp(frame: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    ip.verify_checksum() && u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into())
}

/// Sends a client frame out and returns the NATed key as it leaves.
pub(crate) fn out_via_uplink(f: &mut Firewall, id: ClientId, mut frame: Vec<u8>) -> FlowKey {
    assert_eq!(f.handle_client(T0, id, &mut frame), Verdict::ToUplink);
    ip_of(&frame).key().unwrap()
}

#[test]
fn nat_translates_udp_both_ways() {
    let mut f = fw();
    let mut frame = udp4("10.137.0.7", 40000, "93.184.216.34", 443);
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::ToUplink);
    let out = ip_of(&frame);
    assert_eq!(out.src, ip(OWN));
    assert_eq!(out.dst, ip("93.184.216.34"));
    let k = out.key().unwrap();
    assert_eq!(k.dport, 443);
    assert!(checksums_ok_v4_udp(&frame));
    // The reply comes back to the masquerade port and is delivered to A, un-NATed.
    let mut back = udp4("93.184.216.34", 443, OWN, k.sport);
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(A));
    let b = ip_of(&back);
    assert_eq!(
        b.key().unwrap(),
        FlowKey {
            proto: L4::Udp,
            src: ip("93.184.216.34"),
            sport: 443,
            dst: IpAddr::V4(a4()),
            dport: 40000
        }
    );
    assert!(checksums_ok_v4_udp(&back));
    // The same flow again reuses its translation.
    assert_eq!(
        out_via_uplink(&mut f, A, udp4("10.137.0.7", 40000, "93.184.216.34", 443)),
        k
    );
}

#[test]
fn nat_translates_icmp_echo_id() {
    let mut f = fw();
    let mut frame = ipv4("10.137.0.7", "1.1.1.1", 1, &echo(8, 77));
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::ToUplink);
    let k = ip_of(&frame).key().unwrap();
    assert_eq!(k.proto, L4::Echo);
    let mut back = ipv4("1.1.1.1", OWN, 1, &echo(0, k.sport));
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(A));
    match ip_of(&back).transport {
        Transport::Echo { request: false, id } => assert_eq!(id, 77),
        t => panic!("{t:?}"),
    }
    // Checksum of the rewritten ICMP message is valid.
    let l4 = &back[34..];
    assert_eq!(checksum::data(l4), 0xffff);
    // An unsolicited echo reply from the client opens nothing.
    let mut frame = ipv4("10.137.0.7", "1.1.1.1", 1, &echo(0, 78));
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn icmp_error_translated_through_nat() {
    let mut f = fw();
    let sent = out_via_uplink(&mut f, A, tcp4("10.137.0.7", 5555, "8.8.4.4", 80));
    // A router says "port unreachable" quoting our translated packet.
    let quoted = tcp4(OWN, sent.sport, "8.8.4.4", 80);
    let mut err = alloc::vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&quoted[14..14 + 28]);
    let mut frame = ipv4("172.16.0.1", OWN, 1, &err);
    assert_eq!(f.handle_uplink(T0, &mut frame), Verdict::ToClient(A));
    let p = ip_of(&frame);
    assert_eq!(p.dst, IpAddr::V4(a4()));
    match p.transport {
        Transport::IcmpError(q) => assert_eq!(
            q.key,
            FlowKey {
                proto: L4::Tcp,
                src: IpAddr::V4(a4()),
                sport: 5555,
                dst: ip("8.8.4.4"),
                dport: 80
            }
        ),
        t => panic!("{t:?}"),
    }
    assert_eq!(checksum::data(&frame[34..]), 0xffff);
    let inner = Ipv4Packet::new_unchecked(&frame[42..62]);
    assert!(inner.verify_checksum());
    // An error quoting a flow we never had is dropped.
    let quoted = tcp4(OWN, sent.sport.wrapping_add(1), "8.8.4.4", 80);
    let mut err = alloc::vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&quoted[14..14 + 28]);
    let mut frame = ipv4("172.16.0.1", OWN, 1, &err);
    assert_eq!(
        f.handle_uplink(T0, &mut frame),
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn icmp_error_from_client_translated_to_uplink() {
    let mut f = fw();
    let sent = out_via_uplink(&mut f, A, udp4("10.137.0.7", 6000, "8.8.4.4", 53));
    // A says "port unreachable" about the reply it received from 8.8.4.4:53.
    let quoted = udp4("8.8.4.4", 53, "10.137.0.7", 6000);
    let mut err = alloc::vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&quoted[14..14 + 28]);
    let mut frame = ipv4("10.137.0.7", "8.8.4.4", 1, &err);
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::ToUplink);
    let p = ip_of(&frame);
    assert_eq!((p.src, p.dst), (ip(OWN), ip("8.8.4.4")));
    match p.transport {
        Transport::IcmpError(q) => assert_eq!(q.key, sent.reverse()),
        t => panic!("{t:?}"),
    }
    assert_eq!(checksum::data(&frame[34..]), 0xffff);
}

#[test]
fn icmpv6_error_translated_through_nat() {
    let mut f = fw();
    let mut out = ipv6(
        "fd09:24ef:4179::a89:7",
        "2001:db8::1",
        17,
        &udp(7000, 53, b"q"),
    );
    assert_eq!(f.handle_client(T0, A, &mut out), Verdict::ToUplink);
    let sent = ip_of(&out).key().unwrap();
    let mut err = alloc::vec![1, 4, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&out[14..14 + 48]);
    let mut frame = ipv6("2001:db8::ff", OWN6, 58, &err);
    assert_eq!(f.handle_uplink(T0, &mut frame), Verdict::ToClient(A));
    let p = ip_of(&frame);
    assert_eq!(p.dst, IpAddr::V6(a6()));
    match p.transport {
        Transport::IcmpError(q) => {
            assert_eq!(
                (q.key.src, q.key.sport, q.key.dst),
                (IpAddr::V6(a6()), 7000, sent.dst)
            )
        }
        t => panic!("{t:?}"),
    }
    let ip6 = smoltcp::wire::Ipv6Packet::new_checked(&frame[14..]).unwrap();
    let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    assert!(icmp.verify_checksum(&ip6.src_addr(), &ip6.dst_addr()));
}

#[test]
fn spoofed_client_source_dropped() {
    let mut f = fw();
    let mut frame = udp4("10.137.0.8", 1, "1.1.1.1", 53);
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::Spoofed)
    );
    let mut frame = ipv6("fd09:24ef:4179::a89:99", "2001:db8::1", 17, &udp(1, 2, b""));
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::Spoofed)
    );
    let mut frame = udp4("10.137.0.7", 1, "1.1.1.1", 53);
    assert_eq!(
        f.handle_client(T0, ClientId(9), &mut frame),
        Verdict::Drop(DropReason::UnknownClient)
    );
}

#[test]
fn upstream_claiming_internal_source_dropped() {
    let mut f = fw();
    for src in ["10.137.0.7", "10.137.0.8", OWN] {
        let mut frame = udp4(src, 53, OWN, 40000);
        assert_eq!(
            f.handle_uplink(T0, &mut frame),
            Verdict::Drop(DropReason::UpstreamClaimsInternal),
            "{src}"
        );
    }
}

#[test]
fn uplink_without_flow_dropped() {
    let mut f = fw();
    let mut frame = tcp4("93.184.216.34", 80, OWN, 2000);
    assert_eq!(
        f.handle_uplink(T0, &mut frame),
        Verdict::Drop(DropReason::NoFlow)
    );
    let mut frame = tcp4("93.184.216.34", 80, "10.137.0.7", 2000);
    assert_eq!(
        f.handle_uplink(T0, &mut frame),
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn client_to_client_denied_by_accept_all() {
    let mut f = fw();
    let mut frame = tcp4("10.137.0.7", 1000, "10.137.0.8", 22);
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::ClientToClient)
    );
}

#[test]
fn client_to_client_allowed_when_rule_names_pair() {
    let mut f = fw();
    let set = rules(&[
        "action=accept dst4=10.137.0.8 proto=tcp dstports=22-22",
        "action=accept",
    ]);
    f.reload(T0, IpAddr::V4(a4()), set);
    let orig = tcp4("10.137.0.7", 1000, "10.137.0.8", 22);
    let mut frame = orig.clone();
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::ToClient(B));
    assert_eq!(frame, orig, "client-to-client is not NATed");
    // B's reply goes back although B's own rules are deny-all.
    let mut back = tcp4("10.137.0.8", 22, "10.137.0.7", 1000);
    assert_eq!(f.handle_client(T0, B, &mut back), Verdict::ToClient(A));
    // B cannot open its own flow to A.
    let mut other = tcp4("10.137.0.8", 23, "10.137.0.7", 1000);
    assert_eq!(
        f.handle_client(T0, B, &mut other),
        Verdict::Drop(DropReason::ClientToClient)
    );
    // Port 23 is not named.
    let mut other = tcp4("10.137.0.7", 1001, "10.137.0.8", 23);
    assert_eq!(
        f.handle_client(T0, A, &mut other),
        Verdict::Drop(DropReason::ClientToClient)
    );
}

#[test]
fn dns_redirected_to_own_dns_and_answers_learned() {
    let mut c = cfg();
    c.upstream_dns = [Some("192.168.1.53".parse().unwrap()), None];
    let mut f = Firewall::new(c, Limits::DEFAULT, 5);
    f.add_client(
        A,
        ClientAddrs {
            ip4: Some(a4()),
            ip6: None,
        },
    )
    .unwrap();
    f.reload(
        T0,
        IpAddr::V4(a4()),
        rules(&[
            "action=accept specialtarget=dns",
            "action=accept dsthost=example.com",
        ]),
    );
    // Before any answer, example.com is unresolved: that rule is inert, policy drops.
    let mut web = tcp4("10.137.0.7", 3000, "93.184.216.34", 443);
    assert_eq!(
        f.handle_client(T0, A, &mut web),
        Verdict::Drop(DropReason::RuleDenied)
    );
    let mut q = udp4("10.137.0.7", 5353, "10.139.1.2", 53);
    assert_eq!(f.handle_client(T0, A, &mut q), Verdict::ToUplink);
    let k = ip_of(&q).key().unwrap();
    assert_eq!((k.src, k.dst, k.dport), (ip(OWN), ip("192.168.1.53"), 53));
    let answer = a_response("example.com", [93, 184, 216, 34], 300);
    let mut back = ipv4("192.168.1.53", OWN, 17, &udp(53, k.sport, &answer));
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(A));
    let b = ip_of(&back);
    assert_eq!((b.src, b.dst), (ip("10.139.1.2"), IpAddr::V4(a4())));
    assert!(checksums_ok_v4_udp(&back));
    let mut web = tcp4("10.137.0.7", 3000, "93.184.216.34", 443);
    assert_eq!(f.handle_client(T0, A, &mut web), Verdict::ToUplink);
    // After the TTL the name is unknown again.
    let later = Instant(301 * 1_000_000_000);
    let mut web = tcp4("10.137.0.7", 3001, "93.184.216.34", 443);
    assert_eq!(
        f.handle_client(later, A, &mut web),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn first_match_wins() {
    let mut f = fw();
    f.reload(
        T0,
        IpAddr::V4(a4()),
        rules(&[
            "action=drop proto=tcp dstports=80-80",
            "action=accept proto=tcp",
            "action=drop",
        ]),
    );
    let mut v = tcp4("10.137.0.7", 1, "1.2.3.4", 80);
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
    let mut v = tcp4("10.137.0.7", 1, "1.2.3.4", 81);
    assert_eq!(f.handle_client(T0, A, &mut v), Verdict::ToUplink);
    let mut v = udp4("10.137.0.7", 1, "1.2.3.4", 81);
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn icmptype_and_cidr_rules() {
    let mut f = fw();
    f.reload(
        T0,
        IpAddr::V4(a4()),
        rules(&["action=accept proto=icmp icmptype=8 dst4=1.1.1.0/24"]),
    );
    let mut v = ipv4("10.137.0.7", "1.1.1.9", 1, &echo(8, 1));
    assert_eq!(f.handle_client(T0, A, &mut v), Verdict::ToUplink);
    let mut v = ipv4("10.137.0.7", "1.1.2.9", 1, &echo(8, 1));
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn rule_gaps_are_read_and_bad_rule_denies_all() {
    let mut f = fw();
    let entries: [(&str, &[u8]); 3] = [
        ("policy", b"drop"),
        ("0000", b"action=drop proto=udp"),
        ("0005", b"action=accept"),
    ];
    let (set, err) = ruleset_from_entries(entries);
    assert!(err.is_none());
    f.reload(T0, IpAddr::V4(a4()), set);
    let mut v = tcp4("10.137.0.7", 1, "1.2.3.4", 80);
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::ToUplink,
        "rule 0005 after the gap applies"
    );
    let entries: [(&str, &[u8]); 2] = [
        ("0000", b"action=accept"),
        ("0001", b"action=accept dstports=80"),
    ];
    let (set, err) = ruleset_from_entries(entries);
    assert!(err.is_some());
    f.reload(T0, IpAddr::V4(a4()), set);
    let mut v = tcp4("10.137.0.7", 2, "1.2.3.4", 80);
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn no_rules_yet_means_deny() {
    let mut f = fw();
    let mut v = tcp4("10.137.0.8", 1, "1.2.3.4", 80);
    assert_eq!(
        f.handle_client(T0, B, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn reload_rechecks_flows_keeps_allowed_ends_denied() {
    let mut f = fw();
    let web = out_via_uplink(&mut f, A, tcp4("10.137.0.7", 1000, "1.2.3.4", 443));
    let ssh = out_via_uplink(&mut f, A, tcp4("10.137.0.7", 1001, "1.2.3.4", 22));
    let dns_b = {
        f.reload(T0, IpAddr::V4(b4()), RuleSet::accept_all());
        out_via_uplink(&mut f, B, udp4("10.137.0.8", 9, "10.139.1.1", 53))
    };
    assert_eq!(f.nat().len(), 3);
    let ended = f.reload(
        T0,
        IpAddr::V4(a4()),
        rules(&["action=accept proto=tcp dstports=443-443"]),
    );
    assert_eq!(ended, 1);
    // The allowed flow goes on with the same translation; the denied one is gone.
    let mut back = tcp4("1.2.3.4", 443, OWN, web.sport);
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(A));
    let mut back = tcp4("1.2.3.4", 22, OWN, ssh.sport);
    assert_eq!(
        f.handle_uplink(T0, &mut back),
        Verdict::Drop(DropReason::NoFlow)
    );
    // Other clients' flows are untouched.
    let mut back = udp4("10.139.1.1", 53, OWN, dns_b.sport);
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(B));
    // A new ssh flow is refused at once.
    let mut v = tcp4("10.137.0.7", 1001, "1.2.3.4", 22);
    assert_eq!(
        f.handle_client(T0, A, &mut v),
        Verdict::Drop(DropReason::RuleDenied)
    );
}

#[test]
fn arp_for_gateway_answered_with_fe_ff() {
    let mut f = fw();
    let mut arp = alloc::vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&a4().octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&OWN.parse::<Ipv4Addr>().unwrap().octets());
    let mut frame = eth(0x0806, &arp);
    frame[0..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::Reply);
    assert_eq!(&frame[0..6], &CLIENT_MAC);
    assert_eq!(&frame[6..12], &GATEWAY_MAC);
    match parse(&frame).unwrap() {
        Parsed::Arp(r) => {
            assert!(!r.request);
            assert_eq!(r.sender_ip, OWN.parse::<Ipv4Addr>().unwrap());
            assert_eq!(r.target_ip, a4());
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(&frame[14 + 8..14 + 14], &GATEWAY_MAC);
    // Who-has for the client's own address is not answered (duplicate address detection).
    let mut arp2 = arp.clone();
    arp2[24..28].copy_from_slice(&a4().octets());
    let mut frame = eth(0x0806, &arp2);
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::Arp)
    );
}

#[test]
fn echo_to_gateway_answered_other_rejected() {
    let mut f = fw();
    let mut frame = ipv4("10.137.0.7", OWN, 1, &echo(8, 3));
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::Reply);
    let p = ip_of(&frame);
    assert_eq!((p.src, p.dst), (ip(OWN), IpAddr::V4(a4())));
    assert_eq!(
        p.transport,
        Transport::Echo {
            request: false,
            id: 3
        }
    );
    assert_eq!(checksum::data(&frame[34..]), 0xffff);
    let mut frame = tcp4("10.137.0.7", 1, OWN, 22);
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Reject(RejectReason::ToFirewall)
    );
}

#[test]
fn reject_builds_icmp_host_prohibited() {
    let f = fw();
    let frame = tcp4("10.137.0.7", 1234, OWN, 22);
    let mut out = [0u8; 200];
    assert_eq!(
        f.emit_reject(&frame, &mut out[..40]),
        Err(packet::BufferTooSmall {
            needed: 14 + 20 + 8 + 28
        })
    );
    let n = f.emit_reject(&frame, &mut out).unwrap();
    let r = ip_of(&out[..n]);
    assert_eq!((r.src, r.dst), (ip(OWN), IpAddr::V4(a4())));
    match r.transport {
        Transport::IcmpError(q) => assert_eq!((q.key.sport, q.key.dport), (1234, 22)),
        t => panic!("{t:?}"),
    }
    assert_eq!(&out[..6], &CLIENT_MAC);
    assert_eq!((out[34], out[35]), (3, 10));
    assert_eq!(checksum::data(&out[34..n]), 0xffff);
    let frame6 = ipv6("fd09:24ef:4179::a89:7", OWN6, 6, &tcp(1, 22));
    let n = f.emit_reject(&frame6, &mut out).unwrap();
    let r = ip_of(&out[..n]);
    assert_eq!((r.src, r.dst), (ip(OWN6), IpAddr::V6(a6())));
    let ip6 = smoltcp::wire::Ipv6Packet::new_checked(&out[14..n]).unwrap();
    let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    assert!(icmp.verify_checksum(&ip6.src_addr(), &ip6.dst_addr()));
}

#[test]
fn ipv6_nat_and_echo_and_ndp() {
    let mut f = fw();
    let mut frame = ipv6(
        "fd09:24ef:4179::a89:7",
        "2001:db8::1",
        17,
        &udp(7000, 53, b"q"),
    );
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::ToUplink);
    let k = ip_of(&frame).key().unwrap();
    assert_eq!(k.src, ip(OWN6));
    let mut back = ipv6("2001:db8::1", OWN6, 17, &udp(53, k.sport, b"a"));
    assert_eq!(f.handle_uplink(T0, &mut back), Verdict::ToClient(A));
    assert_eq!(ip_of(&back).dst, IpAddr::V6(a6()));
    let ip6 = smoltcp::wire::Ipv6Packet::new_checked(&back[14..]).unwrap();
    let u = UdpPacket::new_checked(ip6.payload()).unwrap();
    assert!(u.verify_checksum(&ip6.src_addr().into(), &ip6.dst_addr().into()));
    // Ping the gateway over IPv6.
    let mut frame = ipv6("fd09:24ef:4179::a89:7", OWN6, 58, &echo(128, 9));
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::Reply);
    assert_eq!(
        ip_of(&frame).transport,
        Transport::Echo {
            request: false,
            id: 9
        }
    );
    // Neighbour solicitation for the gateway.
    let mut ns = alloc::vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&OWN6.parse::<Ipv6Addr>().unwrap().octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&CLIENT_MAC);
    let mut frame = ipv6("fe80::216:3eff:fe5e:6c00", "ff02::1:ff0a:509", 58, &ns);
    assert_eq!(f.handle_client(T0, A, &mut frame), Verdict::Reply);
    let p = ip_of(&frame);
    assert_eq!(p.transport, Transport::Ndp { ty: 136 });
    assert_eq!(p.dst, ip("fe80::216:3eff:fe5e:6c00"));
    let ip6 = smoltcp::wire::Ipv6Packet::new_checked(&frame[14..]).unwrap();
    let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    assert!(icmp.verify_checksum(&ip6.src_addr(), &ip6.dst_addr()));
    // IPv6 rules: dst6 denies.
    f.reload(
        T0,
        IpAddr::V6(a6()),
        rules(&["action=drop dst6=2001:db8::/32", "action=accept"]),
    );
    let mut frame = ipv6(
        "fd09:24ef:4179::a89:7",
        "2001:db8::2",
        17,
        &udp(7001, 53, b"q"),
    );
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::RuleDenied)
    );
    // A client with no IPv6 address cannot send IPv6.
    let mut frame = ipv6(
        "fd09:24ef:4179::a89:8",
        "2001:db8::2",
        17,
        &udp(1, 53, b"q"),
    );
    assert_eq!(
        f.handle_client(T0, B, &mut frame),
        Verdict::Drop(DropReason::Spoofed)
    );
}

#[test]
fn fragments_and_bad_checksums_dropped() {
    let mut f = fw();
    let mut frame = udp4("10.137.0.7", 1, "1.1.1.1", 53);
    frame[14 + 6] = 0x20; // more fragments
    let c = {
        frame[24] = 0;
        frame[25] = 0;
        !checksum::data(&frame[14..34])
    };
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::Malformed(WireError::Fragment))
    );
    let mut frame = udp4("10.137.0.7", 1, "1.1.1.1", 53);
    frame[24] ^= 0xff;
    assert_eq!(
        f.handle_client(T0, A, &mut frame),
        Verdict::Drop(DropReason::Malformed(WireError::Ipv4Checksum))
    );
}

#[test]
fn nat_flood_never_grows_past_bound() {
    let limits = Limits {
        nat_entries: 64,
        ..Limits::DEFAULT
    };
    let mut f = Firewall::new(cfg(), limits, 99);
    f.add_client(
        A,
        ClientAddrs {
            ip4: Some(a4()),
            ip6: None,
        },
    )
    .unwrap();
    f.reload(T0, IpAddr::V4(a4()), RuleSet::accept_all());
    let mut last = None;
    for port in 1..2000u16 {
        let mut frame = udp4("10.137.0.7", port, "9.9.9.9", 53);
        assert_eq!(
            f.handle_client(Instant(u64::from(port)), A, &mut frame),
            Verdict::ToUplink
        );
        assert!(f.nat().len() <= 64);
        last = Some(ip_of(&frame).key().unwrap());
    }
    assert_eq!(f.nat().len(), 64);
    // The newest flow survives, the oldest was evicted.
    let k = last.unwrap();
    let mut back = udp4("9.9.9.9", 53, OWN, k.sport);
    assert_eq!(
        f.handle_uplink(Instant(5000), &mut back),
        Verdict::ToClient(A)
    );
}

#[test]
fn remove_client_ends_its_flows() {
    let mut f = fw();
    let k = out_via_uplink(&mut f, A, udp4("10.137.0.7", 1, "1.1.1.1", 53));
    f.remove_client(A);
    assert!(f.nat().is_empty());
    let mut back = udp4("1.1.1.1", 53, OWN, k.sport);
    assert_eq!(
        f.handle_uplink(T0, &mut back),
        Verdict::Drop(DropReason::NoFlow)
    );
    assert_eq!(
        f.add_client(
            ClientId(3),
            ClientAddrs {
                ip4: Some(b4()),
                ip6: None
            }
        ),
        Err(ClientError::AddressInUse)
    );
}

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // Valid-looking frames with a few bytes changed.
        (
            0usize..5,
            proptest::collection::vec((0usize..120, any::<u8>()), 0..6)
        )
            .prop_map(|(which, flips)| {
                let mut f = match which {
                    0 => udp4("10.137.0.7", 1, "1.1.1.1", 53),
                    1 => tcp4("93.184.216.34", 80, OWN, 2000),
                    2 => ipv4("10.137.0.7", "1.1.1.1", 1, &echo(8, 1)),
                    3 => ipv6("fd09:24ef:4179::a89:7", "2001:db8::1", 58, &echo(128, 1)),
                    _ => {
                        let mut err = alloc::vec![3, 3, 0, 0, 0, 0, 0, 0];
                        err.extend_from_slice(&tcp4(OWN, 1024, "8.8.4.4", 80)[14..42]);
                        ipv4("172.16.0.1", OWN, 1, &err)
                    }
                };
                for (at, v) in flips {
                    if let Some(b) = f.get_mut(at) {
                        *b = v;
                    }
                }
                f
            }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic_and_nat_stays_bounded(
        frames in proptest::collection::vec((any::<bool>(), frame_strategy()), 1..30)
    ) {
        let limits = Limits { nat_entries: 8, ..Limits::DEFAULT };
        let mut f = Firewall::new(cfg(), limits, 1);
        f.add_client(A, ClientAddrs { ip4: Some(a4()), ip6: Some(a6()) }).unwrap();
        f.reload(T0, IpAddr::V4(a4()), RuleSet::accept_all());
        for (i, (from_client, mut frame)) in frames.into_iter().enumerate() {
            let now = Instant(i as u64);
            let _ = if from_client { f.handle_client(now, A, &mut frame) } else { f.handle_uplink(now, &mut frame) };
            prop_assert!(f.nat().len() <= 8);
        }
    }
}

#[test]
fn limits_from_cmdline() {
    assert_eq!(Limits::from_cmdline(""), Ok(Limits::DEFAULT));
    let l = Limits::from_cmdline("--nat-table-size=100 --max-clients=8").unwrap();
    assert_eq!((l.nat_entries, l.clients, l.dns_records), (100, 8, 1024));
    assert_eq!(l.nat_per_client, 75);
    let l = Limits::from_cmdline("--nat-per-client=10").unwrap();
    assert_eq!((l.nat_entries, l.nat_per_client), (5000, 10));
    assert_eq!(
        Limits::from_cmdline("--nat-table-size=1"),
        Err(CmdlineError::BadValue("nat-table-size"))
    );
    assert_eq!(
        Limits::from_cmdline("--ipv4=1.2.3.4"),
        Err(CmdlineError::UnknownOption)
    );
    assert_eq!(
        Limits::from_cmdline("quiet"),
        Err(CmdlineError::UnknownOption)
    );
}
