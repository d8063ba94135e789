//! Key material: public key blobs kept as validated opaque bytes, private keys from ADD_IDENTITY
//! parsed through `ssh-key` (zeroized, never printed), and the signing rules of the agent.

use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use signature::Signer;
use ssh_encoding::{Decode, Encode};
use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, Fingerprint, HashAlg, Signature};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::wire::codec::{put_mpint, put_string, Reader};
use crate::wire::{SignFlags, WireError};

/// Largest key or certificate blob accepted (a 16384-bit RSA certificate fits).
pub const MAX_KEY_BLOB_LEN: usize = 16 * 1024;
/// Longest key type name accepted (the longest OpenSSH name is 40 bytes).
pub const MAX_KEY_TYPE_LEN: usize = 64;
/// Smallest RSA modulus served, in bytes (2048 bits, as ssh-key's minimum).
pub const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus served, in bytes (8192 bits; bounds the cost of one signature).
pub const MAX_RSA_MODULUS_BYTES: usize = 1024;

const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// A public key or certificate blob (`string key type || fields`), structurally checked and kept
/// as the peer sent it, so that lookups compare exact bytes as OpenSSH does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyBlob(Vec<u8>);

impl KeyBlob {
    /// Checks the length and the leading key type name; the rest stays opaque.
    pub fn new(bytes: Vec<u8>) -> Result<Self, WireError> {
        if bytes.len() > MAX_KEY_BLOB_LEN {
            return Err(WireError::TooLong {
                field: "key blob",
                max: MAX_KEY_BLOB_LEN,
            });
        }
        let mut r = Reader::new(&bytes);
        let name = r.string("key type")?;
        if name.is_empty()
            || name.len() > MAX_KEY_TYPE_LEN
            || !name.iter().all(|b| b.is_ascii_graphic())
        {
            return Err(WireError::BadKeyType);
        }
        Ok(Self(bytes))
    }

    /// The bytes as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key type name (checked ASCII by [`new`](Self::new)).
    pub fn algorithm(&self) -> &str {
        let mut r = Reader::new(&self.0);
        r.utf8("key type").unwrap_or("")
    }

    /// Whether the blob is an OpenSSH certificate.
    pub fn is_certificate(&self) -> bool {
        self.algorithm().ends_with(CERT_SUFFIX)
    }

    /// The public key inside (the certified key for a certificate), parsed by `ssh-key`.
    pub fn key_data(&self) -> Result<KeyData, WireError> {
        if self.is_certificate() {
            let cert = Certificate::from_bytes(&self.0).map_err(|_| WireError::BadKey)?;
            return Ok(cert.public_key().clone());
        }
        let mut s: &[u8] = &self.0;
        let kd = KeyData::decode(&mut s).map_err(|_| WireError::BadKey)?;
        if !s.is_empty() {
            return Err(WireError::TrailingBytes {
                what: "key blob",
                extra: s.len(),
            });
        }
        Ok(kd)
    }

    /// SHA-256 fingerprint of the plain public key (as `ssh-add -l`), if the key parses.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.key_data()
            .ok()
            .map(|kd| Fingerprint::new(HashAlg::Sha256, &kd))
    }

    /// The blob of a parsed public key.
    pub fn from_key_data(kd: &KeyData) -> Result<Self, WireError> {
        let mut out = Vec::new();
        kd.encode(&mut out).map_err(|_| WireError::BadKey)?;
        Self::new(out)
    }
}

impl fmt::Debug for KeyBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyBlob({}, {} bytes)", self.algorithm(), self.0.len())
    }
}

/// A private key as carried by ADD_IDENTITY (`string key type || private fields`), with the
/// certificate form `string cert-type || string certificate || private fields`.
/// The bytes are zeroized on drop and never printed.
#[derive(Clone)]
pub struct PrivateKey {
    bytes: Zeroizing<Vec<u8>>,
    keypair: alloc::boxed::Box<KeypairData>,
    public: KeyBlob,
}

