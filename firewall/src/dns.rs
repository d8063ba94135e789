//! Bounded, TTL-respecting cache of name -> address, fed from the DNS answers clients receive (RFC 1035).
//! `dsthost` rules match through it; a name with no live record leaves only that rule inert.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use platform_api::Instant;

/// Longest TTL we keep a record for, whatever the answer says.
pub const MAX_TTL_SECS: u32 = 86_400;
/// Shortest time a record is kept: answers with TTL 0 (dnsmasq's local names, some CDNs) would
/// otherwise never let a `dsthost` rule match.
pub const MIN_TTL_SECS: u32 = 10;
/// Most answer records looked at in one message.
pub const MAX_ANSWERS: usize = 64;
/// Most compression pointers followed while reading one name.
const MAX_POINTERS: usize = 16;
/// Most CNAME hops followed from the question name.
const MAX_CHAIN: usize = 8;

/// What the cache knows about `name` resolving to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No live record for the name: the rule cannot be checked and does not match.
    Unknown,
    Match,
    NoMatch,
}

/// Something that can say whether a `dsthost` name currently resolves to an address.
pub trait Resolver {
    fn resolves_to(&self, name: &str, addr: IpAddr, now: Instant) -> Resolution;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    addr: IpAddr,
    expires: Instant,
}

/// Name -> addresses, at most `max` records in all; when full, expired records go first, then the
/// record closest to expiry.
#[derive(Debug)]
pub struct DnsCache {
    names: BTreeMap<String, Vec<Record>>,
    count: usize,
    max: usize,
}

/// Why a DNS message was not learned from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    Truncated,
    /// A query, an error response, or not exactly one question.
    NotAnswer,
    BadLabel,
    NameTooLong,
    /// A compression pointer that does not point strictly backwards, or too many of them.
    BadPointer,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::Truncated => "DNS message truncated",
            DnsError::NotAnswer => "DNS message is not a successful one-question response",
            DnsError::BadLabel => "DNS name has a bad label",
            DnsError::NameTooLong => "DNS name longer than 255 bytes",
            DnsError::BadPointer => "DNS name has a bad compression pointer",
        })
    }
}

impl core::error::Error for DnsError {}

fn ttl_end(now: Instant, ttl_secs: u32) -> Instant {
    let secs = u64::from(ttl_secs.clamp(MIN_TTL_SECS, MAX_TTL_SECS));
    Instant(now.0.saturating_add(secs.saturating_mul(1_000_000_000)))
}

impl DnsCache {
    pub fn new(max: usize) -> Self {
        DnsCache {
            names: BTreeMap::new(),
            count: 0,
            max,
        }
    }

    /// Number of records held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records that `name` resolves to `addr` for `ttl_secs` (capped at [`MAX_TTL_SECS`]).
    pub fn insert(&mut self, name: &str, addr: IpAddr, ttl_secs: u32, now: Instant) {
        if self.max == 0 {
            return;
        }
        let expires = ttl_end(now, ttl_secs);
        if let Some(r) = self
            .names
            .get_mut(name)
            .and_then(|rs| rs.iter_mut().find(|r| r.addr == addr))
        {
            r.expires = expires;
            return;
        }
        if self.count >= self.max {
            self.purge(now);
        }
        if self.count >= self.max {
            self.evict_soonest();
        }
        let mut key = String::from(name);
        key.make_ascii_lowercase();
        self.names
            .entry(key)
            .or_default()
            .push(Record { addr, expires });
        self.count += 1;
    }

    /// When the last live record of `name` expires (`None`: no live record).
    pub fn expiry(&self, name: &str, now: Instant) -> Option<Instant> {
        self.names
            .get(name)?
            .iter()
            .filter(|r| r.expires > now)
            .map(|r| r.expires)
            .max()
    }

    /// Drops every expired record.
    pub fn purge(&mut self, now: Instant) {
        let mut removed = 0;
        self.names.retain(|_, rs| {
            let before = rs.len();
            rs.retain(|r| r.expires > now);
            removed += before - rs.len();
            !rs.is_empty()
        });
        self.count -= removed;
    }

