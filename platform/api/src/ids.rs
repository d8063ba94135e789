//! Newtypes for numbers a peer supplies (domain ids, grant refs, event ports), built only by
//! checked constructors, and a fixed-size set of ports.

use core::fmt;

/// Number of event channel ports of the 2-level ABI (64 × 64).
pub const MAX_PORTS: u32 = 4096;

/// A value outside the range its type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdError {
    /// Which kind of id.
    pub what: &'static str,
    /// The value given.
    pub value: u64,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} is out of range", self.what, self.value)
    }
}

impl core::error::Error for IdError {}

/// A Xen domain id. Ids from 0x7FF0 up are special (`DOMID_SELF`, …) and not valid peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(u16);

impl DomId {
    /// dom0.
    pub const DOM0: DomId = DomId(0);
    /// First reserved id (`DOMID_FIRST_RESERVED`).
    pub const FIRST_RESERVED: u16 = 0x7FF0;
    /// `DOMID_SELF`, for hypercall arguments only.
    pub const SELF_: u16 = 0x7FF0;

    /// A real domain id (below `DOMID_FIRST_RESERVED`).
    pub fn new(v: u32) -> Result<Self, IdError> {
        if v < u32::from(Self::FIRST_RESERVED) {
            Ok(DomId(v as u16))
        } else {
            Err(IdError {
                what: "domain id",
                value: u64::from(v),
            })
        }
    }
    /// Parses a decimal domid as found in xenstore.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let v: u32 = parse_decimal(s).ok_or(IdError {
            what: "domain id",
            value: u64::MAX,
        })?;
        Self::new(v)
    }
    /// The raw value.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A grant reference. Any u32 is representable; validity is checked against a grant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

impl GrantRef {
    /// Parses a decimal grant ref as found in xenstore (`ring-ref`).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        parse_decimal(s).map(GrantRef).ok_or(IdError {
            what: "grant ref",
            value: u64::MAX,
        })
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event channel port, below [`MAX_PORTS`]. Port 0 is never a valid bound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EvtchnPort(u32);

impl EvtchnPort {
    /// A port in 1..MAX_PORTS.
    pub fn new(v: u32) -> Result<Self, IdError> {
        if v != 0 && v < MAX_PORTS {
            Ok(EvtchnPort(v))
        } else {
            Err(IdError {
                what: "event channel port",
                value: u64::from(v),
            })
        }
    }
    /// Parses a decimal port as found in xenstore (`event-channel`).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let v = parse_decimal(s).ok_or(IdError {
            what: "event channel port",
            value: u64::MAX,
        })?;
        Self::new(v)
    }
    /// The raw value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for EvtchnPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Strict decimal: ASCII digits only, no sign, no leading `+`, fits in u32.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A set of event channel ports (a 4096-bit bitmap, like `evtchn_pending`).
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: [u64; (MAX_PORTS / 64) as usize],
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl PortSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            words: [0; (MAX_PORTS / 64) as usize],
        }
    }
    /// Adds a port.
    pub fn insert(&mut self, p: EvtchnPort) {
        self.words[(p.0 / 64) as usize] |= 1 << (p.0 % 64);
    }
    /// Removes a port; returns whether it was there.
    pub fn remove(&mut self, p: EvtchnPort) -> bool {
        let w = &mut self.words[(p.0 / 64) as usize];
        let bit = 1 << (p.0 % 64);
        let was = *w & bit != 0;
        *w &= !bit;
        was
    }
    /// Whether a port is in the set.
    pub fn contains(&self, p: EvtchnPort) -> bool {
        self.words[(p.0 / 64) as usize] & (1 << (p.0 % 64)) != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
    /// Adds every port of `other`.
    pub fn union_with(&mut self, other: &PortSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= *b;
        }
    }
    /// The ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = EvtchnPort> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| EvtchnPort(i as u32 * 64 + b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domid_rejects_reserved() {
        assert!(DomId::new(0x7FEF).is_ok());
        assert!(DomId::new(0x7FF0).is_err());
        assert!(DomId::parse("12").is_ok());
        assert!(DomId::parse("+12").is_err());
        assert!(DomId::parse("").is_err());
        assert!(DomId::parse("99999999999").is_err());
    }

    #[test]
    fn port_range() {
        assert!(EvtchnPort::new(0).is_err());
        assert!(EvtchnPort::new(4095).is_ok());
        assert!(EvtchnPort::new(4096).is_err());
    }

    #[test]
    fn portset_roundtrip() {
        let mut s = PortSet::new();
        for p in [1, 63, 64, 4095] {
            s.insert(EvtchnPort::new(p).unwrap());
        }
        let v: alloc::vec::Vec<u32> = s.iter().map(|p| p.get()).collect();
        assert_eq!(v, [1, 63, 64, 4095]);
        assert!(s.remove(EvtchnPort::new(64).unwrap()));
        assert!(!s.contains(EvtchnPort::new(64).unwrap()));
    }
}
