//! The VM agent's control channel (vchan server on port 512, protocol v3): HELLO, then calls from
//! the daemon become [`Event`]s with admission, and our own calls go out as TRIGGER_SERVICE3.

use alloc::format;
use alloc::vec::Vec;

use platform_api::DomId;

use super::cmdline::{self, CmdlineError, Command};
use super::error::{Error, PeerError};
use super::names::{self, RequestId};
use super::queue::{EventQueue, OutQueue};
use super::wire::{Exec, Message, QrexecFraming, TRIGGER3_LEN};
use super::{is_data_port, AGENT_VERSION, MAX_CONTROL_BODY, PROTOCOL_V2, PROTOCOL_V3};
use crate::framing::FrameReader;

/// Bounds of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Data channels open at once, our pending calls included; beyond it calls are refused.
    pub max_channels: usize,
    /// Events waiting for [`Agent::poll_event`]; input stops being consumed when full.
    pub max_events: usize,
    /// Bytes waiting for [`Agent::poll_transmit`].
    pub out_bytes: usize,
}

impl Limits {
    /// Defaults for a small unikernel.
    pub const DEFAULT: Self = Self {
        max_channels: 8,
        max_events: 16,
        out_bytes: 16 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the daemon asked of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The daemon answered HELLO; calls can flow at this version.
    Ready {
        /// Negotiated version, `min(ours, daemon's)`.
        version: u32,
    },
    /// Run a command: be the data vchan **client** of `peer` on `port` and report an exit code
    /// through a [`DataChannel`](super::DataChannel) (even to refuse: 127 for a shell command
    /// or an unknown service, 125 for a malformed command line). Then call
    /// [`Agent::connection_terminated`].
    Exec {
        /// The caller's domain.
        peer: DomId,
        /// The data port.
        port: u32,
        /// `MSG_JUST_EXEC`: no I/O, only an exit code.
        just_exec: bool,
        /// The parsed command line.
        command: Result<Command, CmdlineError>,
    },
    /// Our call was allowed: be the data vchan **server** for `peer` on `port`.
    ServiceConnect {
        /// The service's domain.
        peer: DomId,
        /// The data port.
        port: u32,
        /// Which of our calls.
        request_id: RequestId,
    },
    /// Our call was refused; the caller's exit status is 126.
    Refused {
        /// Which of our calls.
        request_id: RequestId,
    },
    /// A call arrived while [`Limits::max_channels`] were open: its port was released with
    /// CONNECTION_TERMINATED and the call dropped (qrexec has no agent-side refusal message).
    Overflow {
        /// The caller's domain.
        peer: DomId,
        /// The data port.
        port: u32,
    },
}

/// Bytes an answer to one daemon message may need (CONNECTION_TERMINATED). Our own calls keep
/// this much free, so only answers the daemon has not read yet can stop input.
const REPLY_ROOM: usize = 16;

/// The agent's control-channel machine.
#[derive(Debug)]
pub struct Agent {
    reader: FrameReader<QrexecFraming>,
    out: OutQueue,
    events: EventQueue<Event>,
    limits: Limits,
    version: Option<u32>,
    channels: Vec<(DomId, u32)>,
    pending: Vec<RequestId>,
    next_id: u32,
    error: Option<Error>,
}

impl Agent {
    /// A new agent; its HELLO is queued at once (a vchan server may write before the daemon
    /// connects).
    pub fn new(limits: Limits) -> Self {
        let mut out = OutQueue::new(limits.out_bytes.max(2 * REPLY_ROOM));
        // A fresh queue of at least 16 bytes always has room for HELLO (12).
        let _ = out.push(&Message::Hello {
            version: AGENT_VERSION,
        });
        Self {
            reader: FrameReader::new(QrexecFraming::new()),
            out,
            events: EventQueue::new(limits.max_events.max(1), "qrexec agent events"),
            limits,
            version: None,
            channels: Vec::new(),
            pending: Vec::new(),
            next_id: 0,
            error: None,
        }
    }

    /// The negotiated version, once the daemon's HELLO arrived.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Data channels open or reserved by pending calls.
    pub fn channels_in_use(&self) -> usize {
        self.channels.len() + self.pending.len()
    }

    /// Takes bytes from the daemon; returns how many were consumed. Stops early (keep the rest)
    /// while events wait to be polled, or while our unread answers fill the room that
    /// [`trigger_service`](Self::trigger_service) and
    /// [`connection_terminated`](Self::connection_terminated) keep free for them.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut used = 0;
        while let Some(rest) = data.get(used..).filter(|r| !r.is_empty()) {
            if !self.events.has_room(1) || self.out.room() < REPLY_ROOM {
                break;
            }
            let n = self.reader.push(rest).map_err(|e| self.fail(e.into()))?;
            used += n;
            match self.reader.take() {
                Some(frame) => self.handle_frame(&frame).map_err(|e| self.fail(e))?,
                None if n == 0 => break,
                None => {}
            }
        }
        Ok(used)
    }

