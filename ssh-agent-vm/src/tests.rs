//! Engine transcripts over a fake run loop and an in-memory device; each test names its rule.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use std::format;

use platform_api::Instant;
use ssh_agent_wire::wire::codec::{put_string, Reader};
use ssh_agent_wire::wire::frame::frame;
use ssh_agent_wire::wire::{Constraint, Passphrase, Request, Response, SignFlags};
use ssh_agent_wire::{KeyBlob, PrivateKey};
use vault_store::{BlockDevice, DeviceError, MemDevice};

use crate::engine::{
    Engine, Io, ADMIN_SERVICE, CLIENT_SERVICE, MAX_BACKLOG, PASSPHRASE_EXTENSION, STATUS_EXTENSION,
};
use crate::VaultConfig;

const SEC: u64 = 1_000_000_000;

#[derive(Default)]
struct FakeIo {
    now: u64,
    space: usize,
    out: BTreeMap<u32, Vec<u8>>,
    finished: BTreeMap<u32, i32>,
    calls: BTreeMap<u32, (String, String)>,
    call_input: BTreeMap<u32, Vec<u8>>,
    ended: Vec<u32>,
    logs: Vec<String>,
    next_call: u32,
    refuse_calls: bool,
}

impl FakeIo {
    fn new() -> Self {
        Self {
            now: 1000 * SEC,
            space: 1 << 20,
            next_call: 1000,
            ..Self::default()
        }
    }

    /// Every whole response sent on call `id` so far (taken).
    fn responses(&mut self, id: u32) -> Vec<Response> {
        let raw = self.out.remove(&id).unwrap_or_default();
        let mut r = Reader::new(&raw);
        let mut v = Vec::new();
        while !r.is_empty() {
            v.push(Response::parse(r.string("frame").unwrap()).unwrap());
        }
        v
    }
}

impl Io for FakeIo {
    fn now(&self) -> Instant {
        Instant(self.now)
    }
    fn send(&mut self, id: u32, data: &[u8]) -> bool {
        if data.len() > self.space {
            return false;
        }
        if self.calls.contains_key(&id) {
            self.call_input
                .entry(id)
                .or_default()
                .extend_from_slice(data);
        } else {
            self.out.entry(id).or_default().extend_from_slice(data);
        }
        true
    }
    fn send_space(&self, _id: u32) -> usize {
        self.space
    }
    fn finish(&mut self, id: u32, code: i32) {
        assert!(self.finished.insert(id, code).is_none(), "finished twice");
    }
    fn call(&mut self, target: &str, service: &str) -> Option<u32> {
        if self.refuse_calls {
            return None;
        }
        self.next_call += 1;
        self.calls
            .insert(self.next_call, (target.into(), service.into()));
        Some(self.next_call)
    }
    fn end_input(&mut self, id: u32) {
        self.ended.push(id);
    }
    fn log(&mut self, args: fmt::Arguments<'_>) {
        self.logs.push(args.to_string());
    }
    fn entropy(&mut self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ (self.now as u8);
        }
    }
}

fn test_cfg() -> VaultConfig {
    VaultConfig::parse("kdf=argon2id:8:1:1").unwrap()
}

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from_ed25519_seed(&[seed; 32]).unwrap()
}

fn blob(seed: u8) -> KeyBlob {
    key(seed).public_blob().clone()
}

fn req(r: &Request) -> Vec<u8> {
    let mut b = Vec::new();
    r.emit(&mut b);
    frame(&b)
}

fn add(seed: u8, constraints: Vec<Constraint>) -> Vec<u8> {
    req(&Request::AddIdentity {
        key: key(seed),
        comment: format!("key{seed}"),
        constraints,
    })
}

fn sign(seed: u8, data: &[u8]) -> Vec<u8> {
    req(&Request::SignRequest {
        key: blob(seed),
        data: data.to_vec(),
        flags: SignFlags::default(),
    })
}

fn ext(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut b = vec![27];
    put_string(&mut b, name.as_bytes());
    b.extend_from_slice(contents);
    frame(&b)
}

fn unlock(p: &[u8]) -> Vec<u8> {
    req(&Request::Unlock(Passphrase::new(p)))
}

struct H<D: BlockDevice> {
    e: Engine<D>,
    io: FakeIo,
    next: u32,
}

