//! Frame from a client or the uplink -> [`Verdict`] (forward, NAT, deliver, reply, drop, reject),
//! rewriting the frame in place for NAT and local replies; no I/O: the router carries verdicts out.

use alloc::collections::BTreeMap;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use platform_api::Instant;

use crate::config::NetConfig;
use crate::dns::{DnsCache, Resolution, Resolver};
use crate::nat::{Entry, NatError, NatTable};
use crate::packet::{self, FlowKey, IpPacket, Parsed, Transport, WireError, L4};
use crate::resolve::DnsClient;
use crate::rules::{Action, Dst, Proto, RuleSet};
use crate::ruleset::Ruleset;

/// Table sizes (mirage: `--nat-table-size`, default 5000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub nat_entries: usize,
    /// Most flows one client address holds (its new flows then replace its own oldest).
    pub nat_per_client: usize,
    pub dns_records: usize,
    pub clients: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        nat_entries: 5000,
        nat_per_client: 3750,
        dns_records: 1024,
        clients: 256,
    };
}

/// A kernel command-line option the firewall does not understand or cannot use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    UnknownOption,
    BadValue(&'static str),
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnknownOption => f.write_str("unknown kernel command-line option"),
            CmdlineError::BadValue(k) => write!(f, "bad value for --{k}"),
        }
    }
}

impl core::error::Error for CmdlineError {}

impl Limits {
    /// Reads `--nat-table-size=N` (16..=65536, as mirage's option), `--nat-per-client=N`
    /// (default 3/4 of the table), `--dns-cache-size=N` and `--max-clients=N` from the kernel
    /// command line; other words are refused.
    pub fn from_cmdline(cmdline: &str) -> Result<Limits, CmdlineError> {
        let mut l = Limits::DEFAULT;
        for w in cmdline.split_ascii_whitespace() {
            let (k, v) = w.split_once('=').ok_or(CmdlineError::UnknownOption)?;
            let (name, slot, lo, hi): (&'static str, &mut usize, usize, usize) = match k {
                "--nat-table-size" => ("nat-table-size", &mut l.nat_entries, 16, 65536),
                "--nat-per-client" => ("nat-per-client", &mut l.nat_per_client, 1, 65536),
                "--dns-cache-size" => ("dns-cache-size", &mut l.dns_records, 16, 16384),
                "--max-clients" => ("max-clients", &mut l.clients, 1, 1024),
                _ => return Err(CmdlineError::UnknownOption),
            };
            let n: usize = v.parse().map_err(|_| CmdlineError::BadValue(name))?;
            if !(lo..=hi).contains(&n) {
                return Err(CmdlineError::BadValue(name));
            }
            *slot = n;
        }
        if !cmdline.contains("--nat-per-client=") {
            // Three quarters of the table, as the default does.
            l.nat_per_client = l.nat_entries - l.nat_entries / 4;
        }
        Ok(l)
    }
}

/// A downstream link, numbered by the router (clients are keyed by link and IP, never by MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// What to do with a frame. For `ToUplink`, `ToClient` and `Reply` the frame has already been
/// rewritten in place (addresses, ports, checksums; for `Reply` also the MACs); the router sets the
/// Ethernet addresses of forwarded frames.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    ToUplink,
    ToClient(ClientId),
    /// Send the frame back on the link it came from.
    Reply,
    Drop(DropReason),
    /// Refuse with an ICMP error (host prohibited), as Linux does for traffic to the firewall itself.
    Reject(RejectReason),
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Malformed(WireError),
    UnknownClient,
    /// Client source address is not the client's own.
    Spoofed,
    /// An uplink packet claims a client's or our own address as source.
    UpstreamClaimsInternal,
    /// Uplink traffic that matches no tracked flow.
    NoFlow,
    /// The client's rules (or the deny-all fallback) refuse it.
    RuleDenied,
    /// Client-to-client traffic that no accept rule names.
    ClientToClient,
    /// Neither TCP, UDP nor ICMP echo: cannot be tracked.
    Untrackable,
    /// ARP that needs no answer (replies, our client's own address); uplink ARP is the uplink's.
    Arp,
    /// Neighbour discovery we do not answer.
    Ndp,
    /// IPv6 to the uplink while we have no IPv6 address there.
    NoIpv6Uplink,
    Nat(NatError),
    /// An answer to the firewall's own DNS query: consumed, not forwarded.
    OwnDns,
}

