//! Whole-vault tests: round trips, failure classification, crash injection, damage detection.
//! Tiny KDF parameters throughout; the real ones are timed by `examples/unlock_time.rs`.

extern crate std;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::header::{checksum, CHECKSUM_START};
use crate::*;

/// A deterministic xorshift stream standing in for the platform's entropy.
struct TestRng(u64);

impl platform_api::Entropy for TestRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

const SS: usize = 512;
const SECTORS: usize = 16;
const PW: &[u8] = b"correct horse battery staple";
const PW2: &[u8] = b"a new passphrase";

fn tiny() -> KdfParams {
    KdfParams::insecure_for_tests()
}

fn open<D: BlockDevice>(dev: D, pw: &[u8]) -> Result<Vault<D>, VaultError> {
    Vault::open_with_limits(dev, pw, KdfLimits::insecure_for_tests())
}

/// A distinct record set per step; step 4 spans several sectors.
fn state(step: usize) -> Records {
    let mut r = Records::new();
    let size = if step == 4 { 700 } else { 20 * step };
    for j in 0..step.min(3) + 1 {
        r.insert(
            format!("entry-{j}").as_bytes(),
            &vec![step as u8 ^ j as u8; size],
        )
        .unwrap();
    }
    r
}

fn fresh(records: &Records) -> MemDevice {
    let mut dev = MemDevice::new(SS, SECTORS);
    let mut v = Vault::create(&mut dev, PW, tiny(), &mut TestRng(1)).unwrap();
    *v.records_mut() = records.clone();
    v.save(&mut TestRng(2)).unwrap();
    drop(v);
    dev
}

/// Recomputes slot `lba`'s checksum after a deliberate edit, so only the keyed checks can object.
fn fix_checksum(dev: &mut MemDevice, lba: usize) {
    let off = lba * SS;
    let bytes = dev.as_bytes_mut();
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[off..off + HEADER_LEN]);
    let len = u32::from_le_bytes(h[136..140].try_into().unwrap()) as usize;
    let body = bytes[off + HEADER_LEN..off + HEADER_LEN + len].to_vec();
    let c = checksum(&h, &body);
    bytes[off + CHECKSUM_START..off + HEADER_LEN].copy_from_slice(&c);
}

fn current_lba(dev: &mut MemDevice) -> usize {
    match open(&mut *dev, PW).unwrap().current_slot() {
        Slot::A => 0,
        Slot::B => SECTORS / 2,
    }
}

#[test]
fn round_trip_and_slots_alternate() {
    let mut dev = MemDevice::new(SS, SECTORS);
    let mut rng = TestRng(7);
    let mut v = Vault::create(&mut dev, PW, tiny(), &mut rng).unwrap();
    assert_eq!((v.current_slot(), v.sequence()), (Slot::A, 1));
    assert!(v.records().is_empty());
    for step in 1..=4 {
        *v.records_mut() = state(step);
        v.save(&mut rng).unwrap();
        assert_eq!(v.sequence(), 1 + step as u64);
        assert_eq!(
            v.current_slot(),
            if step % 2 == 1 { Slot::B } else { Slot::A }
        );
        let again = open(&mut *v.close(), PW);
        let again = again.unwrap();
        assert_eq!(again.records(), &state(step));
        assert_eq!(again.other_slot(), SlotStatus::Older(step as u64));
        v = Vault::open_with_limits(again.close(), PW, KdfLimits::insecure_for_tests()).unwrap();
    }
}

#[test]
fn scrypt_round_trip() {
    let mut dev = MemDevice::new(SS, SECTORS);
    let kdf = KdfParams::Scrypt {
        log_n: 4,
        r: 1,
        p: 1,
    };
    let mut v = Vault::create(&mut dev, PW, kdf, &mut TestRng(3)).unwrap();
    *v.records_mut() = state(2);
    v.save(&mut TestRng(4)).unwrap();
    let v = open(&mut dev, PW).unwrap();
    assert_eq!((v.records(), v.kdf_params()), (&state(2), kdf));
    assert!(matches!(
        open(&mut dev, PW2),
        Err(VaultError::WrongPassphrase)
    ));
}

