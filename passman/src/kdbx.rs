//! KeePass KDBX 4.x reader (password only, no key file): Argon2d/Argon2id or AES-KDF, ChaCha20
//! or AES-256-CBC, HMAC-SHA256 block stream, gzip, ChaCha20/Salsa20 protected values, XML entries.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

/// Largest decompressed XML accepted, bytes (bounds a gzip bomb).
pub const MAX_XML: usize = 64 * 1024 * 1024;
/// Largest Argon2 memory accepted, KiB.
pub const MAX_ARGON2_KIB: u64 = 256 * 1024;
/// Most Argon2 passes accepted.
pub const MAX_ARGON2_PASSES: u64 = 64;
/// Most AES-KDF rounds accepted.
pub const MAX_AES_ROUNDS: u64 = 50_000_000;
/// Deepest XML nesting accepted.
pub const MAX_DEPTH: usize = 64;

const SIG1: u32 = 0x9AA2_D903;
const SIG2: u32 = 0xB54B_FB67;
const CIPHER_AES256: [u8; 16] = hex16("31c1f2e6bf714350be5805216afc5aff");
const CIPHER_CHACHA20: [u8; 16] = hex16("d6038a2b8b6f4cb5a524339a31dbb59a");
const KDF_AES: [u8; 16] = hex16("c9d9f39a628a4460bf740d08c18a4fea");
const KDF_ARGON2D: [u8; 16] = hex16("ef636ddf8c29444b91f7a9a403e30a0c");
const KDF_ARGON2ID: [u8; 16] = hex16("9e298b1956db4773b23dfc3ec6f0a1e6");
/// Seconds from 0001-01-01 to 1970-01-01 (KDBX4 times count from the former).
const EPOCH_OFFSET: i64 = 62_135_596_800;

const fn hex16(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (nib(b[2 * i]) << 4) | nib(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nib(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// Why a KDBX file was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdbxError {
    /// No KeePass signature.
    NotKdbx,
    /// A KDBX major version other than 4.
    Version(u16),
    /// The file ends inside a structure.
    Truncated,
    /// A header field is missing or malformed.
    BadHeader,
    /// Cipher other than AES-256 and ChaCha20 (e.g. Twofish).
    UnsupportedCipher,
    /// KDF other than Argon2d, Argon2id and AES-KDF, or an inner stream other than ChaCha20/Salsa20.
    UnsupportedKdf,
    /// KDF parameters beyond the limits (memory, passes, rounds).
    KdfTooCostly,
    /// The header checksum does not match: the file is damaged.
    Corrupt,
    /// The header HMAC does not verify: wrong password (or a key file is needed).
    WrongPassword,
    /// A block HMAC does not verify, or the padding is bad.
    BadBlock,
    /// The gzip payload does not inflate within the limit.
    Decompress,
    /// The XML is malformed or nested too deep.
    Xml,
}

impl fmt::Display for KdbxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdbxError::NotKdbx => f.write_str("not a KeePass file"),
            KdbxError::Version(v) => write!(f, "KDBX version {v} not supported (4 only)"),
            KdbxError::Truncated => f.write_str("file truncated"),
            KdbxError::BadHeader => f.write_str("header field missing or malformed"),
            KdbxError::UnsupportedCipher => f.write_str("cipher not supported (AES-256, ChaCha20)"),
            KdbxError::UnsupportedKdf => f.write_str("KDF or inner stream not supported"),
            KdbxError::KdfTooCostly => f.write_str("KDF parameters beyond the limits"),
            KdbxError::Corrupt => f.write_str("header checksum mismatch: file damaged"),
            KdbxError::WrongPassword => f.write_str("wrong password (or a key file is needed)"),
            KdbxError::BadBlock => f.write_str("block authentication failed"),
            KdbxError::Decompress => f.write_str("payload does not decompress"),
            KdbxError::Xml => f.write_str("XML malformed"),
        }
    }
}

/// One entry as KeePass stores it.
#[derive(Default)]
pub struct KdbxEntry {
    /// Title.
    pub title: String,
    /// UserName.
    pub username: Zeroizing<String>,
    /// Password.
    pub password: Zeroizing<String>,
    /// URL.
    pub url: Zeroizing<String>,
    /// Notes, plus any custom string fields as `key: value` lines.
    pub notes: Zeroizing<String>,
    /// `otp` (KeePassXC) or `TOTP Seed`.
    pub otp: Zeroizing<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// CreationTime, Unix seconds.
    pub created: u64,
    /// LastModificationTime, Unix seconds.
    pub modified: u64,
}

