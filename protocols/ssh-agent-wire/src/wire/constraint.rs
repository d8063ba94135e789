//! Key constraints of ADD_ID_CONSTRAINED: lifetime, confirm and OpenSSH's
//! `restrict-destination-v00@openssh.com` extension (PROTOCOL.agent §2, ssh-agent.c's layout).

use alloc::string::String;
use alloc::vec::Vec;

use super::codec::{put_bool, put_string, put_u32, Reader};
use super::{constrain, WireError};
use crate::key::KeyBlob;

/// Name of OpenSSH's destination constraint extension.
pub const RESTRICT_DESTINATION: &str = "restrict-destination-v00@openssh.com";
/// Most destination constraints on one key (OpenSSH allows 1024; a vault needs few).
pub const MAX_DEST_CONSTRAINTS: usize = 64;
/// Most host keys in one hop.
pub const MAX_HOP_KEYS: usize = 64;

/// One key constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// The key expires this many seconds after it is added.
    Lifetime(u32),
    /// Every signature needs the owner's confirmation.
    Confirm,
    /// The key may be used only along these hops.
    RestrictDestination(Vec<DestConstraint>),
}

/// A permitted hop: from a host (empty = the agent's own host) to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestConstraint {
    /// Where the connection comes from; user must be empty.
    pub from: Hop,
    /// Where it may go; hostname and keys required.
    pub to: Hop,
}

/// One end of a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// User name pattern (empty = any).
    pub user: String,
    /// Host name, for display and certificate principals.
    pub hostname: String,
    /// The host's keys.
    pub keys: Vec<KeySpec>,
}

/// A host key, or a CA key that certifies host keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The key.
    pub key: KeyBlob,
    /// Whether `key` is a certificate authority.
    pub is_ca: bool,
}

impl Constraint {
    /// Reads every constraint up to the end of `r`; duplicates and unknown kinds are refused,
    /// as OpenSSH does (the agent then answers FAILURE).
    pub fn parse_all(r: &mut Reader<'_>) -> Result<Vec<Self>, WireError> {
        let mut out: Vec<Self> = Vec::new();
        while !r.is_empty() {
            let c = match r.u8("constraint type")? {
                constrain::LIFETIME => Self::Lifetime(r.u32("lifetime")?),
                constrain::CONFIRM => Self::Confirm,
                constrain::EXTENSION => {
                    if r.string("constraint extension name")? != RESTRICT_DESTINATION.as_bytes() {
                        return Err(WireError::UnknownConstraintExtension);
                    }
                    let mut list = r.sub("destination constraints")?;
                    let mut dcs = Vec::new();
                    while !list.is_empty() {
                        if dcs.len() >= MAX_DEST_CONSTRAINTS {
                            return Err(WireError::TooMany {
                                what: "destination constraints",
                                max: MAX_DEST_CONSTRAINTS,
                            });
                        }
                        dcs.push(DestConstraint::parse(&mut list)?);
                    }
                    Self::RestrictDestination(dcs)
                }
                kind => return Err(WireError::UnknownConstraint { kind }),
            };
            if out
                .iter()
                .any(|o| core::mem::discriminant(o) == core::mem::discriminant(&c))
            {
                return Err(WireError::DuplicateConstraint);
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Appends the constraint.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Self::Lifetime(s) => {
                out.push(constrain::LIFETIME);
                put_u32(out, *s);
            }
            Self::Confirm => out.push(constrain::CONFIRM),
            Self::RestrictDestination(dcs) => {
                out.push(constrain::EXTENSION);
                put_string(out, RESTRICT_DESTINATION.as_bytes());
                let mut list = Vec::new();
                for dc in dcs {
                    dc.emit(&mut list);
                }
                put_string(out, &list);
            }
        }
    }
}

impl DestConstraint {
    /// `string from_hop || string to_hop || string reserved` (ssh-agent.c layout).
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mut c = r.sub("destination constraint")?;
        let from = Hop::parse(&mut c.sub("from hop")?)?;
        let to = Hop::parse(&mut c.sub("to hop")?)?;
        if !c.string("reserved")?.is_empty() {
            return Err(WireError::ReservedNotEmpty);
        }
        c.expect_empty("destination constraint")?;
        // PROTOCOL.agent: from-user empty; from-host and from-keys both present or both absent;
        // to-host and to-keys required.
        if !from.user.is_empty()
            || from.hostname.is_empty() != from.keys.is_empty()
            || to.hostname.is_empty()
            || to.keys.is_empty()
        {
            return Err(WireError::BadDestConstraint);
        }
        Ok(Self { from, to })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let mut c = Vec::new();
        let mut hop = Vec::new();
        self.from.emit(&mut hop);
        put_string(&mut c, &hop);
        hop.clear();
        self.to.emit(&mut hop);
        put_string(&mut c, &hop);
        put_string(&mut c, &[]);
        put_string(out, &c);
    }
}

impl Hop {
    /// `string user || string hostname || string reserved || (string key || bool is_ca)*`.
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let user = r.utf8_owned("hop user")?;
        let hostname = r.utf8_owned("hop hostname")?;
        if !r.string("reserved")?.is_empty() {
            return Err(WireError::ReservedNotEmpty);
        }
        let mut keys = Vec::new();
        while !r.is_empty() {
            if keys.len() >= MAX_HOP_KEYS {
                return Err(WireError::TooMany {
                    what: "hop keys",
                    max: MAX_HOP_KEYS,
                });
            }
            let key = KeyBlob::new(r.string("hop key")?.to_vec())?;
            let is_ca = r.bool("is_ca")?;
            keys.push(KeySpec { key, is_ca });
        }
        Ok(Self {
            user,
            hostname,
            keys,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        put_string(out, self.user.as_bytes());
        put_string(out, self.hostname.as_bytes());
        put_string(out, &[]);
        for k in &self.keys {
            put_string(out, k.key.as_bytes());
            put_bool(out, k.is_ca);
        }
    }
}