#[test]
fn wrong_passphrase_is_reported_as_wrong_passphrase() {
    let mut dev = fresh(&state(1));
    assert!(matches!(
        open(&mut dev, b"nope"),
        Err(VaultError::WrongPassphrase)
    ));
    assert!(matches!(
        open(&mut dev, b""),
        Err(VaultError::WrongPassphrase)
    ));
    assert_eq!(open(&mut dev, PW).unwrap().records(), &state(1));
}

#[test]
fn header_edit_with_fixed_checksum_is_tampered_header() {
    // Sequence, body length, body nonce, body tag: all under the header MAC.
    for (off, delta) in [(128usize, 5u8), (144, 1), (168, 1), (184, 1)] {
        let mut dev = fresh(&state(2));
        let lba = current_lba(&mut dev);
        dev.as_bytes_mut()[lba * SS + off] ^= delta;
        fix_checksum(&mut dev, lba);
        let r = open(&mut dev, PW);
        assert!(
            matches!(r, Err(VaultError::Tampered(Part::Header))),
            "offset {off}: {r:?}"
        );
    }
}

#[test]
fn body_edit_with_fixed_checksum_is_tampered_body() {
    let mut dev = fresh(&state(2));
    let lba = current_lba(&mut dev);
    dev.as_bytes_mut()[lba * SS + HEADER_LEN + 3] ^= 0x40;
    fix_checksum(&mut dev, lba);
    assert!(matches!(
        open(&mut dev, PW),
        Err(VaultError::Tampered(Part::Body))
    ));
}

#[test]
fn key_wrap_edit_with_fixed_checksum_looks_like_wrong_passphrase() {
    // Salt, wrap nonce, wrapped key, wrap tag: indistinguishable from a wrong passphrase by design.
    for off in [24usize, 56, 80, 112] {
        let mut dev = fresh(&state(2));
        let lba = current_lba(&mut dev);
        dev.as_bytes_mut()[lba * SS + off] ^= 1;
        fix_checksum(&mut dev, lba);
        assert!(
            matches!(open(&mut dev, PW), Err(VaultError::WrongPassphrase)),
            "offset {off}"
        );
    }
}

#[test]
fn every_single_bit_flip_in_the_newest_slot_falls_back_to_the_older_copy() {
    // Slot A holds step 3 (sequence 3), slot B step 2: flips in A give step 2, elsewhere step 3.
    let mut base = MemDevice::new(SS, SECTORS);
    let mut rng = TestRng(11);
    let mut v = Vault::create(&mut base, PW, tiny(), &mut rng).unwrap();
    for step in 2..=3 {
        *v.records_mut() = state(step);
        v.save(&mut rng).unwrap();
    }
    assert_eq!(v.current_slot(), Slot::A);
    drop(v);
    let used_a = HEADER_LEN + state(3).encoded_len();
    let used_b = HEADER_LEN + state(2).encoded_len();
    let half = SECTORS / 2 * SS;
    let mut checked = 0;
    for off in (0..SECTORS * SS)
        .filter(|o| *o < used_a || (*o >= half && *o < half + used_b) || o % 97 == 0)
    {
        let mut dev = MemDevice::from_bytes(SS, base.as_bytes().to_vec());
        dev.as_bytes_mut()[off] ^= 1 << (off % 8);
        let v = open(&mut dev, PW).unwrap_or_else(|e| panic!("flip at {off}: {e}"));
        let expect = if off < used_a { state(2) } else { state(3) };
        assert_eq!(v.records(), &expect, "flip at {off}");
        if off < used_a {
            let want = if off < 8 {
                SlotStatus::Empty
            } else {
                SlotStatus::Damaged
            };
            assert_eq!(v.other_slot(), want, "flip at {off}");
        }
        checked += 1;
    }
    assert!(checked > used_a + used_b);
}