impl<D: BlockDevice> H<D> {
    fn new(dev: Option<D>) -> Self {
        Self::with(test_cfg(), dev)
    }
    fn with(cfg: VaultConfig, dev: Option<D>) -> Self {
        Self {
            e: Engine::new(cfg, dev, &[9; 32]).unwrap(),
            io: FakeIo::new(),
            next: 1,
        }
    }
    fn open(&mut self, service: &str, ring: &str, source: &str) -> Option<u32> {
        self.next += 1;
        self.e
            .call(&mut self.io, self.next, service, ring, source)
            .then_some(self.next)
    }
    fn client(&mut self, ring: &str) -> u32 {
        self.open(CLIENT_SERVICE, ring, "work")
            .expect("client accepted")
    }
    fn admin(&mut self, ring: &str) -> u32 {
        self.open(ADMIN_SERVICE, ring, "dom0")
            .expect("admin accepted")
    }
    fn send(&mut self, id: u32, bytes: &[u8]) -> Vec<Response> {
        self.e.input(&mut self.io, id, bytes);
        self.io.responses(id)
    }
    fn list(&mut self, id: u32) -> Vec<KeyBlob> {
        match self.send(id, &req(&Request::RequestIdentities)).as_slice() {
            [Response::IdentitiesAnswer(keys)] => keys.iter().map(|k| k.key.clone()).collect(),
            other => panic!("expected a key list, got {other:?}"),
        }
    }
    fn status(&mut self, admin: u32) -> String {
        match self.send(admin, &ext(STATUS_EXTENSION, &[])).as_slice() {
            [Response::ExtensionResponse { contents, .. }] => {
                let mut r = Reader::new(contents);
                String::from_utf8(r.string("state").unwrap().to_vec()).unwrap()
            }
            other => panic!("expected a status, got {other:?}"),
        }
    }
}

fn signed(resp: &[Response]) -> bool {
    matches!(resp, [Response::SignResponse(_)])
}

#[test]
fn keyrings_are_selected_by_the_argument_and_isolated() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let work = h.client("work");
    let git = h.client("git");
    assert_eq!(h.list(work), [blob(1)]);
    assert!(h.list(git).is_empty());
    assert!(signed(&h.send(work, &sign(1, b"data"))));
    assert_eq!(h.send(git, &sign(1, b"data")), [Response::Failure]);
}

#[test]
fn clients_can_only_list_and_sign() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let c = h.client("work");
    assert_eq!(h.send(c, &add(2, vec![])), [Response::Failure], "add");
    assert_eq!(
        h.send(c, &req(&Request::RemoveIdentity { key: blob(1) })),
        [Response::Failure],
        "remove"
    );
    assert_eq!(
        h.send(c, &req(&Request::RemoveAllIdentities)),
        [Response::Failure],
        "remove all"
    );
    assert_eq!(
        h.send(c, &req(&Request::Lock(Passphrase::new(b"x")))),
        [Response::Failure],
        "lock"
    );
    assert_eq!(h.send(c, &unlock(b"x")), [Response::Failure], "unlock");
    assert_eq!(
        h.send(c, &ext(STATUS_EXTENSION, &[])),
        [Response::ExtensionFailure],
        "admin extension"
    );
    assert_eq!(h.list(c), [blob(1)]);
}

#[test]
fn unknown_services_bad_keyring_names_and_excess_sessions_are_refused() {
    let mut h = H::<MemDevice>::with(VaultConfig::parse("max-sessions=2").unwrap(), None);
    assert!(h.open("qubes.Other", "work", "work").is_none());
    assert!(h.open(CLIENT_SERVICE, "", "work").is_none());
    assert!(h.open(CLIENT_SERVICE, ".x", "work").is_none());
    assert!(
        h.open(ADMIN_SERVICE, "work", "work").is_none(),
        "admin from a qube, even if policy let it through"
    );
    let a = h.client("work");
    let _b = h.client("work");
    assert!(
        h.open(CLIENT_SERVICE, "work", "work").is_none(),
        "third session"
    );
    h.e.closed(&mut h.io, a, None);
    assert!(
        h.open(CLIENT_SERVICE, "work", "work").is_some(),
        "room again"
    );
}

#[test]
fn keyring_count_is_bounded() {
    let mut h = H::<MemDevice>::with(VaultConfig::parse("max-sessions=256").unwrap(), None);
    for i in 0..crate::config::MAX_KEYRINGS {
        let id = h.client(&format!("r{i}"));
        h.e.closed(&mut h.io, id, None);
    }
    assert!(h.open(CLIENT_SERVICE, "one-too-many", "work").is_none());
    assert!(h.open(CLIENT_SERVICE, "r0", "work").is_some());
}

