//! Bounded translation and connection-tracking table: each flow's key as the client sent it and as
//! it leaves, looked up both ways; when full, the least recently used flow is evicted.

use alloc::vec::Vec;
use core::fmt;
use core::hash::{BuildHasher, Hasher};
use core::net::IpAddr;

use hashbrown::HashMap;

use platform_api::Instant;

use crate::packet::{FlowKey, L4};

/// Lowest masquerade source port (mirage uses 1024–65535).
pub const MIN_PORT: u16 = 1024;
/// Random port picks tried before giving up on a new flow.
const PORT_TRIES: usize = 32;

/// One tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// As the client sent it (`orig.src` is the client).
    pub orig: FlowKey,
    /// As it leaves us (equal to `orig` for client-to-client flows).
    pub xlat: FlowKey,
    /// True if the flow goes out on the uplink; false for client-to-client.
    pub to_uplink: bool,
    /// Opened from the uplink through a ruleset port forward (not by the client).
    pub forwarded: bool,
    pub last_used: Instant,
}

/// Why a flow could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatError {
    /// The table size is zero.
    Full { what: &'static str },
    /// The translated key is already used by another flow.
    Clash,
    /// No free masquerade port was found.
    NoPort,
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatError::Full { what } => write!(f, "{what} full"),
            NatError::Clash => f.write_str("translated flow already in use"),
            NatError::NoPort => f.write_str("no free masquerade port"),
        }
    }
}

impl core::error::Error for NatError {}

/// A keyed multiply-rotate hasher: fast for the small fixed-size flow keys; the per-table random
/// key keeps a remote peer from choosing ports that all land in one bucket group.
#[derive(Clone, Copy, Debug)]
pub struct KeyedHasher(u64);

