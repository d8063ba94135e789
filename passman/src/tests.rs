//! Whole-service tests over an in-memory device: the call flow, refusals that leave the disk
//! untouched, crash injection at every write of add/update/delete, damage, audit, auto-lock.

extern crate std;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use platform_api::{Entropy, Instant};
use vault_store::{BlockDevice, DeviceError, KdfLimits, MemDevice};

use crate::engine::{exit, Config, Passman, Reply};

/// A deterministic xorshift stream standing in for the platform's entropy.
struct TestRng(u64);

impl Entropy for TestRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

const PW: &[u8] = b"correct horse battery staple";
const SS: usize = 512;
const SECTORS: usize = 256;
const T0: u64 = 1_700_000_000;

fn cfg() -> Config {
    Config {
        admins: vec!["vault-admin".into()],
        kdf_limits: KdfLimits::insecure_for_tests(),
        ..Config::default()
    }
}

fn at(secs: u64) -> Instant {
    Instant(secs * 1_000_000_000)
}

struct H<D: BlockDevice> {
    pm: Passman<D>,
    rng: TestRng,
    now: Instant,
}

impl<D: BlockDevice> H<D> {
    fn new(dev: D) -> Self {
        H {
            pm: Passman::new(dev, cfg(), at(0)),
            rng: TestRng(0x9e37_79b9_7f4a_7c15),
            now: at(1),
        }
    }

    fn call(&mut self, source: &str, service: &str, arg: &str, input: &[u8]) -> Reply {
        self.pm
            .handle(self.now, source, service, arg, input, &mut self.rng)
    }

    fn ok(&mut self, service: &str, arg: &str, input: &[u8]) -> String {
        let r = self.call("dom0", service, arg, input);
        assert_eq!(r.code, 0, "{service}+{arg}: {}", r.text());
        String::from_utf8(r.out.to_vec()).unwrap()
    }

    fn init(&mut self) {
        let input = format!(
            "{}\nkdf=argon2id:8:1:1\ntime={T0}\n",
            core::str::from_utf8(PW).unwrap()
        );
        self.ok("passman.Init", "", input.as_bytes());
    }

    fn unlock(&mut self) -> Reply {
        let input = format!("{}\ntime={T0}\n", core::str::from_utf8(PW).unwrap());
        self.call("dom0", "passman.Unlock", "", input.as_bytes())
    }
}

fn fresh() -> MemDevice {
    let mut dev = MemDevice::new(SS, SECTORS);
    {
        let mut h = H::new(&mut dev);
        h.init();
        h.ok("passman.Put", "github.com", b"gh-pass\nusername: alice\n");
        h.ok("passman.Put", "bank", b"bank-pass\n");
        h.ok("passman.Lock", "", b"");
    }
    dev
}

fn one_line_error(r: &Reply, code: i32) {
    assert_eq!(r.code, code, "{}", r.text());
    let t = r.text();
    assert!(t.starts_with("passman: ") && t.ends_with('\n'), "{t:?}");
    assert_eq!(t.matches('\n').count(), 1, "{t:?}");
}

#[test]
fn unlock_add_get_list_generate_otp_delete() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    one_line_error(
        &h.call("work", "passman.Get", "github.com", b""),
        exit::LOCKED,
    );
    assert_eq!(h.unlock().code, 0);
    assert_eq!(h.ok("passman.Get", "github.com", b""), "gh-pass");
    assert_eq!(
        h.ok("passman.GetField", "github.com", b"username\n"),
        "alice"
    );
    assert_eq!(h.ok("passman.List", "", b""), "bank\ngithub.com\n");
    let pw = h.ok("passman.Generate", "new.site", b"20 lud\n");
    assert_eq!(pw.len(), 20);
    assert_eq!(h.ok("passman.Get", "new.site", b""), pw);
    // RFC 6238: seed "12345678901234567890", at T0 + 0 the vault clock gives the SHA1 code.
    h.ok(
        "passman.Put",
        "totp.site",
        b"x\ntotp: otpauth://totp/a?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8\n",
    );
    h.now = at(1); // vault clock = T0 at at(1)
    let unlock_at = at(1);
    let _ = unlock_at;
    let code = h.ok("passman.Otp", "totp.site", b"");
    let want = crate::totp::Totp::new(b"12345678901234567890", crate::totp::Algorithm::Sha1, 8, 30)
        .code(T0);
    assert_eq!(code, format!("{}\n", &*want));
    let shown = h.ok("passman.Show", "totp.site", b"");
    assert!(!shown.contains("GEZDGNBV"), "{shown}");
    h.ok("passman.Delete", "bank", b"");
    one_line_error(&h.call("work", "passman.Get", "bank", b""), exit::NOT_FOUND);
    h.ok("passman.Lock", "", b"");
    one_line_error(&h.call("work", "passman.List", "", b""), exit::LOCKED);
    drop(h);
    // Everything survived on disk.
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    assert_eq!(
        h.ok("passman.List", "", b""),
        "github.com\nnew.site\ntotp.site\n"
    );
}

