//! The vault service, sans-IO: one call (source, service, argument, whole stdin) in, one reply
//! (exit code, stdout) out; lock state, idle auto-lock, unlock back-off and the audit log.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::time::Duration;

use platform_api::{Entropy, Instant};
use vault_store::{BlockDevice, KdfLimits, MemDevice, Vault, VaultError, HEADER_LEN};
use zeroize::Zeroizing;

use crate::audit::{AuditLog, Outcome, Record};
use crate::entry::{Entry, TOTP_HIDDEN};
use crate::generate::generate;
use crate::name::EntryName;
use crate::request::{ImportFormat, Request, Service};
use crate::totp::{Totp, TotpError};
use crate::{import, FORMAT_VERSION};

/// Most entries one vault holds.
pub const MAX_ENTRIES: usize = 20_000;
/// Longest unlock back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One record change of a commit: key, new value (`None` removes it).
type Change = (Vec<u8>, Option<Zeroizing<Vec<u8>>>);

const META: &[u8] = b"passman";
const AUDIT: &[u8] = b"audit";
const ENTRY_PREFIX: &[u8] = b"e/";

/// Exit codes of the services (stdout holds a one-line message on failure).
pub mod exit {
    /// Served.
    pub const OK: i32 = 0;
    /// Some other failure (device, corrupt vault).
    pub const FAILED: i32 = 1;
    /// No such entry.
    pub const NOT_FOUND: i32 = 2;
    /// The vault is locked (or not created).
    pub const LOCKED: i32 = 3;
    /// The vault or the entry is full.
    pub const FULL: i32 = 4;
    /// Wrong passphrase or unlock back-off.
    pub const DENIED: i32 = 5;
    /// The request does not decode.
    pub const BAD_REQUEST: i32 = 6;
}

/// Settings (from the kernel command line in the app).
#[derive(Debug, Clone)]
pub struct Config {
    /// Lock after this long without a call.
    pub idle: Duration,
    /// Qubes besides dom0 allowed management services.
    pub admins: Vec<String>,
    /// Audit records of reads are saved at most this long after the read.
    pub audit_delay: Duration,
    /// What KDF parameters a vault may ask for.
    pub kdf_limits: KdfLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle: Duration::from_secs(300),
            admins: Vec::new(),
            audit_delay: Duration::from_secs(1),
            kdf_limits: KdfLimits::default(),
        }
    }
}

/// A call's result.
pub struct Reply {
    /// qrexec exit code.
    pub code: i32,
    /// What goes to the caller's stdout (a secret for reads, a one-line message on failure).
    pub out: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for Reply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reply")
            .field("code", &self.code)
            .field("len", &self.out.len())
            .finish()
    }
}

impl Reply {
    fn ok(out: impl Into<Vec<u8>>) -> Reply {
        Reply {
            code: exit::OK,
            out: Zeroizing::new(out.into()),
        }
    }

    fn err(code: i32, msg: impl core::fmt::Display) -> Reply {
        Reply {
            code,
            out: Zeroizing::new(format!("passman: {msg}\n").into_bytes()),
        }
    }

    /// The message text when `code != 0`.
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.out).unwrap_or("")
    }
}

enum State<D: BlockDevice> {
    Locked(D),
    Open(Box<Vault<D>>),
    /// Only while a transition is in progress.
    Moving,
}

/// The password vault service over a block device `D`.
pub struct Passman<D: BlockDevice> {
    state: State<D>,
    cfg: Config,
    /// The vault clock: Unix seconds at a monotonic instant.
    clock: Option<(u64, Instant)>,
    /// Whether the clock was given this boot (TOTP needs it).
    clock_set: bool,
    last_call: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    audit: AuditLog,
    audit_dirty: Option<Instant>,
}

impl<D: BlockDevice> core::fmt::Debug for Passman<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Passman")
            .field("unlocked", &self.is_unlocked())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

fn entry_key(name: &EntryName) -> Vec<u8> {
    let mut k = ENTRY_PREFIX.to_vec();
    k.extend_from_slice(name.as_str().as_bytes());
    k
}

fn vault_error(e: VaultError) -> Reply {
    let code = match e {
        VaultError::Full { .. } => exit::FULL,
        VaultError::WrongPassphrase => exit::DENIED,
        VaultError::NotFormatted => exit::LOCKED,
        _ => exit::FAILED,
    };
    Reply::err(code, e)
}