    fn fail(&mut self, e: Error) -> Error {
        self.error = Some(e);
        e
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        let msg = Message::parse(frame)?;
        let Some(_) = self.version else {
            let Message::Hello { version } = msg else {
                return Err(PeerError::ExpectedHello(msg.msg_type()).into());
            };
            if version < PROTOCOL_V2 {
                return Err(PeerError::VersionTooOld(version).into());
            }
            let v = version.min(AGENT_VERSION);
            self.version = Some(v);
            self.reader.framing_mut().set_version(v);
            self.events.push(Event::Ready { version: v })?;
            return Ok(());
        };
        match msg {
            Message::ExecCmdline(e) => self.handle_exec(e, false),
            Message::JustExec(e) => self.handle_exec(e, true),
            Message::ServiceConnect {
                connect_domain,
                connect_port,
                request_id,
            } => {
                let (peer, port) = check_peer(connect_domain, connect_port)?;
                let id = self.take_pending(request_id)?;
                self.channels.push((peer, port));
                self.events.push(Event::ServiceConnect {
                    peer,
                    port,
                    request_id: id,
                })?;
                Ok(())
            }
            Message::ServiceRefused { request_id } => {
                let id = self.take_pending(request_id)?;
                self.events.push(Event::Refused { request_id: id })?;
                Ok(())
            }
            other => Err(PeerError::UnexpectedMessage(other.msg_type()).into()),
        }
    }

    fn handle_exec(&mut self, e: Exec<'_>, just_exec: bool) -> Result<(), Error> {
        let (peer, port) = check_peer(e.connect_domain, e.connect_port)?;
        if self.channels_in_use() >= self.limits.max_channels {
            let bye = Message::ConnectionTerminated {
                connect_domain: e.connect_domain,
                connect_port: port,
            };
            self.out.push(&bye)?;
            self.events.push(Event::Overflow { peer, port })?;
            return Ok(());
        }
        self.channels.push((peer, port));
        let command = cmdline::parse(e.cmdline);
        self.events.push(Event::Exec {
            peer,
            port,
            just_exec,
            command,
        })?;
        Ok(())
    }

    fn take_pending(&mut self, raw: &[u8]) -> Result<RequestId, Error> {
        let id = RequestId::new(raw).ok_or(PeerError::BadRequestId)?;
        let at = self
            .pending
            .iter()
            .position(|p| *p == id)
            .ok_or(PeerError::UnknownRequestId)?;
        Ok(self.pending.swap_remove(at))
    }

    /// Asks the daemon to call `service_and_arg` (`svc` or `svc+arg`) in `target` (a qube name,
    /// `@default`, `@dispvm[:X]`, `uuid:…`). Answered later by [`Event::ServiceConnect`] or
    /// [`Event::Refused`] with the returned id.
    pub fn trigger_service(
        &mut self,
        target: &str,
        service_and_arg: &str,
    ) -> Result<RequestId, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let version = self.version.ok_or(Error::HandshakePending)?;
        names::split_service(service_and_arg)
            .map_err(|_| Error::InvalidArgument("service name"))?;
        let target_ok = |b: u8| b.is_ascii_alphanumeric() || b"_-.@:".contains(&b);
        if target.is_empty() || !target.bytes().all(target_ok) {
            return Err(Error::InvalidArgument("target qube"));
        }
        if TRIGGER3_LEN + service_and_arg.len() + 1 > MAX_CONTROL_BODY {
            return Err(Error::InvalidArgument(
                "service name too long for the control channel",
            ));
        }
        if self.channels_in_use() >= self.limits.max_channels {
            return Err(Error::Full {
                what: "qrexec channels",
            });
        }
        let id = self.fresh_id();
        let (service_name, target_domain, request_id) =
            (service_and_arg.as_bytes(), target.as_bytes(), id.as_bytes());
        let msg = if version >= PROTOCOL_V3 {
            Message::TriggerService3 {
                target_domain,
                request_id,
                service_name,
            }
        } else {
            Message::TriggerService {
                service_name,
                target_domain,
                request_id,
            }
        };
        self.out.push_keeping(&msg, REPLY_ROOM)?;
        self.pending.push(id);
        Ok(id)
    }

    /// `SOCKET<n>`, skipping ids still pending (at most `max_channels` are).
    fn fresh_id(&mut self) -> RequestId {
        loop {
            let n = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            let text = format!("SOCKET{n}");
            if let Some(id) = RequestId::new(text.as_bytes()) {
                if !self.pending.contains(&id) {
                    return id;
                }
            }
        }
    }

    /// Reports that the data channel with `peer` on `port` closed, releasing its slot and
    /// sending CONNECTION_TERMINATED (only the daemon that allocated the port frees it).
    pub fn connection_terminated(&mut self, peer: DomId, port: u32) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let at = self
            .channels
            .iter()
            .position(|c| *c == (peer, port))
            .ok_or(Error::InvalidArgument("no such data channel"))?;
        let msg = Message::ConnectionTerminated {
            connect_domain: u32::from(peer.get()),
            connect_port: port,
        };
        self.out.push_keeping(&msg, REPLY_ROOM)?;
        self.channels.swap_remove(at);
        Ok(())
    }

    /// Copies bytes for the daemon into `out`; `None` when there are none.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.out.poll_transmit(out)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }
}

/// Checks `exec_params` from the daemon: a real domain and a data port.
fn check_peer(domain: u32, port: u32) -> Result<(DomId, u32), PeerError> {
    let peer = DomId::new(domain).map_err(|_| PeerError::BadDomId(domain))?;
    if !is_data_port(port) {
        return Err(PeerError::BadPort(port));
    }
    Ok((peer, port))
}
