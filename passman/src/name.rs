//! Entry names: the qrexec service argument, so dom0 policy can allow or deny each entry.
//! Only qrexec's argument charset (`A-Z a-z 0-9 + - . _`), 1 to [`MAX_NAME_LEN`] bytes.

use alloc::string::String;
use core::fmt;

/// Longest entry name, bytes (qrexec's service+argument stays well under its 255-byte limit).
pub const MAX_NAME_LEN: usize = 128;

/// Why a string is not an entry name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    TooLong,
    /// A byte outside `A-Z a-z 0-9 + - . _`.
    BadChar,
    /// `.` or `..`, which policy tools and file-based imports treat specially.
    Dots,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "entry name empty",
            NameError::TooLong => "entry name longer than 128 bytes",
            NameError::BadChar => "entry name may only hold A-Z a-z 0-9 + - . _",
            NameError::Dots => "entry name may not be . or ..",
        })
    }
}

/// Whether `b` is in qrexec's service-argument charset.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_')
}

/// A validated entry name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryName(String);

impl EntryName {
    /// Checks `s` against the charset and length.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !s.bytes().all(is_name_byte) {
            return Err(NameError::BadChar);
        }
        if s == "." || s == ".." {
            return Err(NameError::Dots);
        }
        Ok(EntryName(String::from(s)))
    }

    /// A valid name made from arbitrary text (imports): `/` becomes `.`, other bytes outside the
    /// charset `_`, cut to the maximum; `None` if nothing usable is left.
    pub fn sanitize(s: &str) -> Option<Self> {
        let mut out = String::new();
        for c in s.trim().chars() {
            if out.len() >= MAX_NAME_LEN {
                break;
            }
            out.push(match c {
                '/' | '\\' => '.',
                c if c.is_ascii() && is_name_byte(c as u8) => c,
                ' ' => '_',
                _ => '_',
            });
        }
        let trimmed = out.trim_matches('.');
        EntryName::new(trimmed).ok()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_against_the_qrexec_argument_charset() {
        assert!(EntryName::new("github.com").is_ok());
        assert!(EntryName::new("a+b-c_d.E9").is_ok());
        assert_eq!(EntryName::new(""), Err(NameError::Empty));
        assert_eq!(EntryName::new("a/b"), Err(NameError::BadChar));
        assert_eq!(EntryName::new("a b"), Err(NameError::BadChar));
        assert_eq!(EntryName::new("ä"), Err(NameError::BadChar));
        assert_eq!(EntryName::new(".."), Err(NameError::Dots));
        assert_eq!(
            EntryName::new(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong)
        );
        assert!(EntryName::new(&"x".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn sanitize_maps_paths_and_foreign_characters() {
        assert_eq!(
            EntryName::sanitize("web/github.com").unwrap().as_str(),
            "web.github.com"
        );
        assert_eq!(
            EntryName::sanitize("My Bank (old)").unwrap().as_str(),
            "My_Bank__old_"
        );
        assert_eq!(EntryName::sanitize("///"), None);
        assert_eq!(
            EntryName::sanitize(&"y".repeat(500))
                .unwrap()
                .as_str()
                .len(),
            MAX_NAME_LEN
        );
    }
}
