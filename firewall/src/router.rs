//! The netvm's router, sans-IO: frames in from the uplink and each client link, frames out with
//! the Qubes L2 conventions; uplink ARP/NDP, generated frames, timers and a bounded drop log.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::IpAddr;

use platform_api::Instant;

use crate::classify::{ClientAddrs, ClientError, ClientId, DropReason, Firewall, Verdict};
use crate::packet::{self, Parsed, Transport, GATEWAY_MAC};
use crate::resolve::Lookup;

/// Default MAC of every Qubes VM (firewall-netvm.md §3).
pub const CLIENT_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00];
/// Largest frame we build or hold (1500-byte MTU plus the Ethernet header).
pub const MAX_FRAME: usize = 1514;
const SEC: u64 = 1_000_000_000;
/// Resend ARP for the uplink gateway after this long without an answer.
const ARP_RETRY: u64 = SEC;
/// ARP tries before falling back to `fe:ff:ff:ff:ff:ff` (mirage 0.9.4).
const ARP_TRIES: u32 = 3;
/// Flows idle this long are ended (the LRU bound ends them sooner when the table is full).
pub const FLOW_IDLE: u64 = 3600 * SEC;
/// How often idle flows are looked for.
const EXPIRE_EVERY: u64 = 60 * SEC;

/// A link of the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// Our netfront to sys-net.
    Uplink,
    /// A client's vif (netback).
    Client(ClientId),
}

/// Bounds of the router's own queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterLimits {
    /// Uplink frames held while the gateway's MAC is being learned.
    pub held: usize,
    /// Generated frames (ARP, rejects, DNS queries) waiting to be sent.
    pub out: usize,
    /// Drop records kept per link.
    pub drops_per_link: usize,
    /// Console lines waiting to be taken.
    pub log_lines: usize,
}

impl RouterLimits {
    pub const DEFAULT: RouterLimits = RouterLimits {
        held: 16,
        out: 64,
        drops_per_link: 32,
        log_lines: 64,
    };
}

/// One dropped packet, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropRecord {
    pub at: Instant,
    pub reason: DropReason,
    /// IP protocol number (0 if not IP).
    pub proto: u8,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: u16,
    pub dport: u16,
}

impl fmt::Display for DropRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, ms) = (self.at.0 / SEC, (self.at.0 % SEC) / 1_000_000);
        let proto = match self.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            58 => "icmp6",
            0 => "-",
            _ => "ip",
        };
        write!(f, "{s}.{ms:03} {proto}")?;
        match (self.src, self.dst) {
            (Some(a), Some(b)) => write!(f, " {a}:{} > {b}:{}", self.sport, self.dport)?,
            _ => f.write_str(" - > -")?,
        }
        write!(f, " {}", self.reason)
    }
}

/// Frame counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub forwarded: u64,
    pub replied: u64,
    pub dropped: u64,
    pub generated: u64,
    /// Generated or held frames lost because a bounded queue was full.
    pub queue_full: u64,
}

/// The router: the firewall's decisions plus the link layer and the queues.
#[derive(Debug)]
pub struct Router {
    fw: Firewall,
    limits: RouterLimits,
    uplink_mac: [u8; 6],
    gw_mac: Option<[u8; 6]>,
    arp_tries: u32,
    arp_next: Instant,
    held: VecDeque<Vec<u8>>,
    client_macs: BTreeMap<ClientId, [u8; 6]>,
    out: VecDeque<(Link, Vec<u8>)>,
    drops: BTreeMap<Link, VecDeque<DropRecord>>,
    log: VecDeque<String>,
    next_expire: Instant,
    counters: Counters,
}