impl fmt::Debug for KdbxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KdbxEntry")
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KdbxError> {
        if n > self.0.len() {
            return Err(KdbxError::Truncated);
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, KdbxError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, KdbxError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
}

enum Kdf {
    Argon2 {
        variant: argon2::Algorithm,
        salt: Vec<u8>,
        m_kib: u32,
        t: u32,
        p: u32,
        version: argon2::Version,
    },
    Aes {
        seed: [u8; 32],
        rounds: u64,
    },
}

/// Values of a KDBX VariantDictionary that we use: (name, bytes).
fn variant_dict(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, KdbxError> {
    let mut c = Cur(data);
    let mut v = [0u8; 2];
    v.copy_from_slice(c.take(2)?);
    if v[1] != 1 {
        return Err(KdbxError::BadHeader);
    }
    let mut out = Vec::new();
    loop {
        let ty = c.u8()?;
        if ty == 0 {
            return Ok(out);
        }
        let nlen = c.u32()? as usize;
        let name = core::str::from_utf8(c.take(nlen)?).map_err(|_| KdbxError::BadHeader)?;
        let vlen = c.u32()? as usize;
        let val = c.take(vlen)?;
        if out.len() >= 64 {
            return Err(KdbxError::BadHeader);
        }
        out.push((String::from(name), val.to_vec()));
    }
}

fn dict_u64(d: &[(String, Vec<u8>)], key: &str) -> Option<u64> {
    let v = &d.iter().find(|(k, _)| k == key)?.1;
    match v.len() {
        4 => Some(u64::from(u32::from_le_bytes(v[..4].try_into().ok()?))),
        8 => Some(u64::from_le_bytes(v[..8].try_into().ok()?)),
        _ => None,
    }
}

fn dict_bytes<'a>(d: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
}

fn parse_kdf(data: &[u8]) -> Result<Kdf, KdbxError> {
    let d = variant_dict(data)?;
    let uuid = dict_bytes(&d, "$UUID").ok_or(KdbxError::BadHeader)?;
    if uuid == KDF_AES {
        let seed = dict_bytes(&d, "S")
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or(KdbxError::BadHeader)?;
        let rounds = dict_u64(&d, "R").ok_or(KdbxError::BadHeader)?;
        if rounds > MAX_AES_ROUNDS {
            return Err(KdbxError::KdfTooCostly);
        }
        return Ok(Kdf::Aes { seed, rounds });
    }
    let variant = if uuid == KDF_ARGON2D {
        argon2::Algorithm::Argon2d
    } else if uuid == KDF_ARGON2ID {
        argon2::Algorithm::Argon2id
    } else {
        return Err(KdbxError::UnsupportedKdf);
    };
    let salt = dict_bytes(&d, "S").ok_or(KdbxError::BadHeader)?.to_vec();
    let m = dict_u64(&d, "M").ok_or(KdbxError::BadHeader)? / 1024;
    let t = dict_u64(&d, "I").ok_or(KdbxError::BadHeader)?;
    let p = dict_u64(&d, "P").ok_or(KdbxError::BadHeader)?;
    if m > MAX_ARGON2_KIB || t > MAX_ARGON2_PASSES || p > 16 {
        return Err(KdbxError::KdfTooCostly);
    }
    let version = match dict_u64(&d, "V") {
        Some(0x10) => argon2::Version::V0x10,
        _ => argon2::Version::V0x13,
    };
    Ok(Kdf::Argon2 {
        variant,
        salt,
        m_kib: m as u32,
        t: t as u32,
        p: p as u32,
        version,
    })
}

fn transform(kdf: &Kdf, composite: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, KdbxError> {
    let mut out = Zeroizing::new([0u8; 32]);
    match kdf {
        Kdf::Argon2 {
            variant,
            salt,
            m_kib,
            t,
            p,
            version,
        } => {
            let params =
                argon2::Params::new(*m_kib, *t, *p, Some(32)).map_err(|_| KdbxError::BadHeader)?;
            argon2::Argon2::new(*variant, *version, params)
                .hash_password_into(composite, salt, &mut out[..])
                .map_err(|_| KdbxError::BadHeader)?;
        }
        Kdf::Aes { seed, rounds } => {
            let aes = aes::Aes256::new(seed.into());
            let mut key = Zeroizing::new(*composite);
            for half in key.chunks_exact_mut(16) {
                let block = aes::Block::from_mut_slice(half);
                for _ in 0..*rounds {
                    aes.encrypt_block(block);
                }
            }
            out.copy_from_slice(&Sha256::digest(&key[..]));
        }
    }
    Ok(out)
}

type HmacSha256 = Hmac<Sha256>;

fn block_key(hmac_key: &[u8], index: u64) -> Zeroizing<Vec<u8>> {
    let mut h = Sha512::new();
    h.update(index.to_le_bytes());
    h.update(hmac_key);
    Zeroizing::new(h.finalize().to_vec())
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts any key length.
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Inner-stream cipher for protected values.
enum Inner {
    ChaCha(chacha20::ChaCha20),
    Salsa(salsa20::Salsa20),
}

impl Inner {
    fn apply(&mut self, data: &mut [u8]) {
        match self {
            Inner::ChaCha(c) => c.apply_keystream(data),
            Inner::Salsa(s) => s.apply_keystream(data),
        }
    }
}

/// Reads every entry (not history, not the recycle bin) of a KDBX 4 file.
pub fn read(file: &[u8], password: &[u8]) -> Result<Vec<KdbxEntry>, KdbxError> {
    let mut c = Cur(file);
    if c.take(4).map(|_| ()).is_err() {
        return Err(KdbxError::NotKdbx);
    }
    let s1 = u32::from_le_bytes(file[..4].try_into().map_err(|_| KdbxError::NotKdbx)?);
    let s2 = c.u32().map_err(|_| KdbxError::NotKdbx)?;
    if s1 != SIG1 || s2 != SIG2 {
        return Err(KdbxError::NotKdbx);
    }
    let version = c.u32()?;
    let major = (version >> 16) as u16;
    if major != 4 {
        return Err(KdbxError::Version(major));
    }
    let (mut cipher, mut seed, mut iv, mut kdf, mut compressed) = (None, None, None, None, false);
    loop {
        let id = c.u8()?;
        let len = c.u32()? as usize;
        let data = c.take(len)?;
        match id {
            0 => break,
            2 => cipher = Some(<[u8; 16]>::try_from(data).map_err(|_| KdbxError::BadHeader)?),
            3 => compressed = data.first().copied().unwrap_or(0) == 1,
            4 => seed = Some(<[u8; 32]>::try_from(data).map_err(|_| KdbxError::BadHeader)?),
            7 => iv = Some(data.to_vec()),
            11 => kdf = Some(parse_kdf(data)?),
            _ => {}
        }
    }
    let header_len = file.len() - c.0.len();
    let header = &file[..header_len];
    let sha = c.take(32)?;
    let mac = c.take(32)?;
    if !ct_eq(&Sha256::digest(header), sha) {
        return Err(KdbxError::Corrupt);
    }
    let (cipher, seed, iv, kdf) = (
        cipher.ok_or(KdbxError::BadHeader)?,
        seed.ok_or(KdbxError::BadHeader)?,
        iv.ok_or(KdbxError::BadHeader)?,
        kdf.ok_or(KdbxError::BadHeader)?,
    );
    if cipher != CIPHER_AES256 && cipher != CIPHER_CHACHA20 {
        return Err(KdbxError::UnsupportedCipher);
    }

    let mut composite = Zeroizing::new([0u8; 32]);
    composite.copy_from_slice(&Sha256::digest(Sha256::digest(password)));
    let transformed = transform(&kdf, &composite)?;
    let mut h = Sha256::new();
    h.update(seed);
    h.update(&transformed[..]);
    let key = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    let mut h = Sha512::new();
    h.update(seed);
    h.update(&transformed[..]);
    h.update([1u8]);
    let hmac_key = Zeroizing::new(h.finalize().to_vec());
    if !ct_eq(&hmac256(&block_key(&hmac_key, u64::MAX), &[header]), mac) {
        return Err(KdbxError::WrongPassword);
    }

    // HMAC block stream: (hmac, i32 len, data) until a zero-length block.
    let mut payload = Zeroizing::new(Vec::new());
    for index in 0u64.. {
        let tag = c.take(32)?;
        let len_bytes = c.take(4)?;
        let len = u32::from_le_bytes(len_bytes.try_into().map_err(|_| KdbxError::Truncated)?);
        let data = c.take(len as usize)?;
        let want = hmac256(
            &block_key(&hmac_key, index),
            &[&index.to_le_bytes(), len_bytes, data],
        );
        if !ct_eq(&want, tag) {
            return Err(KdbxError::BadBlock);
        }
        if len == 0 {
            break;
        }
        payload.extend_from_slice(data);
    }

    if cipher == CIPHER_CHACHA20 {
        let nonce: [u8; 12] = iv.as_slice().try_into().map_err(|_| KdbxError::BadHeader)?;
        chacha20::ChaCha20::new(key.as_ref().into(), &nonce.into()).apply_keystream(&mut payload);
    } else {
        let iv: [u8; 16] = iv.as_slice().try_into().map_err(|_| KdbxError::BadHeader)?;
        cbc_decrypt(&key, iv, &mut payload)?;
    }
    parse_payload(&payload, compressed)
}

/// The decrypted payload (gzip if `compressed`): inner header, then the XML with its
/// protected values. Split out so it can be fuzzed without forging HMACs.
pub fn parse_payload(payload: &[u8], compressed: bool) -> Result<Vec<KdbxEntry>, KdbxError> {
    let plain = if compressed {
        Zeroizing::new(gunzip(payload)?)
    } else {
        Zeroizing::new(payload.to_vec())
    };

    // Inner header: (u8 id, u32 len, data) until id 0.
    let mut c = Cur(&plain);
    let (mut stream_id, mut stream_key) = (0u32, Zeroizing::new(Vec::new()));
    loop {
        let id = c.u8()?;
        let len = c.u32()? as usize;
        let data = c.take(len)?;
        match id {
            0 => break,
            1 => stream_id = u32::from_le_bytes(data.try_into().map_err(|_| KdbxError::BadHeader)?),
            2 => *stream_key = data.to_vec(),
            _ => {}
        }
    }
    let inner = match stream_id {
        3 => {
            let k = Sha512::digest(&stream_key[..]);
            let key: [u8; 32] = k[..32].try_into().map_err(|_| KdbxError::BadHeader)?;
            let nonce: [u8; 12] = k[32..44].try_into().map_err(|_| KdbxError::BadHeader)?;
            Inner::ChaCha(chacha20::ChaCha20::new(&key.into(), &nonce.into()))
        }
        2 => {
            let key: [u8; 32] = Sha256::digest(&stream_key[..]).into();
            let nonce = [0xE8, 0x30, 0x09, 0x4B, 0x97, 0x20, 0x5D, 0x2A];
            Inner::Salsa(salsa20::Salsa20::new(&key.into(), &nonce.into()))
        }
        _ => return Err(KdbxError::UnsupportedKdf),
    };
    let xml = core::str::from_utf8(c.0).map_err(|_| KdbxError::Xml)?;
    entries(xml, inner)
}

fn cbc_decrypt(
    key: &[u8; 32],
    iv: [u8; 16],
    data: &mut Zeroizing<Vec<u8>>,
) -> Result<(), KdbxError> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(KdbxError::BadBlock);
    }
    let aes = aes::Aes256::new(key.into());
    let mut prev = iv;
    for block in data.chunks_exact_mut(16) {
        let mut ct = [0u8; 16];
        ct.copy_from_slice(block);
        aes.decrypt_block(aes::Block::from_mut_slice(block));
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        prev = ct;
    }
    let pad = usize::from(*data.last().ok_or(KdbxError::BadBlock)?);
    if pad == 0
        || pad > 16
        || data[data.len() - pad..]
            .iter()
            .any(|&b| usize::from(b) != pad)
    {
        return Err(KdbxError::BadBlock);
    }
    let n = data.len() - pad;
    data.truncate(n);
    Ok(())
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, KdbxError> {
    let mut c = Cur(data);
    let head = c.take(10).map_err(|_| KdbxError::Decompress)?;
    if head[0] != 0x1f || head[1] != 0x8b || head[2] != 8 {
        return Err(KdbxError::Decompress);
    }
    let flags = head[3];
    if flags & 4 != 0 {
        let mut l = [0u8; 2];
        l.copy_from_slice(c.take(2)?);
        c.take(usize::from(u16::from_le_bytes(l)))?;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let end =
                c.0.iter()
                    .position(|&b| b == 0)
                    .ok_or(KdbxError::Decompress)?;
            c.take(end + 1)?;
        }
    }
    if flags & 2 != 0 {
        c.take(2)?;
    }
    miniz_oxide::inflate::decompress_to_vec_with_limit(c.0, MAX_XML)
        .map_err(|_| KdbxError::Decompress)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn unescape(s: &str) -> Result<String, KdbxError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').ok_or(KdbxError::Xml)?;
        let ent = &after[..end];
        let ch = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                n.and_then(char::from_u32).ok_or(KdbxError::Xml)?
            }
        };
        out.push(ch);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

