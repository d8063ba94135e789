//! Times one unlock (open) with the default argon2id (m = 64 MiB, t = 3, p = 1) and scrypt
//! (N = 2^15, r = 8, p = 1) parameters: `cargo run --release -p vault-store --example unlock_time`.

use std::time::Instant;

use vault_store::{KdfParams, MemDevice, Vault};

/// Not a secure source: timing only.
struct Counter(u8);

impl platform_api::Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(17);
            *b = self.0;
        }
    }
}

fn main() {
    for (name, kdf) in [
        ("argon2id m=64MiB t=3 p=1", KdfParams::default()),
        ("scrypt N=2^15 r=8 p=1", KdfParams::scrypt_default()),
    ] {
        let mut dev = MemDevice::new(512, 64);
        let mut v = Vault::create(&mut dev, b"passphrase", kdf, &mut Counter(1)).expect("create");
        v.records_mut()
            .insert(b"github", b"hunter2")
            .expect("insert");
        v.save(&mut Counter(2)).expect("save");
        drop(v);
        let start = Instant::now();
        let v = Vault::open(&mut dev, b"passphrase").expect("open");
        let took = start.elapsed();
        assert_eq!(v.records().get(b"github"), Some(&b"hunter2"[..]));
        println!("{name}: unlock {took:?}");
    }
}
