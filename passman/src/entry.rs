//! One password entry: its bounded fields, the binary record encoding stored in the vault, and
//! the `pass`-style text form used by `passman.Put`, `passman.Show` and the `pass` import.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use zeroize::{Zeroize, Zeroizing};

/// Entry record encoding version.
pub const ENTRY_VERSION: u8 = 1;
/// Longest username, bytes.
pub const MAX_USERNAME: usize = 1024;
/// Longest password, bytes.
pub const MAX_PASSWORD: usize = 1024;
/// Longest URL, bytes.
pub const MAX_URL: usize = 2048;
/// Longest notes, bytes.
pub const MAX_NOTES: usize = 16 * 1024;
/// Longest TOTP secret or `otpauth://` URI, bytes.
pub const MAX_TOTP: usize = 512;
/// Most tags per entry.
pub const MAX_TAGS: usize = 32;
/// Longest tag, bytes.
pub const MAX_TAG: usize = 64;
/// Largest encoded entry: fixed part plus every field at its maximum.
pub const MAX_ENTRY_LEN: usize = 1
    + 16
    + 5 * 2
    + MAX_USERNAME
    + MAX_PASSWORD
    + MAX_URL
    + MAX_NOTES
    + MAX_TOTP
    + 1
    + MAX_TAGS * (1 + MAX_TAG);
/// The `totp:` value `passman.Show` prints instead of the secret; `passman.Put` keeps the old one.
pub const TOTP_HIDDEN: &str = "(hidden)";

/// Which field was bad, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryError {
    /// A field is longer than its maximum.
    TooLong {
        /// The field.
        field: Field,
        /// Its maximum, bytes.
        max: usize,
    },
    /// More than [`MAX_TAGS`] tags.
    TooManyTags,
    /// A tag that is empty or holds a comma, control character or space at either end.
    BadTag,
    /// A field that must be one line holds a line break or NUL.
    ControlChar(Field),
    /// The stored record ends inside a field.
    Truncated,
    /// Bytes after the last field of a stored record.
    TrailingBytes,
    /// A stored record with an unknown entry version.
    Version(u8),
    /// A stored field is not UTF-8.
    NotUtf8,
    /// The text form has no password line.
    NoPassword,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::TooLong { field, max } => write!(f, "{field} longer than {max} bytes"),
            EntryError::TooManyTags => write!(f, "more than {MAX_TAGS} tags"),
            EntryError::BadTag => f.write_str("tag empty or holding a comma or control character"),
            EntryError::ControlChar(field) => {
                write!(f, "{field} holds a line break or control character")
            }
            EntryError::Truncated => f.write_str("entry record truncated"),
            EntryError::TrailingBytes => f.write_str("bytes after the entry record"),
            EntryError::Version(v) => write!(f, "unknown entry record version {v}"),
            EntryError::NotUtf8 => f.write_str("entry field not UTF-8"),
            EntryError::NoPassword => f.write_str("entry text has no password line"),
        }
    }
}

/// A field a caller can read with `passman.GetField`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The password.
    Password,
    /// The username.
    Username,
    /// The URL.
    Url,
    /// Free text.
    Notes,
    /// The TOTP secret (never readable: only codes are served).
    Totp,
    /// Tags, comma separated.
    Tags,
    /// Creation time, Unix seconds of the vault clock.
    Created,
    /// Last change, Unix seconds of the vault clock.
    Modified,
}