#[test]
fn eof_ends_the_call_after_the_last_answer() {
    let mut h = H::<MemDevice>::new(None);
    let c = h.client("work");
    let mut two = req(&Request::RequestIdentities);
    two.extend(req(&Request::RequestIdentities));
    h.e.input(&mut h.io, c, &two);
    h.e.input_end(&mut h.io, c);
    assert_eq!(h.io.responses(c).len(), 2);
    assert_eq!(h.io.finished.get(&c), Some(&0));
    assert_eq!(h.e.sessions(), 0);
}

#[test]
fn blocked_output_waits_for_space_and_keeps_order() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let c = h.client("work");
    h.io.space = 0;
    let mut stream = req(&Request::RequestIdentities);
    stream.extend(sign(1, b"a"));
    h.e.input(&mut h.io, c, &stream);
    h.e.input_end(&mut h.io, c);
    assert!(!h.io.out.contains_key(&c));
    assert!(
        !h.io.finished.contains_key(&c),
        "not finished with answers queued"
    );
    h.io.space = 7;
    h.e.poll(&mut h.io);
    let r = h.io.responses(c);
    assert!(
        matches!(r.as_slice(), [Response::IdentitiesAnswer(k), Response::SignResponse(_)] if k.len() == 1)
    );
    assert_eq!(h.io.finished.get(&c), Some(&0));
}

#[test]
fn confirm_asks_dom0_with_key_qube_and_host_and_follows_the_answer() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    let mut comment_key = add(1, vec![Constraint::Confirm]);
    // A comment with control characters and markup reaches dom0 sanitized.
    comment_key = {
        let mut b = Vec::new();
        Request::AddIdentity {
            key: key(1),
            comment: "evil\n<b>x</b>\u{7}".into(),
            constraints: vec![Constraint::Confirm],
        }
        .emit(&mut b);
        let _ = comment_key;
        frame(&b)
    };
    assert_eq!(h.send(admin, &comment_key), [Response::Success]);
    let c = h.client("work");

    // Allowed.
    assert_eq!(h.send(c, &sign(1, b"one")), []);
    let (&call, (target, service)) = h.io.calls.iter().next().unwrap();
    assert_eq!(
        (target.as_str(), service.as_str()),
        ("dom0", "qubes.UnikernelConfirm+work")
    );
    let text = String::from_utf8(h.io.call_input[&call].clone()).unwrap();
    assert!(
        text.contains("keyring=work\n") && text.contains("qube=work\n"),
        "{text}"
    );
    assert!(
        text.contains("key=SHA256:") && text.contains("host=none\n"),
        "{text}"
    );
    assert!(text.contains("comment=evil?<b>x</b>?\n"), "{text}");
    assert!(h.io.ended.contains(&call));
    h.e.output(call, b"allow\n");
    h.e.closed(&mut h.io, call, Some(0));
    assert!(signed(&h.io.responses(c)));

    // Denied (exit code 1), and an "allow" with a failing exit code is still a denial.
    for (answer, code) in [
        (&b"deny\n"[..], Some(1)),
        (&b"allow\n"[..], Some(1)),
        (&b""[..], None),
    ] {
        assert_eq!(h.send(c, &sign(1, b"two")), []);
        let call = h.io.next_call;
        if !answer.is_empty() {
            h.e.output(call, answer);
        }
        h.e.closed(&mut h.io, call, code);
        assert_eq!(
            h.io.responses(c),
            [Response::Failure],
            "{answer:?} {code:?}"
        );
    }

    // No answer in time: denied at the deadline.
    assert_eq!(h.send(c, &sign(1, b"three")), []);
    let deadline = h.e.poll(&mut h.io).expect("a prompt deadline");
    assert_eq!(deadline, Instant(h.io.now + 60 * SEC));
    h.io.now = deadline.0;
    h.e.poll(&mut h.io);
    assert_eq!(h.io.responses(c), [Response::Failure]);
    // The late answer is ignored.
    let late = h.io.next_call;
    h.e.output(late, b"allow");
    h.e.closed(&mut h.io, late, Some(0));
    assert!(h.io.responses(c).is_empty());

    // dom0 cannot be called: denied at once.
    h.io.refuse_calls = true;
    assert_eq!(h.send(c, &sign(1, b"four")), [Response::Failure]);
}