enum Tok<'a> {
    Start(&'a str, &'a str, bool),
    End(&'a str),
    Text(&'a str),
    CData(&'a str),
}

/// A minimal XML pull tokenizer: elements, attributes as raw text, text, CDATA; skips
/// declarations, comments and doctypes.
struct Lexer<'a>(&'a str);

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Result<Option<Tok<'a>>, KdbxError> {
        loop {
            let s = self.0;
            if s.is_empty() {
                return Ok(None);
            }
            if !s.starts_with('<') {
                let end = s.find('<').unwrap_or(s.len());
                self.0 = &s[end..];
                return Ok(Some(Tok::Text(&s[..end])));
            }
            if let Some(r) = s.strip_prefix("<![CDATA[") {
                let end = r.find("]]>").ok_or(KdbxError::Xml)?;
                self.0 = &r[end + 3..];
                return Ok(Some(Tok::CData(&r[..end])));
            }
            if let Some(r) = s.strip_prefix("<!--") {
                let end = r.find("-->").ok_or(KdbxError::Xml)?;
                self.0 = &r[end + 3..];
                continue;
            }
            if s.starts_with("<?") || s.starts_with("<!") {
                let end = s.find('>').ok_or(KdbxError::Xml)?;
                self.0 = &s[end + 1..];
                continue;
            }
            let end = s.find('>').ok_or(KdbxError::Xml)?;
            let inner = &s[1..end];
            self.0 = &s[end + 1..];
            if let Some(name) = inner.strip_prefix('/') {
                return Ok(Some(Tok::End(name.trim())));
            }
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let (name, attrs) = inner
                .split_once(|c: char| c.is_ascii_whitespace())
                .unwrap_or((inner, ""));
            if name.is_empty() {
                return Err(KdbxError::Xml);
            }
            return Ok(Some(Tok::Start(name, attrs, empty)));
        }
    }
}

