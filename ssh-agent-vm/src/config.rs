//! The vault's configuration, from the kernel command line (Qubes' `kernelopts`, set in dom0):
//! which keyrings serve RSA keys or confirm every signature, the KDF, and the bounds.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use vault_store::KdfParams;

/// Longest keyring name (the qrexec argument).
pub const MAX_KEYRING_NAME: usize = 64;
/// Most keyrings at once.
pub const MAX_KEYRINGS: usize = 32;

/// A set of keyring names, or all of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RingSet {
    /// None.
    #[default]
    None,
    /// Every keyring (`*`).
    All,
    /// These.
    Some(Vec<String>),
}

impl RingSet {
    /// Whether `ring` is in the set.
    pub fn contains(&self, ring: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(v) => v.iter().any(|r| r == ring),
        }
    }
}

/// The configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// Keyrings that serve RSA keys (`rsa=a,b` or `rsa=*`). RSA is off by default: the `rsa`
    /// crate's private-key operations are not constant-time (RUSTSEC-2023-0071, Marvin attack),
    /// so a keyring serves RSA only where the owner accepts that risk.
    pub rsa: RingSet,
    /// Keyrings where every signature asks dom0 (`confirm=a,b` or `confirm=*`).
    pub confirm: RingSet,
    /// KDF for a new vault or passphrase (`kdf=argon2id:M_KIB:T:P` or `kdf=scrypt:LOG_N:R:P`).
    pub kdf: KdfParams,
    /// Most sessions at once (`max-sessions=N`, 1..=256).
    pub max_sessions: usize,
    /// Seconds a confirmation may take before it counts as denied (`confirm-timeout=S`).
    pub confirm_timeout_secs: u32,
    /// Callers accepted on the admin service whatever the policy says (`admin=dom0,mgmt`;
    /// default dom0 only): a policy mistake alone cannot hand key management to a qube.
    pub admin: RingSet,
    /// Words of the command line that are not ours (e.g. Xen's or the toolstack's `console=`),
    /// logged at start and otherwise ignored.
    pub ignored: Vec<String>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            rsa: RingSet::None,
            confirm: RingSet::None,
            kdf: KdfParams::default(),
            max_sessions: 64,
            confirm_timeout_secs: 60,
            admin: RingSet::Some(alloc::vec![String::from("dom0")]),
            ignored: Vec::new(),
        }
    }
}

/// A command-line word that is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The word.
    pub word: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad kernel option {:?}", self.word)
    }
}

/// Whether `name` is a valid keyring name: 1..=64 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_keyring(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEYRING_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn ring_set(v: &str) -> Option<RingSet> {
    if v == "*" {
        return Some(RingSet::All);
    }
    let names: Vec<String> = v.split(',').map(String::from).collect();
    names
        .iter()
        .all(|n| valid_keyring(n))
        .then_some(RingSet::Some(names))
}

fn kdf(v: &str) -> Option<KdfParams> {
    let mut it = v.split(':');
    let alg = it.next()?;
    let nums: Vec<u32> = it.map(|n| n.parse().ok()).collect::<Option<_>>()?;
    let [a, b, c] = nums.as_slice() else {
        return None;
    };
    match alg {
        "argon2id" => Some(KdfParams::Argon2id {
            m_kib: *a,
            t: *b,
            p: *c,
        }),
        "scrypt" => Some(KdfParams::Scrypt {
            log_n: u8::try_from(*a).ok()?,
            r: *b,
            p: *c,
        }),
        _ => None,
    }
}

impl VaultConfig {
    /// Parses whitespace-separated `key=value` words: a known key with a bad value is refused,
    /// any other word is kept in [`VaultConfig::ignored`].
    pub fn parse(cmdline: &str) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        for word in cmdline.split_ascii_whitespace() {
            let bad = || ConfigError { word: word.into() };
            let Some((k, v)) = word.split_once('=') else {
                cfg.ignored.push(word.into());
                continue;
            };
            match k {
                "rsa" => cfg.rsa = ring_set(v).ok_or_else(bad)?,
                "confirm" => cfg.confirm = ring_set(v).ok_or_else(bad)?,
                // Every qube as an admin source would make policy the only guard: refused.
                "admin" => {
                    cfg.admin = ring_set(v).filter(|s| *s != RingSet::All).ok_or_else(bad)?;
                }
                "kdf" => cfg.kdf = kdf(v).ok_or_else(bad)?,
                "max-sessions" => {
                    cfg.max_sessions = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(bad)?;
                }
                "confirm-timeout" => {
                    cfg.confirm_timeout_secs = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=3600).contains(n))
                        .ok_or_else(bad)?;
                }
                _ => cfg.ignored.push(word.into()),
            }
        }
        Ok(cfg)
    }

    /// The agent policy of keyring `ring`.
    pub fn agent_config(&self, ring: &str) -> ssh_agent_wire::Config {
        ssh_agent_wire::Config {
            allow_rsa: self.rsa.contains(ring),
            confirm_all: self.confirm.contains(ring),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_words_set_the_policy() {
        let c = VaultConfig::parse(
            " rsa=work,legacy confirm=*  kdf=scrypt:10:8:1 max-sessions=8 confirm-timeout=5",
        )
        .unwrap();
        assert!(c.rsa.contains("work") && c.rsa.contains("legacy") && !c.rsa.contains("git"));
        assert!(c.confirm.contains("anything"));
        assert_eq!(
            c.kdf,
            KdfParams::Scrypt {
                log_n: 10,
                r: 8,
                p: 1
            }
        );
        assert_eq!((c.max_sessions, c.confirm_timeout_secs), (8, 5));
        assert!(c.admin.contains("dom0") && !c.admin.contains("work"));
        let c = VaultConfig::parse("admin=mgmt").unwrap();
        assert!(c.admin.contains("mgmt") && !c.admin.contains("dom0"));
        assert_eq!(VaultConfig::parse("").unwrap(), VaultConfig::default());
        assert!(!VaultConfig::default().agent_config("work").allow_rsa);
    }

    #[test]
    fn malformed_values_are_refused_and_foreign_words_kept_aside() {
        let c = VaultConfig::parse("console=hvc0 nopat rsa=work").unwrap();
        assert_eq!(c.ignored, ["console=hvc0", "nopat"]);
        assert!(c.rsa.contains("work"));
        for w in [
            "rsa=",
            "rsa=a,,b",
            "rsa=../x",
            "kdf=argon2id:1:2",
            "kdf=bcrypt:1:2:3",
            "max-sessions=0",
            "max-sessions=999",
            "admin=*",
        ] {
            assert_eq!(
                VaultConfig::parse(w),
                Err(ConfigError { word: w.into() }),
                "{w}"
            );
        }
    }

    #[test]
    fn keyring_names_follow_the_qrexec_argument_charset() {
        assert!(valid_keyring("work") && valid_keyring("a.b-c_9"));
        for n in ["", ".hidden", "a/b", "a b", "a+b", &"x".repeat(65)] {
            assert!(!valid_keyring(n), "{n:?}");
        }
    }
}