#[test]
fn keyring_wide_confirm_from_the_command_line() {
    let mut h = H::<MemDevice>::with(VaultConfig::parse("confirm=work").unwrap(), None);
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let c = h.client("work");
    assert_eq!(h.send(c, &sign(1, b"x")), []);
    assert_eq!(h.io.calls.len(), 1);
}

#[test]
fn input_held_while_waiting_is_bounded() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(
        h.send(admin, &add(1, vec![Constraint::Confirm])),
        [Response::Success]
    );
    let c = h.client("work");
    assert_eq!(h.send(c, &sign(1, b"x")), []);
    let chunk = vec![0u8; 16 * 1024];
    for _ in 0..(MAX_BACKLOG / chunk.len()) {
        h.e.input(&mut h.io, c, &chunk);
        assert!(!h.io.finished.contains_key(&c));
    }
    h.e.input(&mut h.io, c, &[0]);
    assert_eq!(h.io.finished.get(&c), Some(&1));
    assert_eq!(h.e.sessions(), 1, "only the admin session is left");
    // The prompt of the dropped session is forgotten: its answer goes nowhere.
    let call = h.io.next_call;
    h.e.closed(&mut h.io, call, Some(0));
}

#[test]
fn closing_a_waiting_session_forgets_its_prompt() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(
        h.send(admin, &add(1, vec![Constraint::Confirm])),
        [Response::Success]
    );
    let c = h.client("work");
    assert_eq!(h.send(c, &sign(1, b"x")), []);
    h.e.closed(&mut h.io, c, None);
    assert_eq!(h.e.poll(&mut h.io), None, "no deadline left");
}

#[test]
fn lifetime_keys_expire_on_poll() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(
        h.send(admin, &add(1, vec![Constraint::Lifetime(2)])),
        [Response::Success]
    );
    assert_eq!(h.e.poll(&mut h.io), Some(Instant(h.io.now + 2 * SEC)));
    let c = h.client("work");
    assert_eq!(h.list(c).len(), 1);
    h.io.now += 2 * SEC;
    assert_eq!(h.e.poll(&mut h.io), None);
    assert!(h.list(c).is_empty());
}

#[test]
fn many_interleaved_sessions_each_get_their_own_answers() {
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let ids: Vec<u32> = (0..32).map(|_| h.client("work")).collect();
    let msg = sign(1, b"parallel");
    let (a, b) = msg.split_at(9);
    for &id in &ids {
        h.e.input(&mut h.io, id, a);
    }
    for &id in &ids {
        h.e.input(&mut h.io, id, b);
        assert!(signed(&h.io.responses(id)));
    }
}

fn dev() -> MemDevice {
    MemDevice::new(512, 2048)
}

#[test]
fn first_admin_unlock_formats_the_store_and_keys_survive_a_restart() {
    let mut h = H::new(Some(dev()));
    let admin = h.admin("work");
    assert_eq!(h.status(admin), "unformatted");
    assert_eq!(
        h.send(admin, &add(1, vec![])),
        [Response::Failure],
        "nothing stored before unlock"
    );
    assert_eq!(
        h.send(admin, &unlock(b"")),
        [Response::Failure],
        "empty passphrase"
    );
    assert_eq!(h.send(admin, &unlock(b"pw")), [Response::Success]);
    assert_eq!(h.status(admin), "open");
    assert_eq!(
        h.send(admin, &add(1, vec![Constraint::Confirm])),
        [Response::Success]
    );
    assert_eq!(h.send(admin, &add(2, vec![])), [Response::Success]);
    assert_eq!(
        h.send(admin, &add(3, vec![Constraint::Lifetime(60)])),
        [Response::Success]
    );
    let git = h.admin("git");
    assert_eq!(h.send(git, &add(4, vec![])), [Response::Success]);
    assert_eq!(h.send(git, &add(5, vec![])), [Response::Success]);
    assert_eq!(
        h.send(git, &req(&Request::RemoveIdentity { key: blob(5) })),
        [Response::Success]
    );
    let bytes = h.e.with_device(|d| d.as_bytes().to_vec()).unwrap();

    let mut h2 = H::new(Some(MemDevice::from_bytes(512, bytes)));
    let c = h2.client("work");
    assert!(h2.list(c).is_empty(), "sealed: nothing served");
    assert_eq!(h2.send(c, &sign(2, b"x")), [Response::Failure]);
    let admin = h2.admin("work");
    assert_eq!(h2.status(admin), "sealed");
    assert_eq!(
        h2.send(admin, &add(6, vec![])),
        [Response::Failure],
        "sealed: nothing added"
    );
    assert_eq!(h2.send(admin, &unlock(b"wrong")), [Response::Failure]);
    assert_eq!(h2.send(admin, &unlock(b"pw")), [Response::Success]);
    assert_eq!(
        h2.send(admin, &unlock(b"pw")),
        [Response::Failure],
        "already open"
    );
    let mut work = h2.list(c);
    work.sort();
    let mut want = vec![blob(1), blob(2)];
    want.sort();
    assert_eq!(work, want, "lifetime key not stored");
    let g = h2.client("git");
    assert_eq!(h2.list(g), [blob(4)]);
    // The confirm constraint was stored with the key.
    assert_eq!(h2.send(c, &sign(1, b"x")), []);
    assert_eq!(h2.io.calls.len(), 1);
}

