//! The qrexec services and their requests: service name + argument (the entry name) + the
//! caller's stdin, decoded with every length bounded before it is kept.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use vault_store::KdfParams;
use zeroize::Zeroizing;

use crate::entry::{Entry, EntryError, Field};
use crate::generate::{Classes, GenerateError, DEFAULT_LEN};
use crate::name::{EntryName, NameError};

/// Longest passphrase, bytes.
pub const MAX_PASSPHRASE: usize = 1024;
/// Largest stdin for small requests (unlock, field names, generate options), bytes.
pub const MAX_SMALL_INPUT: usize = 4096;
/// Largest stdin of `passman.Put` (an entry's text form), bytes.
pub const MAX_PUT_INPUT: usize = 32 * 1024;
/// Largest stdin of `passman.Import` (a KeePass file, a backup or a `pass` bundle), bytes.
pub const MAX_IMPORT_INPUT: usize = 8 * 1024 * 1024;

/// The services, one qrexec service name each (`passman.<Name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Password of `+ENTRY` on stdout.
    Get,
    /// One field (named on stdin) of `+ENTRY`.
    GetField,
    /// The whole entry as text, TOTP secret hidden.
    Show,
    /// Entry names, one a line (its own service so policy can hide the list).
    List,
    /// The current TOTP code of `+ENTRY`.
    Otp,
    /// Create or replace `+ENTRY` from its text form on stdin. Management.
    Put,
    /// Generate a password for `+ENTRY` (new or existing), print it. Management.
    Generate,
    /// Delete `+ENTRY`. Management.
    Delete,
    /// Unlock with the passphrase on stdin. Management.
    Unlock,
    /// Lock now. Management.
    Lock,
    /// Format an empty vault on the device. Management.
    Init,
    /// Change the passphrase. Management.
    Passwd,
    /// The audit log as text. Management (dom0).
    Audit,
    /// The entries as an encrypted backup on stdout. Management.
    Export,
    /// Entries from a `pass` bundle, a KeePass KDBX4 file or a backup. Management.
    Import,
    /// `locked`/`unlocked`, entry count. Management.
    Status,
}

/// Every service, in a fixed order (index = audit code).
pub const SERVICES: [Service; 16] = [
    Service::Get,
    Service::GetField,
    Service::Show,
    Service::List,
    Service::Otp,
    Service::Put,
    Service::Generate,
    Service::Delete,
    Service::Unlock,
    Service::Lock,
    Service::Init,
    Service::Passwd,
    Service::Audit,
    Service::Export,
    Service::Import,
    Service::Status,
];

/// The qrexec service names served, same order as [`SERVICES`].
pub const SERVICE_NAMES: [&str; 16] = [
    "passman.Get",
    "passman.GetField",
    "passman.Show",
    "passman.List",
    "passman.Otp",
    "passman.Put",
    "passman.Generate",
    "passman.Delete",
    "passman.Unlock",
    "passman.Lock",
    "passman.Init",
    "passman.Passwd",
    "passman.Audit",
    "passman.Export",
    "passman.Import",
    "passman.Status",
];

impl Service {
    /// The service called `name`.
    pub fn from_name(name: &str) -> Option<Service> {
        SERVICE_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| SERVICES.get(i).copied())
    }

    /// Its qrexec name.
    pub fn name(self) -> &'static str {
        SERVICE_NAMES[self.code() as usize]
    }

    /// Its audit code (index in [`SERVICES`]).
    pub fn code(self) -> u8 {
        SERVICES.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    /// The service with audit code `c`.
    pub fn from_code(c: u8) -> Option<Service> {
        SERVICES.get(usize::from(c)).copied()
    }

    /// Whether the argument is an entry name (else it must be empty).
    pub fn takes_entry(self) -> bool {
        matches!(
            self,
            Service::Get
                | Service::GetField
                | Service::Show
                | Service::Otp
                | Service::Put
                | Service::Generate
                | Service::Delete
        )
    }

    /// Changes the vault or its state, or reads the audit log: the shipped policy allows these
    /// only from dom0 (and a named admin qube), and the vault refuses them from anyone else.
    pub fn is_management(self) -> bool {
        !matches!(
            self,
            Service::Get | Service::GetField | Service::Show | Service::List | Service::Otp
        )
    }

    /// Most stdin bytes the service takes; more is refused as `InputTooLong`.
    pub fn max_input(self) -> usize {
        match self {
            Service::Put => MAX_PUT_INPUT,
            Service::Import => MAX_IMPORT_INPUT,
            _ => MAX_SMALL_INPUT,
        }
    }
}

/// What to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// A `pass` bundle made by `qpass import-pass` from decrypted files.
    Pass,
    /// A KeePass KDBX4 file.
    Kdbx,
    /// A backup made by `passman.Export`.
    Backup,
}