    fn evict_soonest(&mut self) {
        let victim = self
            .names
            .iter()
            .flat_map(|(n, rs)| rs.iter().map(move |r| (r.expires, n, r.addr)))
            .min_by_key(|(e, _, _)| *e)
            .map(|(_, n, a)| (n.clone(), a));
        if let Some((name, addr)) = victim {
            if let Some(rs) = self.names.get_mut(&name) {
                rs.retain(|r| r.addr != addr);
                if rs.is_empty() {
                    self.names.remove(&name);
                }
            }
            self.count -= 1;
        }
    }

    /// Learns the A/AAAA records of a DNS response that answer its question (directly or through a
    /// CNAME chain); returns how many were stored. Records for unrelated names are ignored.
    pub fn learn_from_response(&mut self, msg: &[u8], now: Instant) -> Result<usize, DnsError> {
        let hdr = msg.get(..12).ok_or(DnsError::Truncated)?;
        let flags = u16::from_be_bytes([hdr[2], hdr[3]]);
        let (qd, an) = (be16(hdr, 4), be16(hdr, 6));
        // QR set, opcode QUERY, RCODE 0.
        if flags & 0x8000 == 0 || flags & 0x7800 != 0 || flags & 0x000f != 0 || qd != 1 {
            return Err(DnsError::NotAnswer);
        }
        let (qname, mut pos) = read_name(msg, 12)?;
        pos = pos
            .checked_add(4)
            .filter(|p| *p <= msg.len())
            .ok_or(DnsError::Truncated)?;
        let mut chain: Vec<String> = alloc::vec![qname.clone()];
        let mut learned = 0;
        for _ in 0..usize::from(an).min(MAX_ANSWERS) {
            let (owner, p) = read_name(msg, pos)?;
            let fixed = msg.get(p..p + 10).ok_or(DnsError::Truncated)?;
            let (rtype, class) = (be16(fixed, 0), be16(fixed, 2));
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let rdlen = usize::from(be16(fixed, 8));
            let rdata_at = p + 10;
            let rdata = msg
                .get(rdata_at..rdata_at + rdlen)
                .ok_or(DnsError::Truncated)?;
            pos = rdata_at + rdlen;
            if class != 1 || !chain.contains(&owner) {
                continue;
            }
            let addr = match (rtype, rdata.len()) {
                (1, 4) => IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
                (28, 16) => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(rdata);
                    IpAddr::V6(Ipv6Addr::from(b))
                }
                (5, _) => {
                    let (target, _) = read_name(msg, rdata_at)?;
                    if chain.len() < MAX_CHAIN && !chain.contains(&target) {
                        chain.push(target);
                    }
                    continue;
                }
                _ => continue,
            };
            self.insert(&qname, addr, ttl, now);
            if owner != qname {
                self.insert(&owner, addr, ttl, now);
            }
            learned += 1;
        }
        Ok(learned)
    }
}

impl Resolver for DnsCache {
    fn resolves_to(&self, name: &str, addr: IpAddr, now: Instant) -> Resolution {
        let mut live = self
            .names
            .get(name)
            .into_iter()
            .flatten()
            .filter(|r| r.expires > now)
            .peekable();
        if live.peek().is_none() {
            return Resolution::Unknown;
        }
        if live.any(|r| r.addr == addr) {
            Resolution::Match
        } else {
            Resolution::NoMatch
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Reads a (possibly compressed) name at `start`; returns it lower-cased, dot-separated, and the
/// offset just past it in the uncompressed stream.
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    // Every pointer must go strictly below the lowest offset read so far, so reading terminates.
    let mut floor = start;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            0xc0..=0xff => {
                let lo = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, lo]));
                pointers += 1;
                if target >= floor || pointers > MAX_POINTERS {
                    return Err(DnsError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                pos = target;
                floor = target;
            }
            1..=63 => {
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                if name.len() + label.len() + 1 > 255 {
                    return Err(DnsError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                        return Err(DnsError::BadLabel);
                    }
                    name.push(char::from(b.to_ascii_lowercase()));
                }
                pos += 1 + usize::from(len);
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