/// Why a frame was refused with an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// TCP/UDP to the firewall itself.
    ToFirewall,
    /// Denied by the client's rules, and the ruleset says reject for this client.
    RuleDenied,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Malformed(e) => write!(f, "malformed: {e}"),
            DropReason::UnknownClient => f.write_str("unknown client link"),
            DropReason::Spoofed => f.write_str("source address is not the client's"),
            DropReason::UpstreamClaimsInternal => {
                f.write_str("uplink packet claims an internal source")
            }
            DropReason::NoFlow => f.write_str("no tracked flow"),
            DropReason::RuleDenied => f.write_str("denied by the client's rules"),
            DropReason::ClientToClient => f.write_str("client-to-client not allowed by a rule"),
            DropReason::Untrackable => f.write_str("protocol cannot be tracked"),
            DropReason::Arp => f.write_str("ARP not answered"),
            DropReason::Ndp => f.write_str("neighbour discovery not answered"),
            DropReason::NoIpv6Uplink => f.write_str("no IPv6 uplink address"),
            DropReason::Nat(e) => write!(f, "NAT: {e}"),
            DropReason::OwnDns => f.write_str("answer to our own DNS query"),
        }
    }
}

/// Why a client could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    Full {
        what: &'static str,
    },
    /// Another live link has this address (wait for it to go, firewall-netvm.md §2).
    AddressInUse,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Full { what } => write!(f, "{what} full"),
            ClientError::AddressInUse => f.write_str("address used by another client"),
        }
    }
}

impl core::error::Error for ClientError {}

/// A client link's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddrs {
    pub ip4: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
}

/// The transport facts a rule looks at.
#[derive(Clone, Copy, Debug)]
struct FlowInfo {
    proto: Option<Proto>,
    dst: IpAddr,
    dport: Option<u16>,
    icmp_type: Option<u8>,
}

impl FlowInfo {
    fn of_key(k: &FlowKey) -> Self {
        let (proto, dport, icmp_type) = match k.proto {
            L4::Tcp => (Proto::Tcp, Some(k.dport), None),
            L4::Udp => (Proto::Udp, Some(k.dport), None),
            L4::Echo => (
                Proto::Icmp,
                None,
                Some(if k.dst.is_ipv4() { 8 } else { 128 }),
            ),
        };
        FlowInfo {
            proto: Some(proto),
            dst: k.dst,
            dport,
            icmp_type,
        }
    }
}

/// First match wins; no match means the policy. Returns the action and whether the deciding rule
/// named the destination (needed for client-to-client traffic).
fn decide(
    rules: &RuleSet,
    cfg: &NetConfig,
    dns: &dyn Resolver,
    f: &FlowInfo,
    now: Instant,
) -> (Action, bool) {
    for r in &rules.rules {
        if r.proto.is_some() && r.proto != f.proto {
            continue;
        }
        let dst_ok = match &r.dst {
            Dst::Any => true,
            Dst::Net(c) => c.contains(f.dst),
            // An unresolved name disables only this rule.
            Dst::Host(name) => dns.resolves_to(name, f.dst, now) == Resolution::Match,
        };
        if !dst_ok {
            continue;
        }
        if let Some(p) = r.ports {
            if !f.dport.is_some_and(|d| p.contains(d)) {
                continue;
            }
        }
        if r.icmp_type.is_some() && r.icmp_type != f.icmp_type {
            continue;
        }
        if r.dns_only
            && !(cfg.is_client_dns(f.dst)
                && f.dport == Some(53)
                && matches!(f.proto, Some(Proto::Tcp | Proto::Udp)))
        {
            continue;
        }
        return (r.action, !matches!(r.dst, Dst::Any));
    }
    (rules.policy, false)
}

/// The firewall's state: configuration, clients, their rules, tracked flows and the DNS cache.
#[derive(Debug)]
pub struct Firewall {
    cfg: NetConfig,
    limits: Limits,
    clients: BTreeMap<ClientId, ClientAddrs>,
    by_ip: BTreeMap<IpAddr, ClientId>,
    rules: BTreeMap<IpAddr, RuleSet>,
    deny_all: RuleSet,
    nat: NatTable,
    dns: DnsCache,
    resolver: DnsClient,
    ruleset: Ruleset,
}

