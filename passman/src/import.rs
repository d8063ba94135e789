//! Imports: a `pass` bundle (files the user decrypted beforehand, framed by `qpass import-pass`),
//! a KeePass KDBX4 file, or a backup made by `passman.Export`; each gives named entries.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use vault_store::{KdfLimits, MemDevice, Vault, VaultError};

use crate::engine::MAX_ENTRIES;
use crate::entry::{Entry, EntryError};
use crate::kdbx::{self, KdbxError};
use crate::name::EntryName;

/// Why an import was refused (nothing is stored then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// A `pass` bundle frame header is malformed or its length runs past the end.
    BadFrame,
    /// An entry name that no valid name can be made from.
    BadName,
    /// More entries than a vault holds.
    TooMany,
    /// An entry's content is bad.
    Entry(String, EntryError),
    /// The KeePass file did not open or parse.
    Kdbx(KdbxError),
    /// The backup did not open.
    Backup(VaultError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::BadFrame => f.write_str("import: pass bundle frame malformed"),
            ImportError::BadName => f.write_str("import: an entry name has no valid characters"),
            ImportError::TooMany => write!(f, "import: more than {MAX_ENTRIES} entries"),
            ImportError::Entry(n, e) => write!(f, "import: entry {n}: {e}"),
            ImportError::Kdbx(e) => write!(f, "import: KeePass: {e}"),
            ImportError::Backup(e) => write!(f, "import: backup: {e}"),
        }
    }
}

/// Names made unique: a second `x` becomes `x-2`.
fn unique(seen: &BTreeMap<EntryName, Entry>, base: EntryName) -> Result<EntryName, ImportError> {
    if !seen.contains_key(&base) {
        return Ok(base);
    }
    for i in 2..=MAX_ENTRIES + 1 {
        let mut s = String::from(base.as_str());
        let suffix = format!("-{i}");
        s.truncate(crate::name::MAX_NAME_LEN - suffix.len());
        s.push_str(&suffix);
        let n = EntryName::new(&s).map_err(|_| ImportError::BadName)?;
        if !seen.contains_key(&n) {
            return Ok(n);
        }
    }
    Err(ImportError::TooMany)
}

/// A `pass` bundle: frames of `PATH SP LEN LF` then LEN bytes of the decrypted file (first line
/// the password, then `key: value` lines). PATH `a/b` becomes the entry name `a.b`.
pub fn pass_bundle(mut data: &[u8]) -> Result<Vec<(EntryName, Entry)>, ImportError> {
    let mut out = BTreeMap::new();
    while !data.is_empty() {
        let nl = data
            .iter()
            .take(1024)
            .position(|&b| b == b'\n')
            .ok_or(ImportError::BadFrame)?;
        let head = core::str::from_utf8(&data[..nl]).map_err(|_| ImportError::BadFrame)?;
        let (path, len) = head.rsplit_once(' ').ok_or(ImportError::BadFrame)?;
        let len: usize = len.parse().map_err(|_| ImportError::BadFrame)?;
        let rest = &data[nl + 1..];
        if len > rest.len() {
            return Err(ImportError::BadFrame);
        }
        let (body, tail) = rest.split_at(len);
        data = tail;
        if out.len() >= MAX_ENTRIES {
            return Err(ImportError::TooMany);
        }
        let path = path.strip_suffix(".gpg").unwrap_or(path);
        let name = EntryName::sanitize(path).ok_or(ImportError::BadName)?;
        let text = core::str::from_utf8(body)
            .map_err(|_| ImportError::Entry(name.as_str().into(), EntryError::NotUtf8))?;
        let entry: Entry =
            Entry::from_text(text).map_err(|e| ImportError::Entry(name.as_str().into(), e))?;
        let name = unique(&out, name)?;
        out.insert(name, entry);
    }
    Ok(out.into_iter().collect())
}

/// A KeePass KDBX4 file under a password (no key file).
pub fn kdbx(data: &[u8], password: &[u8]) -> Result<Vec<(EntryName, Entry)>, ImportError> {
    let entries = kdbx::read(data, password).map_err(ImportError::Kdbx)?;
    let mut out = BTreeMap::new();
    for k in entries {
        if out.len() >= MAX_ENTRIES {
            return Err(ImportError::TooMany);
        }
        let base = EntryName::sanitize(&k.title)
            .or_else(|| EntryName::sanitize(&k.url))
            .or_else(|| EntryName::new("untitled").ok())
            .ok_or(ImportError::BadName)?;
        let mut notes = k.notes;
        if notes.len() > crate::entry::MAX_NOTES {
            return Err(ImportError::Entry(
                base.as_str().into(),
                EntryError::TooLong {
                    field: crate::entry::Field::Notes,
                    max: crate::entry::MAX_NOTES,
                },
            ));
        }
        notes.truncate(crate::entry::MAX_NOTES);
        let entry = Entry {
            username: k.username,
            password: k.password,
            url: k.url,
            notes,
            totp: k.otp,
            tags: k.tags,
            created: k.created,
            modified: k.modified,
        };
        entry
            .validate()
            .map_err(|e| ImportError::Entry(base.as_str().into(), e))?;
        let name = unique(&out, base)?;
        out.insert(name, entry);
    }
    Ok(out.into_iter().collect())
}

/// A backup made by `passman.Export` under `password`.
pub fn backup(
    data: &[u8],
    password: &[u8],
    limits: KdfLimits,
) -> Result<Vec<(EntryName, Entry)>, ImportError> {
    let mut dev = MemDevice::from_bytes(512, data.to_vec());
    let v = Vault::open_with_limits(&mut dev, password, limits).map_err(ImportError::Backup)?;
    let mut out = Vec::new();
    for (k, val) in v.records().iter() {
        let Some(name) = k.strip_prefix(b"e/") else {
            continue;
        };
        if out.len() >= MAX_ENTRIES {
            return Err(ImportError::TooMany);
        }
        let name = core::str::from_utf8(name)
            .ok()
            .and_then(|n| EntryName::new(n).ok())
            .ok_or(ImportError::BadName)?;
        let e = Entry::decode(val).map_err(|e| ImportError::Entry(name.as_str().into(), e))?;
        out.push((name, e));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, body) in files {
            out.extend_from_slice(format!("{path} {}\n{body}", body.len()).as_bytes());
        }
        out
    }

    #[test]
    fn pass_bundle_frames_become_entries() {
        let bundle = frames(&[
            ("web/github.com.gpg", "hunter2\nlogin: alice\n"),
            ("bank", "xyz"),
        ]);
        let got = pass_bundle(&bundle).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.as_str(), "bank");
        assert_eq!(&*got[0].1.password, "xyz");
        assert_eq!(got[1].0.as_str(), "web.github.com");
        assert_eq!(&*got[1].1.username, "alice");
    }

    #[test]
    fn pass_bundle_refuses_bad_frames() {
        assert_eq!(pass_bundle(b"x 10\nshort"), Err(ImportError::BadFrame));
        assert_eq!(pass_bundle(b"no-length\n"), Err(ImportError::BadFrame));
        assert_eq!(pass_bundle(b"x -1\n"), Err(ImportError::BadFrame));
        assert!(matches!(
            pass_bundle(b"x 0\n"),
            Err(ImportError::Entry(_, EntryError::NoPassword))
        ));
    }

    #[test]
    fn duplicate_names_get_suffixes() {
        let got = pass_bundle(&frames(&[("a/b", "x"), ("a.b", "y")])).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.b", "a.b-2"]);
    }
}
