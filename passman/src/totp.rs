//! TOTP codes (RFC 6238 over RFC 4226 HOTP) from a base32 secret or an `otpauth://totp/` URI.
//! HMAC-SHA1, -SHA256 or -SHA512; 6 to 8 digits; period 1 s to 1 h.

use alloc::vec::Vec;
use core::fmt;

use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// Why a TOTP secret cannot produce codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpError {
    /// The entry has no TOTP secret.
    NoSecret,
    /// The secret is not base32 (or is empty).
    BadBase32,
    /// An `otpauth://` URI that is not `totp` or has a bad parameter.
    BadUri,
    /// The vault clock is not set (no time was given at unlock).
    NoClock,
}

impl fmt::Display for TotpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TotpError::NoSecret => "entry has no TOTP secret",
            TotpError::BadBase32 => "TOTP secret is not base32",
            TotpError::BadUri => "TOTP otpauth URI not understood",
            TotpError::NoClock => "vault clock not set: unlock with a time",
        })
    }
}

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 (the default).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// A TOTP generator.
#[derive(Clone)]
pub struct Totp {
    key: Zeroizing<Vec<u8>>,
    /// Hash.
    pub algorithm: Algorithm,
    /// Code length, 6..=8.
    pub digits: u32,
    /// Time step, seconds.
    pub period: u64,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// RFC 4648 base32, case-insensitive, spaces and `=` padding ignored.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            b' ' | b'=' | b'-' => continue,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl Totp {
    /// A generator over raw key bytes.
    pub fn new(key: &[u8], algorithm: Algorithm, digits: u32, period: u64) -> Self {
        Totp {
            key: Zeroizing::new(key.to_vec()),
            algorithm,
            digits: digits.clamp(6, 8),
            period: period.clamp(1, 3600),
        }
    }

    /// From an entry's `totp` field: a base32 secret (SHA1, 6 digits, 30 s) or an
    /// `otpauth://totp/LABEL?secret=...&algorithm=...&digits=...&period=...` URI.
    pub fn parse(field: &str) -> Result<Totp, TotpError> {
        let field = field.trim();
        if field.is_empty() {
            return Err(TotpError::NoSecret);
        }
        let Some(rest) = field.strip_prefix("otpauth://") else {
            let key = base32_decode(field)
                .filter(|k| !k.is_empty())
                .ok_or(TotpError::BadBase32)?;
            return Ok(Totp::new(&key, Algorithm::Sha1, 6, 30));
        };
        let rest = rest
            .strip_prefix("totp/")
            .or_else(|| rest.strip_prefix("TOTP/"))
            .ok_or(TotpError::BadUri)?;
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
        let (mut secret, mut algorithm, mut digits, mut period) = (None, Algorithm::Sha1, 6, 30);
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k.to_ascii_lowercase().as_str() {
                "secret" => secret = Some(base32_decode(v).ok_or(TotpError::BadBase32)?),
                "algorithm" => {
                    algorithm = match v.to_ascii_uppercase().as_str() {
                        "SHA1" => Algorithm::Sha1,
                        "SHA256" => Algorithm::Sha256,
                        "SHA512" => Algorithm::Sha512,
                        _ => return Err(TotpError::BadUri),
                    }
                }
                "digits" => {
                    digits = v
                        .parse::<u32>()
                        .ok()
                        .filter(|d| (6..=8).contains(d))
                        .ok_or(TotpError::BadUri)?
                }
                "period" => {
                    period = v
                        .parse::<u64>()
                        .ok()
                        .filter(|p| (1..=3600).contains(p))
                        .ok_or(TotpError::BadUri)?
                }
                _ => {}
            }
        }
        let key = secret
            .filter(|k| !k.is_empty())
            .ok_or(TotpError::BadBase32)?;
        Ok(Totp::new(&key, algorithm, digits, period))
    }

    /// RFC 4226 HOTP value for `counter`.
    pub fn hotp(&self, counter: u64) -> u32 {
        let msg = counter.to_be_bytes();
        let digest: Vec<u8> = match self.algorithm {
            Algorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(&self.key, &msg),
            Algorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(&self.key, &msg),
            Algorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(&self.key, &msg),
        };
        // Dynamic truncation: the low nibble of the last byte picks 4 bytes.
        let offset = usize::from(digest.last().copied().unwrap_or(0) & 0x0f);
        let mut word = [0u8; 4];
        if let Some(w) = digest.get(offset..offset + 4) {
            word.copy_from_slice(w);
        }
        let bin = u32::from_be_bytes(word) & 0x7fff_ffff;
        bin % 10u32.pow(self.digits)
    }

    /// The code at Unix time `unix_secs`, zero-padded to `digits`.
    pub fn code(&self, unix_secs: u64) -> Zeroizing<alloc::string::String> {
        let v = self.hotp(unix_secs / self.period);
        Zeroizing::new(alloc::format!(
            "{:0width$}",
            v,
            width = self.digits as usize
        ))
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this never fails.
    match <M as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc6238_appendix_b_vectors() {
        // (time, SHA1, SHA256, SHA512), 8 digits, 30 s step.
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        let s1 = Totp::new(SEED20, Algorithm::Sha1, 8, 30);
        let s256 = Totp::new(SEED32, Algorithm::Sha256, 8, 30);
        let s512 = Totp::new(SEED64, Algorithm::Sha512, 8, 30);
        for (t, a, b, c) in table {
            assert_eq!(&*s1.code(t), a, "SHA1 at {t}");
            assert_eq!(&*s256.code(t), b, "SHA256 at {t}");
            assert_eq!(&*s512.code(t), c, "SHA512 at {t}");
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp_vectors() {
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        let h = Totp::new(SEED20, Algorithm::Sha1, 6, 30);
        for (i, w) in want.into_iter().enumerate() {
            assert_eq!(h.hotp(i as u64), w, "counter {i}");
        }
    }

    #[test]
    fn base32_secret_and_otpauth_uri_give_the_rfc_codes() {
        // "12345678901234567890" in base32.
        let b32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(base32_decode(b32).unwrap(), SEED20);
        assert_eq!(&*Totp::parse(b32).unwrap().code(59), "287082");
        assert_eq!(
            &*Totp::parse("gezd gnbv gy3t qojq gezd gnbv gy3t qojq")
                .unwrap()
                .code(59),
            "287082"
        );
        let uri = alloc::format!(
            "otpauth://totp/ACME:alice?secret={b32}&digits=8&period=30&algorithm=SHA1"
        );
        assert_eq!(&*Totp::parse(&uri).unwrap().code(1111111109), "07081804");
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(Totp::parse("").unwrap_err(), TotpError::NoSecret);
        assert_eq!(Totp::parse("189!").unwrap_err(), TotpError::BadBase32);
        assert_eq!(
            Totp::parse("otpauth://hotp/x?secret=GEZDGNBV").unwrap_err(),
            TotpError::BadUri
        );
        assert_eq!(
            Totp::parse("otpauth://totp/x?secret=GEZDGNBV&digits=12").unwrap_err(),
            TotpError::BadUri
        );
        assert_eq!(
            Totp::parse("otpauth://totp/x?issuer=y").unwrap_err(),
            TotpError::BadBase32
        );
    }
}
