//! Arbitrary device contents opened as a vault with a fixed passphrase and tiny KDF limits.
//! Under cfg(fuzzing) vault-store skips its checksum check, so mutated slots reach the KDF and AEAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::{KdfLimits, KdfParams, MemDevice, Records, Vault};

const SECTOR: usize = 512;
const PASSPHRASE: &[u8] = b"fuzz passphrase";

struct Counter(u8);

impl platform_api::Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The same bytes as a records encoding: must decode or be refused, never panic.
    if let Ok(r) = Records::decode(data) {
        assert_eq!(&r.encode()[..], data);
    }

    let mut bytes = data.to_vec();
    bytes.resize(bytes.len().max(2 * SECTOR), 0);
    let mut dev = MemDevice::from_bytes(SECTOR, bytes);
    let limits = KdfLimits::insecure_for_tests();
    let Ok(mut vault) = Vault::open_with_limits(&mut dev, PASSPHRASE, limits) else {
        return;
    };
    // Whatever opened must survive a save and a reopen unchanged.
    let records = vault.records().clone();
    let saved = vault.save(&mut Counter(0)).is_ok();
    let rewrapped = saved
        && vault
            .change_passphrase(PASSPHRASE, KdfParams::insecure_for_tests(), &mut Counter(9))
            .is_ok();
    drop(vault);
    if rewrapped {
        let again = Vault::open_with_limits(&mut dev, PASSPHRASE, limits)
            .expect("a vault this code just saved must open");
        assert!(again.records() == &records);
    }
});