fn protected(attrs: &str) -> bool {
    attrs.contains("Protected=\"True\"") || attrs.contains("Protected='True'")
}

fn kdbx_time(text: &str) -> u64 {
    base64_decode(text.trim())
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_le_bytes)
        .map_or(0, |s| s.saturating_sub(EPOCH_OFFSET).max(0) as u64)
}

/// Walks the XML: entries under `Root` (not inside `History`), every protected value
/// decrypted in document order so the keystream stays aligned.
fn entries(xml: &str, mut inner: Inner) -> Result<Vec<KdbxEntry>, KdbxError> {
    let mut lex = Lexer(xml);
    let mut stack: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<KdbxEntry> = None;
    let mut history = 0usize;
    let (mut key, mut value, mut value_protected) =
        (String::new(), Zeroizing::new(String::new()), false);
    let mut text = Zeroizing::new(String::new());
    let mut recycle_bin = String::new();
    let mut group_uuids: Vec<String> = Vec::new();
    while let Some(tok) = lex.next()? {
        match tok {
            Tok::Start(name, attrs, empty) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(KdbxError::Xml);
                }
                text.clear();
                match name {
                    "History" => history += 1,
                    "Entry" if history == 0 && cur.is_none() => cur = Some(KdbxEntry::default()),
                    "Value" => value_protected = protected(attrs),
                    "Group" => group_uuids.push(String::new()),
                    _ => {}
                }
                if empty {
                    if name == "Value" {
                        value.clear();
                    }
                    if name == "Group" {
                        group_uuids.pop();
                    }
                } else {
                    stack.push(name);
                }
            }
            Tok::Text(t) => text.push_str(&unescape(t)?),
            Tok::CData(t) => text.push_str(t),
            Tok::End(name) => {
                if stack.pop() != Some(name) {
                    return Err(KdbxError::Xml);
                }
                let parent = stack.last().copied().unwrap_or("");
                match name {
                    "Value" => {
                        let mut v = Zeroizing::new(String::new());
                        if value_protected {
                            let mut raw =
                                Zeroizing::new(base64_decode(text.trim()).ok_or(KdbxError::Xml)?);
                            inner.apply(&mut raw);
                            v.push_str(&String::from_utf8_lossy(&raw));
                        } else {
                            v.push_str(&text);
                        }
                        value = v;
                        value_protected = false;
                    }
                    "Key" if parent == "String" => key = text.trim().into(),
                    "String" if history == 0 => {
                        if let Some(e) = cur.as_mut() {
                            let v = core::mem::take(&mut value);
                            match key.as_str() {
                                "Title" => e.title = String::from(v.as_str()),
                                "UserName" => e.username = v,
                                "Password" => e.password = v,
                                "URL" => e.url = v,
                                "Notes" => {
                                    let old = core::mem::take(&mut e.notes);
                                    e.notes = v;
                                    append_note(&mut e.notes, &old);
                                }
                                "otp" => e.otp = v,
                                "TOTP Seed" if e.otp.is_empty() => e.otp = v,
                                _ if !v.is_empty() => {
                                    let line =
                                        Zeroizing::new(alloc::format!("{key}: {}", v.as_str()));
                                    append_note(&mut e.notes, &line);
                                }
                                _ => {}
                            }
                        }
                    }
                    "UUID" if parent == "Group" => {
                        if let Some(u) = group_uuids.last_mut() {
                            *u = text.trim().into();
                        }
                    }
                    "RecycleBinUUID" => recycle_bin = text.trim().into(),
                    "Tags" if history == 0 && parent == "Entry" => {
                        if let Some(e) = cur.as_mut() {
                            e.tags = text
                                .split([';', ','])
                                .map(str::trim)
                                .filter(|t| !t.is_empty() && t.len() <= crate::entry::MAX_TAG)
                                .filter(|t| !t.chars().any(char::is_control))
                                .take(crate::entry::MAX_TAGS)
                                .map(String::from)
                                .collect();
                        }
                    }
                    "CreationTime" if history == 0 && parent == "Times" => {
                        if let Some(e) = cur.as_mut() {
                            e.created = kdbx_time(&text);
                        }
                    }
                    "LastModificationTime" if history == 0 && parent == "Times" => {
                        if let Some(e) = cur.as_mut() {
                            e.modified = kdbx_time(&text);
                        }
                    }
                    "History" => history = history.saturating_sub(1),
                    "Entry" if history == 0 => {
                        if let Some(e) = cur.take() {
                            let in_bin = !recycle_bin.is_empty()
                                && recycle_bin != "AAAAAAAAAAAAAAAAAAAAAA=="
                                && group_uuids.contains(&recycle_bin);
                            if !in_bin {
                                out.push(e);
                            }
                        }
                    }
                    "Group" => {
                        group_uuids.pop();
                    }
                    _ => {}
                }
                text.clear();
            }
        }
    }
    if !stack.is_empty() {
        return Err(KdbxError::Xml);
    }
    Ok(out)
}