/// A decoded request.
#[derive(Debug)]
pub enum Request {
    /// Read the password.
    Get(EntryName),
    /// Read one field.
    GetField(EntryName, Field),
    /// Read the entry as text.
    Show(EntryName),
    /// List names.
    List,
    /// TOTP code.
    Otp(EntryName),
    /// Create or replace.
    Put(EntryName, Entry),
    /// Generate a password of this length and these classes.
    Generate(EntryName, usize, Classes),
    /// Delete.
    Delete(EntryName),
    /// Unlock; optionally set the vault clock (Unix seconds).
    Unlock(Zeroizing<Vec<u8>>, Option<u64>),
    /// Lock.
    Lock,
    /// Create a vault.
    Init(Zeroizing<Vec<u8>>, KdfParams, Option<u64>),
    /// New passphrase.
    Passwd(Zeroizing<Vec<u8>>, KdfParams),
    /// Read the audit log.
    Audit,
    /// Export under this passphrase.
    Export(Zeroizing<Vec<u8>>),
    /// Import; passphrase (empty for `pass`), payload.
    Import(ImportFormat, Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>),
    /// State.
    Status,
}

/// Why a request was refused before reaching the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not one of our services.
    UnknownService,
    /// The entry name argument is bad.
    BadName(NameError),
    /// An argument where none is taken.
    UnexpectedArgument,
    /// Stdin longer than the service takes.
    InputTooLong {
        /// The service's maximum.
        max: usize,
    },
    /// Stdin is not UTF-8 where text is expected.
    NotUtf8,
    /// The passphrase line is missing, empty or too long.
    BadPassphrase,
    /// An unknown or malformed option line.
    BadOption,
    /// The field name is not one of ours, or is the TOTP secret.
    BadField,
    /// The entry text is bad.
    Entry(EntryError),
    /// The generate options are bad.
    Generate(GenerateError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownService => f.write_str("unknown service"),
            RequestError::BadName(e) => e.fmt(f),
            RequestError::UnexpectedArgument => f.write_str("this service takes no argument"),
            RequestError::InputTooLong { max } => write!(f, "input longer than {max} bytes"),
            RequestError::NotUtf8 => f.write_str("input is not UTF-8"),
            RequestError::BadPassphrase => {
                f.write_str("passphrase line missing, empty or over 1024 bytes")
            }
            RequestError::BadOption => f.write_str("option line not understood"),
            RequestError::BadField => {
                f.write_str("field: password, username, url, notes, tags, created or modified")
            }
            RequestError::Entry(e) => e.fmt(f),
            RequestError::Generate(e) => e.fmt(f),
        }
    }
}

fn text(input: &[u8]) -> Result<&str, RequestError> {
    core::str::from_utf8(input).map_err(|_| RequestError::NotUtf8)
}

/// Splits off the first line (without `\n`/`\r\n`) as the passphrase.
fn passphrase_line(input: &[u8]) -> Result<(Zeroizing<Vec<u8>>, &[u8]), RequestError> {
    let (line, rest) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line.len() > MAX_PASSPHRASE {
        return Err(RequestError::BadPassphrase);
    }
    Ok((Zeroizing::new(line.to_vec()), rest))
}

/// Options after the passphrase: `time=UNIX` and `kdf=...` lines.
fn options(rest: &[u8]) -> Result<(Option<u64>, KdfParams), RequestError> {
    let mut time = None;
    let mut kdf = KdfParams::default();
    for line in text(rest)?.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or(RequestError::BadOption)?;
        match k {
            "time" => time = Some(v.parse().map_err(|_| RequestError::BadOption)?),
            "kdf" => kdf = parse_kdf(v).ok_or(RequestError::BadOption)?,
            _ => return Err(RequestError::BadOption),
        }
    }
    Ok((time, kdf))
}

/// `argon2id` (64 MiB, t 3), `scrypt` (N 2^15, r 8), or `argon2id:M_KIB:T:P` / `scrypt:LOGN:R:P`.
fn parse_kdf(v: &str) -> Option<KdfParams> {
    let mut parts = v.split(':');
    let alg = parts.next()?;
    let nums: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match (alg, nums.as_slice()) {
        ("argon2id", []) => Some(KdfParams::default()),
        ("scrypt", []) => Some(KdfParams::scrypt_default()),
        ("argon2id", [m, t, p]) if *m >= 8 && *t >= 1 && *p >= 1 => Some(KdfParams::Argon2id {
            m_kib: *m,
            t: *t,
            p: *p,
        }),
        ("scrypt", [n, r, p]) if (1..=24).contains(n) && *r >= 1 && *p >= 1 => {
            Some(KdfParams::Scrypt {
                log_n: *n as u8,
                r: *r,
                p: *p,
            })
        }
        _ => None,
    }
}

