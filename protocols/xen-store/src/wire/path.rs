//! Checked xenstore paths (`XsPath`) and permission strings (`<letter><domid>`).
//! Rules from docs/misc/xenstore.txt \[X\]: charset, no `//`, no trailing `/`, length limits.

use alloc::string::String;
use core::fmt;

use platform_api::{Access, DomId, Perm};

use super::{WireError, ABS_PATH_MAX, REL_PATH_MAX};

/// The special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";
/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";

/// Which path rule a string breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The empty string.
    Empty,
    /// Longer than `XENSTORE_ABS_PATH_MAX` (absolute) or `XENSTORE_REL_PATH_MAX` (relative).
    TooLong {
        /// Its length.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// A byte outside `[A-Za-z0-9-/_@]`.
    BadChar(u8),
    /// Contains `//`.
    DoubleSlash,
    /// Ends with `/` (other than the root).
    TrailingSlash,
    /// Starts with `@` but is not one of the two special watch paths.
    UnknownSpecial,
    /// A special path where only a node path is allowed.
    Special,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("path is empty"),
            Self::TooLong { len, max } => write!(f, "path of {len} bytes exceeds {max}"),
            Self::BadChar(c) => write!(f, "path contains byte {c:#04x}"),
            Self::DoubleSlash => f.write_str("path contains //"),
            Self::TrailingSlash => f.write_str("path ends with /"),
            Self::UnknownSpecial => f.write_str("path starts with @ but is not a special path"),
            Self::Special => f.write_str("special path not allowed here"),
        }
    }
}

impl core::error::Error for PathError {}

/// A xenstore path that passed the checks: absolute (`/…`), relative to the caller's
/// `/local/domain/<domid>`, or one of the special watch paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XsPath(String);

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

impl XsPath {
    /// Checks a node path or a special watch path.
    pub fn new(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('@') {
            return if s == RELEASE_DOMAIN || s == INTRODUCE_DOMAIN {
                Ok(Self(String::from(s)))
            } else {
                Err(PathError::UnknownSpecial)
            };
        }
        let max = if s.starts_with('/') {
            ABS_PATH_MAX
        } else {
            REL_PATH_MAX
        };
        if s.len() > max {
            return Err(PathError::TooLong { len: s.len(), max });
        }
        if let Some(&c) = s.as_bytes().iter().find(|&&c| !valid_char(c)) {
            return Err(PathError::BadChar(c));
        }
        if s.contains("//") {
            return Err(PathError::DoubleSlash);
        }
        if s.len() > 1 && s.ends_with('/') {
            return Err(PathError::TrailingSlash);
        }
        if s == "/" || s.starts_with('/') {
            return Ok(Self(String::from(s)));
        }
        // A relative path: `a/b`; a lone `/` or leading `/` was handled above.
        Ok(Self(String::from(s)))
    }

    /// Checks a path that must name a node (not a special watch path).
    pub fn node(s: &str) -> Result<Self, PathError> {
        let p = Self::new(s)?;
        if p.is_special() {
            return Err(PathError::Special);
        }
        Ok(p)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it starts with `/`.
    pub fn is_absolute(&self) -> bool {
        self.0.starts_with('/')
    }

    /// Whether it is `@releaseDomain` or `@introduceDomain`.
    pub fn is_special(&self) -> bool {
        self.0.starts_with('@')
    }

    /// The absolute form: relative paths are resolved against `/local/domain/<domid>`.
    pub fn resolve(&self, domid: DomId) -> String {
        if self.is_absolute() || self.is_special() {
            self.0.clone()
        } else {
            alloc::format!("/local/domain/{domid}/{}", self.0)
        }
    }
}

impl fmt::Display for XsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for XsPath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, PathError> {
        Self::new(s)
    }
}

/// Parses `<r|w|b|n><domid>`.
pub fn parse_perm(b: &[u8]) -> Result<Perm, WireError> {
    let (&letter, digits) = b.split_first().ok_or(WireError::BadPerm)?;
    let access = match letter {
        b'r' => Access::Read,
        b'w' => Access::Write,
        b'b' => Access::Both,
        b'n' => Access::None,
        _ => return Err(WireError::BadPerm),
    };
    let n = super::parse_decimal(digits).ok_or(WireError::BadPerm)?;
    let domid = u32::try_from(n)
        .ok()
        .and_then(|n| DomId::new(n).ok())
        .ok_or(WireError::BadPerm)?;
    Ok(Perm { domid, access })
}

/// Appends `<letter><domid>\0`.
pub(crate) fn put_perm(out: &mut alloc::vec::Vec<u8>, p: &Perm) {
    out.push(match p.access {
        Access::Read => b'r',
        Access::Write => b'w',
        Access::Both => b'b',
        Access::None => b'n',
    });
    super::put_num(out, p.domid);
}