#[test]
fn rfc6238_codes_through_the_service_follow_the_vault_clock() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    h.ok(
        "passman.Put",
        "t",
        b"x\ntotp: otpauth://totp/a?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8\n",
    );
    // Appendix B, SHA1: set the clock to each vector time by unlocking again with it.
    for (t, want) in [
        (59u64, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ] {
        let input = format!("{}\ntime={t}\n", core::str::from_utf8(PW).unwrap());
        h.ok("passman.Unlock", "", input.as_bytes());
        assert_eq!(h.ok("passman.Otp", "t", b""), format!("{want}\n"), "t={t}");
    }
    // Resetting the clock of an open vault still needs the passphrase.
    let r = h.call("dom0", "passman.Unlock", "", b"wrong\ntime=59\n");
    one_line_error(&r, exit::DENIED);
    assert_eq!(h.ok("passman.Otp", "t", b""), "65353130\n");
}

#[test]
fn otp_without_a_clock_is_refused() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    let pw = format!("{}\n", core::str::from_utf8(PW).unwrap());
    assert_eq!(h.call("dom0", "passman.Unlock", "", pw.as_bytes()).code, 0);
    h.ok("passman.Put", "t", b"x\ntotp: GEZDGNBVGY3TQOJQ\n");
    one_line_error(&h.call("work", "passman.Otp", "t", b""), exit::FAILED);
}

#[test]
fn wrong_passphrase_is_one_line_backs_off_and_leaves_the_disk_alone() {
    let mut dev = fresh();
    let before = dev.as_bytes().to_vec();
    {
        let mut h = H::new(&mut dev);
        let r = h.call("dom0", "passman.Unlock", "", b"wrong\n");
        one_line_error(&r, exit::DENIED);
        assert!(r.text().contains("wrong passphrase"));
        // Immediately again: refused without trying, even with the right passphrase.
        let r = h.unlock();
        one_line_error(&r, exit::DENIED);
        assert!(r.text().contains("retry in"), "{}", r.text());
        // Back-off doubles: 1 s, then 2 s after the second wrong one.
        h.now = at(3);
        one_line_error(
            &h.call("dom0", "passman.Unlock", "", b"wrong\n"),
            exit::DENIED,
        );
        h.now = at(4);
        assert!(h.unlock().text().contains("retry in"));
        h.now = at(6);
        assert_eq!(h.unlock().code, 0);
        h.ok("passman.Lock", "", b"");
    }
    // Only the audit log changed (saved at lock); entries are as before.
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    assert_eq!(h.ok("passman.List", "", b""), "bank\ngithub.com\n");
    let audit = h.ok("passman.Audit", "", b"");
    assert!(
        audit.contains("dom0 passman.Unlock - wrong-passphrase"),
        "{audit}"
    );
    assert!(
        audit.contains("dom0 passman.Unlock - rate-limited"),
        "{audit}"
    );
    drop(h);
    let _ = before;
}

