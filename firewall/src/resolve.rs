//! The firewall's own DNS client for `dsthost` names: A/AAAA queries over the uplink to the DNS
//! our QubesDB names, answers fed to the TTL cache, refreshed before expiry, bounded everywhere.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use platform_api::Instant;

use crate::config::NetConfig;
use crate::dns::DnsCache;

/// Most distinct `dsthost` names followed.
pub const MAX_NAMES: usize = 256;
/// Most queries in flight.
pub const MAX_PENDING: usize = 32;
/// Our source ports: below the NAT's masquerade range, so answers never clash with NATed flows.
pub const PORT_BASE: u16 = 1000;
const PORT_SPAN: u16 = 24;
const SEC: u64 = 1_000_000_000;
/// Wait before asking again after no answer.
const RETRY: u64 = 5 * SEC;
/// Wait before asking again after a failed lookup (NXDOMAIN, no records).
const NEGATIVE: u64 = 60 * SEC;
/// Refresh this long before the records expire.
const EARLY: u64 = 2 * SEC;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NameState {
    /// When to ask next (if the cache has nothing fresher).
    next: Instant,
    /// Lookups that returned nothing since the last success (for the log).
    failures: u32,
}

const A: u16 = 1;
const AAAA: u16 = 28;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    name: String,
    qtype: u16,
    port: u16,
    server: IpAddr,
    sent: Instant,
}

/// What a lookup taught us, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Resolved {
        name: String,
        records: usize,
    },
    /// The name has no usable records: only rules naming it stay inert.
    Failed {
        name: String,
    },
}

/// Names wanted by rules, queries in flight, and lookup results not yet taken.
#[derive(Debug)]
pub struct DnsClient {
    /// Keyed by name and query type (A and AAAA are followed separately).
    names: BTreeMap<(String, u16), NameState>,
    pending: BTreeMap<u16, Pending>,
    results: Vec<Lookup>,
    rng: u64,
    turn: u32,
}

impl DnsClient {
    pub fn new(seed: u64) -> Self {
        DnsClient {
            names: BTreeMap::new(),
            pending: BTreeMap::new(),
            results: Vec::new(),
            rng: seed | 1,
            turn: 0,
        }
    }

    /// Names currently followed.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names
            .keys()
            .filter(|(_, t)| *t == A)
            .map(|(n, _)| n.as_str())
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one lookup result, for the log.
    pub fn take_result(&mut self) -> Option<Lookup> {
        if self.results.is_empty() {
            None
        } else {
            Some(self.results.remove(0))
        }
    }

    fn push_result(&mut self, l: Lookup) {
        if self.results.len() < MAX_NAMES {
            self.results.push(l);
        }
    }

