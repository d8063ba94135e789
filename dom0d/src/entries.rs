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

/// One change to a running domain's QubesDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set a key.
    Write(String, String),
    /// Remove a key, or every key below it when it ends in `/`.
    Rm(String),
}

const FIREWALL: &str = "/qubes-firewall/";

/// The firewall client (`<ip>`) a key belongs to: `/qubes-firewall/<ip>` (the commit marker)
/// or `/qubes-firewall/<ip>/...`.
fn firewall_ip(k: &str) -> Option<&str> {
    let rest = k.strip_prefix(FIREWALL)?;
    let ip = rest.split('/').next().unwrap_or(rest);
    (!ip.is_empty()).then_some(ip)
}

type Db = BTreeMap<String, String>;

fn firewall_of<'a>(db: &'a Db, ip: &str) -> Vec<(&'a String, &'a String)> {
    db.iter()
        .filter(|(k, _)| firewall_ip(k) == Some(ip))
        .collect()
}

/// The changes that turn `old` into `new` the way dom0 makes them: other keys removed, then
/// written; a firewall client whose entries differ gets dom0's reload sequence (RM of its
/// rules, each rule written, the commit marker `/qubes-firewall/<ip>` written last), so the
/// VM never applies half a rule set.
pub fn changes(old: &Db, new: &Db) -> Vec<Change> {
    let mut out = Vec::new();
    for k in old.keys() {
        if firewall_ip(k).is_none() && !new.contains_key(k) {
            out.push(Change::Rm(k.clone()));
        }
    }
    for (k, v) in new {
        if firewall_ip(k).is_none() && old.get(k) != Some(v) {
            out.push(Change::Write(k.clone(), v.clone()));
        }
    }
    let ips: std::collections::BTreeSet<&str> = old
        .keys()
        .chain(new.keys())
        .filter_map(|k| firewall_ip(k))
        .collect();
    for ip in ips {
        let (before, after) = (firewall_of(old, ip), firewall_of(new, ip));
        if before == after {
            continue;
        }
        let marker = format!("{FIREWALL}{ip}");
        out.push(Change::Rm(format!("{marker}/")));
        if old.contains_key(&marker) && !new.contains_key(&marker) {
            out.push(Change::Rm(marker.clone()));
        }
        for (k, v) in after.iter().filter(|(k, _)| **k != marker) {
            out.push(Change::Write((*k).clone(), (*v).clone()));
        }
        // A file without the marker leaves the rules uncommitted, as it says.
        if let Some(commit) = new.get(&marker) {
            out.push(Change::Write(marker, commit.clone()));
        }
    }
    out
}

/// Applies `changes` to a copy (what a fresh connection is then synced with).
pub fn apply(db: &mut Db, changes: &[Change]) {
    for c in changes {
        match c {
            Change::Write(k, v) => {
                db.insert(k.clone(), v.clone());
            }
            Change::Rm(k) if k.ends_with('/') => db.retain(|p, _| !p.starts_with(k.as_str())),
            Change::Rm(k) => {
                db.remove(k);
            }
        }
    }
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

    fn db(text: &str) -> Db {
        parse(text).unwrap()
    }

    #[test]
    fn changes_remove_then_write_and_reload_a_changed_firewall_with_the_marker_last() {
        let old = db("/name fw\n/gone x\n/same 1\n/qubes-firewall/10.0.0.2 \n\
                      /qubes-firewall/10.0.0.2/policy drop\n/qubes-firewall/10.0.0.2/0000 action=accept\n\
                      /qubes-firewall/10.0.0.3 \n/qubes-firewall/10.0.0.3/0000 action=drop\n\
                      /qubes-firewall/10.0.0.4 \n/qubes-firewall/10.0.0.4/0000 action=drop\n");
        let new = db("/name fw2\n/same 1\n/qubes-firewall/10.0.0.2 \n\
                      /qubes-firewall/10.0.0.2/policy drop\n/qubes-firewall/10.0.0.2/0000 action=drop\n\
                      /qubes-firewall/10.0.0.4 \n/qubes-firewall/10.0.0.4/0000 action=drop\n");
        let w = |k: &str, v: &str| Change::Write(k.into(), v.into());
        let rm = |k: &str| Change::Rm(k.into());
        assert_eq!(
            changes(&old, &new),
            [
                rm("/gone"),
                w("/name", "fw2"),
                rm("/qubes-firewall/10.0.0.2/"),
                w("/qubes-firewall/10.0.0.2/0000", "action=drop"),
                w("/qubes-firewall/10.0.0.2/policy", "drop"),
                w("/qubes-firewall/10.0.0.2", ""),
                rm("/qubes-firewall/10.0.0.3/"),
                rm("/qubes-firewall/10.0.0.3"),
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }

    proptest::proptest! {
        /// Applying the changes to the old copy gives the new one, for any two databases
        /// over a few keys (firewall and others).
        #[test]
        fn applying_changes_gives_the_new_db(
            old in proptest::collection::btree_map(key(), "[a-z]{0,3}", 0..8),
            new in proptest::collection::btree_map(key(), "[a-z]{0,3}", 0..8),
        ) {
            let mut got = old.clone();
            apply(&mut got, &changes(&old, &new));
            proptest::prop_assert_eq!(got, new);
        }
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            "/[a-c]",
            "/qubes-firewall/[12]",
            "/qubes-firewall/[12]/(policy|000[0-2])",
        ]
    }
}
