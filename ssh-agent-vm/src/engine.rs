//! The vault's sans-IO core: qrexec calls become agent sessions on the keyring their argument
//! names; confirmations go to dom0 as outgoing calls; the owner's admin requests open the store.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::{self, Write as _};
use core::time::Duration;

use platform_api::Instant;
use ssh_agent_wire::agent::ConfirmId;
use ssh_agent_wire::wire::codec::{put_string, Reader};
use ssh_agent_wire::{Agent, Event, OwnerKind, OwnerRequest, Response, Session};
use vault_store::{BlockDevice, DeviceError};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{valid_keyring, VaultConfig, MAX_KEYRINGS};
use crate::ring::VaultRing;
use crate::store::{Persist, StoreState};

/// Clients: list and sign on the keyring named by the argument.
pub const CLIENT_SERVICE: &str = "qubes.SshAgent";
/// The owner (dom0 by the shipped policy): also add, remove, lock, unlock, open the store.
pub const ADMIN_SERVICE: &str = "qubes.SshAgentAdmin";
/// The services served.
pub const SERVICES: &[&str] = &[CLIENT_SERVICE, ADMIN_SERVICE];
/// The dom0 service asked before a confirm-constrained signature; argument = keyring.
pub const CONFIRM_SERVICE: &str = "qubes.UnikernelConfirm";
/// Admin extension: `string new passphrase` re-wraps the store's key.
pub const PASSPHRASE_EXTENSION: &str = "vault-passphrase@unikernel.qubes";
/// Admin extension: answers EXTENSION_RESPONSE with `string state` (memory, unformatted,
/// sealed, open, broken).
pub const STATUS_EXTENSION: &str = "vault-status@unikernel.qubes";
/// Bytes of a session's input held while it waits (confirmation, blocked output).
pub const MAX_BACKLOG: usize = 64 * 1024;
/// Longest answer read from the confirmation service.
const MAX_REPLY: usize = 64;
/// Largest chunk handed to the run loop at once.
const CHUNK: usize = 16 * 1024;

/// What the core needs from the run loop (the app adapts `runloop::Cx`; tests fake it).
pub trait Io {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Sends to a call's peer (our stdout on a served call, its stdin on our call);
    /// all or nothing.
    fn send(&mut self, id: u32, data: &[u8]) -> bool;
    /// Bytes `send` takes now.
    fn send_space(&self, id: u32) -> usize;
    /// Ends a served call with an exit code.
    fn finish(&mut self, id: u32, code: i32);
    /// Starts an outgoing call.
    fn call(&mut self, target: &str, service_and_arg: &str) -> Option<u32>;
    /// EOF on our stdin to an outgoing call.
    fn end_input(&mut self, id: u32);
    /// One console line.
    fn log(&mut self, args: fmt::Arguments<'_>);
    /// Random bytes from the platform.
    fn entropy(&mut self, buf: &mut [u8]);
}

struct Conn {
    ring: String,
    source: String,
    sess: Session,
    backlog: Zeroizing<Vec<u8>>,
    eof: bool,
}

struct Prompt {
    conn: u32,
    confirm: ConfirmId,
    deadline: Instant,
    reply: Vec<u8>,
}

/// The vault.
pub struct Engine<D: BlockDevice> {
    cfg: VaultConfig,
    store: Rc<RefCell<Persist<D>>>,
    rings: BTreeMap<String, Agent<VaultRing<D>>>,
    conns: BTreeMap<u32, Conn>,
    prompts: BTreeMap<u32, Prompt>,
    scratch: Vec<u8>,
}

impl<D: BlockDevice> fmt::Debug for Engine<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.borrow().state)
            .field("rings", &self.rings.len())
            .field("sessions", &self.conns.len())
            .field("prompts", &self.prompts.len())
            .finish()
    }
}