impl<D: BlockDevice> Passman<D> {
    /// A locked vault service over `dev` (the vault is opened by `passman.Unlock`).
    pub fn new(dev: D, cfg: Config, now: Instant) -> Self {
        Passman {
            state: State::Locked(dev),
            cfg,
            clock: None,
            clock_set: false,
            last_call: now,
            failures: 0,
            retry_at: None,
            audit: AuditLog::default(),
            audit_dirty: None,
        }
    }

    /// Whether the vault is open.
    pub fn is_unlocked(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether `source` may call management services.
    pub fn is_admin(&self, source: &str) -> bool {
        source == "dom0" || self.cfg.admins.iter().any(|a| a == source)
    }

    /// Unix seconds on the vault clock (0 if never known).
    pub fn unix_now(&self, now: Instant) -> u64 {
        match self.clock {
            Some((base, at)) => base.saturating_add(now.saturating_duration_since(at).as_secs()),
            None => 0,
        }
    }

    /// The next instant `poll` has work: auto-lock or a pending audit save.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.is_unlocked() {
            return None;
        }
        let lock = self.last_call.saturating_add(self.cfg.idle);
        Some(match self.audit_dirty {
            Some(t) => lock.min(t.saturating_add(self.cfg.audit_delay)),
            None => lock,
        })
    }

    /// Timers: saves pending audit records, locks after the idle time. Returns a log line if
    /// something happened.
    pub fn poll<E: Entropy + ?Sized>(&mut self, now: Instant, entropy: &mut E) -> Option<String> {
        if !self.is_unlocked() {
            return None;
        }
        if now >= self.last_call.saturating_add(self.cfg.idle) {
            return Some(match self.lock(entropy) {
                Ok(()) => "passman: locked after idle time".to_string(),
                Err(e) => format!("passman: locked after idle time; audit save failed: {e}"),
            });
        }
        if self
            .audit_dirty
            .is_some_and(|t| now >= t.saturating_add(self.cfg.audit_delay))
        {
            if let Err(e) = self.save(entropy) {
                return Some(format!("passman: audit save failed: {e}"));
            }
        }
        None
    }

    /// Saves pending audit records and locks (poweroff, `passman.Lock`, idle).
    pub fn lock<E: Entropy + ?Sized>(&mut self, entropy: &mut E) -> Result<(), VaultError> {
        let mut result = Ok(());
        if self.audit_dirty.is_some() {
            result = self.save(entropy);
        }
        self.state = match core::mem::replace(&mut self.state, State::Moving) {
            State::Open(v) => State::Locked(v.close()),
            other => other,
        };
        self.audit = AuditLog::default();
        self.audit_dirty = None;
        result
    }

    /// Serves one call. `input` is the caller's whole stdin.
    pub fn handle<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        source: &str,
        service: &str,
        argument: &str,
        input: &[u8],
        entropy: &mut E,
    ) -> Reply {
        let svc = Service::from_name(service);
        let entry = if svc.is_some_and(Service::takes_entry) {
            argument
        } else {
            ""
        };
        let (reply, outcome) = match svc {
            Some(s) if s.is_management() && !self.is_admin(source) => (
                Reply::err(
                    exit::DENIED,
                    "management services are for dom0 and admin qubes",
                ),
                Outcome::Refused,
            ),
            _ => match Request::decode(service, argument, input) {
                Err(e) => (Reply::err(exit::BAD_REQUEST, e), Outcome::Error),
                Ok(req) => self.dispatch(now, req, entropy),
            },
        };
        if let Some(s) = svc {
            self.record(
                now,
                Record {
                    time: self.unix_now(now),
                    source: source.into(),
                    service: s,
                    entry: entry.into(),
                    outcome,
                },
            );
            // A write already saved with its record; reads are saved within audit_delay.
        }
        if self.is_unlocked() {
            self.last_call = now;
        }
        reply
    }

    /// Audits a call refused before it was served (a management service from a non-admin).
    pub fn refused(&mut self, now: Instant, source: &str, service: Service, argument: &str) {
        let entry = if service.takes_entry() { argument } else { "" };
        self.record(
            now,
            Record {
                time: self.unix_now(now),
                source: source.into(),
                service,
                entry: entry.into(),
                outcome: Outcome::Refused,
            },
        );
    }

    fn record(&mut self, now: Instant, r: Record) {
        self.audit.push(r);
        if self.audit_dirty.is_none() {
            self.audit_dirty = Some(now);
        }
    }

    fn vault(&mut self) -> Option<&mut Vault<D>> {
        match &mut self.state {
            State::Open(v) => Some(v),
            _ => None,
        }
    }

    /// Writes the audit log and meta into the records and saves.
    fn save<E: Entropy + ?Sized>(&mut self, entropy: &mut E) -> Result<(), VaultError> {
        let audit = self.audit.encode();
        let meta = self.meta_bytes();
        let Some(v) = self.vault() else {
            return Ok(());
        };
        let r = v.records_mut();
        r.insert(AUDIT, &audit).map_err(VaultError::BadRecords)?;
        r.insert(META, &meta).map_err(VaultError::BadRecords)?;
        v.save(entropy)?;
        self.audit_dirty = None;
        Ok(())
    }

    fn meta_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(9);
        m.push(FORMAT_VERSION);
        let t = self.clock.map_or(0, |(base, _)| base);
        m.extend_from_slice(&t.to_le_bytes());
        m
    }

    /// Changes entry records, saves, and restores the old records if the save fails, so memory
    /// always matches the newest copy on disk.
    fn commit<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        changes: Vec<Change>,
        entropy: &mut E,
    ) -> Result<(), VaultError> {
        self.last_call = now;
        let Some(v) = self.vault() else {
            return Err(VaultError::NotFormatted);
        };
        let r = v.records_mut();
        let mut undo = Vec::with_capacity(changes.len());
        let mut failed = None;
        for (key, value) in changes {
            undo.push((key.clone(), r.get(&key).map(|b| Zeroizing::new(b.to_vec()))));
            let res = match value {
                Some(val) => r.insert(&key, &val).map_err(VaultError::BadRecords),
                None => {
                    r.remove(&key);
                    Ok(())
                }
            };
            if let Err(e) = res {
                failed = Some(e);
                break;
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => self.save(entropy),
        };
        if result.is_err() {
            if let Some(v) = self.vault() {
                let r = v.records_mut();
                for (key, old) in undo.into_iter().rev() {
                    match old {
                        Some(val) => {
                            let _ = r.insert(&key, &val);
                        }
                        None => {
                            r.remove(&key);
                        }
                    }
                }
            }
        }
        result
    }

    fn entry(&mut self, name: &EntryName) -> Result<Entry, Reply> {
        let Some(v) = self.vault() else {
            return Err(Reply::err(exit::LOCKED, "vault locked"));
        };
        let Some(bytes) = v.records().get(&entry_key(name)) else {
            return Err(Reply::err(exit::NOT_FOUND, format!("no entry {name}")));
        };
        Entry::decode(bytes).map_err(|e| Reply::err(exit::FAILED, format!("entry {name}: {e}")))
    }

    /// Entry names in order.
    pub fn names(&self) -> Vec<String> {
        match &self.state {
            State::Open(v) => v
                .records()
                .iter()
                .filter_map(|(k, _)| k.strip_prefix(ENTRY_PREFIX))
                .filter_map(|n| core::str::from_utf8(n).ok())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn entry_count(&mut self) -> usize {
        self.vault().map_or(0, |v| {
            v.records()
                .iter()
                .filter(|(k, _)| k.starts_with(ENTRY_PREFIX))
                .count()
        })
    }

    fn dispatch<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        req: Request,
        entropy: &mut E,
    ) -> (Reply, Outcome) {
        let locked = || (Reply::err(exit::LOCKED, "vault locked"), Outcome::Locked);
        let needs_open = !matches!(
            req,
            Request::Unlock(..)
                | Request::Init(..)
                | Request::Lock
                | Request::Status
                | Request::Audit
        );
        if needs_open && !self.is_unlocked() {
            return locked();
        }
        let out = |r: Result<Reply, Reply>| match r {
            Ok(r) => (r, Outcome::Ok),
            Err(r) if r.code == exit::NOT_FOUND => (r, Outcome::NotFound),
            Err(r) => (r, Outcome::Error),
        };
        match req {
            Request::Get(name) => out(self.entry(&name).map(|e| Reply::ok(e.password.as_bytes()))),
            Request::GetField(name, field) => out(self
                .entry(&name)
                .map(|e| Reply::ok(e.field(field).as_bytes()))),
            Request::Show(name) => {
                out(self.entry(&name).map(|e| Reply::ok(e.to_text().as_bytes())))
            }
            Request::List => {
                let mut s = String::new();
                for n in self.names() {
                    s.push_str(&n);
                    s.push('\n');
                }
                (Reply::ok(s), Outcome::Ok)
            }
            Request::Otp(name) => out(self.otp(now, &name)),
            Request::Put(name, mut entry) => {
                let t = self.unix_now(now);
                let old = match self.entry(&name) {
                    Ok(e) => Some(e),
                    Err(r) if r.code == exit::NOT_FOUND => None,
                    Err(r) => return (r, Outcome::Error),
                };
                if *entry.totp == TOTP_HIDDEN {
                    entry.totp = old.as_ref().map(|o| o.totp.clone()).unwrap_or_default();
                }
                entry.created = old.as_ref().map_or(t, |o| o.created);
                entry.modified = t;
                out(self
                    .store(now, &name, &entry, old.is_none(), entropy)
                    .map(|()| Reply::ok("")))
            }
            Request::Generate(name, len, classes) => {
                let pw = match generate(len, classes, entropy) {
                    Ok(p) => p,
                    Err(e) => return (Reply::err(exit::BAD_REQUEST, e), Outcome::Error),
                };
                let t = self.unix_now(now);
                let (mut entry, new) = match self.entry(&name) {
                    Ok(e) => (e, false),
                    Err(r) if r.code == exit::NOT_FOUND => {
                        let mut e = Entry::default();
                        e.created = t;
                        (e, true)
                    }
                    Err(r) => return (r, Outcome::Error),
                };
                entry.password = pw;
                entry.modified = t;
                out(self
                    .store(now, &name, &entry, new, entropy)
                    .map(|()| Reply::ok(entry.password.as_bytes())))
            }
            Request::Delete(name) => {
                if let Err(r) = self.entry(&name) {
                    return out(Err(r));
                }
                let r = self
                    .commit(now, alloc::vec![(entry_key(&name), None)], entropy)
                    .map(|()| Reply::ok(""))
                    .map_err(vault_error);
                out(r)
            }
            Request::Unlock(pw, time) => self.unlock(now, &pw, time),
            // A vault this service could not reopen would lock its owner out.
            Request::Init(_, kdf, _) | Request::Passwd(_, kdf)
                if !self.cfg.kdf_limits.allows(kdf) =>
            {
                (
                    Reply::err(
                        exit::BAD_REQUEST,
                        "KDF parameters beyond this vault's limits",
                    ),
                    Outcome::Error,
                )
            }
            Request::Init(pw, kdf, time) => self.init(now, &pw, kdf, time, entropy),
            Request::Lock => {
                if !self.is_unlocked() {
                    return (Reply::ok(""), Outcome::Ok);
                }
                let r = self.lock(entropy);
                out(r.map(|()| Reply::ok("")).map_err(vault_error))
            }
            Request::Passwd(pw, kdf) => {
                // Records (audit) first, then the re-wrap copies that body.
                let r = self.save(entropy).and_then(|()| match self.vault() {
                    Some(v) => v.change_passphrase(&pw, kdf, entropy),
                    None => Err(VaultError::NotFormatted),
                });
                out(r.map(|()| Reply::ok("")).map_err(vault_error))
            }
            Request::Audit => {
                if !self.is_unlocked() {
                    return locked();
                }
                (Reply::ok(self.audit.to_text()), Outcome::Ok)
            }
            Request::Status => {
                let n = self.entry_count();
                let s = match self.is_unlocked() {
                    true => format!("unlocked {n} entries\n"),
                    false => "locked\n".to_string(),
                };
                (Reply::ok(s), Outcome::Ok)
            }
            Request::Export(pw) => out(self.export(&pw, entropy)),
            Request::Import(format, pw, data) => out(self.import(now, format, &pw, &data, entropy)),
        }
    }

    fn store<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        name: &EntryName,
        entry: &Entry,
        new: bool,
        entropy: &mut E,
    ) -> Result<(), Reply> {
        if new && self.entry_count() >= MAX_ENTRIES {
            return Err(Reply::err(
                exit::FULL,
                format!("vault full: {MAX_ENTRIES} entries"),
            ));
        }
        let bytes = entry
            .encode()
            .map_err(|e| Reply::err(exit::BAD_REQUEST, e))?;
        self.commit(now, alloc::vec![(entry_key(name), Some(bytes))], entropy)
            .map_err(vault_error)
    }

    fn otp(&mut self, now: Instant, name: &EntryName) -> Result<Reply, Reply> {
        let e = self.entry(name)?;
        if !self.clock_set {
            return Err(Reply::err(exit::FAILED, TotpError::NoClock));
        }
        let totp = Totp::parse(&e.totp).map_err(|err| Reply::err(exit::FAILED, err))?;
        let mut code = totp.code(self.unix_now(now));
        code.push('\n');
        Ok(Reply::ok(code.as_bytes()))
    }

    fn set_clock(&mut self, now: Instant, time: Option<u64>) {
        if let Some(t) = time {
            self.clock = Some((t, now));
            self.clock_set = true;
        }
    }

    fn backoff_refusal(&self, now: Instant) -> Option<(Reply, Outcome)> {
        let at = self.retry_at?;
        if now >= at {
            return None;
        }
        let secs = at.saturating_duration_since(now).as_secs() + 1;
        Some((
            Reply::err(
                exit::DENIED,
                format!("too many wrong passphrases: retry in {secs} s"),
            ),
            Outcome::RateLimited,
        ))
    }

    fn unlock(&mut self, now: Instant, pw: &[u8], time: Option<u64>) -> (Reply, Outcome) {
        if let Some(refusal) = self.backoff_refusal(now) {
            return refusal;
        }
        if let State::Open(v) = &self.state {
            // Already open: the passphrase is still checked, since this can reset the clock.
            return match v.verify_passphrase(pw) {
                Ok(()) => {
                    self.failures = 0;
                    self.set_clock(now, time);
                    (Reply::ok(""), Outcome::Ok)
                }
                Err(e) => self.unlock_failed(now, e),
            };
        }
        let dev = match core::mem::replace(&mut self.state, State::Moving) {
            State::Locked(d) => d,
            other => {
                self.state = other;
                return (Reply::err(exit::FAILED, "vault busy"), Outcome::Error);
            }
        };
        match Vault::try_open(dev, pw, self.cfg.kdf_limits) {
            Ok(v) => {
                self.state = State::Open(Box::new(v));
                self.failures = 0;
                self.retry_at = None;
                self.last_call = now;
                self.load_meta(now);
                self.set_clock(now, time);
                (Reply::ok(""), Outcome::Ok)
            }
            Err((e, dev)) => {
                self.state = State::Locked(dev);
                self.unlock_failed(now, e)
            }
        }
    }

    /// A wrong passphrase doubles the back-off (1 s, 2 s, … up to [`MAX_BACKOFF`]).
    fn unlock_failed(&mut self, now: Instant, e: VaultError) -> (Reply, Outcome) {
        if e == VaultError::WrongPassphrase {
            self.failures = self.failures.saturating_add(1);
            let secs = 1u64 << self.failures.saturating_sub(1).min(16);
            let wait = Duration::from_secs(secs).min(MAX_BACKOFF);
            self.retry_at = Some(now.saturating_add(wait));
            return (vault_error(e), Outcome::WrongPassphrase);
        }
        (vault_error(e), Outcome::Error)
    }

    /// Reads the vault clock and the audit log out of the opened records, keeping records made
    /// while locked (they come after the stored ones).
    fn load_meta(&mut self, now: Instant) {
        let Some(v) = self.vault() else { return };
        let meta = v.records().get(META).map(<[u8]>::to_vec);
        let stored = v
            .records()
            .get(AUDIT)
            .and_then(|b| AuditLog::decode(b).ok())
            .unwrap_or_default();
        if let Some(m) = meta {
            if let Some(t) = m.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                let t = u64::from_le_bytes(t);
                if t > 0 && self.clock.is_none() {
                    self.clock = Some((t, now));
                }
            }
        }
        let pending = core::mem::replace(&mut self.audit, stored);
        for r in pending.iter() {
            self.audit.push(r.clone());
        }
        if !pending.is_empty() {
            self.audit_dirty = Some(now);
        }
    }

    fn init<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        pw: &[u8],
        kdf: vault_store::KdfParams,
        time: Option<u64>,
        entropy: &mut E,
    ) -> (Reply, Outcome) {
        if self.is_unlocked() {
            return (
                Reply::err(exit::FAILED, "vault is open: lock it first"),
                Outcome::Error,
            );
        }
        let mut dev = match core::mem::replace(&mut self.state, State::Moving) {
            State::Locked(d) => d,
            other => {
                self.state = other;
                return (Reply::err(exit::FAILED, "vault busy"), Outcome::Error);
            }
        };
        // Never format over an existing vault (even a damaged one): that would destroy its
        // only copy.
        let half = dev.sectors() / 2;
        let exists = has_magic(&mut dev, 0) || has_magic(&mut dev, half);
        if exists {
            self.state = State::Locked(dev);
            return (
                Reply::err(exit::FAILED, "a vault already exists on the device"),
                Outcome::Error,
            );
        }
        match Vault::try_create(dev, pw, kdf, entropy) {
            Ok(v) => {
                self.state = State::Open(Box::new(v));
                self.last_call = now;
                self.set_clock(now, time);
                let r = self.save(entropy);
                (
                    match r {
                        Ok(()) => Reply::ok(""),
                        Err(e) => vault_error(e),
                    },
                    Outcome::Ok,
                )
            }
            Err((e, dev)) => {
                self.state = State::Locked(dev);
                (vault_error(e), Outcome::Error)
            }
        }
    }

    fn export<E: Entropy + ?Sized>(&mut self, pw: &[u8], entropy: &mut E) -> Result<Reply, Reply> {
        let Some(v) = self.vault() else {
            return Err(Reply::err(exit::LOCKED, "vault locked"));
        };
        let kdf = v.kdf_params();
        let mut entries = vault_store::Records::new();
        for (k, val) in v
            .records()
            .iter()
            .filter(|(k, _)| k.starts_with(ENTRY_PREFIX))
        {
            entries
                .insert(k, val)
                .map_err(|e| Reply::err(exit::FAILED, e))?;
        }
        let slot = (HEADER_LEN + entries.encoded_len()).div_ceil(512);
        let mut dev = MemDevice::new(512, 2 * slot);
        {
            let mut backup = Vault::create(&mut dev, pw, kdf, entropy).map_err(vault_error)?;
            *backup.records_mut() = entries;
            backup.save(entropy).map_err(vault_error)?;
        }
        Ok(Reply::ok(dev.as_bytes()))
    }

    fn import<E: Entropy + ?Sized>(
        &mut self,
        now: Instant,
        format: ImportFormat,
        pw: &[u8],
        data: &[u8],
        entropy: &mut E,
    ) -> Result<Reply, Reply> {
        let entries = match format {
            ImportFormat::Pass => import::pass_bundle(data),
            ImportFormat::Kdbx => import::kdbx(data, pw),
            ImportFormat::Backup => import::backup(data, pw, self.cfg.kdf_limits),
        }
        .map_err(|e| Reply::err(exit::BAD_REQUEST, e))?;
        let t = self.unix_now(now);
        let existing = self.entry_count();
        let mut changes = Vec::with_capacity(entries.len());
        let mut new = 0usize;
        for (name, mut e) in entries {
            let key = entry_key(&name);
            if self
                .vault()
                .is_some_and(|v| v.records().get(&key).is_none())
            {
                new += 1;
            }
            if e.created == 0 {
                e.created = t;
            }
            if e.modified == 0 {
                e.modified = t;
            }
            let bytes = e
                .encode()
                .map_err(|err| Reply::err(exit::BAD_REQUEST, format!("entry {name}: {err}")))?;
            changes.push((key, Some(bytes)));
        }
        if existing + new > MAX_ENTRIES {
            return Err(Reply::err(
                exit::FULL,
                format!("vault full: {MAX_ENTRIES} entries"),
            ));
        }
        let n = changes.len();
        self.commit(now, changes, entropy).map_err(vault_error)?;
        let mut s = String::new();
        let _ = writeln!(s, "imported {n} entries");
        Ok(Reply::ok(s))
    }
}

fn has_magic<D: BlockDevice>(dev: &mut D, lba: u64) -> bool {
    let mut sector = alloc::vec![0u8; dev.sector_size()];
    dev.read(lba, &mut sector).is_ok() && sector.starts_with(&vault_store::MAGIC)
}
