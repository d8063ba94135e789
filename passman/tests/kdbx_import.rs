//! KDBX 4 import of files written by an independent implementation (pykeepass, PyPI): AES-256 +
//! Argon2d, ChaCha20 + Argon2id and ChaCha20 + AES-KDF, every entry brought across, through
//! `passman.Import`.
//! Needs pykeepass (`apt-get install python3-pykeepass`); without it the test says so and passes
//! unless PASSMAN_REQUIRE_KDBX=1, which `cargo xtask test` sets after installing it.

use std::path::Path;
use std::process::Command;

use passman::{Config, Passman};
use platform_api::{Entropy, Instant};
use vault_store::{KdfLimits, MemDevice};

const MAKE: &str = r#"
import os, sys
from pykeepass import create_database
path, cipher, kdf = sys.argv[1], sys.argv[2], sys.argv[3]
kp = create_database(path, password='kdbx pass')
h = kp.kdbx.header.value.dynamic_header
if cipher == 'chacha20':
    h.cipher_id.data = 'chacha20'
    h.encryption_iv.data = os.urandom(12)
d = h.kdf_parameters.data.dict
if kdf == 'argon2id':
    d['$UUID'].value = bytes.fromhex('9e298b1956db4773b23dfc3ec6f0a1e6')
if kdf == 'aeskdf':
    # AES-KDF takes R (rounds) and S (seed): rename the rounds entry in place.
    d['$UUID'].value = bytes.fromhex('c9d9f39a628a4460bf740d08c18a4fea')
    c = d['I']; c.key = 'R'; c.value = 1000
    items = [(('R' if k == 'I' else k), v) for k, v in d.items()]
    d.clear()
    for k, v in items:
        d[k] = v
else:
    # Small costs so a debug build of the test stays quick; the code path is the same.
    d['M'].value = 1024 * 1024
    d['I'].value = 2
# Older pykeepass (Debian 12's 4.0.3) writes the header's cached raw bytes: drop them so the
# changed KDF and cipher are what is written and what the key is derived from.
if 'data' in kp.kdbx.header:
    del kp.kdbx.header['data']
root = kp.root_group
kp.add_entry(root, 'github.com', 'alice', 'gh-secret', url='https://github.com',
             notes='line one\nline two', tags=['work', 'code'],
             otp='otpauth://totp/GitHub:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=GitHub')
kp.add_entry(root, 'My Bank', 'bob', 'b@nk <&> "quoted"')
g = kp.add_group(root, 'mail')
e = kp.add_entry(g, 'mail.example', 'carol', 'old-mail-pw')
kp.save()
e.save_history()
e.password = 'new-mail-pw'
kp.save()
kp.add_entry(root, 'unicode', 'dave', 'pässwörd-€')
kp.save()
"#;

struct Rng(u64);
impl Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 33) as u8;
        }
    }
}

/// The first Python with pykeepass: Debian's (`apt-get install python3-pykeepass`, what
/// `cargo xtask test` installs) before whatever `python3` is first on PATH.
fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import pykeepass"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn have_pykeepass() -> bool {
    python().is_some()
}

fn make(dir: &Path, cipher: &str, kdf: &str) -> Vec<u8> {
    let path = dir.join(format!("{cipher}-{kdf}.kdbx"));
    let st = Command::new(python().expect("pykeepass"))
        .args(["-c", MAKE, path.to_str().unwrap(), cipher, kdf])
        .status()
        .expect("python3");
    assert!(st.success(), "pykeepass failed");
    std::fs::read(path).unwrap()
}

fn call(pm: &mut Passman<&mut MemDevice>, svc: &str, arg: &str, input: &[u8]) -> String {
    let r = pm.handle(Instant(1), "dom0", svc, arg, input, &mut Rng(3));
    assert_eq!(r.code, 0, "{svc}+{arg}: {}", r.text());
    String::from_utf8(r.out.to_vec()).unwrap()
}

#[test]
fn kdbx4_files_from_pykeepass_import_every_entry() {
    if !have_pykeepass() {
        assert!(
            std::env::var("PASSMAN_REQUIRE_KDBX").is_err(),
            "pykeepass missing but PASSMAN_REQUIRE_KDBX is set"
        );
        eprintln!(
            "SKIPPED kdbx import: pykeepass not installed (apt-get install python3-pykeepass)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("passman-kdbx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (cipher, kdf) in [
        ("aes256", "argon2d"),
        ("chacha20", "argon2id"),
        ("chacha20", "aeskdf"),
    ] {
        let file = make(&dir, cipher, kdf);
        // Wrong password: one-line error, nothing imported.
        let err = passman::kdbx::read(&file, b"nope").unwrap_err();
        assert_eq!(err, passman::kdbx::KdbxError::WrongPassword);

        let mut dev = MemDevice::new(512, 256);
        let cfg = Config {
            kdf_limits: KdfLimits::insecure_for_tests(),
            ..Config::default()
        };
        let mut pm = Passman::new(&mut dev, cfg, Instant(0));
        call(
            &mut pm,
            "passman.Init",
            "",
            b"v\nkdf=argon2id:8:1:1\ntime=1700000000\n",
        );
        let mut input = b"kdbx\nkdbx pass\n".to_vec();
        input.extend_from_slice(&file);
        assert_eq!(
            call(&mut pm, "passman.Import", "", &input),
            "imported 4 entries\n",
            "{cipher}/{kdf}"
        );
        assert_eq!(
            call(&mut pm, "passman.List", "", b""),
            "My_Bank\ngithub.com\nmail.example\nunicode\n"
        );
        assert_eq!(call(&mut pm, "passman.Get", "github.com", b""), "gh-secret");
        assert_eq!(
            call(&mut pm, "passman.GetField", "github.com", b"username"),
            "alice"
        );
        assert_eq!(
            call(&mut pm, "passman.GetField", "github.com", b"url"),
            "https://github.com"
        );
        assert_eq!(
            call(&mut pm, "passman.GetField", "github.com", b"notes"),
            "line one\nline two"
        );
        assert_eq!(
            call(&mut pm, "passman.GetField", "github.com", b"tags"),
            "work,code"
        );
        let created: u64 = call(&mut pm, "passman.GetField", "github.com", b"created")
            .parse()
            .unwrap();
        assert!(created > 1_600_000_000, "creation time {created}");
        assert_eq!(call(&mut pm, "passman.Otp", "github.com", b"").len(), 7);
        assert_eq!(
            call(&mut pm, "passman.Get", "My_Bank", b""),
            "b@nk <&> \"quoted\""
        );
        // The current password, not the one kept in history.
        assert_eq!(
            call(&mut pm, "passman.Get", "mail.example", b""),
            "new-mail-pw"
        );
        assert_eq!(call(&mut pm, "passman.Get", "unicode", b""), "pässwörd-€");
    }
    std::fs::remove_dir_all(&dir).ok();
}
