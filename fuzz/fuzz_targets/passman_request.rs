//! Sequences of qrexec calls (service, source, argument, stdin) against an unlocked passman vault
//! on a memory device; every call must answer with an exit code, and the vault must reopen after.
//! The same bytes also go to the KDBX reader (file, decrypted payload, XML) and the request decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passman::request::SERVICE_NAMES;
use passman::{Config, Passman, Request};
use platform_api::{Entropy, Instant};
use vault_store::{KdfLimits, MemDevice};

const PW: &[u8] = b"fuzz passphrase";
const SOURCES: [&str; 3] = ["dom0", "work", "vault-admin"];

struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (self.0 >> 33) as u8;
        }
    }
}

fn cfg() -> Config {
    Config {
        admins: vec!["vault-admin".into()],
        kdf_limits: KdfLimits::insecure_for_tests(),
        ..Config::default()
    }
}

/// A vault with two entries, made once.
fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut dev = MemDevice::new(512, 64);
        let mut pm = Passman::new(&mut dev, cfg(), Instant(0));
        let mut rng = Counter(1);
        let mut init = PW.to_vec();
        init.extend_from_slice(b"\nkdf=argon2id:8:1:1\ntime=1700000000\n");
        assert_eq!(pm.handle(Instant(0), "dom0", "passman.Init", "", &init, &mut rng).code, 0);
        let r = pm.handle(
            Instant(0),
            "dom0",
            "passman.Put",
            "github.com",
            b"pw\nusername: a\ntotp: GEZDGNBVGY3TQOJQ\n",
            &mut rng,
        );
        assert_eq!(r.code, 0);
        assert_eq!(pm.handle(Instant(0), "dom0", "passman.Put", "bank", b"b\n", &mut rng).code, 0);
        drop(pm);
        dev.as_bytes().to_vec()
    })
}

/// A KDBX inner header choosing the ChaCha20 stream (id 3) with a 4-byte key, then the end.
const INNER: &[u8] = &[1, 4, 0, 0, 0, 3, 0, 0, 0, 2, 4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0];

fuzz_target!(|data: &[u8]| {
    let _ = passman::kdbx::read(data, b"pw");
    // The decrypted side of a KDBX file: raw or gzip payload, and XML after a valid inner header.
    let _ = passman::kdbx::parse_payload(data, data.first() == Some(&0x1f));
    let mut xml = INNER.to_vec();
    xml.extend_from_slice(data);
    let _ = passman::kdbx::parse_payload(&xml, false);

    let mut dev = MemDevice::from_bytes(512, image().to_vec());
    let mut rng = Counter(7);
    {
        let mut pm = Passman::new(&mut dev, cfg(), Instant(0));
        let mut unlock = PW.to_vec();
        unlock.extend_from_slice(b"\ntime=1700000000\n");
        assert_eq!(pm.handle(Instant(1), "dom0", "passman.Unlock", "", &unlock, &mut rng).code, 0);
        // Calls: [service][source][arg len][arg][input len u16 LE][input] ...
        let mut cur = data;
        let mut t = 2u64;
        while cur.len() >= 3 {
            let svc = SERVICE_NAMES[usize::from(cur[0]) % SERVICE_NAMES.len()];
            let src = SOURCES[usize::from(cur[1]) % SOURCES.len()];
            let alen = usize::from(cur[2]).min(cur.len() - 3);
            let arg = String::from_utf8_lossy(&cur[3..3 + alen]).into_owned();
            cur = &cur[3 + alen..];
            let ilen = match cur {
                [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])).min(cur.len() - 2),
                _ => 0,
            };
            let input = cur.get(2..2 + ilen).unwrap_or(&[]);
            cur = cur.get(2 + ilen..).unwrap_or(&[]);
            let _ = Request::decode(svc, &arg, input);
            // The run loop hands only charset-checked arguments; keep that precondition.
            let arg: String = arg
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "+-._".contains(*c))
                .collect();
            let r = pm.handle(Instant(t * 1_000_000_000), src, svc, &arg, input, &mut rng);
            assert!((0..=6).contains(&r.code));
            if r.code != 0 {
                assert!(r.text().starts_with("passman: ") && r.text().ends_with('\n'));
            }
            t += 1;
        }
        let _ = pm.lock(&mut rng);
    }
    // Whatever happened, the vault still opens (under the original or a fuzz-chosen passphrase,
    // which Passwd may have set): at least the device is never left unreadable by a refusal.
    let mut pm = Passman::new(&mut dev, cfg(), Instant(0));
    let mut unlock = PW.to_vec();
    unlock.push(b'\n');
    let r = pm.handle(Instant(1), "dom0", "passman.Unlock", "", &unlock, &mut rng);
    assert!(r.code == 0 || r.text().contains("wrong passphrase"), "{}", r.text());
});