    /// Replaces the followed names (those of every rule set); new names are due at once.
    pub fn want<'a>(&mut self, names: impl Iterator<Item = &'a str>, now: Instant) {
        let mut next = BTreeMap::new();
        for n in names {
            if next.len() >= 2 * MAX_NAMES {
                break;
            }
            for t in [A, AAAA] {
                let k = (String::from(n), t);
                let st = self.names.get(&k).copied().unwrap_or(NameState {
                    next: now,
                    failures: 0,
                });
                next.insert(k, st);
            }
        }
        self.names = next;
        let names = &self.names;
        self.pending
            .retain(|_, p| names.contains_key(&(p.name.clone(), p.qtype)));
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Builds the next due query into `out` (an IPv4/UDP packet without Ethernet header) and
    /// returns its length (0 if none is due) and when the next one may be due.
    pub fn poll(
        &mut self,
        now: Instant,
        cache: &DnsCache,
        cfg: &NetConfig,
        out: &mut [u8],
    ) -> (usize, Option<Instant>) {
        // Queries unanswered for RETRY are given up (the name is retried at its `next`).
        let stale: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now.0 >= p.sent.0.saturating_add(RETRY))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.pending.remove(&id);
        }
        let servers: Vec<IpAddr> = cfg
            .upstream_dns
            .iter()
            .flatten()
            .map(|a| IpAddr::V4(*a))
            .collect();
        let mut earliest: Option<Instant> = None;
        let mut due: Option<(String, u16)> = None;
        for ((name, qtype), st) in self.names.iter_mut() {
            // Ask again shortly before the cached records run out.
            if let Some(exp) = cache.expiry(name, now) {
                let refresh = Instant(exp.0.saturating_sub(EARLY));
                if refresh.0 > st.next.0 {
                    st.next = refresh;
                }
            }
            let in_flight = self
                .pending
                .values()
                .any(|p| &p.name == name && p.qtype == *qtype);
            if in_flight {
                continue;
            }
            if st.next.0 <= now.0 && due.is_none() && !servers.is_empty() {
                due = Some((name.clone(), *qtype));
            } else {
                let t = st.next.0.max(now.0);
                earliest = Some(earliest.map_or(Instant(t), |e| Instant(e.0.min(t))));
            }
        }
        let Some((name, qtype)) = due else {
            if !self.pending.is_empty() {
                let t = Instant(now.0 + RETRY);
                earliest = Some(earliest.map_or(t, |e| Instant(e.0.min(t.0))));
            }
            return (0, earliest);
        };
        if self.pending.len() >= MAX_PENDING {
            return (0, Some(Instant(now.0 + RETRY)));
        }
        self.turn = self.turn.wrapping_add(1);
        let server = servers[self.turn as usize % servers.len()];
        let mut id = self.rand() as u16;
        while self.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        let port = PORT_BASE + (self.rand() % u64::from(PORT_SPAN)) as u16;
        let len = build_query(out, cfg, server, port, id, qtype, &name);
        let key = (name, qtype);
        if let Some(st) = self.names.get_mut(&key) {
            st.next = Instant(now.0 + if len == 0 { NEGATIVE } else { RETRY });
        }
        let (name, qtype) = key;
        if len == 0 {
            return (0, earliest);
        }
        self.pending.insert(
            id,
            Pending {
                name,
                qtype,
                port,
                server,
                sent: now,
            },
        );
        (len, Some(Instant(now.0 + RETRY).min_with(earliest)))
    }

    /// Takes a UDP datagram from the uplink; true if it answered one of our queries (and so is
    /// not anyone else's business). The answer's records go to `cache`.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_answer(
        &mut self,
        now: Instant,
        cache: &mut DnsCache,
        cfg: &NetConfig,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        msg: &[u8],
    ) -> bool {
        if sport != 53
            || !(PORT_BASE..PORT_BASE + PORT_SPAN).contains(&dport)
            || dst != IpAddr::V4(cfg.own_ip)
        {
            return false;
        }
        let Some(id) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return true;
        };
        match self.pending.get(&id) {
            Some(p) if p.port == dport && p.server == src => {}
            // Our port but not our query: still ours to drop.
            _ => return true,
        }
        let Some(p) = self.pending.remove(&id) else {
            return true;
        };
        let learned = match question_is(msg, &p.name) {
            true => cache.learn_from_response(msg, now).unwrap_or(0),
            false => 0,
        };
        let Some(st) = self.names.get_mut(&(p.name.clone(), p.qtype)) else {
            return true;
        };
        if learned > 0 {
            st.failures = 0;
            st.next = cache
                .expiry(&p.name, now)
                .map_or(Instant(now.0 + NEGATIVE), |e| {
                    Instant(e.0.saturating_sub(EARLY))
                });
            self.push_result(Lookup::Resolved {
                name: p.name,
                records: learned,
            });
        } else {
            st.failures = st.failures.saturating_add(1);
            st.next = Instant(now.0 + NEGATIVE);
            // A name without IPv6 is normal; one without IPv4 is reported (once).
            if st.failures == 1 && p.qtype == A {
                self.push_result(Lookup::Failed { name: p.name });
            }
        }
        true
    }
}

trait MinWith {
    fn min_with(self, other: Option<Instant>) -> Instant;
}

impl MinWith for Instant {
    fn min_with(self, other: Option<Instant>) -> Instant {
        match other {
            Some(o) if o.0 < self.0 => o,
            _ => self,
        }
    }
}