impl Firewall {
    /// `seed` should come from the platform's entropy: it picks masquerade ports.
    pub fn new(cfg: NetConfig, limits: Limits, seed: u64) -> Self {
        Firewall {
            cfg,
            limits,
            clients: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            rules: BTreeMap::new(),
            deny_all: RuleSet::deny_all(),
            nat: NatTable::with_quota(limits.nat_entries, limits.nat_per_client, seed),
            dns: DnsCache::new(limits.dns_records),
            resolver: DnsClient::new(seed.rotate_left(17)),
            ruleset: Ruleset::default(),
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn nat(&self) -> &NatTable {
        &self.nat
    }

    pub fn dns(&self) -> &DnsCache {
        &self.dns
    }

    pub fn dns_mut(&mut self) -> &mut DnsCache {
        &mut self.dns
    }

    pub fn resolver(&self) -> &DnsClient {
        &self.resolver
    }

    /// Builds the firewall's own due DNS queries (for `dsthost` names) as IP packets into `out`,
    /// one per call; returns the packet length (0: none due) and the next time one may be due.
    pub fn poll_dns_query(&mut self, now: Instant, out: &mut [u8]) -> (usize, Option<Instant>) {
        self.resolver.poll(now, &self.dns, &self.cfg, out)
    }

    /// Takes one result of the firewall's own DNS lookups, for the log.
    pub fn take_dns_result(&mut self) -> Option<crate::resolve::Lookup> {
        self.resolver.take_result()
    }

    /// The addresses of client link `id`.
    pub fn client_addrs(&self, id: ClientId) -> Option<ClientAddrs> {
        self.clients.get(&id).copied()
    }

    /// Ends flows idle for `idle_nanos`; returns how many ended.
    pub fn expire_flows(&mut self, now: Instant, idle_nanos: u64) -> usize {
        self.nat.expire(now, idle_nanos)
    }

    /// The ruleset set through the RPC.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// Installs a new RPC ruleset; tracked flows it no longer permits end. Returns how many ended.
    pub fn set_ruleset(&mut self, now: Instant, ruleset: Ruleset) -> usize {
        self.ruleset = ruleset;
        let ips: alloc::vec::Vec<IpAddr> = self.by_ip.keys().copied().collect();
        let mut ended = 0;
        for ip in ips {
            ended += self.recheck(now, ip);
        }
        ended
    }

    /// The client address denied packets are reported to (reject) or not (drop).
    fn denied(&self, src: IpAddr) -> Verdict {
        if self.ruleset.rejects(src) {
            Verdict::Reject(RejectReason::RuleDenied)
        } else {
            Verdict::Drop(DropReason::RuleDenied)
        }
    }

    /// Replaces the configuration (e.g. the netvm changed); uplink flows are ended.
    pub fn set_config(&mut self, cfg: NetConfig) {
        self.cfg = cfg;
        self.nat.retain(|e| !e.to_uplink);
    }

    /// Registers a client link. Its rules stay keyed by IP, so they may arrive before or after.
    pub fn add_client(&mut self, id: ClientId, addrs: ClientAddrs) -> Result<(), ClientError> {
        if !self.clients.contains_key(&id) && self.clients.len() >= self.limits.clients {
            return Err(ClientError::Full {
                what: "client table",
            });
        }
        let ips = [addrs.ip4.map(IpAddr::V4), addrs.ip6.map(IpAddr::V6)];
        if ips
            .iter()
            .flatten()
            .any(|ip| self.by_ip.get(ip).is_some_and(|o| *o != id))
        {
            return Err(ClientError::AddressInUse);
        }
        self.remove_client(id);
        for ip in ips.into_iter().flatten() {
            self.by_ip.insert(ip, id);
        }
        self.clients.insert(id, addrs);
        Ok(())
    }

    /// Forgets a client link and ends its flows (both directions).
    pub fn remove_client(&mut self, id: ClientId) {
        let Some(a) = self.clients.remove(&id) else {
            return;
        };
        let ips = [a.ip4.map(IpAddr::V4), a.ip6.map(IpAddr::V6)];
        for ip in ips.iter().flatten() {
            self.by_ip.remove(ip);
        }
        self.nat
            .retain(|e| !ips.contains(&Some(e.orig.src)) && !ips.contains(&Some(e.xlat.dst)));
    }

    /// The rules in force for a client address (deny-all until some arrive).
    pub fn rules_for(&self, ip: IpAddr) -> &RuleSet {
        self.rules.get(&ip).unwrap_or(&self.deny_all)
    }

    /// Installs a client's new rules: new flows see them at once, and every tracked flow of that
    /// client is checked again; those now denied end, the others go on. Returns how many ended.
    pub fn reload(&mut self, now: Instant, ip: IpAddr, rules: RuleSet) -> usize {
        if self.rules.len() >= self.limits.clients.saturating_mul(2)
            && !self.rules.contains_key(&ip)
        {
            // Rule sets for vanished clients: keep only those of live ones before adding.
            let live = &self.by_ip;
            self.rules.retain(|k, _| live.contains_key(k));
        }
        self.rules.insert(ip, rules);
        self.resolver.want(
            self.rules
                .values()
                .flat_map(|s| s.rules.iter())
                .filter_map(|r| match &r.dst {
                    Dst::Host(h) => Some(h.as_str()),
                    _ => None,
                }),
            now,
        );
        self.recheck(now, ip)
    }

    /// Checks client `ip`'s tracked flows against its rules and the ruleset; ends those now denied.
    fn recheck(&mut self, now: Instant, ip: IpAddr) -> usize {
        let (rules, cfg, dns, by_ip, rs) = (
            &self.rules,
            &self.cfg,
            &self.dns,
            &self.by_ip,
            &self.ruleset,
        );
        let set = rules.get(&ip).unwrap_or(&self.deny_all);
        self.nat.retain(|e| {
            if e.orig.src != ip {
                return true;
            }
            if e.forwarded {
                // The client's side of a forwarded flow answers from the forwarded port.
                let proto = FlowInfo::of_key(&e.orig).proto.unwrap_or(Proto::Icmp);
                return rs
                    .forward_for(proto, e.xlat.sport)
                    .is_some_and(|f| f.client == e.orig.src && f.to_port == e.orig.sport);
            }
            let f = FlowInfo::of_key(&e.orig);
            let (action, named) = decide(set, cfg, dns, &f, now);
            if e.to_uplink {
                return action == Action::Accept;
            }
            by_ip.contains_key(&e.orig.dst) && c2c_allowed(rs, action, named, &e.orig, &f)
        })
    }

    fn owner(&self, ip: IpAddr) -> Option<ClientId> {
        self.by_ip.get(&ip).copied()
    }

    fn is_internal(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip) || self.cfg.is_own(ip) || self.cfg.connected.contains(&ip)
    }

    /// Classifies (and rewrites) a frame received from client link `id`.
    pub fn handle_client(&mut self, now: Instant, id: ClientId, frame: &mut [u8]) -> Verdict {
        let parsed = match packet::parse(frame) {
            Ok(p) => p,
            Err(e) => return Verdict::Drop(DropReason::Malformed(e)),
        };
        let Some(me) = self.clients.get(&id).copied() else {
            return Verdict::Drop(DropReason::UnknownClient);
        };
        let p = match parsed {
            Parsed::Arp(arp) => {
                // Answer every who-has except for the client's own address (mirage 0.9.5).
                let sender_ok = arp.sender_ip.is_unspecified() || Some(arp.sender_ip) == me.ip4;
                if arp.request && sender_ok && Some(arp.target_ip) != me.ip4 {
                    return reply(packet::make_arp_reply(frame, &arp));
                }
                return Verdict::Drop(DropReason::Arp);
            }
            Parsed::Ip(p) => p,
        };
        if let Transport::Ndp { ty } = p.transport {
            return match self.cfg.client_gateway6 {
                Some(gw) if ty == 135 => match packet::make_neighbour_advert(frame, &p, gw) {
                    Some(()) => Verdict::Reply,
                    None => Verdict::Drop(DropReason::Ndp),
                },
                _ => Verdict::Drop(DropReason::Ndp),
            };
        }
        let own_src = match p.src {
            IpAddr::V4(a) => Some(a) == me.ip4,
            IpAddr::V6(a) => Some(a) == me.ip6,
        };
        if !own_src {
            return Verdict::Drop(DropReason::Spoofed);
        }
        if self.cfg.is_own(p.dst) {
            return match p.transport {
                Transport::Echo { request: true, .. } => reply(packet::make_echo_reply(frame, &p)),
                Transport::Tcp { .. } | Transport::Udp { .. } => {
                    Verdict::Reject(RejectReason::ToFirewall)
                }
                _ => Verdict::Drop(DropReason::RuleDenied),
            };
        }
        if let Transport::IcmpError(q) = p.transport {
            // The client reports a problem with a reply it received: find that flow by its origin.
            let Some(e) = self.nat.outbound(&q.key.reverse(), now) else {
                return Verdict::Drop(DropReason::NoFlow);
            };
            let quoted = e.xlat.reverse();
            if packet::rewrite_icmp_error(frame, &p, e.xlat.src, e.xlat.dst, &quoted).is_none() {
                return Verdict::Drop(DropReason::Malformed(WireError::QuotedPacket));
            }
            return self.route(&e);
        }
        let Some(key) = p.key() else {
            return Verdict::Drop(DropReason::Untrackable);
        };
        if let Some(e) = self.nat.outbound(&key, now) {
            return self.forward(frame, &p, &e);
        }
        // A reply within a client-to-client flow that the other client opened.
        if let Some(e) = self.nat.peek_inbound(&key).copied() {
            if !e.to_uplink {
                let _ = self.nat.inbound(&key, now);
                return self.deliver_reply(frame, &p, &e);
            }
        }
        if let Transport::Echo { request: false, .. } = p.transport {
            // Nobody outside can have pinged the client: an echo reply never opens a flow.
            return Verdict::Drop(DropReason::NoFlow);
        }
        self.new_flow(now, frame, &p, key)
    }

    fn new_flow(&mut self, now: Instant, frame: &mut [u8], p: &IpPacket, key: FlowKey) -> Verdict {
        let set = self.rules.get(&key.src).unwrap_or(&self.deny_all);
        let (action, named) = decide(set, &self.cfg, &self.dns, &FlowInfo::of_key(&key), now);
        if let Some(peer) = self.owner(key.dst) {
            if !c2c_allowed(&self.ruleset, action, named, &key, &FlowInfo::of_key(&key)) {
                return Verdict::Drop(DropReason::ClientToClient);
            }
            return match self.nat.insert(key, key, false, now) {
                Ok(_) => Verdict::ToClient(peer),
                Err(e) => Verdict::Drop(DropReason::Nat(e)),
            };
        }
        if action != Action::Accept {
            return self.denied(key.src);
        }
        let own = match key.src {
            IpAddr::V4(_) => IpAddr::V4(self.cfg.own_ip),
            IpAddr::V6(_) => match self.cfg.own_ip6 {
                Some(a) => IpAddr::V6(a),
                None => return Verdict::Drop(DropReason::NoIpv6Uplink),
            },
        };
        // Virtual DNS IPs go to the DNS our own QubesDB names.
        let dst = self.cfg.dns_target(key.dst).map_or(key.dst, IpAddr::V4);
        let made = self
            .nat
            .masquerade(&key, own, dst)
            .and_then(|x| self.nat.insert(key, x, true, now));
        match made {
            Ok(e) => self.forward(frame, p, &e),
            Err(e) => Verdict::Drop(DropReason::Nat(e)),
        }
    }

    fn route(&self, e: &Entry) -> Verdict {
        if e.to_uplink {
            return Verdict::ToUplink;
        }
        match self.owner(e.xlat.dst) {
            Some(c) => Verdict::ToClient(c),
            None => Verdict::Drop(DropReason::NoFlow),
        }
    }

    fn forward(&self, frame: &mut [u8], p: &IpPacket, e: &Entry) -> Verdict {
        if e.xlat != e.orig && packet::rewrite(frame, p, &e.xlat).is_none() {
            return Verdict::Drop(DropReason::Malformed(WireError::Transport));
        }
        self.route(e)
    }

    fn deliver_reply(&self, frame: &mut [u8], p: &IpPacket, e: &Entry) -> Verdict {
        let back = e.orig.reverse();
        if e.xlat != e.orig && packet::rewrite(frame, p, &back).is_none() {
            return Verdict::Drop(DropReason::Malformed(WireError::Transport));
        }
        match self.owner(e.orig.src) {
            Some(c) => Verdict::ToClient(c),
            None => Verdict::Drop(DropReason::NoFlow),
        }
    }

    /// Builds in `out` the ICMP error for a client frame that got [`Verdict::Reject`], from the
    /// gateway address the client uses; returns its length (0 when there is nothing to send).
    pub fn emit_reject(
        &self,
        frame: &[u8],
        out: &mut [u8],
    ) -> Result<usize, packet::BufferTooSmall> {
        let Ok(Parsed::Ip(p)) = packet::parse(frame) else {
            return Ok(0);
        };
        let from = match p.src {
            IpAddr::V4(_) => IpAddr::V4(self.cfg.client_gateway),
            IpAddr::V6(_) => match self.cfg.client_gateway6 {
                Some(g) => IpAddr::V6(g),
                None => return Ok(0),
            },
        };
        packet::make_reject(frame, &p, from, out)
    }

    /// Classifies (and rewrites) a frame received from the uplink.
    pub fn handle_uplink(&mut self, now: Instant, frame: &mut [u8]) -> Verdict {
        let p = match packet::parse(frame) {
            Ok(Parsed::Ip(p)) => p,
            Ok(Parsed::Arp(_)) => return Verdict::Drop(DropReason::Arp),
            Err(e) => return Verdict::Drop(DropReason::Malformed(e)),
        };
        if self.is_internal(p.src) {
            return Verdict::Drop(DropReason::UpstreamClaimsInternal);
        }
        if let Transport::IcmpError(q) = p.transport {
            // The quoted packet is one we sent: its reply key finds the flow.
            let e = match self.nat.inbound(&q.key.reverse(), now) {
                Some(e) if e.to_uplink => e,
                _ => return Verdict::Drop(DropReason::NoFlow),
            };
            if packet::rewrite_icmp_error(frame, &p, p.src, e.orig.src, &e.orig).is_none() {
                return Verdict::Drop(DropReason::Malformed(WireError::QuotedPacket));
            }
            return self
                .owner(e.orig.src)
                .map_or(Verdict::Drop(DropReason::NoFlow), Verdict::ToClient);
        }
        if let Transport::Udp { sport, dport } = p.transport {
            if let Some(msg) = udp_payload(frame, &p) {
                if self.resolver.handle_answer(
                    now,
                    &mut self.dns,
                    &self.cfg,
                    p.src,
                    p.dst,
                    sport,
                    dport,
                    msg,
                ) {
                    return Verdict::Drop(DropReason::OwnDns);
                }
            }
        }
        let Some(key) = p.key() else {
            return Verdict::Drop(DropReason::Untrackable);
        };
        let e = match self.nat.inbound(&key, now) {
            Some(e) if e.to_uplink => e,
            Some(_) => return Verdict::Drop(DropReason::NoFlow),
            None => match self.open_forward(now, &key) {
                Some(e) => e,
                None => return Verdict::Drop(DropReason::NoFlow),
            },
        };
        if e.orig.proto == L4::Udp && e.orig.dport == 53 && self.cfg.is_client_dns(e.orig.dst) {
            self.learn_dns(now, frame, &p);
        }
        self.deliver_reply(frame, &p, &e)
    }

    /// A new flow from the uplink to one of our ports that the ruleset forwards to a client.
    fn open_forward(&mut self, now: Instant, key: &FlowKey) -> Option<Entry> {
        if !self.cfg.is_own(key.dst) {
            return None;
        }
        let proto = match key.proto {
            L4::Tcp => Proto::Tcp,
            L4::Udp => Proto::Udp,
            L4::Echo => return None,
        };
        let f = *self.ruleset.forward_for(proto, key.dport)?;
        if f.client.is_ipv4() != key.src.is_ipv4() {
            return None;
        }
        self.owner(f.client)?;
        // The client's side: its replies come from `client:to_port` to the remote end.
        let orig = FlowKey {
            proto: key.proto,
            src: f.client,
            sport: f.to_port,
            dst: key.src,
            dport: key.sport,
        };
        self.nat.insert_forwarded(orig, key.reverse(), now).ok()
    }

    fn learn_dns(&mut self, now: Instant, frame: &[u8], p: &IpPacket) {
        if let Some(msg) = udp_payload(frame, p) {
            // A malformed answer teaches nothing; the client still gets it.
            let _ = self.dns.learn_from_response(msg, now);
        }
    }
}

/// The payload of a UDP packet, as long as the UDP header says.
fn udp_payload<'a>(frame: &'a [u8], p: &IpPacket) -> Option<&'a [u8]> {
    let seg = frame.get(p.l4_range())?;
    let len = usize::from(u16::from_be_bytes([*seg.get(4)?, *seg.get(5)?]));
    seg.get(8..len)
}

/// Client-to-client: the source's rules accept it through a rule naming the destination, or the
/// ruleset has an inter-VM allow for the pair.
fn c2c_allowed(rs: &Ruleset, action: Action, named: bool, key: &FlowKey, f: &FlowInfo) -> bool {
    (action == Action::Accept && named)
        || rs.allows(key.src, key.dst, f.proto.unwrap_or(Proto::Icmp), f.dport)
}

fn reply(done: Option<()>) -> Verdict {
    match done {
        Some(()) => Verdict::Reply,
        None => Verdict::Drop(DropReason::Malformed(WireError::Transport)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