impl PrivateKey {
    /// Reads one private key from `r`: ed25519, ecdsa-sha2-nistp256/384, ssh-rsa and their
    /// `-cert-v01@openssh.com` forms. Other types cannot be skipped (their length is implicit),
    /// so they fail the whole message.
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let start = r.rest();
        let mut probe = r.clone();
        let name = probe.utf8("key type")?;
        let (keypair, public, used) = if name.ends_with(CERT_SUFFIX) {
            let cert_bytes = probe.string("certificate")?;
            let cert = Certificate::from_bytes(cert_bytes).map_err(|_| WireError::BadKey)?;
            let cert_pub = cert.public_key();
            // The certificate form omits the public fields that the plain form repeats; put them
            // back in front so that ssh-key's plain decoder reads the private fields.
            let mut synth = Zeroizing::new(Vec::new());
            match cert_pub {
                KeyData::Ed25519(_) => {}
                KeyData::Ecdsa(p) => {
                    put_string(&mut synth, p.curve().as_str().as_bytes());
                    put_string(&mut synth, p.as_sec1_bytes());
                }
                KeyData::Rsa(p) => {
                    put_mpint(
                        &mut synth,
                        p.n.as_positive_bytes().ok_or(WireError::BadKey)?,
                    );
                    put_mpint(
                        &mut synth,
                        p.e.as_positive_bytes().ok_or(WireError::BadKey)?,
                    );
                }
                _ => return Err(WireError::UnsupportedKeyType),
            }
            let prefix = synth.len();
            let padded = match cert_pub {
                KeyData::Ecdsa(p) => pad_ecdsa_scalar(&mut synth, probe.rest(), p.curve())?,
                _ => {
                    synth.extend_from_slice(probe.rest());
                    0
                }
            };
            let mut s: &[u8] = &synth;
            let kp = KeypairData::decode_as(&mut s, cert_pub.algorithm())
                .map_err(|_| WireError::BadKey)?;
            let consumed = (synth.len() - s.len())
                .checked_sub(prefix + padded)
                .ok_or(WireError::BadKey)?;
            probe.take(consumed).ok_or(WireError::BadKey)?;
            let kd = KeyData::try_from(&kp).map_err(|_| WireError::BadKey)?;
            if &kd != cert_pub {
                return Err(WireError::KeyMismatch);
            }
            let public = KeyBlob::new(cert_bytes.to_vec())?;
            (kp, public, start.len() - probe.remaining())
        } else {
            let synth = pad_plain_ecdsa(start)?;
            let (src, padded): (&[u8], usize) = match &synth {
                Some((v, pad)) => (v, *pad),
                None => (start, 0),
            };
            let mut s = src;
            let kp = KeypairData::decode(&mut s).map_err(|_| WireError::BadKey)?;
            let kd = KeyData::try_from(&kp).map_err(|_| WireError::BadKey)?;
            let used = (src.len() - s.len())
                .checked_sub(padded)
                .ok_or(WireError::BadKey)?;
            (kp, KeyBlob::from_key_data(&kd)?, used)
        };
        match &keypair {
            KeypairData::Ed25519(_) => {}
            KeypairData::Ecdsa(k) if k.curve() != EcdsaCurve::NistP521 => {}
            KeypairData::Rsa(k) => {
                let n = k.public.n.as_positive_bytes().ok_or(WireError::BadKey)?;
                if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&n.len()) {
                    return Err(WireError::UnsupportedKeyType);
                }
            }
            _ => return Err(WireError::UnsupportedKeyType),
        }
        let bytes = r.take(used).ok_or(WireError::BadKey)?;
        Ok(Self {
            bytes: Zeroizing::new(bytes.to_vec()),
            keypair: alloc::boxed::Box::new(keypair),
            public,
        })
    }

    /// An ed25519 key from a 32-byte seed (e.g. drawn from the platform's entropy by the vault).
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Result<Self, WireError> {
        let kp = KeypairData::Ed25519(ssh_key::private::Ed25519Keypair::from_seed(seed));
        let mut bytes = Zeroizing::new(Vec::new());
        kp.encode(&mut *bytes).map_err(|_| WireError::BadKey)?;
        Self::parse(&mut Reader::new(&bytes))
    }

    /// Appends the key as it was received.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
    }

    /// The public blob the agent lists and matches: the certificate for a certificate key.
    pub fn public_blob(&self) -> &KeyBlob {
        &self.public
    }

    /// The parsed key pair.
    pub fn keypair(&self) -> &KeypairData {
        &self.keypair
    }

    /// Whether this is an RSA key (served only when the agent is configured to).
    pub fn is_rsa(&self) -> bool {
        self.keypair.is_rsa()
    }

    /// Signs a fixed probe and verifies it with the public key: catches a private part that does
    /// not belong to the public one (ecdsa and rsa decoders do not check this).
    pub fn check_consistent(&self) -> Result<(), SignError> {
        let kd = self.public.key_data().map_err(|_| SignError::Crypto)?;
        let flags = SignFlags(SignFlags::RSA_SHA2_256);
        let blob = sign(
            &self.keypair,
            b"ssh-agent-wire consistency probe",
            flags,
            true,
        )?;
        let sig = Signature::try_from(blob.as_slice()).map_err(|_| SignError::Crypto)?;
        signature::Verifier::verify(&kd, b"ssh-agent-wire consistency probe", &sig)
            .map_err(|_| SignError::Crypto)
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.bytes.as_slice().ct_eq(other.bytes.as_slice()))
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Bytes of an ECDSA private scalar on `curve`, or `None` for a curve this agent does not use.
fn ecdsa_scalar_len(curve: EcdsaCurve) -> Option<usize> {
    match curve {
        EcdsaCurve::NistP256 => Some(32),
        EcdsaCurve::NistP384 => Some(48),
        EcdsaCurve::NistP521 => None,
    }
}

