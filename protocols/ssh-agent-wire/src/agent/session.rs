//! One client connection: frames in, one response per request out, in order; a signature with a
//! confirm-constrained key, and an admin request only the owner can answer, wait as an [`Event`].

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::Instant;
use signature::Verifier;
use ssh_key::{Fingerprint, Signature};
use zeroize::Zeroize;

use super::dest::{parse_userauth, permitted};
use super::{Agent, Identity, Keyring};
use crate::key::{sign, KeyBlob};
use crate::wire::constraint::Constraint;
use crate::wire::message::{QUERY, SESSION_BIND};
use crate::wire::{
    Extension, Frame, FrameReader, IdentityEntry, Passphrase, Request, Response, SessionBind,
    SignFlags, MAX_MESSAGE_LEN,
};

/// Most session bindings on one connection (OpenSSH's `AGENT_MAX_SESSION_IDS`).
pub const MAX_SESSION_BINDS: usize = 16;
/// Longest session identifier accepted (OpenSSH's `AGENT_MAX_SID_LEN`).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Names a pending confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmId(pub u64);

/// The owner is asked whether a signature may be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmRequest {
    /// Pass to [`Session::confirm`].
    pub id: ConfirmId,
    /// SHA-256 fingerprint of the key.
    pub fingerprint: Option<Fingerprint>,
    /// The key's comment.
    pub comment: String,
    /// Fingerprint of the host this connection is bound to (last session-bind), if any.
    pub host: Option<Fingerprint>,
}

/// An admin request the session cannot answer alone: the owner answers with
/// [`Session::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRequest {
    /// Pass to [`Session::answer`].
    pub id: ConfirmId,
    /// What is asked.
    pub kind: OwnerKind,
}

/// The admin requests handed to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerKind {
    /// UNLOCK while the agent is not locked (e.g. the passphrase of the store behind it).
    Unlock(Passphrase),
    /// An extension the session does not know.
    Extension {
        /// Its name.
        name: String,
        /// Its contents.
        contents: Vec<u8>,
    },
}

/// What the session asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Allow or deny one signature; input is held until [`Session::confirm`] answers.
    ConfirmRequest(ConfirmRequest),
    /// Answer an admin request; input is held until [`Session::answer`].
    Owner(OwnerRequest),
}

#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub host_key: KeyBlob,
    pub session_id: Vec<u8>,
    pub forwarding: bool,
}

#[derive(Debug)]
enum Pending {
    Sign {
        id: ConfirmId,
        key: KeyBlob,
        data: Vec<u8>,
        flags: SignFlags,
    },
    Owner {
        id: ConfirmId,
    },
}

/// One connection's machine. Admin sessions (the vault owner's) may add, remove, lock and
/// unlock; client sessions may only list and sign.
#[derive(Debug)]
pub struct Session {
    admin: bool,
    frames: FrameReader,
    tx: VecDeque<u8>,
    binds: Vec<Binding>,
    /// A session-bind was tried: if none succeeded, this connection signs nothing (OpenSSH).
    bind_attempted: bool,
    pending: Option<Pending>,
    events: VecDeque<Event>,
    next_confirm: u64,
}

impl Session {
    /// A new connection.
    pub fn new(admin: bool) -> Self {
        Self {
            admin,
            frames: FrameReader::default(),
            tx: VecDeque::new(),
            binds: Vec::new(),
            bind_attempted: false,
            pending: None,
            events: VecDeque::new(),
            next_confirm: 0,
        }
    }

    /// Whether this is an admin session.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether a signature or an admin request waits for the owner.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Feeds bytes from the client; returns how many were taken. Bytes are left untaken while a
    /// confirmation is pending or a whole message's worth of output waits: offer them again.
    #[must_use]
    pub fn handle_input<K: Keyring>(
        &mut self,
        now: Instant,
        agent: &mut Agent<K>,
        data: &[u8],
    ) -> usize {
        agent.expire(now);
        let mut taken = 0;
        while taken < data.len() && self.pending.is_none() && self.tx.len() <= MAX_MESSAGE_LEN {
            let (n, frame) = self.frames.push(data.get(taken..).unwrap_or(&[]));
            taken += n;
            match frame {
                Some(Frame::Message(mut body)) => {
                    self.handle_message(now, agent, &body);
                    // ADD_IDENTITY and LOCK bodies carry secrets.
                    body.zeroize();
                }
                Some(Frame::Oversized { .. }) => self.respond(&Response::Failure),
                None if n == 0 => break,
                None => {}
            }
        }
        taken
    }

