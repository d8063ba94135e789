//! The client machine: request ids, replies matched by `req_id`, watch events demultiplexed
//! into a bounded queue, sticky fatal errors; bytes in by `handle_input`, out by `poll_transmit`.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform_api::{StoreError, Tx};

use crate::wire::{Header, MsgHeader, MsgType, Reply, ReplyMsg, Request, RequestMsg, WireError};
use crate::wire::{HEADER_LEN, MSG_MAX};

/// Bounds of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests sent whose reply has not been taken yet.
    pub max_pending: usize,
    /// Watch events queued and not yet polled; more are counted in `events_lost`.
    pub max_events: usize,
}

impl Limits {
    /// 64 requests in flight, 256 queued events.
    pub const DEFAULT: Limits = Limits {
        max_pending: 64,
        max_events: 256,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The id of one request, echoed by its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u32);

/// A watch firing: the changed path (relative if the watch was) and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The token given to WATCH.
    pub token: String,
}

/// xenstored sent something well-framed or not that breaks the protocol. Fatal and sticky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// A message that does not decode (including `len > XENSTORE_PAYLOAD_MAX`).
    Malformed(WireError),
    /// A reply to a request id we have not sent (or already got a reply for).
    UnknownReqId(u32),
    /// A reply whose type is neither ERROR nor the request's type.
    WrongType {
        /// The request's type.
        expected: MsgType,
        /// The reply's type.
        got: MsgType,
    },
    /// A reply whose `tx_id` differs from the request's.
    WrongTxId {
        /// The request's.
        expected: u32,
        /// The reply's.
        got: u32,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed message from xenstored: {e}"),
            Self::UnknownReqId(id) => write!(f, "xenstored answered unknown request id {id}"),
            Self::WrongType { expected, got } => write!(
                f,
                "xenstored answered type {} to a request of type {}",
                u32::from(*got),
                u32::from(*expected)
            ),
            Self::WrongTxId { expected, got } => {
                write!(
                    f,
                    "xenstored answered tx_id {got} to a request with tx_id {expected}"
                )
            }
        }
    }
}

impl core::error::Error for PeerError {}

