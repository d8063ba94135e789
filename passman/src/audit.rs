//! The audit log kept inside the vault: which qube called which service on which entry, when,
//! and what came of it; a bounded ring (oldest dropped), readable from dom0 via `passman.Audit`.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use crate::request::Service;

/// Most records kept; older ones are dropped.
pub const MAX_AUDIT: usize = 4096;
/// Longest source name kept (Qubes limits qube names to 31 bytes).
pub const MAX_SOURCE: usize = 64;
/// Audit encoding version.
pub const AUDIT_VERSION: u8 = 1;

/// What came of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Ok,
    /// The vault was locked.
    Locked,
    /// No such entry.
    NotFound,
    /// Refused: management service from a non-admin source.
    Refused,
    /// Wrong passphrase.
    WrongPassphrase,
    /// Unlock attempt during the back-off.
    RateLimited,
    /// Bad request or a failure.
    Error,
}

const OUTCOMES: [Outcome; 7] = [
    Outcome::Ok,
    Outcome::Locked,
    Outcome::NotFound,
    Outcome::Refused,
    Outcome::WrongPassphrase,
    Outcome::RateLimited,
    Outcome::Error,
];

impl Outcome {
    fn code(self) -> u8 {
        OUTCOMES.iter().position(|o| *o == self).unwrap_or(0) as u8
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Locked => "locked",
            Outcome::NotFound => "not-found",
            Outcome::Refused => "refused",
            Outcome::WrongPassphrase => "wrong-passphrase",
            Outcome::RateLimited => "rate-limited",
            Outcome::Error => "error",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Vault clock, Unix seconds (0 if the clock was never set).
    pub time: u64,
    /// Calling qube as qrexec named it.
    pub source: String,
    /// The service called.
    pub service: Service,
    /// Entry name, empty for services without one.
    pub entry: String,
    /// Result.
    pub outcome: Outcome,
}

/// Why a stored log does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditError {
    /// Ends inside a record.
    Truncated,
    /// Unknown version, service or outcome code, a bad name, or trailing bytes.
    Malformed,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditError::Truncated => "audit log truncated",
            AuditError::Malformed => "audit log malformed",
        })
    }
}

/// The ring of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditLog {
    records: VecDeque<Record>,
}

impl AuditLog {
    /// Appends, dropping the oldest beyond [`MAX_AUDIT`]; over-long names are cut.
    pub fn push(&mut self, mut r: Record) {
        truncate(&mut r.source, MAX_SOURCE);
        truncate(&mut r.entry, crate::name::MAX_NAME_LEN);
        if self.records.len() >= MAX_AUDIT {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    /// Records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Stored form: version, u32 count, then per record u64 time, u8 service, u8 outcome,
    /// u8 + source, u8 + entry (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.records.len() * 48);
        out.push(AUDIT_VERSION);
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.time.to_le_bytes());
            out.push(r.service.code());
            out.push(r.outcome.code());
            // push() cut both names below 256 bytes.
            out.push(r.source.len() as u8);
            out.extend_from_slice(r.source.as_bytes());
            out.push(r.entry.len() as u8);
            out.extend_from_slice(r.entry.as_bytes());
        }
        out
    }

    /// The inverse of `encode`.
    pub fn decode(bytes: &[u8]) -> Result<AuditLog, AuditError> {
        let mut cur = bytes;
        let [v] = take::<1>(&mut cur)?;
        if v != AUDIT_VERSION {
            return Err(AuditError::Malformed);
        }
        let count = u32::from_le_bytes(take(&mut cur)?) as usize;
        if count > MAX_AUDIT {
            return Err(AuditError::Malformed);
        }
        let mut log = AuditLog::default();
        for _ in 0..count {
            let time = u64::from_le_bytes(take(&mut cur)?);
            let [s, o] = take::<2>(&mut cur)?;
            let service = Service::from_code(s).ok_or(AuditError::Malformed)?;
            let outcome = *OUTCOMES.get(usize::from(o)).ok_or(AuditError::Malformed)?;
            let source = string(&mut cur, MAX_SOURCE)?;
            let entry = string(&mut cur, crate::name::MAX_NAME_LEN)?;
            log.records.push_back(Record {
                time,
                source,
                service,
                entry,
                outcome,
            });
        }
        if !cur.is_empty() {
            return Err(AuditError::Malformed);
        }
        Ok(log)
    }

    /// One line per record: `TIME SOURCE SERVICE ENTRY OUTCOME` (`-` for no entry).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.records {
            let entry = if r.entry.is_empty() { "-" } else { &r.entry };
            let _ = writeln!(
                s,
                "{} {} {} {} {}",
                r.time,
                r.source,
                r.service.name(),
                entry,
                r.outcome.word()
            );
        }
        s
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn take<const N: usize>(cur: &mut &[u8]) -> Result<[u8; N], AuditError> {
    if cur.len() < N {
        return Err(AuditError::Truncated);
    }
    let (head, tail) = cur.split_at(N);
    *cur = tail;
    let mut a = [0u8; N];
    a.copy_from_slice(head);
    Ok(a)
}

fn string(cur: &mut &[u8], max: usize) -> Result<String, AuditError> {
    let [len] = take::<1>(cur)?;
    let len = usize::from(len);
    if len > max {
        return Err(AuditError::Malformed);
    }
    if cur.len() < len {
        return Err(AuditError::Truncated);
    }
    let (head, tail) = cur.split_at(len);
    *cur = tail;
    core::str::from_utf8(head)
        .map(String::from)
        .map_err(|_| AuditError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(i: u64) -> Record {
        Record {
            time: i,
            source: "work".into(),
            service: Service::Get,
            entry: "github.com".into(),
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn ring_drops_the_oldest_beyond_the_bound() {
        let mut log = AuditLog::default();
        for i in 0..(MAX_AUDIT as u64 + 10) {
            log.push(rec(i));
        }
        assert_eq!(log.len(), MAX_AUDIT);
        assert_eq!(log.iter().next().unwrap().time, 10);
        assert_eq!(AuditLog::decode(&log.encode()).unwrap(), log);
    }

    #[test]
    fn text_lines() {
        let mut log = AuditLog::default();
        log.push(rec(5));
        log.push(Record {
            time: 6,
            source: "dom0".into(),
            service: Service::List,
            entry: String::new(),
            outcome: Outcome::Locked,
        });
        assert_eq!(
            log.to_text(),
            "5 work passman.Get github.com ok\n6 dom0 passman.List - locked\n"
        );
    }

    #[test]
    fn decode_refuses_truncated_and_bad_codes() {
        let mut log = AuditLog::default();
        log.push(rec(1));
        let bytes = log.encode();
        for n in 0..bytes.len() {
            assert!(AuditLog::decode(&bytes[..n]).is_err());
        }
        let mut bad = bytes.clone();
        bad[13] = 200; // service code
        assert_eq!(AuditLog::decode(&bad), Err(AuditError::Malformed));
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(AuditLog::decode(&huge), Err(AuditError::Malformed));
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            recs in proptest::collection::vec(
                (any::<u64>(), "[a-z0-9-]{1,31}", 0u8..16, "[a-z.]{0,40}", 0u8..7), 0..20)
        ) {
            let mut log = AuditLog::default();
            for (time, source, s, entry, o) in recs {
                log.push(Record {
                    time, source, entry,
                    service: Service::from_code(s).unwrap(),
                    outcome: OUTCOMES[o as usize],
                });
            }
            prop_assert_eq!(AuditLog::decode(&log.encode()).unwrap(), log);
        }
    }
}