/// Printable ASCII only, bounded: the prompt in dom0 shows peer-chosen comments.
fn sanitize(out: &mut String, s: &str, max: usize) {
    for c in s.chars().take(max) {
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
}

impl<D: BlockDevice> Engine<D> {
    /// A vault over `dev` (probed for a store; `None` = keys in memory only).
    pub fn new(cfg: VaultConfig, dev: Option<D>, seed: &[u8; 32]) -> Result<Self, DeviceError> {
        let kdf = cfg.kdf;
        Ok(Self {
            cfg,
            store: Rc::new(RefCell::new(Persist::new(dev, kdf, seed)?)),
            rings: BTreeMap::new(),
            conns: BTreeMap::new(),
            prompts: BTreeMap::new(),
            scratch: vec![0; CHUNK],
        })
    }

    /// The store's state, as [`STATUS_EXTENSION`] reports it.
    pub fn store_state(&self) -> &'static str {
        match self.store.borrow().state {
            StoreState::Memory => "memory",
            StoreState::Unformatted(_) => "unformatted",
            StoreState::Sealed(_) => "sealed",
            StoreState::Open(_) => "open",
            StoreState::Broken => "broken",
        }
    }

    /// Runs `f` on the store's device, if there is one.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> Option<R> {
        self.store.borrow().with_device(f)
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.conns.len()
    }

    /// The keyring named `name`, if it exists.
    pub fn keyring(&self, name: &str) -> Option<&Agent<VaultRing<D>>> {
        self.rings.get(name)
    }

    fn ring(&mut self, name: &str) -> Option<&mut Agent<VaultRing<D>>> {
        if !self.rings.contains_key(name) {
            if self.rings.len() >= MAX_KEYRINGS {
                return None;
            }
            let ring = VaultRing::new(name, Rc::clone(&self.store));
            self.rings
                .insert(name.into(), Agent::new(ring, self.cfg.agent_config(name)));
        }
        self.rings.get_mut(name)
    }

    /// A new qrexec call: accepted if it is one of ours, names a valid keyring and there is room.
    pub fn call(
        &mut self,
        io: &mut impl Io,
        id: u32,
        service: &str,
        arg: &str,
        source: &str,
    ) -> bool {
        let admin = match service {
            CLIENT_SERVICE => false,
            ADMIN_SERVICE => true,
            _ => return false,
        };
        if admin && !self.cfg.admin.contains(source) {
            io.log(format_args!(
                "refused {service} from {source}: not an admin source"
            ));
            return false;
        }
        if !valid_keyring(arg) {
            io.log(format_args!(
                "refused {service} from {source}: bad keyring name"
            ));
            return false;
        }
        if self.conns.len() >= self.cfg.max_sessions {
            io.log(format_args!(
                "refused {service}+{arg} from {source}: too many sessions"
            ));
            return false;
        }
        if self.ring(arg).is_none() {
            io.log(format_args!(
                "refused {service}+{arg} from {source}: too many keyrings"
            ));
            return false;
        }
        self.conns.insert(
            id,
            Conn {
                ring: arg.into(),
                source: source.into(),
                sess: Session::new(admin),
                backlog: Zeroizing::new(Vec::new()),
                eof: false,
            },
        );
        true
    }

    /// Bytes from a caller.
    pub fn input(&mut self, io: &mut impl Io, id: u32, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.backlog.len().saturating_add(data.len()) > MAX_BACKLOG {
            io.log(format_args!(
                "session {id} from {}: input backlog over {MAX_BACKLOG} bytes, closed",
                conn.source
            ));
            self.drop_conn(id);
            io.finish(id, 1);
            return;
        }
        conn.backlog.extend_from_slice(data);
        self.pump(io, id);
    }

    /// The caller closed its stdin: the call ends once every answer is out.
    pub fn input_end(&mut self, io: &mut impl Io, id: u32) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.eof = true;
            self.pump(io, id);
        }
    }

    /// Remote stdout of one of our calls (the confirmation's answer).
    pub fn output(&mut self, id: u32, data: &[u8]) {
        if let Some(p) = self.prompts.get_mut(&id) {
            let room = MAX_REPLY.saturating_sub(p.reply.len());
            p.reply
                .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
        }
    }

    /// A call ended: a confirmation is decided (exit 0 and `allow` = yes), a session is dropped.
    pub fn closed(&mut self, io: &mut impl Io, id: u32, exit: Option<i32>) {
        if let Some(p) = self.prompts.remove(&id) {
            let allow = exit == Some(0) && p.reply.trim_ascii() == b"allow";
            self.decide(io, p, allow, "answered");
            return;
        }
        self.drop_conn(id);
    }

    /// Timers (key lifetimes, confirmation timeouts) and blocked output; the next deadline.
    pub fn poll(&mut self, io: &mut impl Io) -> Option<Instant> {
        let now = io.now();
        for agent in self.rings.values_mut() {
            agent.expire(now);
        }
        let late: Vec<u32> = self
            .prompts
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(p) = self.prompts.remove(&id) {
                self.decide(io, p, false, "timed out");
            }
        }
        let ids: Vec<u32> = self.conns.keys().copied().collect();
        for id in ids {
            self.pump(io, id);
        }
        let rings = self.rings.values().filter_map(|a| a.poll_at());
        let prompts = self.prompts.values().map(|p| p.deadline);
        rings.chain(prompts).min()
    }

    fn drop_conn(&mut self, id: u32) {
        self.conns.remove(&id);
        self.prompts.retain(|_, p| p.conn != id);
    }

    fn decide(&mut self, io: &mut impl Io, p: Prompt, allow: bool, how: &str) {
        let Some(conn) = self.conns.get_mut(&p.conn) else {
            return;
        };
        io.log(format_args!(
            "confirmation for {} on keyring {} {how}: {}",
            conn.source,
            conn.ring,
            if allow { "allowed" } else { "denied" }
        ));
        if let Some(agent) = self.rings.get_mut(&conn.ring) {
            conn.sess.confirm(io.now(), agent, p.confirm, allow);
        }
        self.pump(io, p.conn);
    }

    /// Feeds held input, handles events, sends output, ends the call when all is done.
    fn pump(&mut self, io: &mut impl Io, id: u32) {
        let mut seed = Zeroizing::new([0u8; 32]);
        io.entropy(seed.as_mut());
        self.store.borrow_mut().rng.reseed(&seed);
        loop {
            let now = io.now();
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(agent) = self.rings.get_mut(&conn.ring) else {
                return;
            };
            let took = conn.sess.handle_input(now, agent, &conn.backlog);
            conn.backlog.drain(..took);
            while let Some(ev) = self.conns.get_mut(&id).and_then(|c| c.sess.poll_event()) {
                self.event(io, id, ev);
            }
            self.flush(io, id);
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            if took == 0 || conn.backlog.is_empty() {
                break;
            }
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut probe = [0u8; 0];
        let idle = conn.backlog.is_empty()
            && !conn.sess.is_waiting()
            && conn.sess.poll_transmit(&mut probe).is_none();
        if conn.eof && idle {
            self.drop_conn(id);
            io.finish(id, 0);
        }
    }

    fn flush(&mut self, io: &mut impl Io, id: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        loop {
            let room = io.send_space(id).min(self.scratch.len());
            if room == 0 {
                return;
            }
            let Some(n) = conn.sess.poll_transmit(&mut self.scratch[..room]) else {
                return;
            };
            if !io.send(id, &self.scratch[..n]) {
                // send_space promised room: a refusal means the call is gone.
                return;
            }
        }
    }

    fn event(&mut self, io: &mut impl Io, id: u32, ev: Event) {
        match ev {
            Event::ConfirmRequest(req) => {
                let Some(conn) = self.conns.get(&id) else {
                    return;
                };
                let mut text = String::new();
                let _ = write!(text, "keyring={}\nqube=", conn.ring);
                sanitize(&mut text, &conn.source, 64);
                text.push_str("\nkey=");
                match &req.fingerprint {
                    Some(f) => {
                        let _ = write!(text, "{f}");
                    }
                    None => text.push_str("unknown"),
                }
                text.push_str("\ncomment=");
                sanitize(&mut text, &req.comment, 128);
                text.push_str("\nhost=");
                match &req.host {
                    Some(f) => {
                        let _ = write!(text, "{f}");
                    }
                    None => text.push_str("none"),
                }
                text.push('\n');
                let service = alloc::format!("{CONFIRM_SERVICE}+{}", conn.ring);
                let started = io.call("dom0", &service);
                match started {
                    Some(out) if io.send(out, text.as_bytes()) => {
                        io.end_input(out);
                        let deadline = io.now().saturating_add(Duration::from_secs(
                            self.cfg.confirm_timeout_secs.into(),
                        ));
                        self.prompts.insert(
                            out,
                            Prompt {
                                conn: id,
                                confirm: req.id,
                                deadline,
                                reply: Vec::new(),
                            },
                        );
                    }
                    _ => {
                        let p = Prompt {
                            conn: id,
                            confirm: req.id,
                            deadline: io.now(),
                            reply: Vec::new(),
                        };
                        self.decide(io, p, false, "could not be asked");
                    }
                }
            }
            Event::Owner(OwnerRequest { id: oid, kind }) => {
                let resp = self.owner(io, kind);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.sess.answer(oid, &resp);
                }
            }
        }
    }

    fn owner(&mut self, io: &mut impl Io, kind: OwnerKind) -> Response {
        let resp = self.owner_answer(io, &kind);
        if let OwnerKind::Extension { mut contents, .. } = kind {
            contents.zeroize(); // the passphrase extension carries a secret
        }
        resp
    }

    fn owner_answer(&mut self, io: &mut impl Io, kind: &OwnerKind) -> Response {
        match kind {
            OwnerKind::Unlock(p) => self.unlock(io, p.as_bytes()),
            OwnerKind::Extension { name, contents } if name == PASSPHRASE_EXTENSION => {
                let mut r = Reader::new(contents);
                let Ok(new) = r.string("passphrase") else {
                    return Response::Failure;
                };
                if r.expect_empty("passphrase extension").is_err() {
                    return Response::Failure;
                }
                match self.store.borrow_mut().set_passphrase(new) {
                    Ok(()) => {
                        io.log(format_args!("key store passphrase changed"));
                        Response::Success
                    }
                    Err(e) => {
                        io.log(format_args!("key store passphrase not changed: {e}"));
                        Response::Failure
                    }
                }
            }
            OwnerKind::Extension { name, .. } if name == STATUS_EXTENSION => {
                let mut contents = Vec::new();
                put_string(&mut contents, self.store_state().as_bytes());
                Response::ExtensionResponse {
                    name: name.clone(),
                    contents,
                }
            }
            OwnerKind::Extension { .. } => Response::ExtensionFailure,
        }
    }

    fn unlock(&mut self, io: &mut impl Io, passphrase: &[u8]) -> Response {
        let was = self.store_state();
        let result = self.store.borrow_mut().unlock(passphrase);
        let (keys, bad) = match result {
            Ok(k) => k,
            Err(e) => {
                io.log(format_args!("key store not opened: {e}"));
                return Response::Failure;
            }
        };
        let (mut loaded, mut lost) = (0usize, bad.len());
        for (ring, id) in keys {
            match self.ring(&ring).map(|a| a.keyring_mut().load(id)) {
                Some(Ok(())) => loaded += 1,
                _ => lost += 1,
            }
        }
        for name in &bad {
            io.log(format_args!("stored key {name} does not decode: skipped"));
        }
        io.log(format_args!(
            "key store {} ({was} before): {loaded} keys loaded, {lost} skipped",
            if was == "unformatted" {
                "formatted"
            } else {
                "opened"
            }
        ));
        Response::Success
    }
}