impl Field {
    /// The field named `s` (as on a `passman.GetField` request line).
    pub fn from_name(s: &str) -> Option<Field> {
        Some(match s {
            "password" => Field::Password,
            "username" | "login" | "user" => Field::Username,
            "url" => Field::Url,
            "notes" => Field::Notes,
            "totp" | "otp" => Field::Totp,
            "tags" => Field::Tags,
            "created" => Field::Created,
            "modified" => Field::Modified,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Password => "password",
            Field::Username => "username",
            Field::Url => "url",
            Field::Notes => "notes",
            Field::Totp => "totp",
            Field::Tags => "tags",
            Field::Created => "created",
            Field::Modified => "modified",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A password entry; every text field is zeroized on drop.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Login name.
    pub username: Zeroizing<String>,
    /// The secret.
    pub password: Zeroizing<String>,
    /// Where it is used.
    pub url: Zeroizing<String>,
    /// Free text, may span lines.
    pub notes: Zeroizing<String>,
    /// Base32 TOTP secret or `otpauth://totp/...` URI; empty if none.
    pub totp: Zeroizing<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Creation time, Unix seconds (vault clock).
    pub created: u64,
    /// Last change, Unix seconds (vault clock).
    pub modified: u64,
}

impl fmt::Debug for Entry {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("created", &self.created)
            .field("modified", &self.modified)
            .finish_non_exhaustive()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        for t in &mut self.tags {
            t.zeroize();
        }
    }
}

fn check_len(field: Field, s: &str, max: usize) -> Result<(), EntryError> {
    if s.len() > max {
        return Err(EntryError::TooLong { field, max });
    }
    Ok(())
}

fn check_line(field: Field, s: &str) -> Result<(), EntryError> {
    if s.chars().any(char::is_control) {
        return Err(EntryError::ControlChar(field));
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), EntryError> {
    if t.is_empty() || t.trim() != t || t.contains(',') || t.chars().any(char::is_control) {
        return Err(EntryError::BadTag);
    }
    check_len(Field::Tags, t, MAX_TAG)
}

impl Entry {
    /// Checks every bound; the vault stores only entries that pass.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_len(Field::Username, &self.username, MAX_USERNAME)?;
        check_line(Field::Username, &self.username)?;
        check_len(Field::Password, &self.password, MAX_PASSWORD)?;
        check_line(Field::Password, &self.password)?;
        check_len(Field::Url, &self.url, MAX_URL)?;
        check_line(Field::Url, &self.url)?;
        check_len(Field::Notes, &self.notes, MAX_NOTES)?;
        if self.notes.contains('\0') {
            return Err(EntryError::ControlChar(Field::Notes));
        }
        check_len(Field::Totp, &self.totp, MAX_TOTP)?;
        check_line(Field::Totp, &self.totp)?;
        if self.tags.len() > MAX_TAGS {
            return Err(EntryError::TooManyTags);
        }
        self.tags.iter().try_for_each(|t| check_tag(t))
    }

    /// The stored record (see the crate docs for the layout).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, EntryError> {
        self.validate()?;
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.modified.to_le_bytes());
        for s in [
            &self.username,
            &self.password,
            &self.url,
            &self.notes,
            &self.totp,
        ] {
            // validate() bounds every field far below u16::MAX.
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.push(self.tags.len() as u8);
        for t in &self.tags {
            out.push(t.len() as u8);
            out.extend_from_slice(t.as_bytes());
        }
        Ok(out)
    }

    /// Decodes a stored record, refusing anything `encode` would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let mut cur = bytes;
        let [version] = take::<1>(&mut cur)?;
        if version != ENTRY_VERSION {
            return Err(EntryError::Version(version));
        }
        let created = u64::from_le_bytes(take(&mut cur)?);
        let modified = u64::from_le_bytes(take(&mut cur)?);
        let mut text = || -> Result<Zeroizing<String>, EntryError> {
            let len = usize::from(u16::from_le_bytes(take(&mut cur)?));
            let raw = take_slice(&mut cur, len)?;
            let s = core::str::from_utf8(raw).map_err(|_| EntryError::NotUtf8)?;
            Ok(Zeroizing::new(String::from(s)))
        };
        let username = text()?;
        let password = text()?;
        let url = text()?;
        let notes = text()?;
        let totp = text()?;
        let [count] = take::<1>(&mut cur)?;
        if usize::from(count) > MAX_TAGS {
            return Err(EntryError::TooManyTags);
        }
        let mut tags = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let [len] = take::<1>(&mut cur)?;
            let raw = take_slice(&mut cur, usize::from(len))?;
            let s = core::str::from_utf8(raw).map_err(|_| EntryError::NotUtf8)?;
            tags.push(String::from(s));
        }
        if !cur.is_empty() {
            return Err(EntryError::TrailingBytes);
        }
        let e = Entry {
            username,
            password,
            url,
            notes,
            totp,
            tags,
            created,
            modified,
        };
        e.validate()?;
        Ok(e)
    }

    /// Parses the `pass` text form: the first line is the password; `username:`/`login:`/`user:`,
    /// `url:`, `totp:` (or a bare `otpauth://` line) and `tags:` lines set those fields; every
    /// other line goes to the notes. `created:`/`modified:` lines are ignored.
    pub fn from_text(text: &str) -> Result<Entry, EntryError> {
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let Some(password) = lines.next().filter(|p| !p.is_empty()) else {
            return Err(EntryError::NoPassword);
        };
        let mut e = Entry::default();
        e.password = Zeroizing::new(String::from(password));
        let mut notes = Zeroizing::new(String::new());
        for line in lines {
            if line.starts_with("otpauth://") {
                e.totp = Zeroizing::new(String::from(line));
                continue;
            }
            let kv = line.split_once(':').and_then(|(k, v)| {
                let k = k.trim().to_ascii_lowercase();
                let field = match k.as_str() {
                    "created" | "modified" => return Some((None, v)),
                    "username" | "login" | "user" => Field::Username,
                    "url" => Field::Url,
                    "totp" | "otp" => Field::Totp,
                    "tags" => Field::Tags,
                    _ => return None,
                };
                Some((Some(field), v.trim()))
            });
            match kv {
                Some((None, _)) => {}
                Some((Some(Field::Username), v)) => e.username = Zeroizing::new(String::from(v)),
                Some((Some(Field::Url), v)) => e.url = Zeroizing::new(String::from(v)),
                Some((Some(Field::Totp), v)) => e.totp = Zeroizing::new(String::from(v)),
                Some((Some(_), v)) => {
                    e.tags = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect();
                }
                None => {
                    if !notes.is_empty() {
                        notes.push('\n');
                    }
                    notes.push_str(line);
                    if notes.len() > MAX_NOTES {
                        return Err(EntryError::TooLong {
                            field: Field::Notes,
                            max: MAX_NOTES,
                        });
                    }
                }
            }
        }
        // Trailing empty lines (a final newline) are not notes.
        let trimmed = notes.trim_end_matches('\n').len();
        notes.truncate(trimmed);
        e.notes = notes;
        e.validate()?;
        Ok(e)
    }

    /// The text form `passman.Show` prints: like `from_text` reads, the TOTP secret replaced by
    /// [`TOTP_HIDDEN`], with the times.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        let _ = writeln!(s, "{}", &*self.password);
        if !self.username.is_empty() {
            let _ = writeln!(s, "username: {}", &*self.username);
        }
        if !self.url.is_empty() {
            let _ = writeln!(s, "url: {}", &*self.url);
        }
        if !self.totp.is_empty() {
            let _ = writeln!(s, "totp: {TOTP_HIDDEN}");
        }
        if !self.tags.is_empty() {
            let _ = writeln!(s, "tags: {}", self.tags.join(", "));
        }
        let _ = writeln!(s, "created: {}", self.created);
        let _ = writeln!(s, "modified: {}", self.modified);
        if !self.notes.is_empty() {
            let _ = writeln!(s, "{}", &*self.notes);
        }
        s
    }

    /// One field as text (`Totp` is refused by the caller before this is reached).
    pub fn field(&self, field: Field) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        match field {
            Field::Password => s.push_str(&self.password),
            Field::Username => s.push_str(&self.username),
            Field::Url => s.push_str(&self.url),
            Field::Notes => s.push_str(&self.notes),
            Field::Totp => s.push_str(&self.totp),
            Field::Tags => s.push_str(&self.tags.join(",")),
            Field::Created => {
                let _ = write!(s, "{}", self.created);
            }
            Field::Modified => {
                let _ = write!(s, "{}", self.modified);
            }
        }
        s
    }
}