#[test]
fn a_bit_flip_in_the_only_copy_is_an_error_never_wrong_data() {
    let base = fresh(&state(1));
    // fresh(): create wrote A (seq 1, empty), the save wrote B (seq 2): damage B, then both.
    let used = HEADER_LEN + state(1).encoded_len();
    let half = SECTORS / 2 * SS;
    for off in 0..used {
        let mut dev = MemDevice::from_bytes(SS, base.as_bytes().to_vec());
        dev.as_bytes_mut()[half + off] ^= 0x80 >> (off % 8);
        assert_eq!(
            open(&mut dev, PW).unwrap().records(),
            &Records::new(),
            "flip at {off}"
        );
        dev.as_bytes_mut()[off.min(HEADER_LEN + 3)] ^= 1 << (off % 8);
        let r = open(&mut dev, PW);
        assert!(
            matches!(
                r,
                Err(VaultError::Corrupt
                    | VaultError::NotFormatted
                    | VaultError::UnsupportedVersion(_))
            ),
            "flip at {off}: {r:?}"
        );
    }
}

#[test]
fn unknown_version_is_reported_when_nothing_else_is_readable() {
    let mut dev = fresh(&state(1));
    dev.as_bytes_mut()[8] = 9;
    dev.as_bytes_mut()[SECTORS / 2 * SS + 8] = 9;
    assert!(matches!(
        open(&mut dev, PW),
        Err(VaultError::UnsupportedVersion(9))
    ));
    let mut blank = MemDevice::new(SS, SECTORS);
    assert!(matches!(
        open(&mut blank, PW),
        Err(VaultError::NotFormatted)
    ));
}

#[test]
fn full_is_refused_before_anything_is_written() {
    let mut dev = MemDevice::new(SS, SECTORS);
    let mut rng = TestRng(5);
    let mut v = Vault::create(&mut dev, PW, tiny(), &mut rng).unwrap();
    *v.records_mut() = state(2);
    v.save(&mut rng).unwrap();
    let cap = v.capacity();
    assert_eq!(cap, SECTORS / 2 * SS - HEADER_LEN);
    v.records_mut().insert(b"big", &vec![0xAB; cap]).unwrap();
    let before = v.close().as_bytes().to_vec();
    let mut v = open(&mut dev, PW).unwrap();
    v.records_mut().insert(b"big", &vec![0xAB; cap]).unwrap();
    let needed = v.records().encoded_len();
    assert_eq!(
        v.save(&mut rng),
        Err(VaultError::Full {
            needed,
            capacity: cap
        })
    );
    assert_eq!(v.sequence(), 2);
    // Exactly at capacity still fits.
    v.records_mut()
        .insert(b"big", &vec![0xAB; cap - (needed - cap)])
        .unwrap();
    assert_eq!(v.records().encoded_len(), cap);
    drop(v);
    assert_eq!(
        dev.as_bytes(),
        &before[..],
        "a refused save changed the device"
    );
    let mut v = open(&mut dev, PW).unwrap();
    v.records_mut()
        .insert(b"big", &vec![0xAB; cap - (needed - cap)])
        .unwrap();
    v.save(&mut rng).unwrap();
    assert_eq!(open(&mut dev, PW).unwrap().records().encoded_len(), cap);
}