impl Hasher for KeyedHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^ (x >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(23) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Builds [`KeyedHasher`]s with the table's key.
#[derive(Clone, Copy, Debug)]
pub struct KeyedState(u64);

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

const NIL: u32 = u32::MAX;
/// The two lists every flow is on: all flows, and its client's flows.
const ALL: usize = 0;
const SRC: usize = 1;

#[derive(Clone, Copy, Debug)]
struct Slot {
    e: Entry,
    /// Towards the least recently used end, per list.
    older: [u32; 2],
    /// Towards the most recently used end, per list.
    newer: [u32; 2],
}

/// The two ends of a least-recently-used list and its length.
#[derive(Clone, Copy, Debug)]
struct Ends {
    oldest: u32,
    newest: u32,
    count: usize,
}

impl Ends {
    const EMPTY: Ends = Ends {
        oldest: NIL,
        newest: NIL,
        count: 0,
    };
}

fn slot_mut(slots: &mut [Option<Slot>], id: u32) -> Option<&mut Slot> {
    slots.get_mut(id as usize)?.as_mut()
}

fn unlink(slots: &mut [Option<Slot>], ends: &mut Ends, list: usize, id: u32) {
    let Some(s) = slots.get(id as usize).copied().flatten() else {
        return;
    };
    let (o, n) = (s.older[list], s.newer[list]);
    match slot_mut(slots, o) {
        Some(x) => x.newer[list] = n,
        None => ends.oldest = n,
    }
    match slot_mut(slots, n) {
        Some(x) => x.older[list] = o,
        None => ends.newest = o,
    }
}

fn link_newest(slots: &mut [Option<Slot>], ends: &mut Ends, list: usize, id: u32) {
    let prev = ends.newest;
    if let Some(s) = slot_mut(slots, id) {
        s.older[list] = prev;
        s.newer[list] = NIL;
    }
    match slot_mut(slots, prev) {
        Some(p) => p.newer[list] = id,
        None => ends.oldest = id,
    }
    ends.newest = id;
}

/// The table: a slab of flows threaded on a least-recently-used list of all flows and one per
/// client, and two hash indexes (by the client's key, by the reply's key). Lookups and updates
/// are O(1); size never exceeds `max`, nor one client's share `per_client`.
#[derive(Debug)]
pub struct NatTable {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_orig: HashMap<FlowKey, u32, KeyedState>,
    /// Keyed by the reply as it arrives: `xlat.reverse()`.
    by_reply: HashMap<FlowKey, u32, KeyedState>,
    all: Ends,
    /// Per client (`orig.src`).
    by_src: HashMap<IpAddr, Ends, KeyedState>,
    max: usize,
    per_client: usize,
    rng: u64,
}

impl NatTable {
    /// A table of at most `max` flows, any client taking them all; `seed` drives the choice of
    /// masquerade ports and the hash key.
    pub fn new(max: usize, seed: u64) -> Self {
        Self::with_quota(max, max, seed)
    }

    /// A table of at most `max` flows of which one client holds at most `per_client`: a client
    /// at its share replaces its own least recently used flow, so the others keep
    /// `max - per_client` whatever one client does.
    pub fn with_quota(max: usize, per_client: usize, seed: u64) -> Self {
        let max = max.min(NIL as usize - 1);
        let key = KeyedState(seed.rotate_left(32) ^ 0x243f_6a88_85a3_08d3);
        NatTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_orig: HashMap::with_hasher(key),
            by_reply: HashMap::with_hasher(key),
            all: Ends::EMPTY,
            by_src: HashMap::with_hasher(key),
            max,
            per_client: per_client.clamp(1, max.max(1)),
            rng: seed | 1,
        }
    }

    pub fn len(&self) -> usize {
        self.all.count
    }

    pub fn is_empty(&self) -> bool {
        self.all.count == 0
    }

    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Flows held for client address `src`.
    pub fn client_flows(&self, src: IpAddr) -> usize {
        self.by_src.get(&src).map_or(0, |e| e.count)
    }

    /// Every tracked flow, least recently used first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        let mut at = self.all.oldest;
        core::iter::from_fn(move || {
            let s = self.slots.get(at as usize)?.as_ref()?;
            at = s.newer[ALL];
            Some(&s.e)
        })
    }

    fn touch(&mut self, id: u32, now: Instant) -> Option<Entry> {
        let src = slot_mut(&mut self.slots, id)?.e.orig.src;
        if self.all.newest != id {
            unlink(&mut self.slots, &mut self.all, ALL, id);
            link_newest(&mut self.slots, &mut self.all, ALL, id);
        }
        if let Some(ends) = self.by_src.get_mut(&src) {
            if ends.newest != id {
                unlink(&mut self.slots, ends, SRC, id);
                link_newest(&mut self.slots, ends, SRC, id);
            }
        }
        let s = slot_mut(&mut self.slots, id)?;
        s.e.last_used = now;
        Some(s.e)
    }

    /// The flow a client packet (`key` as sent by the client) belongs to.
    pub fn outbound(&mut self, key: &FlowKey, now: Instant) -> Option<Entry> {
        let id = *self.by_orig.get(key)?;
        self.touch(id, now)
    }

    /// The flow a reply (`key` as received) belongs to.
    pub fn inbound(&mut self, key: &FlowKey, now: Instant) -> Option<Entry> {
        let id = *self.by_reply.get(key)?;
        self.touch(id, now)
    }

    /// Looks a flow up by its reply key without counting it as used.
    pub fn peek_inbound(&self, key: &FlowKey) -> Option<&Entry> {
        let id = *self.by_reply.get(key)?;
        Some(&self.slots.get(id as usize)?.as_ref()?.e)
    }

    /// Tracks a new flow, evicting the client's own least recently used flow if it is at its
    /// share, else the least recently used of all if the table is full.
    pub fn insert(
        &mut self,
        orig: FlowKey,
        xlat: FlowKey,
        to_uplink: bool,
        now: Instant,
    ) -> Result<Entry, NatError> {
        self.insert_entry(orig, xlat, to_uplink, false, now)
    }

    /// Tracks a flow opened from the uplink by a port forward: `orig` is the client's side of it
    /// (as the client's replies carry it), `xlat` the uplink side.
    pub fn insert_forwarded(
        &mut self,
        orig: FlowKey,
        xlat: FlowKey,
        now: Instant,
    ) -> Result<Entry, NatError> {
        self.insert_entry(orig, xlat, true, true, now)
    }

    fn insert_entry(
        &mut self,
        orig: FlowKey,
        xlat: FlowKey,
        to_uplink: bool,
        forwarded: bool,
        now: Instant,
    ) -> Result<Entry, NatError> {
        if self.max == 0 {
            return Err(NatError::Full { what: "NAT table" });
        }
        if let Some(&id) = self.by_orig.get(&orig) {
            self.remove_id(id);
        }
        if self.by_reply.contains_key(&xlat.reverse()) {
            return Err(NatError::Clash);
        }
        while let Some(own) = self
            .by_src
            .get(&orig.src)
            .filter(|e| e.count >= self.per_client)
        {
            let oldest = own.oldest;
            if oldest == NIL {
                break;
            }
            self.remove_id(oldest);
        }
        while self.all.count >= self.max && self.all.oldest != NIL {
            self.remove_id(self.all.oldest);
        }
        let e = Entry {
            orig,
            xlat,
            to_uplink,
            forwarded,
            last_used: now,
        };
        let slot = Some(Slot {
            e,
            older: [NIL; 2],
            newer: [NIL; 2],
        });
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(s) = self.slots.get_mut(id as usize) {
                    *s = slot;
                }
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        link_newest(&mut self.slots, &mut self.all, ALL, id);
        self.all.count += 1;
        let ends = self.by_src.entry(orig.src).or_insert(Ends::EMPTY);
        link_newest(&mut self.slots, ends, SRC, id);
        ends.count += 1;
        self.by_orig.insert(orig, id);
        self.by_reply.insert(xlat.reverse(), id);
        Ok(e)
    }

    fn remove_id(&mut self, id: u32) {
        let Some(e) = self.slots.get(id as usize).copied().flatten().map(|s| s.e) else {
            return;
        };
        unlink(&mut self.slots, &mut self.all, ALL, id);
        self.all.count -= 1;
        if let Some(ends) = self.by_src.get_mut(&e.orig.src) {
            unlink(&mut self.slots, ends, SRC, id);
            ends.count -= 1;
            if ends.count == 0 {
                self.by_src.remove(&e.orig.src);
            }
        }
        if let Some(s) = self.slots.get_mut(id as usize) {
            *s = None;
        }
        self.free.push(id);
        self.by_orig.remove(&e.orig);
        self.by_reply.remove(&e.xlat.reverse());
    }

    /// Keeps only the flows for which `keep` is true; returns how many were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let gone: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| !keep(&s.e)).map(|_| i as u32))
            .collect();
        for id in &gone {
            self.remove_id(*id);
        }
        gone.len()
    }

    /// Removes flows idle since before `now - idle_nanos`.
    pub fn expire(&mut self, now: Instant, idle_nanos: u64) -> usize {
        let cutoff = now.0.saturating_sub(idle_nanos);
        // The list is in order of use: stop at the first flow used recently enough.
        let mut n = 0;
        while let Some(s) = self
            .slots
            .get(self.all.oldest as usize)
            .and_then(|s| s.as_ref())
        {
            if s.e.last_used.0 >= cutoff {
                break;
            }
            self.remove_id(self.all.oldest);
            n += 1;
        }
        n
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64: ports need to be hard to guess from outside, not cryptographic.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A free translated key for `orig` leaving from `own` towards `dst:dport` (DNS may rewrite `dst`).
    pub fn masquerade(
        &mut self,
        orig: &FlowKey,
        own: IpAddr,
        dst: IpAddr,
    ) -> Result<FlowKey, NatError> {
        let span = u64::from(u16::MAX - MIN_PORT) + 1;
        for _ in 0..PORT_TRIES {
            let port = MIN_PORT + (self.next_rand() % span) as u16;
            let (sport, dport) = match orig.proto {
                L4::Echo => (port, 0),
                L4::Tcp | L4::Udp => (port, orig.dport),
            };
            let k = FlowKey {
                proto: orig.proto,
                src: own,
                sport,
                dst,
                dport,
            };
            if !self.by_reply.contains_key(&k.reverse()) {
                return Ok(k);
            }
        }
        Err(NatError::NoPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
        FlowKey {
            proto: L4::Udp,
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
        }
    }

    fn own() -> IpAddr {
        "10.138.5.9".parse().unwrap()
    }

    #[test]
    fn translation_both_ways() {
        let mut t = NatTable::new(8, 7);
        let orig = key("10.137.0.7", 5000, "1.1.1.1", 53);
        let x = t.masquerade(&orig, own(), orig.dst).unwrap();
        assert_eq!((x.src, x.dst, x.dport), (own(), orig.dst, 53));
        assert!(x.sport >= MIN_PORT);
        t.insert(orig, x, true, Instant(0)).unwrap();
        assert_eq!(t.outbound(&orig, Instant(1)).unwrap().xlat, x);
        let reply = x.reverse();
        assert_eq!(t.inbound(&reply, Instant(2)).unwrap().orig, orig);
        // A reply from another remote port is not this flow.
        let mut stray = reply;
        stray.sport = 54;
        assert!(t.inbound(&stray, Instant(2)).is_none());
    }

    #[test]
    fn full_table_evicts_least_recently_used() {
        let mut t = NatTable::new(2, 1);
        let a = key("10.137.0.7", 1, "1.1.1.1", 80);
        let b = key("10.137.0.7", 2, "1.1.1.1", 80);
        let c = key("10.137.0.7", 3, "1.1.1.1", 80);
        for k in [a, b] {
            let x = t.masquerade(&k, own(), k.dst).unwrap();
            t.insert(k, x, true, Instant(0)).unwrap();
        }
        // Use `a` so that `b` is the least recently used.
        assert!(t.outbound(&a, Instant(1)).is_some());
        let x = t.masquerade(&c, own(), c.dst).unwrap();
        t.insert(c, x, true, Instant(2)).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.outbound(&a, Instant(3)).is_some());
        assert!(t.outbound(&b, Instant(3)).is_none());
        assert!(t.outbound(&c, Instant(3)).is_some());
    }

    #[test]
    fn flood_of_new_flows_never_grows_past_bound() {
        let mut t = NatTable::new(100, 3);
        for i in 0..10_000u32 {
            let k = key(
                "10.137.0.7",
                (i % 60000) as u16,
                "9.9.9.9",
                (i / 60000) as u16 + 1,
            );
            if let Ok(x) = t.masquerade(&k, own(), k.dst) {
                t.insert(k, x, true, Instant(u64::from(i))).unwrap();
            }
            assert!(t.len() <= 100);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.iter().count(), 100);
        assert_eq!(t.by_orig.len(), 100);
        assert_eq!(t.by_reply.len(), 100);
        assert!(t.slots.len() <= 100, "slots are reused");
    }

    #[test]
    fn flooding_client_replaces_its_own_flows_not_others() {
        let mut t = NatTable::with_quota(100, 75, 5);
        let victim = key("10.137.0.8", 1, "1.1.1.1", 443);
        let x = t.masquerade(&victim, own(), victim.dst).unwrap();
        t.insert(victim, x, true, Instant(0)).unwrap();
        for i in 0..10_000u32 {
            let k = key("10.137.0.7", (i % 60000) as u16 + 2, "9.9.9.9", 53);
            if let Ok(x) = t.masquerade(&k, own(), k.dst) {
                t.insert(k, x, true, Instant(u64::from(i) + 1)).unwrap();
            }
            assert!(t.client_flows("10.137.0.7".parse().unwrap()) <= 75);
        }
        // The victim's flow is the oldest of all, yet it survives the flood.
        assert!(t.outbound(&victim, Instant(20_000)).is_some());
        assert_eq!(t.len(), 76);
        assert_eq!(t.client_flows("10.137.0.8".parse().unwrap()), 1);
        // Without a quota the flood evicts it.
        let mut t = NatTable::new(100, 5);
        t.insert(victim, x, true, Instant(0)).unwrap();
        for i in 0..200u32 {
            let k = key("10.137.0.7", i as u16 + 2, "9.9.9.9", 53);
            let x = t.masquerade(&k, own(), k.dst).unwrap();
            t.insert(k, x, true, Instant(u64::from(i) + 1)).unwrap();
        }
        assert!(t.outbound(&victim, Instant(20_000)).is_none());
    }

    #[test]
    fn zero_size_table_refuses() {
        let mut t = NatTable::new(0, 1);
        let k = key("10.137.0.7", 1, "1.1.1.1", 80);
        assert_eq!(
            t.insert(k, k, true, Instant(0)),
            Err(NatError::Full { what: "NAT table" })
        );
    }

    #[test]
    fn clashing_translation_refused() {
        let mut t = NatTable::new(4, 1);
        let a = key("10.137.0.7", 1, "1.1.1.1", 80);
        let b = key("10.137.0.8", 1, "1.1.1.1", 80);
        let x = t.masquerade(&a, own(), a.dst).unwrap();
        t.insert(a, x, true, Instant(0)).unwrap();
        assert_eq!(t.insert(b, x, true, Instant(0)), Err(NatError::Clash));
    }

    #[test]
    fn expire_removes_idle_flows() {
        let mut t = NatTable::new(4, 1);
        let a = key("10.137.0.7", 1, "1.1.1.1", 80);
        let b = key("10.137.0.7", 2, "1.1.1.1", 80);
        t.insert(a, a, false, Instant(0)).unwrap();
        t.insert(b, b, false, Instant(100)).unwrap();
        assert_eq!(t.expire(Instant(150), 60), 1);
        assert!(t.outbound(&b, Instant(151)).is_some());
    }

    proptest! {
        #[test]
        fn size_never_exceeds_bound(max in 0usize..20, quota in 1usize..20, ops in proptest::collection::vec((0u16..40, 0u8..3), 0..200)) {
            let mut t = NatTable::with_quota(max, quota, 9);
            for (i, (port, op)) in ops.into_iter().enumerate() {
                let src = if port % 3 == 0 { "10.137.0.8" } else { "10.137.0.7" };
                let k = key(src, port, "1.1.1.1", 80);
                match op {
                    0 => {
                        if let Ok(x) = t.masquerade(&k, own(), k.dst) {
                            let _ = t.insert(k, x, true, Instant(i as u64));
                        }
                    }
                    1 => { let _ = t.outbound(&k, Instant(i as u64)); }
                    _ => { t.retain(|e| e.orig.sport % 2 == 0); }
                }
                prop_assert!(t.len() <= max);
                prop_assert_eq!(t.iter().count(), t.len());
                prop_assert!(t.slots.len() <= max);
                let (a, b) = (t.client_flows("10.137.0.7".parse().unwrap()), t.client_flows("10.137.0.8".parse().unwrap()));
                prop_assert_eq!(a + b, t.len());
                prop_assert!(a <= quota.max(1) && b <= quota.max(1));
                prop_assert_eq!(t.by_orig.len(), t.len());
                prop_assert_eq!(t.by_reply.len(), t.len());
            }
        }
    }
}