#[test]
fn refusals_change_nothing_on_disk() {
    let mut dev = fresh();
    {
        let mut h = H::new(&mut dev);
        assert_eq!(h.unlock().code, 0);
        h.ok("passman.Lock", "", b"");
    }
    let before = dev.as_bytes().to_vec();
    let mut h = H::new(&mut dev);
    // Locked: writes refused.
    one_line_error(&h.call("dom0", "passman.Put", "x", b"pw\n"), exit::LOCKED);
    assert_eq!(h.unlock().code, 0);
    let cases: [(&str, &str, &str, Vec<u8>, i32); 7] = [
        (
            "dom0",
            "passman.Put",
            "a/b",
            b"pw\n".to_vec(),
            exit::BAD_REQUEST,
        ),
        (
            "dom0",
            "passman.Put",
            "",
            b"pw\n".to_vec(),
            exit::BAD_REQUEST,
        ),
        (
            "dom0",
            "passman.Put",
            "big",
            format!("{}\n", "x".repeat(2000)).into_bytes(),
            exit::BAD_REQUEST,
        ),
        (
            "dom0",
            "passman.Put",
            "big",
            vec![b'n'; 40_000],
            exit::BAD_REQUEST,
        ),
        ("dom0", "passman.Delete", "nope", vec![], exit::NOT_FOUND),
        ("work", "passman.Put", "x", b"pw\n".to_vec(), exit::DENIED),
        (
            "dom0",
            "passman.Generate",
            "x",
            b"2\n".to_vec(),
            exit::BAD_REQUEST,
        ),
    ];
    for (src, svc, arg, input, code) in cases {
        let r = h.call(src, svc, arg, &input);
        one_line_error(&r, code);
    }
    // Lock without saving the audit log so the bytes can be compared.
    drop(h);
    assert!(
        dev.as_bytes() == &before[..],
        "a refused request changed the disk"
    );
}

#[test]
fn kdf_parameters_the_vault_could_not_reopen_are_refused() {
    let mut dev = fresh();
    let before = dev.as_bytes().to_vec();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    // cfg() limits the KDF to the test parameters: the 64 MiB default is beyond them.
    let r = h.call("dom0", "passman.Passwd", "", b"new pass\nkdf=argon2id\n");
    one_line_error(&r, exit::BAD_REQUEST);
    drop(h);
    assert_eq!(dev.as_bytes(), &before[..]);
}

#[test]
fn a_full_vault_refuses_with_a_clear_error_and_keeps_the_old_state() {
    let mut dev = MemDevice::new(SS, 16); // 8 sectors a slot: under 4 KiB of body
    let mut h = H::new(&mut dev);
    h.init();
    let mut i = 0;
    let r = loop {
        let r = h.call(
            "dom0",
            "passman.Put",
            &format!("e{i}"),
            format!("{}\n", "p".repeat(500)).as_bytes(),
        );
        if r.code != 0 {
            break r;
        }
        i += 1;
    };
    one_line_error(&r, exit::FULL);
    assert!(r.text().contains("vault full"), "{}", r.text());
    let list = h.ok("passman.List", "", b"");
    assert_eq!(list.lines().count(), i);
    h.ok("passman.Lock", "", b"");
    drop(h);
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    assert_eq!(h.ok("passman.List", "", b"").lines().count(), i);
}

#[test]
fn truncated_or_garbled_vaults_give_one_line_errors_and_stay_untouched() {
    let good = fresh();
    // Truncated to one sector: slot B is gone, slot A cut short.
    let mut short = MemDevice::from_bytes(SS, good.as_bytes()[..SS].to_vec());
    let before = short.as_bytes().to_vec();
    let r = H::new(&mut short).unlock();
    one_line_error(&r, exit::FAILED);
    assert_eq!(short.as_bytes(), &before[..]);
    // Garbled: every byte of both headers flipped.
    let mut bad = MemDevice::from_bytes(SS, good.as_bytes().to_vec());
    let half = SECTORS / 2 * SS;
    for off in [0, half] {
        for b in &mut bad.as_bytes_mut()[off..off + 64] {
            *b ^= 0x5a;
        }
    }
    let before = bad.as_bytes().to_vec();
    let r = H::new(&mut bad).unlock();
    one_line_error(&r, exit::LOCKED);
    assert_eq!(bad.as_bytes(), &before[..]);
    // Body damage in both slots: detected as corrupt.
    let mut rot = MemDevice::from_bytes(SS, good.as_bytes().to_vec());
    for off in [300, half + 300] {
        rot.as_bytes_mut()[off] ^= 1;
    }
    let before = rot.as_bytes().to_vec();
    let r = H::new(&mut rot).unlock();
    one_line_error(&r, exit::FAILED);
    assert!(r.text().contains("corrupt"), "{}", r.text());
    assert_eq!(rot.as_bytes(), &before[..]);
    // Init refuses to format over any existing vault, even a damaged one.
    let mut h = H::new(&mut rot);
    let r = h.call("dom0", "passman.Init", "", b"pw\nkdf=argon2id:8:1:1\n");
    one_line_error(&r, exit::FAILED);
    drop(h);
    assert_eq!(rot.as_bytes(), &before[..]);
}

