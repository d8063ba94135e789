//! Passphrase key derivation (argon2id by default, scrypt selectable) and the limits a header's
//! parameters must respect before any memory is spent on them.

use zeroize::Zeroizing;

use crate::error::VaultError;

/// Bytes of a derived key, data key and subkey.
pub const KEY_LEN: usize = 32;

/// Algorithm ids as stored in the header.
pub(crate) const KDF_ARGON2ID: u8 = 1;
pub(crate) const KDF_SCRYPT: u8 = 2;

/// How the key-wrapping key is derived from the passphrase; stored per vault in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfParams {
    /// argon2id v1.3 with memory `m_kib` KiB, `t` passes, `p` lanes.
    Argon2id {
        /// Memory cost in KiB.
        m_kib: u32,
        /// Number of passes.
        t: u32,
        /// Lanes (parallelism).
        p: u32,
    },
    /// scrypt with N = 2^`log_n`, block size `r`, parallelism `p`.
    Scrypt {
        /// log2 of the CPU/memory cost N.
        log_n: u8,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
}

impl Default for KdfParams {
    /// argon2id, m = 64 MiB, t = 3, p = 1.
    fn default() -> Self {
        KdfParams::Argon2id {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// scrypt N = 2^15, r = 8, p = 1 (32 MiB).
    pub const fn scrypt_default() -> Self {
        KdfParams::Scrypt {
            log_n: 15,
            r: 8,
            p: 1,
        }
    }

    /// Tiny argon2id parameters (8 KiB, one pass): for tests and fuzzing only, never for a real vault.
    pub const fn insecure_for_tests() -> Self {
        KdfParams::Argon2id {
            m_kib: 8,
            t: 1,
            p: 1,
        }
    }

    /// (algorithm id, a, b, c) as stored in the header.
    pub(crate) fn to_raw(self) -> (u8, u32, u32, u32) {
        match self {
            KdfParams::Argon2id { m_kib, t, p } => (KDF_ARGON2ID, m_kib, t, p),
            KdfParams::Scrypt { log_n, r, p } => (KDF_SCRYPT, u32::from(log_n), r, p),
        }
    }

    /// The inverse of `to_raw`; `None` for an unknown algorithm or an out-of-range field.
    pub(crate) fn from_raw(id: u8, a: u32, b: u32, c: u32) -> Option<Self> {
        match id {
            KDF_ARGON2ID => Some(KdfParams::Argon2id {
                m_kib: a,
                t: b,
                p: c,
            }),
            KDF_SCRYPT => Some(KdfParams::Scrypt {
                log_n: u8::try_from(a).ok()?,
                r: b,
                p: c,
            }),
            _ => None,
        }
    }

    /// Memory the derivation needs, in KiB (saturating).
    fn mem_kib(self) -> u64 {
        match self {
            KdfParams::Argon2id { m_kib, .. } => u64::from(m_kib),
            // scrypt uses 128 * r * N bytes.
            KdfParams::Scrypt { log_n, r, .. } => 1u64
                .checked_shl(u32::from(log_n))
                .and_then(|n| n.checked_mul(u64::from(r)))
                .map_or(u64::MAX, |x| x / 8),
        }
    }

    /// Derives the key-wrapping key.
    pub(crate) fn derive(
        self,
        passphrase: &[u8],
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        match self {
            KdfParams::Argon2id { m_kib, t, p } => {
                let params = argon2::Params::new(m_kib, t, p, Some(KEY_LEN))
                    .map_err(|_| VaultError::KdfRefused)?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(passphrase, salt, &mut out[..])
                    .map_err(|_| VaultError::KdfRefused)?;
            }
            KdfParams::Scrypt { log_n, r, p } => {
                let params = scrypt::Params::new(log_n, r, p, KEY_LEN)
                    .map_err(|_| VaultError::KdfRefused)?;
                scrypt::scrypt(passphrase, salt, &params, &mut out[..])
                    .map_err(|_| VaultError::KdfRefused)?;
            }
        }
        Ok(out)
    }
}

/// The most a vault header may ask of the KDF; a header beyond these is refused before deriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Most memory, KiB.
    pub max_mem_kib: u32,
    /// Most argon2 passes (scrypt: most `p`).
    pub max_passes: u32,
    /// Most argon2 lanes.
    pub max_lanes: u32,
    /// Most scrypt `r * p`.
    pub max_scrypt_rp: u32,
}

impl Default for KdfLimits {
    /// 256 MiB, 16 passes, 4 lanes: above the defaults, within a vault VM.
    fn default() -> Self {
        KdfLimits {
            max_mem_kib: 256 * 1024,
            max_passes: 16,
            max_lanes: 4,
            max_scrypt_rp: 64,
        }
    }
}

impl KdfLimits {
    /// Only tiny parameters (16 KiB, one pass): for tests and fuzzing, so hostile headers stay cheap.
    pub const fn insecure_for_tests() -> Self {
        KdfLimits {
            max_mem_kib: 16,
            max_passes: 1,
            max_lanes: 1,
            max_scrypt_rp: 2,
        }
    }