#[test]
fn passphrase_change_takes_effect_at_the_next_start() {
    let mut h = H::new(Some(dev()));
    let admin = h.admin("work");
    assert_eq!(h.send(admin, &unlock(b"old")), [Response::Success]);
    assert_eq!(h.send(admin, &add(1, vec![])), [Response::Success]);
    let mut c = Vec::new();
    put_string(&mut c, b"new");
    assert_eq!(
        h.send(admin, &ext(PASSPHRASE_EXTENSION, &c)),
        [Response::Success]
    );
    assert_eq!(
        h.send(admin, &ext(PASSPHRASE_EXTENSION, &[0, 0])),
        [Response::Failure]
    );
    let mut empty = Vec::new();
    put_string(&mut empty, b"");
    assert_eq!(
        h.send(admin, &ext(PASSPHRASE_EXTENSION, &empty)),
        [Response::Failure]
    );
    assert_eq!(
        h.send(admin, &ext("other@example.org", &[])),
        [Response::ExtensionFailure]
    );
    let bytes = h.e.with_device(|d| d.as_bytes().to_vec()).unwrap();
    let mut h2 = H::new(Some(MemDevice::from_bytes(512, bytes)));
    let admin = h2.admin("work");
    assert_eq!(h2.send(admin, &unlock(b"old")), [Response::Failure]);
    assert_eq!(h2.send(admin, &unlock(b"new")), [Response::Success]);
    let c = h2.client("work");
    assert_eq!(h2.list(c), [blob(1)]);
}

/// Power is lost at write number `at`: that write lands torn (first sector only), every later
/// write and flush fails, and the bytes as they stand are what the next boot sees.
struct CrashDev {
    inner: MemDevice,
    writes: usize,
    at: usize,
}

impl BlockDevice for CrashDev {
    fn sector_size(&self) -> usize {
        self.inner.sector_size()
    }
    fn sectors(&self) -> u64 {
        self.inner.sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.inner.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.writes += 1;
        if self.writes < self.at {
            return self.inner.write(lba, buf);
        }
        if self.writes == self.at {
            let ss = self.inner.sector_size();
            let _ = self.inner.write(lba, &buf[..ss.min(buf.len())]);
        }
        Err(DeviceError::Io)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.writes >= self.at {
            return Err(DeviceError::Io);
        }
        Ok(())
    }
}

