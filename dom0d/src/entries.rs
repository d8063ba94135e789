//! The QubesDB entries file: one `PATH VALUE` a line (value = the rest of the line, may be
//! empty), `#` comments and blank lines ignored; bounded like the daemon's own limits.

use std::collections::BTreeMap;
use std::fmt;

/// Largest entries file read (QubesDB holds small values; a larger file is a mistake).
pub const MAX_FILE: usize = 1 << 20;
/// Longest path QubesDB accepts (shorter than its 64-byte field, `QDB_MAX_PATH`).
pub const MAX_PATH: usize = qubes::qubesdb::wire::PATH_FIELD_LEN - 1;
/// Longest value QubesDB accepts (below `QDB_MAX_DATA`).
pub const MAX_VALUE: usize = qubes::qubesdb::wire::MAX_DATA - 1;

/// A line of the entries file that is not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntriesError {
    /// The file is larger than [`MAX_FILE`].
    TooLarge(usize),
    /// The path does not start with `/`, is too long, or has bytes QubesDB refuses.
    BadPath {
        /// 1-based line number.
        line: usize,
    },
    /// The value is longer than [`MAX_VALUE`].
    ValueTooLong {
        /// 1-based line number.
        line: usize,
    },
}

impl fmt::Display for EntriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "entries file of {n} bytes exceeds {MAX_FILE}"),
            Self::BadPath { line } => write!(
                f,
                "line {line}: the path must start with '/', have at most {MAX_PATH} bytes of [A-Za-z0-9/._:+@-]"
            ),
            Self::ValueTooLong { line } => {
                write!(f, "line {line}: value longer than {MAX_VALUE} bytes")
            }
        }
    }
}

impl std::error::Error for EntriesError {}

fn path_ok(p: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "/._:+@-".contains(c);
    p.starts_with('/') && p.len() <= MAX_PATH && p.chars().all(ok)
}

/// Parses the file's text; a later line for the same path wins.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, EntriesError> {
    if text.len() > MAX_FILE {
        return Err(EntriesError::TooLarge(text.len()));
    }
    let mut m = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (path, value) = l.split_once([' ', '\t']).unwrap_or((l, ""));
        if !path_ok(path) {
            return Err(EntriesError::BadPath { line });
        }
        if value.len() > MAX_VALUE {
            return Err(EntriesError::ValueTooLong { line });
        }
        m.insert(path.to_string(), value.to_string());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_with_the_rest_of_the_line_as_value() {
        let m = parse(
            "# comment\n\n/name fw-unikernel\n/qubes-firewall/10.137.0.2/0000 action=accept proto=tcp\n/empty\n/name again\n",
        )
        .unwrap();
        assert_eq!(m["/name"], "again");
        assert_eq!(
            m["/qubes-firewall/10.137.0.2/0000"],
            "action=accept proto=tcp"
        );
        assert_eq!(m["/empty"], "");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn hostile_entries_are_refused_with_the_line() {
        assert_eq!(
            parse("/a 1\nname x\n"),
            Err(EntriesError::BadPath { line: 2 })
        );
        assert_eq!(
            parse("/a b/../c x"),
            Ok([("/a".to_string(), "b/../c x".to_string())].into())
        );
        assert_eq!(parse("/a\u{0} x"), Err(EntriesError::BadPath { line: 1 }));
        let long = format!("/{} x", "p".repeat(MAX_PATH));
        assert_eq!(parse(&long), Err(EntriesError::BadPath { line: 1 }));
        let big = format!("/v {}", "x".repeat(MAX_VALUE + 1));
        assert_eq!(parse(&big), Err(EntriesError::ValueTooLong { line: 1 }));
        let huge = "#".repeat(MAX_FILE + 1);
        assert_eq!(parse(&huge), Err(EntriesError::TooLarge(MAX_FILE + 1)));
    }
}