    /// Copies pending output into `out`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.tx.is_empty() {
            return None;
        }
        let n = out.len().min(self.tx.len());
        for (dst, src) in out.iter_mut().zip(self.tx.drain(..n)) {
            *dst = src;
        }
        Some(n)
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The owner's answer to a [`ConfirmRequest`]: signs (re-checking key, expiry and lock) or
    /// answers FAILURE. An unknown or stale id is ignored.
    pub fn confirm<K: Keyring>(
        &mut self,
        now: Instant,
        agent: &mut Agent<K>,
        id: ConfirmId,
        allow: bool,
    ) {
        if !matches!(&self.pending, Some(Pending::Sign { id: p, .. }) if *p == id) {
            return;
        }
        let Some(Pending::Sign {
            key, data, flags, ..
        }) = self.pending.take()
        else {
            return;
        };
        agent.expire(now);
        let resp = if allow && !agent.is_locked() {
            self.sign_now(now, agent, &key, &data, flags)
        } else {
            Response::Failure
        };
        self.respond(&resp);
    }

    /// The owner's answer to an [`OwnerRequest`], sent as is. An unknown or stale id is ignored.
    pub fn answer(&mut self, id: ConfirmId, resp: &Response) {
        if !matches!(&self.pending, Some(Pending::Owner { id: p }) if *p == id) {
            return;
        }
        self.pending = None;
        self.respond(resp);
    }

    fn next_id(&mut self) -> ConfirmId {
        let id = ConfirmId(self.next_confirm);
        self.next_confirm = self.next_confirm.wrapping_add(1);
        id
    }

    fn ask_owner(&mut self, kind: OwnerKind) {
        let id = self.next_id();
        self.events
            .push_back(Event::Owner(OwnerRequest { id, kind }));
        self.pending = Some(Pending::Owner { id });
    }

    fn respond(&mut self, resp: &Response) {
        let mut body = Vec::new();
        resp.emit(&mut body);
        if body.len() > MAX_MESSAGE_LEN {
            body.clear();
            Response::Failure.emit(&mut body);
        }
        let len = u32::try_from(body.len()).unwrap_or(0);
        self.tx.extend(len.to_be_bytes());
        self.tx.extend(body);
    }

    fn handle_message<K: Keyring>(&mut self, now: Instant, agent: &mut Agent<K>, body: &[u8]) {
        let Ok(req) = Request::parse(body) else {
            self.respond(&Response::Failure);
            return;
        };
        if self.admin {
            match req {
                Request::Unlock(p) if !agent.is_locked() => {
                    return self.ask_owner(OwnerKind::Unlock(p));
                }
                Request::Extension(Extension::Other { name, contents }) => {
                    return self.ask_owner(OwnerKind::Extension { name, contents });
                }
                _ => {}
            }
        }
        if agent.is_locked() && !matches!(req, Request::Unlock(_)) {
            // As OpenSSH: a locked agent lists nothing and refuses everything else.
            let resp = match req {
                Request::RequestIdentities => Response::IdentitiesAnswer(Vec::new()),
                _ => Response::Failure,
            };
            self.respond(&resp);
            return;
        }
        let resp = match req {
            Request::RequestIdentities => self.list(now, agent),
            Request::SignRequest { key, data, flags } => {
                match self.begin_sign(now, agent, key, data, flags) {
                    Some(r) => r,
                    None => return,
                }
            }
            Request::AddIdentity {
                key,
                comment,
                constraints,
            } if self.admin => add(now, agent, key, comment, constraints),
            Request::RemoveIdentity { key } if self.admin => match agent.keyring.position(&key) {
                Some(i) => status(matches!(agent.keyring.remove(i), Ok(Some(_)))),
                None => Response::Failure,
            },
            Request::RemoveAllIdentities if self.admin => status(agent.keyring.clear().is_ok()),
            Request::Lock(p) if self.admin => status(agent.lock(&p)),
            Request::Unlock(p) if self.admin => status(agent.unlock(&p)),
            Request::Extension(Extension::SessionBind(b)) => status(self.bind(&b)),
            Request::Extension(Extension::Query) => {
                let mut contents = Vec::new();
                for name in [QUERY, SESSION_BIND] {
                    crate::wire::codec::put_string(&mut contents, name.as_bytes());
                }
                Response::ExtensionResponse {
                    name: QUERY.into(),
                    contents,
                }
            }
            Request::Extension(Extension::Other { .. }) => Response::ExtensionFailure,
            _ => Response::Failure,
        };
        self.respond(&resp);
    }

    fn served<K: Keyring>(agent: &Agent<K>, id: &Identity) -> bool {
        agent.config.allow_rsa || !id.key.is_rsa()
    }

    fn list<K: Keyring>(&self, now: Instant, agent: &Agent<K>) -> Response {
        let keys = (0..agent.keyring.len())
            .filter_map(|i| agent.keyring.get(i))
            .filter(|id| {
                !id.expired(now) && Self::served(agent, id) && permitted(id, &self.binds, None)
            })
            .map(|id| IdentityEntry {
                key: id.public().clone(),
                comment: id.comment.clone(),
            })
            .collect();
        Response::IdentitiesAnswer(keys)
    }

    /// Checks a sign request; `None` when it now waits for confirmation.
    fn begin_sign<K: Keyring>(
        &mut self,
        now: Instant,
        agent: &Agent<K>,
        key: KeyBlob,
        data: Vec<u8>,
        flags: SignFlags,
    ) -> Option<Response> {
        let Some(id) = agent
            .keyring
            .position(&key)
            .and_then(|i| agent.keyring.get(i))
        else {
            return Some(Response::Failure);
        };
        if id.expired(now) || !Self::served(agent, id) || !self.sign_permitted(id, &data) {
            return Some(Response::Failure);
        }
        if id.confirm || agent.config.confirm_all {
            let comment = id.comment.clone();
            let cid = self.next_id();
            self.events.push_back(Event::ConfirmRequest(ConfirmRequest {
                id: cid,
                fingerprint: key.fingerprint(),
                comment,
                host: self.binds.last().and_then(|b| b.host_key.fingerprint()),
            }));
            self.pending = Some(Pending::Sign {
                id: cid,
                key,
                data,
                flags,
            });
            return None;
        }
        Some(self.sign_now(now, agent, &key, &data, flags))
    }

    fn sign_now<K: Keyring>(
        &self,
        now: Instant,
        agent: &Agent<K>,
        key: &KeyBlob,
        data: &[u8],
        flags: SignFlags,
    ) -> Response {
        let Some(id) = agent
            .keyring
            .position(key)
            .and_then(|i| agent.keyring.get(i))
        else {
            return Response::Failure;
        };
        if id.expired(now) || !Self::served(agent, id) || !self.sign_permitted(id, data) {
            return Response::Failure;
        }
        match sign(id.key.keypair(), data, flags, agent.config.allow_rsa) {
            Ok(sig) => Response::SignResponse(sig),
            Err(_) => Response::Failure,
        }
    }

    /// OpenSSH's rules: a userauth request on a connection bound for authentication must carry
    /// that session's id; a destination-constrained key signs only userauth requests on a bound
    /// connection whose hops, host key and user its constraints permit.
    fn sign_permitted(&self, id: &Identity, data: &[u8]) -> bool {
        if self.bind_attempted && self.binds.is_empty() {
            return false; // a failed bind must not leave an unbound, usable connection
        }
        let ua = parse_userauth(data);
        let last = self.binds.last();
        if let (Some(ua), Some(b)) = (&ua, last) {
            if !b.forwarding && ua.session_id != b.session_id.as_slice() {
                return false;
            }
        }
        if id.destinations.is_empty() {
            return true;
        }
        let (Some(ua), Some(b)) = (ua, last) else {
            return false;
        };
        if ua.session_id != b.session_id.as_slice() || ua.key != id.public().as_bytes() {
            return false;
        }
        if ua.hostkey.is_some_and(|hk| hk != b.host_key.as_bytes()) {
            return false;
        }
        permitted(id, &self.binds, Some(ua.user))
    }

    /// `session-bind@openssh.com`, as OpenSSH's `process_ext_session_bind`.
    fn bind(&mut self, b: &SessionBind) -> bool {
        self.bind_attempted = true;
        if b.session_id.is_empty() || b.session_id.len() > MAX_SESSION_ID_LEN {
            return false;
        }
        let Ok(kd) = b.host_key.key_data() else {
            return false;
        };
        let Ok(sig) = Signature::try_from(b.signature.as_slice()) else {
            return false;
        };
        if kd.verify(&b.session_id, &sig).is_err() {
            return false;
        }
        for old in &self.binds {
            if !old.forwarding {
                return false; // already bound for authentication
            }
            if old.session_id == b.session_id {
                return old.host_key == b.host_key;
            }
        }
        if self.binds.len() >= MAX_SESSION_BINDS {
            return false;
        }
        self.binds.push(Binding {
            host_key: b.host_key.clone(),
            session_id: b.session_id.clone(),
            forwarding: b.is_forwarding,
        });
        true
    }
}

fn status(ok: bool) -> Response {
    if ok {
        Response::Success
    } else {
        Response::Failure
    }
}

fn add<K: Keyring>(
    now: Instant,
    agent: &mut Agent<K>,
    key: crate::key::PrivateKey,
    comment: String,
    constraints: Vec<Constraint>,
) -> Response {
    if key.is_rsa() && !agent.config.allow_rsa {
        return Response::Failure;
    }
    if key.check_consistent().is_err() {
        return Response::Failure;
    }
    let mut id = Identity {
        key,
        comment,
        expires: None,
        confirm: false,
        destinations: Vec::new(),
    };
    for c in constraints {
        match c {
            Constraint::Lifetime(secs) => {
                id.expires = Some(now.saturating_add(core::time::Duration::from_secs(secs.into())));
            }
            Constraint::Confirm => id.confirm = true,
            Constraint::RestrictDestination(d) => id.destinations = d,
        }
    }
    status(agent.keyring.insert(id).is_ok())
}