/// Why a client call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// A bound of [`Limits`] is reached; take replies first.
    Full {
        /// Which bound.
        what: &'static str,
    },
    /// The request cannot be encoded (payload above `XENSTORE_PAYLOAD_MAX`).
    Encode(WireError),
    /// The connection is broken by xenstored (sticky).
    Peer(PeerError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { what } => write!(f, "too many {what}"),
            Self::Encode(e) => write!(f, "cannot encode request: {e}"),
            Self::Peer(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ClientError {}

impl From<ClientError> for StoreError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Full { .. } => StoreError::Xs(platform_api::XsErrno::Ebusy),
            ClientError::Encode(WireError::PayloadTooLong { .. }) => {
                StoreError::Xs(platform_api::XsErrno::E2big)
            }
            ClientError::Encode(_) => StoreError::Xs(platform_api::XsErrno::Einval),
            ClientError::Peer(_) => StoreError::BadReply("protocol violation by xenstored"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    msg_type: MsgType,
    tx_id: u32,
}

/// The sans-IO xenstore client.
#[derive(Debug)]
pub struct Client {
    limits: Limits,
    next_id: u32,
    out: VecDeque<u8>,
    pending: BTreeMap<u32, Pending>,
    done: BTreeMap<u32, Result<Reply, StoreError>>,
    events: VecDeque<WatchEvent>,
    events_lost: u64,
    inbuf: Vec<u8>,
    fatal: Option<PeerError>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new(Limits::DEFAULT)
    }
}

impl Client {
    /// A client with no requests in flight.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next_id: 1,
            out: VecDeque::new(),
            pending: BTreeMap::new(),
            done: BTreeMap::new(),
            events: VecDeque::new(),
            events_lost: 0,
            inbuf: Vec::new(),
            fatal: None,
        }
    }

    /// The sticky fatal error, if xenstored broke the protocol.
    pub fn error(&self) -> Option<PeerError> {
        self.fatal
    }

    fn check(&self) -> Result<(), ClientError> {
        self.fatal.map_or(Ok(()), |e| Err(ClientError::Peer(e)))
    }

    /// Queues a request; its reply is later available from [`Self::take_reply`].
    pub fn send(&mut self, tx: Tx, request: Request) -> Result<ReqId, ClientError> {
        self.check()?;
        if self.pending.len() + self.done.len() >= self.limits.max_pending {
            return Err(ClientError::Full {
                what: "outstanding requests",
            });
        }
        let mut id = self.next_id;
        while self.pending.contains_key(&id) || self.done.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let msg_type = request.msg_type();
        let bytes = RequestMsg {
            req_id: id,
            tx_id: tx.0,
            request,
        }
        .to_vec()
        .map_err(ClientError::Encode)?;
        self.out.extend(bytes);
        self.pending.insert(
            id,
            Pending {
                msg_type,
                tx_id: tx.0,
            },
        );
        Ok(ReqId(id))
    }

    /// Bytes waiting to be transmitted.
    pub fn transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Copies queued bytes into `out`; `None` when nothing is queued.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.out.is_empty() {
            return None;
        }
        let n = out.len().min(self.out.len());
        for (dst, src) in out.iter_mut().zip(self.out.drain(..n)) {
            *dst = src;
        }
        Some(n)
    }

    /// Feeds bytes received from xenstored; all of them are consumed.
    pub fn handle_input(&mut self, mut bytes: &[u8]) -> Result<(), ClientError> {
        self.check()?;
        while !bytes.is_empty() {
            let want = if self.inbuf.len() < HEADER_LEN {
                HEADER_LEN
            } else {
                match Header::parse_prefix(&self.inbuf) {
                    Ok(h) => h.total_len(),
                    Err(e) => return Err(self.fail(PeerError::Malformed(e))),
                }
            };
            let take = (want - self.inbuf.len()).min(bytes.len());
            self.inbuf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.inbuf.len() == HEADER_LEN {
                if let Err(e) = Header::parse_prefix(&self.inbuf) {
                    return Err(self.fail(PeerError::Malformed(e)));
                }
            }
            if self.inbuf.len() >= HEADER_LEN {
                let complete = MsgHeader::new_checked(&self.inbuf[..]).is_ok();
                if complete {
                    let frame = core::mem::take(&mut self.inbuf);
                    self.dispatch(&frame)?;
                }
            }
        }
        debug_assert!(self.inbuf.len() <= MSG_MAX);
        Ok(())
    }

    fn fail(&mut self, e: PeerError) -> ClientError {
        self.fatal = Some(e);
        ClientError::Peer(e)
    }

    fn dispatch(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let view = MsgHeader::new_unchecked(frame);
        let t = view.msg_type();
        let reply = match ReplyMsg::parse(&view) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(PeerError::Malformed(e))),
        };
        if let Reply::WatchEvent { path, token } = reply.reply {
            if self.events.len() >= self.limits.max_events {
                // Consumers re-read state on any event, so a lost one is recovered by the next.
                self.events_lost += 1;
            } else {
                self.events.push_back(WatchEvent {
                    path: path.as_str().into(),
                    token,
                });
            }
            return Ok(());
        }
        let Some(p) = self.pending.get(&reply.req_id).copied() else {
            return Err(self.fail(PeerError::UnknownReqId(reply.req_id)));
        };
        if reply.tx_id != p.tx_id {
            return Err(self.fail(PeerError::WrongTxId {
                expected: p.tx_id,
                got: reply.tx_id,
            }));
        }
        let result = match reply.reply {
            Reply::Error(e) => Err(StoreError::Xs(e)),
            Reply::UnknownError(s) => Err(StoreError::UnknownError(s)),
            r if t == p.msg_type => Ok(r),
            _ => {
                return Err(self.fail(PeerError::WrongType {
                    expected: p.msg_type,
                    got: t,
                }))
            }
        };
        self.pending.remove(&reply.req_id);
        self.done.insert(reply.req_id, result);
        Ok(())
    }

    /// The reply to `id` once it has arrived (an `XS_ERROR` is `Err(Xs(..))`).
    pub fn take_reply(&mut self, id: ReqId) -> Option<Result<Reply, StoreError>> {
        self.done.remove(&id.0)
    }

    /// Whether `id` is still waiting for its reply.
    pub fn is_pending(&self, id: ReqId) -> bool {
        self.pending.contains_key(&id.0)
    }

    /// The next queued watch event.
    pub fn poll_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// Watch events dropped because the queue was full (re-read state when this grows).
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// Forgets everything in flight after a reconnection: pending requests fail with
    /// `Disconnected`, queued bytes and partial input are dropped, the fatal error is cleared.
    pub fn reset(&mut self) {
        let ids: Vec<u32> = self.pending.keys().copied().collect();
        for id in ids {
            self.done.insert(id, Err(StoreError::Disconnected));
        }
        self.pending.clear();
        self.out.clear();
        self.inbuf.clear();
        self.fatal = None;
    }
}

#[cfg(test)]
mod tests;