#[test]
fn a_bit_flip_in_the_newest_copy_falls_back_to_the_older_one() {
    let mut dev = fresh();
    {
        let mut h = H::new(&mut dev);
        assert_eq!(h.unlock().code, 0);
        h.ok("passman.Put", "extra", b"e\n");
    }
    // The newest copy holds extra; the older one does not.
    let newest_is_a = {
        let mut d = MemDevice::from_bytes(SS, dev.as_bytes().to_vec());
        let v = vault_store::Vault::open_with_limits(&mut d, PW, KdfLimits::insecure_for_tests())
            .unwrap();
        v.current_slot() == vault_store::Slot::A
    };
    let off = if newest_is_a {
        400
    } else {
        SECTORS / 2 * SS + 400
    };
    dev.as_bytes_mut()[off] ^= 0x10;
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    assert_eq!(h.ok("passman.List", "", b""), "bank\ngithub.com\n");
}

/// Write-through device that dies at the `budget`-th write or flush; with `torn`, the write it
/// dies in lands half-way.
struct CrashDev {
    disk: MemDevice,
    budget: usize,
    ops: usize,
    torn: bool,
    dead: bool,
}

impl BlockDevice for CrashDev {
    fn sector_size(&self) -> usize {
        SS
    }
    fn sectors(&self) -> u64 {
        BlockDevice::sectors(&self.disk)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        BlockDevice::read(&mut self.disk, lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        if self.dead {
            return Err(DeviceError::Io);
        }
        self.ops += 1;
        if self.ops > self.budget {
            self.dead = true;
            if self.torn {
                let half = (buf.len() / SS).div_ceil(2) * SS;
                BlockDevice::write(&mut self.disk, lba, &buf[..half])?;
            }
            return Err(DeviceError::Io);
        }
        BlockDevice::write(&mut self.disk, lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.dead {
            return Err(DeviceError::Io);
        }
        self.ops += 1;
        if self.ops > self.budget {
            self.dead = true;
            return Err(DeviceError::Io);
        }
        Ok(())
    }
}

type Snapshot = Vec<(String, String)>;

fn snapshot(dev: &mut MemDevice) -> Snapshot {
    let mut h = H::new(dev);
    let r = h.unlock();
    assert_eq!(r.code, 0, "vault does not open after a crash: {}", r.text());
    let names = h.ok("passman.List", "", b"");
    names
        .lines()
        .map(|n| (String::from(n), h.ok("passman.Get", n, b"")))
        .collect()
}

#[test]
fn crash_at_every_write_of_add_update_delete_leaves_old_or_new_state() {
    let ops: [(&str, &str, &[u8]); 4] = [
        ("passman.Put", "new.site", b"np\n"),
        ("passman.Put", "github.com", b"gh-2\n"),
        ("passman.Generate", "bank", b"16\n"),
        ("passman.Delete", "github.com", b""),
    ];
    for torn in [false, true] {
        for (i, (svc, arg, input)) in ops.iter().enumerate() {
            // State before op i, built cleanly.
            let mut base = fresh();
            {
                let mut h = H::new(&mut base);
                assert_eq!(h.unlock().code, 0);
                for (s, a, inp) in &ops[..i] {
                    h.ok(s, a, inp);
                }
                h.ok("passman.Lock", "", b"");
            }
            let old = snapshot(&mut MemDevice::from_bytes(SS, base.as_bytes().to_vec()));
            let run = |budget: usize| {
                let mut dev = CrashDev {
                    disk: MemDevice::from_bytes(SS, base.as_bytes().to_vec()),
                    budget,
                    ops: 0,
                    torn,
                    dead: false,
                };
                let r = {
                    let mut h = H::new(&mut dev);
                    assert_eq!(h.unlock().code, 0);
                    h.call("dom0", svc, arg, input)
                };
                let died = dev.dead;
                (r, died, snapshot(&mut dev.disk))
            };
            let (r, died, new) = run(usize::MAX);
            assert!(!died && r.code == 0, "{svc}: {}", r.text());
            assert_ne!(new, old, "{svc} changed nothing");
            let mut budget = 0;
            loop {
                let (r, died, after) = run(budget);
                if !died {
                    assert_eq!(after, new);
                    break;
                }
                assert_ne!(r.code, 0, "{svc} acknowledged a failed save");
                // Never neither: the old state, or (crash after the header landed) the new one.
                assert!(
                    after == old || after == new,
                    "{svc} torn={torn} budget={budget}: neither old nor new: {after:?}"
                );
                budget += 1;
                assert!(budget < 20, "{svc}: never completes");
            }
        }
    }
}

#[test]
fn management_services_are_refused_to_other_qubes_and_audited() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    for svc in ["passman.Put", "passman.Delete", "passman.Generate"] {
        one_line_error(&h.call("work", svc, "github.com", b"x\n"), exit::DENIED);
    }
    one_line_error(&h.call("work", "passman.Audit", "", b""), exit::DENIED);
    one_line_error(&h.call("work", "passman.Unlock", "", b"pw\n"), exit::DENIED);
    // The named admin qube may.
    let r = h.call("vault-admin", "passman.Put", "admin.made", b"pw\n");
    assert_eq!(r.code, 0, "{}", r.text());
    let audit = h.ok("passman.Audit", "", b"");
    assert!(
        audit.contains("work passman.Delete github.com refused"),
        "{audit}"
    );
    assert!(
        audit.contains("vault-admin passman.Put admin.made ok"),
        "{audit}"
    );
}

#[test]
fn reads_are_audited_and_saved_within_the_delay() {
    let mut dev = fresh();
    {
        let mut h = H::new(&mut dev);
        assert_eq!(h.unlock().code, 0);
        assert_eq!(
            h.call("work", "passman.Get", "github.com", b"").code,
            exit::OK
        );
        let _ = h.call("other", "passman.Get", "bank", b"");
        // Not yet saved; poll after the delay saves it; then crash (no lock).
        assert!(h.pm.next_deadline().unwrap() <= h.now.saturating_add(Duration::from_secs(1)));
        h.now = at(3);
        assert_eq!(h.pm.poll(h.now, &mut h.rng), None);
    }
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    let audit = h.ok("passman.Audit", "", b"");
    assert!(
        audit.contains(&format!("{T0} work passman.Get github.com ok")),
        "{audit}"
    );
    assert!(audit.contains("other passman.Get bank ok"), "{audit}");
}

#[test]
fn idle_vault_locks_itself() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    let deadline = h.pm.next_deadline().unwrap();
    assert!(deadline <= at(1 + 300));
    h.now = at(1 + 300);
    assert!(h.pm.poll(h.now, &mut h.rng).unwrap().contains("locked"));
    assert!(!h.pm.is_unlocked());
    one_line_error(&h.call("work", "passman.Get", "bank", b""), exit::LOCKED);
}