impl Request {
    /// Decodes one call: `service` and `argument` as qrexec delivered them, `input` the whole
    /// stdin (the caller stops reading at [`Service::max_input`]).
    pub fn decode(service: &str, argument: &str, input: &[u8]) -> Result<Request, RequestError> {
        let svc = Service::from_name(service).ok_or(RequestError::UnknownService)?;
        if input.len() > svc.max_input() {
            return Err(RequestError::InputTooLong {
                max: svc.max_input(),
            });
        }
        let name = if svc.takes_entry() {
            Some(EntryName::new(argument).map_err(RequestError::BadName)?)
        } else if !argument.is_empty() {
            return Err(RequestError::UnexpectedArgument);
        } else {
            None
        };
        let name = || name.clone().ok_or(RequestError::BadName(NameError::Empty));
        Ok(match svc {
            Service::Get => Request::Get(name()?),
            Service::Show => Request::Show(name()?),
            Service::Otp => Request::Otp(name()?),
            Service::Delete => Request::Delete(name()?),
            Service::List => Request::List,
            Service::Lock => Request::Lock,
            Service::Audit => Request::Audit,
            Service::Status => Request::Status,
            Service::GetField => {
                let f = text(input)?.trim();
                let field = Field::from_name(f)
                    .filter(|f| *f != Field::Totp)
                    .ok_or(RequestError::BadField)?;
                Request::GetField(name()?, field)
            }
            Service::Put => {
                let entry = Entry::from_text(text(input)?).map_err(RequestError::Entry)?;
                Request::Put(name()?, entry)
            }
            Service::Generate => {
                let opts = text(input)?.trim();
                let mut words = opts.split_ascii_whitespace();
                let len = match words.next() {
                    None => DEFAULT_LEN,
                    Some(w) => w
                        .parse()
                        .map_err(|_| RequestError::Generate(GenerateError::Length))?,
                };
                let classes = match words.next() {
                    None => Classes::default(),
                    Some(w) => Classes::parse(w).map_err(RequestError::Generate)?,
                };
                if words.next().is_some() {
                    return Err(RequestError::BadOption);
                }
                Request::Generate(name()?, len, classes)
            }
            Service::Unlock => {
                let (pw, rest) = passphrase_line(input)?;
                let (time, _) = options(rest)?;
                Request::Unlock(pw, time)
            }
            Service::Init => {
                let (pw, rest) = passphrase_line(input)?;
                let (time, kdf) = options(rest)?;
                Request::Init(pw, kdf, time)
            }
            Service::Passwd => {
                let (pw, rest) = passphrase_line(input)?;
                let (_, kdf) = options(rest)?;
                Request::Passwd(pw, kdf)
            }
            Service::Export => Request::Export(passphrase_line(input)?.0),
            Service::Import => {
                let (fmt_line, rest) = match input.iter().position(|&b| b == b'\n') {
                    Some(i) => (&input[..i], &input[i + 1..]),
                    None => return Err(RequestError::BadOption),
                };
                let format = match fmt_line {
                    b"pass" => ImportFormat::Pass,
                    b"kdbx" => ImportFormat::Kdbx,
                    b"backup" => ImportFormat::Backup,
                    _ => return Err(RequestError::BadOption),
                };
                match format {
                    ImportFormat::Pass => Request::Import(
                        format,
                        Zeroizing::new(Vec::new()),
                        Zeroizing::new(rest.to_vec()),
                    ),
                    _ => {
                        let (pw, payload) = passphrase_line(rest)?;
                        Request::Import(format, pw, Zeroizing::new(payload.to_vec()))
                    }
                }
            }
        })
    }
}

/// The name `s` of a service with a trailing `+` removed, as some daemons send it.
pub fn trim_service(s: &str) -> &str {
    s.strip_suffix('+').unwrap_or(s)
}