#[test]
fn change_passphrase_rewraps_without_reencrypting_the_body() {
    let mut dev = fresh(&state(3));
    let old_lba = current_lba(&mut dev);
    let mut v = open(&mut dev, PW).unwrap();
    // An unsaved edit stays unsaved: only the stored body is carried over.
    v.records_mut().insert(b"unsaved", b"x").unwrap();
    v.change_passphrase(
        PW2,
        KdfParams::Scrypt {
            log_n: 3,
            r: 1,
            p: 1,
        },
        &mut TestRng(9),
    )
    .unwrap();
    drop(v);
    assert!(matches!(
        open(&mut dev, PW),
        Err(VaultError::WrongPassphrase)
    ));
    let v = open(&mut dev, PW2).unwrap();
    assert_eq!(v.records(), &state(3));
    let new_lba = match v.current_slot() {
        Slot::A => 0,
        Slot::B => SECTORS / 2,
    };
    drop(v);
    assert_ne!(old_lba, new_lba);
    let len = state(3).encoded_len();
    let b = dev.as_bytes();
    let body = |lba: usize| &b[lba * SS + HEADER_LEN..lba * SS + HEADER_LEN + len];
    let nonce_tag = |lba: usize| &b[lba * SS + 144..lba * SS + 184];
    assert_eq!(body(old_lba), body(new_lba));
    assert_eq!(nonce_tag(old_lba), nonce_tag(new_lba));
    assert_ne!(
        &b[old_lba * SS + 24..old_lba * SS + 56],
        &b[new_lba * SS + 24..new_lba * SS + 56]
    );
}

#[test]
fn create_wipes_a_stale_vault_in_slot_b() {
    let mut dev = MemDevice::new(SS, SECTORS);
    let mut rng = TestRng(21);
    let mut v = Vault::create(&mut dev, PW, tiny(), &mut rng).unwrap();
    for step in 1..=5 {
        *v.records_mut() = state(step);
        v.save(&mut rng).unwrap();
    }
    assert_eq!(v.current_slot(), Slot::B);
    drop(v);
    let v = Vault::create(&mut dev, PW2, tiny(), &mut rng).unwrap();
    assert_eq!(v.sequence(), 1);
    drop(v);
    let v = open(&mut dev, PW2).unwrap();
    assert!(v.records().is_empty());
    assert_eq!(v.other_slot(), SlotStatus::Empty);
}

#[test]
fn kdf_parameters_beyond_limits_are_refused_before_deriving() {
    let mut dev = fresh(&state(1));
    let strict = KdfLimits {
        max_mem_kib: 4,
        ..KdfLimits::insecure_for_tests()
    };
    assert!(matches!(
        Vault::open_with_limits(&mut dev, PW, strict),
        Err(VaultError::KdfRefused)
    ));
    // A header claiming 4 GiB of argon2 memory, checksum fixed: refused, not attempted.
    let lba = current_lba(&mut dev);
    dev.as_bytes_mut()[lba * SS + 12..lba * SS + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_checksum(&mut dev, lba);
    assert!(matches!(
        Vault::open(&mut dev, PW),
        Err(VaultError::KdfRefused)
    ));
}

#[test]
fn odd_geometries_are_refused() {
    let mut rng = TestRng(1);
    assert!(matches!(
        Vault::create(MemDevice::new(SS, 1), PW, tiny(), &mut rng),
        Err(VaultError::BadGeometry)
    ));
    assert!(matches!(
        Vault::create(MemDevice::new(100, 8), PW, tiny(), &mut rng),
        Err(VaultError::BadGeometry)
    ));
    assert!(matches!(
        open(MemDevice::new(128, 8), PW),
        Err(VaultError::BadGeometry)
    ));
    // Odd sector count: the last sector is simply unused.
    let mut v = Vault::create(MemDevice::new(SS, 5), PW, tiny(), &mut rng).unwrap();
    *v.records_mut() = state(1);
    v.save(&mut rng).unwrap();
    assert_eq!(open(v.close(), PW).unwrap().records(), &state(1));
}

#[test]
fn debug_output_holds_no_secrets() {
    let mut dev = fresh(&state(1));
    let v = open(&mut dev, PW).unwrap();
    let s = format!("{v:?}");
    assert!(
        s.contains("sequence") && !s.contains("entry-") && !s.contains("data_key"),
        "{s}"
    );
}

/// How the crash device loses data when it dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Writes land at once; the failing write lands not at all.
    WriteThrough,
    /// Writes land at once; the failing write lands partly (a byte prefix, tearing a sector).
    Torn,
    /// Writes are cached until flush; at power loss the cache is lost.
    WriteBack,
    /// Writes are cached; at power loss only the last cached write (the header) lands.
    Reordered,
}