/// Appends `rest` (an ECDSA private scalar as an mpint, then whatever follows) to `out`, with the
/// scalar left-padded to the curve's size; returns how many zero bytes were added. An mpint drops
/// leading zero bytes, so about one OpenSSH key in 256 has a shorter scalar, which ssh-key 0.6
/// refuses to decode.
fn pad_ecdsa_scalar(out: &mut Vec<u8>, rest: &[u8], curve: EcdsaCurve) -> Result<usize, WireError> {
    let mut r = Reader::new(rest);
    let d = r.string("ecdsa private scalar")?;
    let pad = ecdsa_scalar_len(curve).map_or(0, |size| size.saturating_sub(d.len()));
    let len = u32::try_from(d.len() + pad).map_err(|_| WireError::BadKey)?;
    // Reserve first so that no reallocation leaves a copy of the scalar behind.
    out.reserve(4 + pad + rest.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(d);
    out.extend_from_slice(r.rest());
    Ok(pad)
}

/// A key's bytes re-encoded with its ECDSA scalar padded, and how many bytes that added.
type Padded = (Zeroizing<Vec<u8>>, usize);

/// For a plain ECDSA key whose scalar is shorter than its curve's size, a copy of `start` with
/// the scalar padded and the number of bytes added; `None` for every other key.
fn pad_plain_ecdsa(start: &[u8]) -> Result<Option<Padded>, WireError> {
    let mut r = Reader::new(start);
    let name = r.utf8("key type")?;
    if !name.starts_with("ecdsa-sha2-") || name.ends_with(CERT_SUFFIX) {
        return Ok(None);
    }
    let curve = r.utf8("ecdsa curve")?;
    let _point = r.string("ecdsa public point")?;
    let Ok(curve) = EcdsaCurve::from_str(curve) else {
        return Ok(None);
    };
    let head = start.len() - r.remaining();
    let mut out = Zeroizing::new(Vec::with_capacity(start.len() + 64));
    out.extend_from_slice(start.get(..head).ok_or(WireError::BadKey)?);
    let pad = pad_ecdsa_scalar(&mut out, r.rest(), curve)?;
    if pad == 0 {
        return Ok(None);
    }
    Ok(Some((out, pad)))
}

/// Why a signature was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// RSA keys are served only when the agent is configured to (RUSTSEC-2023-0071).
    RsaNotAllowed,
    /// Flags asked for no SHA-2 hash with an RSA key: `ssh-rsa` (SHA-1) is refused.
    Sha1Refused,
    /// A key type this agent does not sign with.
    Unsupported,
    /// The key material is inconsistent or the primitive failed.
    Crypto,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RsaNotAllowed => "RSA keys are not served by this agent",
            Self::Sha1Refused => "ssh-rsa (SHA-1) signatures are refused",
            Self::Unsupported => "key type not supported for signing",
            Self::Crypto => "signing failed",
        })
    }
}