/// True if the message's single question is `name` (case-insensitive, uncompressed as we sent it).
fn question_is(msg: &[u8], name: &str) -> bool {
    let mut pos = 12;
    let mut got = String::new();
    for _ in 0..128 {
        let Some(&len) = msg.get(pos) else {
            return false;
        };
        if len == 0 {
            return got.eq_ignore_ascii_case(name);
        }
        if len > 63 {
            return false;
        }
        let Some(label) = msg.get(pos + 1..pos + 1 + usize::from(len)) else {
            return false;
        };
        if !got.is_empty() {
            got.push('.');
        }
        got.extend(label.iter().map(|&b| char::from(b)));
        pos += 1 + usize::from(len);
    }
    false
}

/// An IPv4/UDP DNS query of `qtype` for `name`; returns 0 if `out` is too small or the name
/// does not fit a DNS name.
fn build_query(
    out: &mut [u8],
    cfg: &NetConfig,
    server: IpAddr,
    port: u16,
    id: u16,
    qtype: u16,
    name: &str,
) -> usize {
    let IpAddr::V4(server) = server else { return 0 };
    let mut msg: Vec<u8> = Vec::with_capacity(18 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > 63 {
            return 0;
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&[0, 1]);
    let udp_len = 8 + msg.len();
    let total = 20 + udp_len;
    let Some(out) = out.get_mut(..total) else {
        return 0;
    };
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[6] = 0x40; // don't fragment
    out[8] = 64;
    out[9] = 17;
    out[12..16].copy_from_slice(&cfg.own_ip.octets());
    out[16..20].copy_from_slice(&server.octets());
    let c = !smoltcp::wire::checksum::data(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20..22].copy_from_slice(&port.to_be_bytes());
    out[22..24].copy_from_slice(&53u16.to_be_bytes());
    out[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    out[28..].copy_from_slice(&msg);
    let mut udp = smoltcp::wire::UdpPacket::new_unchecked(&mut out[20..]);
    udp.fill_checksum(
        &smoltcp::wire::IpAddress::Ipv4(cfg.own_ip),
        &smoltcp::wire::IpAddress::Ipv4(server),
    );
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::tests::a_response;
    use crate::dns::{Resolution, Resolver};

    fn cfg() -> NetConfig {
        NetConfig {
            own_ip: "10.138.5.9".parse().unwrap(),
            uplink_gateway: "10.138.0.1".parse().unwrap(),
            upstream_dns: [Some("10.139.1.1".parse().unwrap()), None],
            own_ip6: None,
            uplink_gateway6: None,
            client_gateway: "10.138.5.9".parse().unwrap(),
            client_gateway6: None,
            client_dns: [Some("10.139.1.1".parse().unwrap()), None],
            connected: Vec::new(),
            mapped: Vec::new(),
        }
    }

    /// The next query: (source port, id, qtype); checks the packet on the way.
    fn next_query(r: &mut DnsClient, now: u64, cache: &DnsCache) -> Option<(u16, u16, u16)> {
        let mut buf = [0u8; 512];
        let (n, _) = r.poll(Instant(now), cache, &cfg(), &mut buf);
        if n == 0 {
            return None;
        }
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), core::net::Ipv4Addr::new(10, 139, 1, 1));
        let udp = smoltcp::wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        assert_eq!(udp.dst_port(), 53);
        let m = udp.payload();
        let qtype = u16::from_be_bytes([m[m.len() - 4], m[m.len() - 3]]);
        Some((udp.src_port(), u16::from_be_bytes([m[0], m[1]]), qtype))
    }

    const SERVER: &str = "10.139.1.1";
    const OWN: &str = "10.138.5.9";

    #[test]
    fn queries_names_and_learns_answer_then_refreshes_before_expiry() {
        let c = cfg();
        let mut cache = DnsCache::new(16);
        let mut r = DnsClient::new(42);
        r.want(["example.com"].into_iter(), Instant(0));
        let (port, id, qtype) = next_query(&mut r, 0, &cache).unwrap();
        assert_eq!(qtype, A);
        assert!((PORT_BASE..PORT_BASE + PORT_SPAN).contains(&port));
        let (_, _, qtype6) = next_query(&mut r, 0, &cache).unwrap();
        assert_eq!(qtype6, AAAA);
        // Nothing else due while both are in flight.
        assert_eq!(next_query(&mut r, 1, &cache), None);
        let mut ans = a_response("example.com", [93, 184, 216, 34], 60);
        ans[..2].copy_from_slice(&id.to_be_bytes());
        let (server, own) = (SERVER.parse().unwrap(), OWN.parse().unwrap());
        // From the wrong server: ours to drop, but not learned.
        let other: IpAddr = "10.139.1.2".parse().unwrap();
        assert!(r.handle_answer(Instant(2), &mut cache, &c, other, own, 53, port, &ans));
        assert_eq!(cache.len(), 0);
        assert!(r.handle_answer(Instant(2), &mut cache, &c, server, own, 53, port, &ans));
        assert_eq!(
            cache.resolves_to("example.com", "93.184.216.34".parse().unwrap(), Instant(3)),
            Resolution::Match
        );
        assert!(matches!(
            r.take_result(),
            Some(Lookup::Resolved { records: 1, .. })
        ));
        // Not a port of ours: someone else's.
        assert!(!r.handle_answer(Instant(2), &mut cache, &c, server, own, 53, 5000, &ans));
        // Both stay quiet until shortly before the name's 60 s TTL ends (the live A record
        // puts off the unanswered AAAA query too).
        assert_eq!(next_query(&mut r, 4 * SEC, &cache), None);
        assert_eq!(next_query(&mut r, 6 * SEC, &cache), None);
        assert_eq!(next_query(&mut r, 30 * SEC, &cache), None);
        assert_eq!(next_query(&mut r, 57 * SEC, &cache), None);
        assert_eq!(
            next_query(&mut r, 58 * SEC + 3, &cache).map(|q| q.2),
            Some(A)
        );
        assert_eq!(
            next_query(&mut r, 58 * SEC + 3, &cache).map(|q| q.2),
            Some(AAAA)
        );
    }

    #[test]
    fn unresolvable_name_reported_once_and_backs_off() {
        let c = cfg();
        let mut cache = DnsCache::new(16);
        let mut r = DnsClient::new(7);
        r.want(["nx.invalid"].into_iter(), Instant(0));
        let (port, id, _) = next_query(&mut r, 0, &cache).unwrap();
        let mut ans = a_response("nx.invalid", [1, 2, 3, 4], 60);
        ans[..2].copy_from_slice(&id.to_be_bytes());
        ans[3] = 0x83; // NXDOMAIN
        let (server, own) = (SERVER.parse().unwrap(), OWN.parse().unwrap());
        assert!(r.handle_answer(Instant(1), &mut cache, &c, server, own, 53, port, &ans));
        assert_eq!(
            r.take_result(),
            Some(Lookup::Failed {
                name: "nx.invalid".into()
            })
        );
        assert_eq!(cache.len(), 0);
        // A is not asked again for NEGATIVE (the AAAA query is another matter).
        for t in [0, 6, 30, 55] {
            while let Some(q) = next_query(&mut r, t * SEC, &cache) {
                assert_eq!(q.2, AAAA);
            }
        }
        assert_eq!(next_query(&mut r, 61 * SEC, &cache).map(|q| q.2), Some(A));
    }

    #[test]
    fn answer_for_another_question_not_learned() {
        let c = cfg();
        let mut cache = DnsCache::new(16);
        let mut r = DnsClient::new(3);
        r.want(["good.example"].into_iter(), Instant(0));
        let (port, id, _) = next_query(&mut r, 0, &cache).unwrap();
        let mut ans = a_response("evil.example", [6, 6, 6, 6], 60);
        ans[..2].copy_from_slice(&id.to_be_bytes());
        let (server, own) = (SERVER.parse().unwrap(), OWN.parse().unwrap());
        assert!(r.handle_answer(Instant(1), &mut cache, &c, server, own, 53, port, &ans));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn names_and_pending_are_bounded() {
        let c = cfg();
        let cache = DnsCache::new(16);
        let mut r = DnsClient::new(9);
        let names: Vec<String> = (0..1000).map(|i| alloc::format!("n{i}.example")).collect();
        r.want(names.iter().map(String::as_str), Instant(0));
        assert_eq!(r.names().count(), MAX_NAMES);
        let mut buf = [0u8; 512];
        for i in 0..1000 {
            let _ = r.poll(Instant(i), &cache, &c, &mut buf);
            assert!(r.pending() <= MAX_PENDING);
        }
        assert_eq!(r.pending(), MAX_PENDING);
    }
}