/// A device that dies at its `budget`-th write or flush.
struct CrashDev {
    disk: Vec<u8>,
    cache: Vec<(usize, Vec<u8>)>,
    mode: Mode,
    ops: usize,
    budget: usize,
    dead: bool,
}

impl CrashDev {
    fn new(disk: Vec<u8>, mode: Mode, budget: usize) -> Self {
        CrashDev {
            disk,
            cache: Vec::new(),
            mode,
            ops: 0,
            budget,
            dead: false,
        }
    }

    fn die(&mut self, failing_write: Option<(usize, &[u8])>) {
        self.dead = true;
        match (self.mode, failing_write) {
            (Mode::Torn, Some((off, buf))) => {
                let n = (buf.len() / 2 + SS / 3).min(buf.len() - 1);
                self.disk[off..off + n].copy_from_slice(&buf[..n]);
            }
            (Mode::Reordered, _) => {
                if let Some((off, buf)) = self.cache.pop() {
                    self.disk[off..off + buf.len()].copy_from_slice(&buf);
                }
            }
            _ => {}
        }
        self.cache.clear();
    }

    fn tick(&mut self) -> bool {
        if self.dead {
            return false;
        }
        self.ops += 1;
        self.ops <= self.budget
    }
}

impl BlockDevice for CrashDev {
    fn sector_size(&self) -> usize {
        SS
    }
    fn sectors(&self) -> u64 {
        (self.disk.len() / SS) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        if self.dead {
            return Err(DeviceError::Io);
        }
        let off = lba as usize * SS;
        buf.copy_from_slice(&self.disk[off..off + buf.len()]);
        for (coff, data) in &self.cache {
            for (i, b) in buf.iter_mut().enumerate() {
                if let Some(d) = (off + i).checked_sub(*coff).and_then(|j| data.get(j)) {
                    *b = *d;
                }
            }
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let off = lba as usize * SS;
        assert!(off + buf.len() <= self.disk.len() && buf.len().is_multiple_of(SS));
        if !self.tick() {
            self.die(Some((off, buf)));
            return Err(DeviceError::Io);
        }
        match self.mode {
            Mode::WriteThrough | Mode::Torn => self.disk[off..off + buf.len()].copy_from_slice(buf),
            Mode::WriteBack | Mode::Reordered => self.cache.push((off, buf.to_vec())),
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        if !self.tick() {
            self.die(None);
            return Err(DeviceError::Io);
        }
        for (off, data) in core::mem::take(&mut self.cache) {
            self.disk[off..off + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Step {
    Save(usize),
    ChangePassphrase(&'static [u8]),
}

/// Runs a sequence of saves and a passphrase change on a device that dies at its `budget`-th
/// operation; returns the (records, passphrase) outcomes acceptable on reopen, or None if it never died.
fn run_until_crash(dev: &mut CrashDev) -> Option<[(Records, &'static [u8]); 2]> {
    let steps = [
        Step::Save(1),
        Step::Save(4),
        Step::ChangePassphrase(PW2),
        Step::Save(2),
        Step::Save(5),
        Step::ChangePassphrase(PW),
        Step::Save(3),
    ];
    let mut v = open(&mut *dev, PW).expect("open before any crash");
    let mut committed = (state(0), PW);
    for step in steps {
        let next = match step {
            Step::Save(i) => (state(i), committed.1),
            Step::ChangePassphrase(p) => (committed.0.clone(), p),
        };
        let r = match step {
            Step::Save(i) => {
                *v.records_mut() = state(i);
                v.save(&mut TestRng(i as u64 + 100))
            }
            Step::ChangePassphrase(p) => v.change_passphrase(p, tiny(), &mut TestRng(99)),
        };
        match r {
            Ok(()) => committed = next,
            Err(VaultError::Device(DeviceError::Io)) => return Some([committed, next]),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    None
}

fn reopen_after_crash(disk: &[u8], ok: &[(Records, &'static [u8]); 2], what: &str) {
    let mut dev = MemDevice::from_bytes(SS, disk.to_vec());
    let by_pw: Vec<_> = [PW, PW2]
        .iter()
        .map(|p| (*p, open(MemDevice::from_bytes(SS, disk.to_vec()), p)))
        .collect();
    let opened: Vec<_> = by_pw.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(
        opened.len(),
        1,
        "{what}: exactly one passphrase must open: {by_pw:?}"
    );
    for (pw, r) in &by_pw {
        match r {
            Ok(v) => assert!(
                ok.iter().any(|(recs, p)| p == pw && recs == v.records()),
                "{what}: opened a state that is neither old nor new"
            ),
            Err(e) => assert_eq!(*e, VaultError::WrongPassphrase, "{what}"),
        }
    }
    let pw = opened[0].0;
    drop(by_pw);
    // After the crash the vault stays usable: a further save lands and reopens.
    let mut v = open(&mut dev, pw).unwrap();
    *v.records_mut() = state(6);
    v.save(&mut TestRng(600))
        .unwrap_or_else(|e| panic!("{what}: save after crash: {e}"));
    drop(v);
    assert_eq!(open(&mut dev, pw).unwrap().records(), &state(6), "{what}");
}

#[test]
fn crash_at_every_write_and_flush_leaves_old_or_new_state() {
    let base = fresh(&state(0));
    for mode in [
        Mode::WriteThrough,
        Mode::Torn,
        Mode::WriteBack,
        Mode::Reordered,
    ] {
        let mut crashes = 0;
        for budget in 0.. {
            let mut dev = CrashDev::new(base.as_bytes().to_vec(), mode, budget);
            let Some(ok) = run_until_crash(&mut dev) else {
                break;
            };
            crashes += 1;
            reopen_after_crash(&dev.disk, &ok, &format!("{mode:?} dying at op {budget}"));
        }
        // 5 saves + 2 passphrase changes, each 2 writes + 1 flush (step 0 has a 1-sector body).
        assert!(crashes >= 19, "{mode:?}: only {crashes} crash points");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn open_of_save_is_identity(
        entries in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..=40),
            proptest::collection::vec(any::<u8>(), 0..300),
            0..8,
        ),
        seed in 1u64..,
    ) {
        let mut recs = Records::new();
        for (k, v) in &entries {
            recs.insert(k, v).unwrap();
        }
        let mut dev = MemDevice::new(SS, 32);
        let mut v = Vault::create(&mut dev, PW, tiny(), &mut TestRng(seed)).unwrap();
        *v.records_mut() = recs.clone();
        let fits = recs.encoded_len() <= v.capacity();
        prop_assert_eq!(v.save(&mut TestRng(seed ^ 1)).is_ok(), fits);
        drop(v);
        let back = open(&mut dev, PW).unwrap();
        prop_assert_eq!(back.records(), &if fits { recs } else { Records::new() });
    }

    #[test]
    fn random_damage_never_yields_other_data(
        seed in 1u64..,
        flips in proptest::collection::vec((0usize..SECTORS * SS, any::<u8>()), 1..6),
    ) {
        let base = fresh(&state(2));
        let mut dev = MemDevice::from_bytes(SS, base.as_bytes().to_vec());
        for (off, x) in flips {
            dev.as_bytes_mut()[off] ^= x;
        }
        let _ = seed;
        match open(&mut dev, PW) {
            Ok(v) => prop_assert!(v.records() == &state(2) || v.records().is_empty()),
            Err(e) => prop_assert!(matches!(
                e,
                VaultError::Corrupt | VaultError::NotFormatted | VaultError::UnsupportedVersion(_)
            ), "{}", e),
        }
    }
}

/// Writes seed device images for the `vault_decode` fuzz target into `$VAULT_FUZZ_SEEDS`.
#[test]
#[ignore = "run by hand to regenerate fuzz/corpus/vault_decode"]
fn write_fuzz_seeds() {
    let dir = std::env::var("VAULT_FUZZ_SEEDS").expect("VAULT_FUZZ_SEEDS");
    let fuzz_pw: &[u8] = b"fuzz passphrase";
    let scrypt = KdfParams::Scrypt {
        log_n: 4,
        r: 1,
        p: 1,
    };
    let cases: [(&str, usize, KdfParams, &[usize]); 4] = [
        ("created-2-sectors", 2, tiny(), &[]),
        ("two-slots-4-sectors", 4, tiny(), &[1]),
        ("scrypt-multi-sector-16", 16, scrypt, &[4]),
        ("three-saves-6-sectors", 6, tiny(), &[2, 3]),
    ];
    for (name, sectors, kdf, steps) in cases {
        let mut dev = MemDevice::new(SS, sectors);
        let mut v = Vault::create(&mut dev, fuzz_pw, kdf, &mut TestRng(77)).unwrap();
        for &s in steps {
            *v.records_mut() = state(s);
            v.save(&mut TestRng(s as u64 + 1)).unwrap();
        }
        drop(v);
        assert!(open(&mut dev, fuzz_pw).is_ok());
        std::fs::write(format!("{dir}/{name}"), dev.as_bytes()).unwrap();
    }
    std::fs::write(format!("{dir}/records-only"), &state(2).encode()[..]).unwrap();
}

/// A platform block device (as blkfront or the hosted file are) that counts flushes.
struct PlatformMem {
    mem: MemDevice,
    flushes: usize,
}

impl platform_api::BlockDevice for PlatformMem {
    fn sector_size(&self) -> usize {
        SS
    }
    fn sectors(&self) -> u64 {
        BlockDevice::sectors(&self.mem)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), platform_api::PlatformError> {
        platform_api::BlockDevice::read(&mut self.mem, lba, buf)
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), platform_api::PlatformError> {
        platform_api::BlockDevice::write(&mut self.mem, lba, data)
    }
    fn flush(&mut self) -> Result<(), platform_api::PlatformError> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn platform_devices_carry_a_vault_through_the_adapter() {
    let dev = PlatformDevice(PlatformMem {
        mem: MemDevice::new(SS, SECTORS),
        flushes: 0,
    });
    let mut v = Vault::create(dev, PW, tiny(), &mut TestRng(5)).unwrap();
    *v.records_mut() = state(2);
    v.save(&mut TestRng(6)).unwrap();
    let dev = v.close();
    assert_eq!(dev.0.flushes, 2, "create and save each flush once");
    let v = Vault::open_with_limits(dev, PW, KdfLimits::insecure_for_tests()).unwrap();
    assert_eq!(v.records(), &state(2));
    // Out-of-range requests map to OutOfRange, not Io.
    let mut dev = v.close();
    let mut buf = vec![0u8; SS];
    assert_eq!(
        BlockDevice::read(&mut dev, SECTORS as u64, &mut buf),
        Err(DeviceError::OutOfRange)
    );
}

#[test]
fn try_open_hands_the_device_back_on_failure() {
    let dev = fresh(&state(1));
    let (err, dev) = Vault::try_open(dev, b"wrong", KdfLimits::insecure_for_tests()).unwrap_err();
    assert_eq!(err, VaultError::WrongPassphrase);
    let v = Vault::try_open(dev, PW, KdfLimits::insecure_for_tests()).unwrap();
    assert_eq!(v.records(), &state(1));
    assert_eq!(v.verify_passphrase(PW), Ok(()));
    assert_eq!(v.verify_passphrase(PW2), Err(VaultError::WrongPassphrase));
    let (err, _dev) =
        Vault::try_create(MemDevice::new(SS, 1), PW, tiny(), &mut TestRng(3)).unwrap_err();
    assert_eq!(err, VaultError::BadGeometry);
}