/// Used by the client-facing error line.
pub fn service_list() -> String {
    SERVICE_NAMES.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics_and_refuses_what_it_cannot_hold(
            svc in 0usize..SERVICE_NAMES.len(),
            arg in "[A-Za-z0-9+._-]{0,140}",
            input in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let service = SERVICE_NAMES[svc];
            match Request::decode(service, &arg, &input) {
                Ok(_) => {
                    let s = Service::from_name(service).unwrap();
                    prop_assert!(!s.takes_entry() || (1..=crate::name::MAX_NAME_LEN).contains(&arg.len()));
                    prop_assert!(s.takes_entry() || arg.is_empty());
                }
                Err(e) => {
                    let line = alloc::format!("{}", e);
                    prop_assert!(!line.contains('\n'));
                }
            }
        }
    }

    #[test]
    fn service_names_round_trip_through_codes() {
        for s in SERVICES {
            assert_eq!(Service::from_name(s.name()), Some(s));
            assert_eq!(Service::from_code(s.code()), Some(s));
        }
        assert_eq!(Service::from_name("passman.Nope"), None);
    }

    #[test]
    fn entry_services_need_a_valid_name_and_others_refuse_one() {
        assert!(matches!(
            Request::decode("passman.Get", "github.com", b""),
            Ok(Request::Get(n)) if n.as_str() == "github.com"
        ));
        assert_eq!(
            Request::decode("passman.Get", "", b"").unwrap_err(),
            RequestError::BadName(NameError::Empty)
        );
        assert_eq!(
            Request::decode("passman.Get", "a/b", b"").unwrap_err(),
            RequestError::BadName(NameError::BadChar)
        );
        assert_eq!(
            Request::decode("passman.List", "x", b"").unwrap_err(),
            RequestError::UnexpectedArgument
        );
        assert_eq!(
            Request::decode("qubes.Other", "", b"").unwrap_err(),
            RequestError::UnknownService
        );
    }

    #[test]
    fn unlock_takes_a_passphrase_line_and_a_time() {
        match Request::decode("passman.Unlock", "", b"correct horse\ntime=1700000000\n").unwrap() {
            Request::Unlock(pw, t) => {
                assert_eq!(&pw[..], b"correct horse");
                assert_eq!(t, Some(1_700_000_000));
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            Request::decode("passman.Unlock", "", b"\n").unwrap_err(),
            RequestError::BadPassphrase
        );
        assert_eq!(
            Request::decode("passman.Unlock", "", b"pw\nsudo=1\n").unwrap_err(),
            RequestError::BadOption
        );
        let long = [b'x'; MAX_PASSPHRASE + 1];
        assert_eq!(
            Request::decode("passman.Unlock", "", &long).unwrap_err(),
            RequestError::BadPassphrase
        );
    }

    #[test]
    fn init_reads_kdf_choices() {
        match Request::decode("passman.Init", "", b"pw\nkdf=scrypt\n").unwrap() {
            Request::Init(_, k, None) => assert_eq!(k, KdfParams::scrypt_default()),
            r => panic!("{r:?}"),
        }
        match Request::decode("passman.Init", "", b"pw\nkdf=argon2id:8:1:1\n").unwrap() {
            Request::Init(_, k, None) => assert_eq!(k, KdfParams::insecure_for_tests()),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            Request::decode("passman.Init", "", b"pw\nkdf=argon2id:1:1:1\n").unwrap_err(),
            RequestError::BadOption
        );
    }

    #[test]
    fn input_longer_than_the_service_takes_is_refused() {
        let big = alloc::vec![b'a'; MAX_SMALL_INPUT + 1];
        assert_eq!(
            Request::decode("passman.GetField", "x", &big).unwrap_err(),
            RequestError::InputTooLong {
                max: MAX_SMALL_INPUT
            }
        );
    }

    #[test]
    fn the_totp_secret_is_not_a_readable_field() {
        assert_eq!(
            Request::decode("passman.GetField", "x", b"totp\n").unwrap_err(),
            RequestError::BadField
        );
        assert!(matches!(
            Request::decode("passman.GetField", "x", b"username\n"),
            Ok(Request::GetField(_, Field::Username))
        ));
    }

    #[test]
    fn generate_options() {
        assert!(matches!(
            Request::decode("passman.Generate", "x", b""),
            Ok(Request::Generate(_, DEFAULT_LEN, _))
        ));
        assert!(matches!(
            Request::decode("passman.Generate", "x", b"32 lud\n"),
            Ok(Request::Generate(_, 32, c)) if !c.symbols
        ));
        assert!(Request::decode("passman.Generate", "x", b"abc").is_err());
        assert!(Request::decode("passman.Generate", "x", b"12 q").is_err());
    }

    #[test]
    fn import_needs_a_format_line() {
        assert!(matches!(
            Request::decode("passman.Import", "", b"kdbx\npw\nDATA"),
            Ok(Request::Import(ImportFormat::Kdbx, pw, data)) if &pw[..] == b"pw" && &data[..] == b"DATA"
        ));
        assert!(matches!(
            Request::decode("passman.Import", "", b"pass\nDATA"),
            Ok(Request::Import(ImportFormat::Pass, _, data)) if &data[..] == b"DATA"
        ));
        assert_eq!(
            Request::decode("passman.Import", "", b"zip\n").unwrap_err(),
            RequestError::BadOption
        );
    }
}
