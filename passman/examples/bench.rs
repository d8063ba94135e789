//! Timings for `cargo xtask bench passman`: `cargo run --release -p passman --example bench`.
//! Unlock with the default KDF (argon2id m = 64 MiB, t = 3), open (unlock with tiny KDF
//! parameters, so decryption and decoding alone) and get/put of a 10,000-entry vault, all over
//! a 64 MiB in-memory device. One `name value unit` line per measurement.

use std::time::Instant as Clock;

use passman::{Config, Passman};
use platform_api::{Entropy, Instant};
use vault_store::{KdfLimits, KdfParams, MemDevice, Vault};

/// Not a secure source: timing only.
struct Rng(u64);
impl Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.0 >> 33) as u8;
        }
    }
}

const PW: &[u8] = b"bench passphrase";
const ENTRIES: usize = 10_000;

/// A 64 MiB vault (the sim's and Qubes' private volume size) with `n` typical entries.
fn vault(kdf: KdfParams, n: usize) -> MemDevice {
    let mut dev = MemDevice::new(512, 64 * 2048);
    let mut v = Vault::create(&mut dev, PW, kdf, &mut Rng(1)).expect("create");
    for i in 0..n {
        let e = passman::Entry::from_text(&format!(
            "pw-{i:08}-Xq7!mZ2#\nusername: user{i}@example.com\nurl: https://site{i}.example.com/login\ntags: bench\nsome notes for entry {i}\n"
        ))
        .expect("entry");
        let mut key = b"e/".to_vec();
        key.extend_from_slice(format!("site{i}.example.com").as_bytes());
        v.records_mut()
            .insert(&key, &e.encode().expect("encode"))
            .expect("insert");
    }
    v.save(&mut Rng(2)).expect("save");
    drop(v);
    dev
}

fn unlock_ms(dev: &mut MemDevice, limits: KdfLimits) -> (f64, Passman<&mut MemDevice>) {
    let cfg = Config {
        kdf_limits: limits,
        ..Config::default()
    };
    let mut pm = Passman::new(dev, cfg, Instant(0));
    let mut input = PW.to_vec();
    input.extend_from_slice(b"\ntime=1700000000\n");
    let t = Clock::now();
    let r = pm.handle(
        Instant(1),
        "dom0",
        "passman.Unlock",
        "",
        &input,
        &mut Rng(3),
    );
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.code, 0, "{}", r.text());
    (ms, pm)
}

fn main() {
    let mut dev = vault(KdfParams::default(), 1);
    let (ms, _) = unlock_ms(&mut dev, KdfLimits::default());
    println!("unlock_default_kdf {ms:.1} ms");

    let mut dev = vault(KdfParams::insecure_for_tests(), ENTRIES);
    let (ms, mut pm) = unlock_ms(&mut dev, KdfLimits::insecure_for_tests());
    println!("open_10000_entries {ms:.1} ms");

    let rounds = 1000;
    let t = Clock::now();
    for i in 0..rounds {
        let name = format!("site{}.example.com", (i * 7) % ENTRIES);
        let r = pm.handle(Instant(2), "work", "passman.Get", &name, b"", &mut Rng(4));
        assert_eq!(r.code, 0);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!("get_in_process_10000_entries {us:.1} us");

    let t = Clock::now();
    let r = pm.handle(
        Instant(3),
        "dom0",
        "passman.Put",
        "new.example.com",
        b"pw\n",
        &mut Rng(5),
    );
    assert_eq!(r.code, 0, "{}", r.text());
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("put_and_save_10000_entries {ms:.1} ms");
}