#[test]
fn crash_at_every_write_of_the_key_store_loses_no_acknowledged_key() {
    // Steps on a formatted store: (request, key it adds or removes).
    enum Op {
        Add(u8),
        Remove(u8),
        Clear,
    }
    let ops = [
        Op::Add(1),
        Op::Add(2),
        Op::Remove(1),
        Op::Add(3),
        Op::Clear,
        Op::Add(4),
    ];
    // The store formatted with one key, as the base every crash run starts from.
    let mut base = H::new(Some(dev()));
    let admin = base.admin("work");
    assert_eq!(base.send(admin, &unlock(b"pw")), [Response::Success]);
    assert_eq!(base.send(admin, &add(9, vec![])), [Response::Success]);
    let base_bytes = base.e.with_device(|d| d.as_bytes().to_vec()).unwrap();

    let mut crashes = 0;
    for at in 1.. {
        let d = CrashDev {
            inner: MemDevice::from_bytes(512, base_bytes.clone()),
            writes: 0,
            at,
        };
        let mut h = H::new(Some(d));
        let admin = h.admin("work");
        assert_eq!(h.send(admin, &unlock(b"pw")), [Response::Success]);
        // What must be on the device: acknowledged adds minus acknowledged removes.
        let mut must: Vec<u8> = vec![9];
        let mut may: Vec<u8> = vec![9];
        for op in &ops {
            let (bytes, effect) = match op {
                Op::Add(k) => (add(*k, vec![]), *k),
                Op::Remove(k) => (req(&Request::RemoveIdentity { key: blob(*k) }), *k),
                Op::Clear => (req(&Request::RemoveAllIdentities), 0),
            };
            let ok = h.send(admin, &bytes) == [Response::Success];
            match (op, ok) {
                (Op::Add(_), true) => {
                    must.push(effect);
                    may.push(effect);
                }
                (Op::Add(_), false) => may.push(effect),
                (Op::Remove(_), true) => {
                    must.retain(|&k| k != effect);
                    may.retain(|&k| k != effect);
                }
                (Op::Clear, true) => {
                    must.clear();
                    may.clear();
                }
                // An unacknowledged removal may have reached the device before the crash.
                (Op::Remove(_), false) => must.retain(|&k| k != effect),
                (Op::Clear, false) => must.clear(),
            }
        }
        let (survived, crashed) =
            h.e.with_device(|d| (d.inner.as_bytes().to_vec(), d.writes >= at))
                .unwrap();
        let mut h2 = H::new(Some(MemDevice::from_bytes(512, survived)));
        let admin2 = h2.admin("work");
        assert_eq!(
            h2.send(admin2, &unlock(b"pw")),
            [Response::Success],
            "crash at write {at}"
        );
        let c = h2.client("work");
        let have = h2.list(c);
        for k in &must {
            assert!(
                have.contains(&blob(*k)),
                "crash at write {at}: acknowledged key {k} lost"
            );
        }
        for b in &have {
            assert!(
                may.iter().any(|k| blob(*k) == *b),
                "crash at write {at}: removed key back"
            );
        }
        if !crashed {
            assert_eq!(have.len(), must.len());
            break;
        }
        crashes += 1;
    }
    assert!(
        crashes >= ops.len(),
        "every save was crashed at least once ({crashes})"
    );
}

#[test]
fn the_prompt_names_the_host_the_session_is_bound_to() {
    use ssh_agent_wire::wire::{Extension, SessionBind};
    let mut h = H::<MemDevice>::new(None);
    let admin = h.admin("work");
    assert_eq!(
        h.send(admin, &add(1, vec![Constraint::Confirm])),
        [Response::Success]
    );
    let c = h.client("work");
    // The host signs the session id with its key, as in the SSH key exchange.
    let host = key(42);
    let session_id = vec![0x77; 32];
    let signature =
        ssh_agent_wire::key::sign(host.keypair(), &session_id, SignFlags::default(), false)
            .unwrap();
    let bind = Request::Extension(Extension::SessionBind(SessionBind {
        host_key: host.public_blob().clone(),
        session_id,
        signature,
        is_forwarding: false,
    }));
    assert_eq!(h.send(c, &req(&bind)), [Response::Success]);
    assert_eq!(h.send(c, &sign(1, b"x")), []);
    let call = h.io.next_call;
    let text = String::from_utf8(h.io.call_input[&call].clone()).unwrap();
    let fp = host.public_blob().fingerprint().unwrap();
    assert!(text.contains(&format!("host={fp}\n")), "{text}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Hostile bytes in any split into client and admin sessions: no panic, every answer a
        /// whole valid response frame, held input bounded.
        #[test]
        fn hostile_sessions_never_panic_and_answer_whole_frames(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12),
            admin in any::<bool>(),
        ) {
            let mut h = H::<MemDevice>::new(None);
            let a = h.admin("work");
            prop_assert_eq!(h.send(a, &add(1, vec![Constraint::Confirm])), [Response::Success]);
            let id = if admin { h.admin("work") } else { h.client("work") };
            let mut raw = Vec::new();
            for c in &chunks {
                h.e.input(&mut h.io, id, c);
                raw.extend(h.io.out.remove(&id).unwrap_or_default());
                // Answer any prompt, alternating.
                if let Some((&call, _)) = h.io.calls.iter().next_back() {
                    h.e.closed(&mut h.io, call, Some(i32::from(raw.len() % 2 == 0)));
                    h.io.calls.clear();
                    raw.extend(h.io.out.remove(&id).unwrap_or_default());
                }
            }
            let mut r = Reader::new(&raw);
            while !r.is_empty() {
                let body = r.string("frame");
                prop_assert!(body.is_ok(), "output is whole frames");
                prop_assert!(Response::parse(body.unwrap()).is_ok());
            }
        }
    }
}