#[test]
fn export_then_import_backup_round_trips() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    let r = h.call("dom0", "passman.Export", "", b"backup pass\n");
    assert_eq!(r.code, 0, "{}", r.text());
    let backup = r.out.to_vec();
    assert!(backup.starts_with(&vault_store::MAGIC));
    assert!(!backup.windows(7).any(|w| w == b"gh-pass"));
    let mut dev2 = MemDevice::new(SS, SECTORS);
    let mut h2 = H::new(&mut dev2);
    h2.init();
    let mut input = b"backup\nbackup pass\n".to_vec();
    input.extend_from_slice(&backup);
    assert_eq!(h2.ok("passman.Import", "", &input), "imported 2 entries\n");
    assert_eq!(h2.ok("passman.Get", "github.com", b""), "gh-pass");
    let mut wrong = b"backup\nnope\n".to_vec();
    wrong.extend_from_slice(&backup);
    one_line_error(
        &h2.call("dom0", "passman.Import", "", &wrong),
        exit::BAD_REQUEST,
    );
}

#[test]
fn pass_bundle_import() {
    let mut dev = fresh();
    let mut h = H::new(&mut dev);
    assert_eq!(h.unlock().code, 0);
    let body = "p1\nlogin: me\nurl: https://mail.example\n";
    let bundle = format!("pass\nemail/work.gpg {}\n{body}", body.len());
    assert_eq!(
        h.ok("passman.Import", "", bundle.as_bytes()),
        "imported 1 entries\n"
    );
    assert_eq!(
        h.ok("passman.GetField", "email.work", b"url"),
        "https://mail.example"
    );
}