impl core::error::Error for SignError {}

/// Signs `data` and returns the encoded signature blob (`string algorithm || string sig`).
/// RSA: SHA-512 if flag 4 is set, else SHA-256 if flag 2, else refused (`ssh-rsa` is SHA-1;
/// OpenSSH would sign it, this agent does not). Other key types ignore the flags.
pub fn sign(
    keypair: &KeypairData,
    data: &[u8],
    flags: SignFlags,
    allow_rsa: bool,
) -> Result<Vec<u8>, SignError> {
    let sig = match keypair {
        KeypairData::Ed25519(k) => k.try_sign(data).map_err(|_| SignError::Crypto)?,
        KeypairData::Ecdsa(k) if k.curve() != EcdsaCurve::NistP521 => {
            k.try_sign(data).map_err(|_| SignError::Crypto)?
        }
        KeypairData::Rsa(k) => {
            if !allow_rsa {
                return Err(SignError::RsaNotAllowed);
            }
            let key = rsa_private(k)?;
            let (hash, raw) = if flags.contains(SignFlags::RSA_SHA2_512) {
                let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key);
                (HashAlg::Sha512, rsa_sign(&sk, data)?)
            } else if flags.contains(SignFlags::RSA_SHA2_256) {
                let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
                (HashAlg::Sha256, rsa_sign(&sk, data)?)
            } else {
                return Err(SignError::Sha1Refused);
            };
            Signature::new(Algorithm::Rsa { hash: Some(hash) }, raw)
                .map_err(|_| SignError::Crypto)?
        }
        _ => return Err(SignError::Unsupported),
    };
    let mut out = Vec::new();
    sig.encode(&mut out).map_err(|_| SignError::Crypto)?;
    Ok(out)
}

fn rsa_sign<S>(sk: &S, data: &[u8]) -> Result<Vec<u8>, SignError>
where
    S: Signer<rsa::pkcs1v15::Signature>,
{
    let s = sk.try_sign(data).map_err(|_| SignError::Crypto)?;
    Ok(signature::SignatureEncoding::to_vec(&s))
}

/// Builds the RSA key from both primes (ssh-key 0.6.7's own conversion passes `p` twice).
fn rsa_private(k: &ssh_key::private::RsaKeypair) -> Result<rsa::RsaPrivateKey, SignError> {
    let big = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or(SignError::Crypto)
    };
    let n = big(&k.public.n)?;
    if k.public.n.as_positive_bytes().map_or(0, <[u8]>::len) > MAX_RSA_MODULUS_BYTES {
        return Err(SignError::Unsupported);
    }
    let key = rsa::RsaPrivateKey::from_components(
        n,
        big(&k.public.e)?,
        big(&k.private.d)?,
        alloc::vec![big(&k.private.p)?, big(&k.private.q)?],
    )
    .map_err(|_| SignError::Crypto)?;
    key.validate().map_err(|_| SignError::Crypto)?;
    Ok(key)
}