impl Router {
    /// A router whose uplink netfront has `uplink_mac`.
    pub fn new(fw: Firewall, uplink_mac: [u8; 6], limits: RouterLimits) -> Self {
        Router {
            fw,
            limits,
            uplink_mac,
            gw_mac: None,
            arp_tries: 0,
            arp_next: Instant(0),
            held: VecDeque::new(),
            client_macs: BTreeMap::new(),
            out: VecDeque::new(),
            drops: BTreeMap::new(),
            log: VecDeque::new(),
            next_expire: Instant(0),
            counters: Counters::default(),
        }
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    pub fn firewall_mut(&mut self) -> &mut Firewall {
        &mut self.fw
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The uplink gateway's MAC, once learned (or fallen back to).
    pub fn gateway_mac(&self) -> Option<[u8; 6]> {
        self.gw_mac
    }

    /// Forgets the gateway's MAC (the uplink was re-created) and sets our new uplink MAC.
    pub fn reset_uplink(&mut self, uplink_mac: [u8; 6]) {
        self.uplink_mac = uplink_mac;
        self.gw_mac = None;
        self.arp_tries = 0;
        self.arp_next = Instant(0);
        self.held.clear();
    }

    /// Adds a client link with the MAC its frontend uses.
    pub fn add_client(
        &mut self,
        id: ClientId,
        addrs: ClientAddrs,
        mac: [u8; 6],
    ) -> Result<(), ClientError> {
        self.fw.add_client(id, addrs)?;
        self.client_macs.insert(id, mac);
        Ok(())
    }

    /// Removes a client link, its flows, queued frames and drop log.
    pub fn remove_client(&mut self, id: ClientId) {
        self.fw.remove_client(id);
        self.client_macs.remove(&id);
        self.out.retain(|(l, _)| *l != Link::Client(id));
        self.drops.remove(&Link::Client(id));
    }

    /// Takes one console line (gateway learned, DNS lookups).
    pub fn take_log(&mut self) -> Option<String> {
        if let Some(r) = self.fw_result() {
            self.push_log(r);
        }
        self.log.pop_front()
    }

    fn fw_result(&mut self) -> Option<String> {
        Some(match self.fw_resolver_result()? {
            Lookup::Resolved { name, records } => {
                alloc::format!("dsthost {name}: {records} record(s)")
            }
            Lookup::Failed { name } => {
                alloc::format!("dsthost {name} does not resolve: rules naming it match nothing")
            }
        })
    }

    fn fw_resolver_result(&mut self) -> Option<Lookup> {
        self.fw.take_dns_result()
    }

    fn push_log(&mut self, line: String) {
        if self.log.len() >= self.limits.log_lines {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// Takes one generated frame (ARP, ICMP reject, DNS query, held uplink frame) to send.
    pub fn poll_transmit(&mut self) -> Option<(Link, Vec<u8>)> {
        self.out.pop_front()
    }

    /// Frames waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    fn queue(&mut self, link: Link, frame: Vec<u8>) {
        if self.out.len() >= self.limits.out {
            self.counters.queue_full += 1;
            return;
        }
        self.counters.generated += 1;
        self.out.push_back((link, frame));
    }

    /// Handles one received frame. `Some(link)`: send `frame` (rewritten in place, Ethernet
    /// addresses set) on `link`; `None`: it was consumed, dropped or held.
    pub fn handle(&mut self, now: Instant, from: Link, frame: &mut [u8]) -> Option<Link> {
        self.counters.received += 1;
        let verdict = match from {
            Link::Uplink => {
                if frame.get(12..14) == Some(&[0x08, 0x06][..]) {
                    if let Ok(Parsed::Arp(arp)) = packet::parse(frame) {
                        self.uplink_arp(now, frame, &arp);
                    }
                    return None;
                }
                if let Some(done) = self.uplink_ndp(frame) {
                    return done.then_some(Link::Uplink);
                }
                self.fw.handle_uplink(now, frame)
            }
            Link::Client(id) => self.fw.handle_client(now, id, frame),
        };
        match verdict {
            Verdict::ToUplink => self.send_uplink(now, frame),
            Verdict::ToClient(c) => {
                let mac = self.client_macs.get(&c).copied().unwrap_or(CLIENT_MAC);
                packet::set_macs(frame, mac, GATEWAY_MAC)?;
                self.counters.forwarded += 1;
                Some(Link::Client(c))
            }
            Verdict::Reply => {
                self.counters.replied += 1;
                Some(from)
            }
            Verdict::Reject(_) => {
                let mut out = alloc::vec![0u8; MAX_FRAME];
                if let Ok(n) = self.fw.emit_reject(frame, &mut out) {
                    if n > 0 {
                        out.truncate(n);
                        self.queue(from, out);
                    }
                }
                self.record_drop(now, from, frame, DropReason::RuleDenied);
                None
            }
            Verdict::Drop(reason) => {
                self.record_drop(now, from, frame, reason);
                None
            }
        }
    }

    fn send_uplink(&mut self, now: Instant, frame: &mut [u8]) -> Option<Link> {
        match self.gw_mac {
            Some(gw) => {
                packet::set_macs(frame, gw, self.uplink_mac)?;
                self.counters.forwarded += 1;
                Some(Link::Uplink)
            }
            None => {
                if self.held.len() < self.limits.held {
                    self.held.push_back(frame.to_vec());
                } else {
                    self.counters.queue_full += 1;
                }
                if self.arp_tries == 0 {
                    self.arp_next = now;
                }
                None
            }
        }
    }

    fn uplink_arp(&mut self, now: Instant, frame: &mut [u8], arp: &packet::Arp) {
        let cfg = self.fw.config();
        if arp.sender_ip == cfg.uplink_gateway {
            if let Some(mac) = packet::arp_sender_mac(frame) {
                if self.gw_mac != Some(mac) {
                    self.push_log(alloc::format!(
                        "uplink gateway {} is at {}",
                        arp.sender_ip,
                        MacFmt(mac)
                    ));
                }
                self.learn_gateway(mac);
            }
        }
        let cfg = self.fw.config();
        if arp.request && arp.target_ip == cfg.own_ip {
            let mac = self.uplink_mac;
            if packet::make_arp_reply_from(frame, arp, mac).is_some() {
                self.queue(Link::Uplink, frame.to_vec());
            }
        }
        let _ = now;
    }

    fn learn_gateway(&mut self, mac: [u8; 6]) {
        self.gw_mac = Some(mac);
        while let Some(mut f) = self.held.pop_front() {
            if packet::set_macs(&mut f, mac, self.uplink_mac).is_some() {
                self.queue(Link::Uplink, f);
            }
        }
    }

    /// Neighbour solicitations for our uplink IPv6 address: `Some(true)` = answer in `frame`,
    /// `Some(false)` = consumed, `None` = not NDP.
    fn uplink_ndp(&mut self, frame: &mut [u8]) -> Option<bool> {
        // Cheap test first: only IPv6 carrying ICMPv6 can be NDP.
        if frame.get(12..14) != Some(&[0x86, 0xdd][..]) || frame.get(20) != Some(&58) {
            return None;
        }
        let Ok(Parsed::Ip(p)) = packet::parse(frame) else {
            return None;
        };
        let Transport::Ndp { ty } = p.transport else {
            return None;
        };
        match (ty, self.fw.config().own_ip6) {
            (135, Some(own)) => {
                Some(packet::make_neighbour_advert_from(frame, &p, own, self.uplink_mac).is_some())
            }
            _ => Some(false),
        }
    }

    fn record_drop(&mut self, now: Instant, link: Link, frame: &[u8], reason: DropReason) {
        self.counters.dropped += 1;
        // Link-local chatter (ARP, NDP, MLD behind a hop-by-hop header) is not worth a record.
        if matches!(
            reason,
            DropReason::Arp
                | DropReason::Ndp
                | DropReason::OwnDns
                | DropReason::Malformed(packet::WireError::Ipv6Extension(0))
        ) {
            return;
        }
        let mut r = DropRecord {
            at: now,
            reason,
            proto: 0,
            src: None,
            dst: None,
            sport: 0,
            dport: 0,
        };
        if let Ok(Parsed::Ip(p)) = packet::parse(frame) {
            r.src = Some(p.src);
            r.dst = Some(p.dst);
            r.proto = match p.transport {
                Transport::Tcp { .. } => 6,
                Transport::Udp { .. } => 17,
                Transport::Other { proto } => proto,
                _ if p.src.is_ipv4() => 1,
                _ => 58,
            };
            if let Some(k) = p.key() {
                r.sport = k.sport;
                r.dport = k.dport;
            }
        }
        if !self.drops.contains_key(&link) && self.drops.len() > self.client_macs.len() {
            // Only live links keep a log (a removed client's went with it).
            return;
        }
        let ring = self.drops.entry(link).or_default();
        if ring.len() >= self.limits.drops_per_link {
            ring.pop_front();
        }
        ring.push_back(r);
    }

    /// The drop records of `link`, oldest first.
    pub fn drops(&self, link: Link) -> impl Iterator<Item = &DropRecord> + '_ {
        self.drops.get(&link).into_iter().flatten()
    }

    /// The whole drop log as text: one `link <name>` header per link, then its records.
    pub fn drop_log_text(&self, out: &mut String) {
        for (link, ring) in &self.drops {
            let _ = match link {
                Link::Uplink => writeln!(out, "uplink:"),
                Link::Client(id) => match self.fw.client_addrs(*id) {
                    Some(ClientAddrs { ip4: Some(a), .. }) => writeln!(out, "client {a}:"),
                    Some(ClientAddrs { ip6: Some(a), .. }) => writeln!(out, "client {a}:"),
                    _ => writeln!(out, "client #{}:", id.0),
                },
            };
            for r in ring {
                let _ = writeln!(out, "  {r}");
            }
        }
    }

    /// Timers: ARP for the gateway, the firewall's DNS queries, idle-flow expiry. Returns the
    /// next deadline.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| {
            next = Some(match next {
                Some(n) if n.0 <= t.0 => n,
                _ => t,
            })
        };
        if self.gw_mac.is_none() {
            if now.0 >= self.arp_next.0 {
                if self.arp_tries >= ARP_TRIES {
                    self.push_log(String::from(
                        "uplink gateway does not answer ARP: using fe:ff:ff:ff:ff:ff",
                    ));
                    self.learn_gateway(GATEWAY_MAC);
                } else {
                    self.arp_tries += 1;
                    self.arp_next = Instant(now.0 + ARP_RETRY);
                    let mut f = alloc::vec![0u8; 42];
                    let cfg = self.fw.config();
                    let (own, gw) = (cfg.own_ip, cfg.uplink_gateway);
                    if packet::make_arp_request(&mut f, self.uplink_mac, own, gw).is_ok() {
                        self.queue(Link::Uplink, f);
                    }
                }
            }
            if self.gw_mac.is_none() {
                at(self.arp_next);
            }
        }
        // The firewall's own DNS queries wait for the gateway's MAC like everything else.
        if let Some(gw) = self.gw_mac {
            for _ in 0..4 {
                let mut f = alloc::vec![0u8; MAX_FRAME];
                let (n, due) = self.fw.poll_dns_query(now, &mut f[14..]);
                if let Some(d) = due {
                    at(d);
                }
                if n == 0 {
                    break;
                }
                f.truncate(14 + n);
                let _ = packet::set_macs(&mut f, gw, self.uplink_mac);
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                self.queue(Link::Uplink, f);
            }
        }
        if now.0 >= self.next_expire.0 {
            self.fw.expire_flows(now, FLOW_IDLE);
            self.next_expire = Instant(now.0 + EXPIRE_EVERY);
        }
        at(self.next_expire);
        next
    }
}

struct MacFmt([u8; 6]);

impl fmt::Display for MacFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (xenstore's `mac` key).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests;