fn take_slice<'a>(cur: &mut &'a [u8], n: usize) -> Result<&'a [u8], EntryError> {
    if n > cur.len() {
        return Err(EntryError::Truncated);
    }
    let (head, tail) = cur.split_at(n);
    *cur = tail;
    Ok(head)
}

fn take<const N: usize>(cur: &mut &[u8]) -> Result<[u8; N], EntryError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take_slice(cur, N)?);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            username: Zeroizing::new("alice".into()),
            password: Zeroizing::new("hunter2".into()),
            url: Zeroizing::new("https://github.com".into()),
            notes: Zeroizing::new("line one\nline two".into()),
            totp: Zeroizing::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into()),
            tags: vec!["work".into(), "code".into()],
            created: 1_700_000_000,
            modified: 1_700_000_100,
        }
    }

    #[test]
    fn record_encoding_is_the_documented_layout() {
        let mut e = Entry::default();
        e.password = Zeroizing::new("pw".into());
        e.tags = vec!["t".into()];
        e.created = 1;
        e.modified = 2;
        let bytes = e.encode().unwrap();
        let mut want = vec![1u8];
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&[0, 0, 2, 0, b'p', b'w', 0, 0, 0, 0, 0, 0, 1, 1, b't']);
        assert_eq!(&bytes[..], &want[..]);
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn decode_refuses_truncation_trailing_bytes_and_unknown_versions() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(Entry::decode(&long), Err(EntryError::TrailingBytes));
        let mut v2 = bytes.to_vec();
        v2[0] = 2;
        assert_eq!(Entry::decode(&v2), Err(EntryError::Version(2)));
    }

    #[test]
    fn oversize_fields_are_refused_with_the_field_named() {
        let mut e = sample();
        e.password = Zeroizing::new("x".repeat(MAX_PASSWORD + 1));
        assert_eq!(
            e.encode().unwrap_err().to_string(),
            "password longer than 1024 bytes"
        );
        let mut e = sample();
        e.tags = (0..=MAX_TAGS).map(|i| alloc::format!("t{i}")).collect();
        assert_eq!(e.validate(), Err(EntryError::TooManyTags));
        let mut e = sample();
        e.username = Zeroizing::new("a\nb".into());
        assert_eq!(e.validate(), Err(EntryError::ControlChar(Field::Username)));
    }

    #[test]
    fn text_form_reads_pass_files() {
        let e = Entry::from_text(
            "s3cret\nlogin: bob\nURL: https://x.org\nsome note\notpauth://totp/x?secret=GEZDGNBV\ntags: a, b\n\n",
        )
        .unwrap();
        assert_eq!(&*e.password, "s3cret");
        assert_eq!(&*e.username, "bob");
        assert_eq!(&*e.url, "https://x.org");
        assert_eq!(&*e.notes, "some note");
        assert_eq!(&*e.totp, "otpauth://totp/x?secret=GEZDGNBV");
        assert_eq!(e.tags, ["a", "b"]);
        assert_eq!(Entry::from_text(""), Err(EntryError::NoPassword));
        assert_eq!(Entry::from_text("\nuser: x"), Err(EntryError::NoPassword));
    }

    #[test]
    fn show_text_hides_the_totp_secret_and_reads_back() {
        let e = sample();
        let t = e.to_text();
        assert!(!t.contains("GEZDGNBV"), "{}", &*t);
        let back = Entry::from_text(&t).unwrap();
        assert_eq!(back.password, e.password);
        assert_eq!(back.username, e.username);
        assert_eq!(back.notes, e.notes);
        assert_eq!(back.tags, e.tags);
        assert_eq!(&*back.totp, TOTP_HIDDEN);
    }

    #[test]
    fn debug_hides_secrets() {
        let s = alloc::format!("{:?}", sample());
        assert!(!s.contains("hunter2") && !s.contains("alice"), "{s}");
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            user in "[a-z@.]{0,40}", pw in "[ -~]{0,80}", url in "[ -~]{0,60}",
            notes in "[ -~\n]{0,200}", totp in "[A-Z2-7]{0,40}",
            tags in proptest::collection::vec("[a-z]{1,10}", 0..MAX_TAGS),
            created in any::<u64>(), modified in any::<u64>(),
        ) {
            let e = Entry {
                username: Zeroizing::new(user), password: Zeroizing::new(pw),
                url: Zeroizing::new(url), notes: Zeroizing::new(notes),
                totp: Zeroizing::new(totp), tags, created, modified,
            };
            let bytes = e.encode().unwrap();
            prop_assert!(bytes.len() <= MAX_ENTRY_LEN);
            prop_assert_eq!(Entry::decode(&bytes).unwrap(), e);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(e) = Entry::decode(&bytes) {
                prop_assert_eq!(&e.encode().unwrap()[..], &bytes[..]);
            }
        }
    }
}