fn append_note(notes: &mut Zeroizing<String>, line: &str) {
    if line.is_empty() {
        return;
    }
    if !notes.is_empty() {
        notes.push('\n');
    }
    notes.push_str(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn uuids_decode() {
        assert_eq!(CIPHER_AES256[0], 0x31);
        assert_eq!(CIPHER_AES256[15], 0xff);
        assert_eq!(KDF_ARGON2D[..4], [0xef, 0x63, 0x6d, 0xdf]);
    }

    #[test]
    fn non_kdbx_input_is_refused_without_panicking() {
        assert_eq!(read(b"", b"pw").unwrap_err(), KdbxError::NotKdbx);
        assert_eq!(
            read(b"PK\x03\x04xxxxxxxx", b"pw").unwrap_err(),
            KdbxError::NotKdbx
        );
        let mut v3 = Vec::new();
        v3.extend_from_slice(&SIG1.to_le_bytes());
        v3.extend_from_slice(&SIG2.to_le_bytes());
        v3.extend_from_slice(&0x0003_0001u32.to_le_bytes());
        assert_eq!(read(&v3, b"pw").unwrap_err(), KdbxError::Version(3));
        let mut trunc = v3.clone();
        trunc[10] = 4;
        trunc[11] = 0;
        assert_eq!(read(&trunc, b"pw").unwrap_err(), KdbxError::Truncated);
    }

    #[test]
    fn xml_walk_skips_history_and_decrypts_protected_values_in_order() {
        // Keystream of a zero-key Salsa20 XORs the protected values; build them with the same stream.
        let mut enc = Inner::Salsa(salsa20::Salsa20::new(&[0u8; 32].into(), &[0u8; 8].into()));
        let mut seal = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            enc.apply(&mut b);
            b64(&b)
        };
        let p1 = seal("hist-pw");
        let p2 = seal("real-pw");
        let xml = alloc::format!(
            "<?xml version=\"1.0\"?><KeePassFile><Root><Group><UUID>AAA=</UUID><Entry>\
             <String><Key>Title</Key><Value>git &amp; hub</Value></String>\
             <String><Key>Password</Key><Value Protected=\"True\">{p2}</Value></String>\
             <String><Key>Custom</Key><Value>x</Value></String>\
             <Tags>a;b</Tags><History><Entry><String><Key>Password</Key>\
             <Value Protected=\"True\">{p1}</Value></String></Entry></History></Entry>\
             </Group></Root></KeePassFile>"
        );
        // History comes after the current password in the document, so the order is p2, p1:
        // re-seal in that order.
        let mut enc = Inner::Salsa(salsa20::Salsa20::new(&[0u8; 32].into(), &[0u8; 8].into()));
        let mut seal2 = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            enc.apply(&mut b);
            b64(&b)
        };
        let q2 = seal2("real-pw");
        let q1 = seal2("hist-pw");
        let xml = xml.replace(&p2, &q2).replace(&p1, &q1);
        let dec = Inner::Salsa(salsa20::Salsa20::new(&[0u8; 32].into(), &[0u8; 8].into()));
        let got = entries(&xml, dec).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].title, "git & hub");
        assert_eq!(&*got[0].password, "real-pw");
        assert_eq!(&*got[0].notes, "Custom: x");
        assert_eq!(got[0].tags, ["a", "b"]);
    }

    #[test]
    fn gzip_payload_with_inner_header_parses_and_bombs_are_bounded() {
        let xml = "<KeePassFile><Root><Group><Entry><String><Key>Title</Key><Value>t</Value>\
                   </String></Entry></Group></Root></KeePassFile>";
        let mut plain = vec![1, 4, 0, 0, 0, 2, 0, 0, 0, 2, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0];
        plain.extend_from_slice(xml.as_bytes());
        let gz = |body: &[u8]| {
            let mut g = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
            g.extend_from_slice(b"name\0");
            g.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(body, 6));
            g
        };
        let got = parse_payload(&gz(&plain), true).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].title, "t");
        assert_eq!(parse_payload(&plain, false).unwrap().len(), 1);
        // Unknown inner stream, truncated gzip, and more than MAX_XML of zeros.
        let mut bad = plain.clone();
        bad[5] = 7;
        assert_eq!(
            parse_payload(&bad, false).unwrap_err(),
            KdbxError::UnsupportedKdf
        );
        let g = gz(&plain);
        assert_eq!(
            parse_payload(&g[..12], true).unwrap_err(),
            KdbxError::Decompress
        );
        let bomb = gz(&vec![0u8; MAX_XML + 1]);
        assert!(bomb.len() < 200_000);
        assert_eq!(
            parse_payload(&bomb, true).unwrap_err(),
            KdbxError::Decompress
        );
    }

    #[test]
    fn malformed_xml_is_refused() {
        let dec = || Inner::Salsa(salsa20::Salsa20::new(&[0u8; 32].into(), &[0u8; 8].into()));
        assert_eq!(entries("<a><b></a>", dec()).unwrap_err(), KdbxError::Xml);
        assert_eq!(entries("<a>", dec()).unwrap_err(), KdbxError::Xml);
        assert_eq!(
            entries("<a>&bogus;</a>", dec()).unwrap_err(),
            KdbxError::Xml
        );
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(entries(&deep, dec()).unwrap_err(), KdbxError::Xml);
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for ch in data.chunks(3) {
            let n = ch
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &b)| a | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= ch.len() {
                    s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..20 {
            let d: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&b64(&d)).unwrap(), d);
        }
    }
}