    /// Whether `params` stays within these limits.
    pub fn allows(&self, params: KdfParams) -> bool {
        if params.mem_kib() > u64::from(self.max_mem_kib) {
            return false;
        }
        match params {
            KdfParams::Argon2id { t, p, .. } => {
                t >= 1 && t <= self.max_passes && p >= 1 && p <= self.max_lanes
            }
            KdfParams::Scrypt { log_n, r, p } => {
                log_n >= 1
                    && r >= 1
                    && p >= 1
                    && p <= self.max_passes
                    && r.checked_mul(p).is_some_and(|rp| rp <= self.max_scrypt_rp)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        for p in [
            KdfParams::default(),
            KdfParams::scrypt_default(),
            KdfParams::insecure_for_tests(),
        ] {
            let (id, a, b, c) = p.to_raw();
            assert_eq!(KdfParams::from_raw(id, a, b, c), Some(p));
        }
        assert_eq!(KdfParams::from_raw(3, 1, 1, 1), None);
        assert_eq!(KdfParams::from_raw(KDF_SCRYPT, 256, 1, 1), None);
    }

    #[test]
    fn limits_refuse_huge_parameters() {
        let l = KdfLimits::default();
        assert!(l.allows(KdfParams::default()));
        assert!(l.allows(KdfParams::scrypt_default()));
        assert!(!l.allows(KdfParams::Argon2id {
            m_kib: u32::MAX,
            t: 1,
            p: 1
        }));
        assert!(!l.allows(KdfParams::Scrypt {
            log_n: 63,
            r: 8,
            p: 1
        }));
        assert!(!l.allows(KdfParams::Argon2id {
            m_kib: 1024,
            t: 0,
            p: 1
        }));
        let tiny = KdfLimits::insecure_for_tests();
        assert!(tiny.allows(KdfParams::insecure_for_tests()));
        assert!(!tiny.allows(KdfParams::default()));
    }

    #[test]
    fn derivation_depends_on_passphrase_salt_and_algorithm() {
        let a = KdfParams::insecure_for_tests();
        let s = KdfParams::Scrypt {
            log_n: 4,
            r: 1,
            p: 1,
        };
        let k1 = a.derive(b"pw", &[1; 32]).unwrap();
        assert_eq!(*k1, *a.derive(b"pw", &[1; 32]).unwrap());
        assert_ne!(*k1, *a.derive(b"pw2", &[1; 32]).unwrap());
        assert_ne!(*k1, *a.derive(b"pw", &[2; 32]).unwrap());
        assert_ne!(*k1, *s.derive(b"pw", &[1; 32]).unwrap());
        // argon2 refuses m < 8 * p rather than panicking.
        let bad = KdfParams::Argon2id {
            m_kib: 1,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            bad.derive(b"pw", &[0; 32]),
            Err(VaultError::KdfRefused)
        ));
    }
}
