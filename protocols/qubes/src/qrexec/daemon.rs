//! dom0's per-VM qrexec daemon, control side (vchan client on port 512): HELLO echo, validation
//! of the agent's calls (\[QX\] `qrexec-daemon.c`), forwarded commands and the data-port table.

use alloc::string::String;

use platform_api::DomId;

use super::error::{Error, PeerError};
use super::names::{self, RequestId};
use super::queue::{EventQueue, OutQueue};
use super::wire::{
    request_id_field, Exec, Message, MsgType, QrexecFraming, EXEC_PARAMS_LEN, HEADER_LEN,
};
use super::{is_data_port, DAEMON_VERSION, DATA_PORT_COUNT, FIRST_DATA_PORT, MAX_CONTROL_BODY};
use super::{PROTOCOL_V2, PROTOCOL_V3, PROTOCOL_V4};
use crate::framing::FrameReader;

/// Bounds of one daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events waiting for [`Daemon::poll_event`]; input stops being consumed when full.
    pub max_events: usize,
    /// Bytes waiting for [`Daemon::poll_transmit`].
    pub out_bytes: usize,
}

impl Limits {
    /// Defaults.
    pub const DEFAULT: Self = Self {
        max_events: 16,
        out_bytes: 16 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a call was refused with SERVICE_REFUSED before reaching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The service name is empty.
    EmptyName,
    /// The service name starts with `+` (an argument without a service).
    LeadingPlus,
    /// The TRIGGER_SERVICE3/4 name has a NUL before its last byte.
    NulInName,
}

/// What the agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The agent's HELLO arrived and was answered.
    Ready {
        /// The agent's version (echoed back, as the C daemon does).
        agent_version: u32,
        /// The version this daemon uses, `min(ours, agent's)`.
        version: u32,
    },
    /// A call to evaluate against policy; answer with [`Daemon::refuse`] or, once the target's
    /// daemon allocated a port, [`Daemon::service_connect`]. Names are sanitised like the C
    /// daemon's `sanitize_name` (other bytes become `_`).
    Trigger {
        /// Requested target (`@`, `:` allowed).
        target: String,
        /// Service name, before the first `+`.
        service: String,
        /// Argument after the first `+` (empty when none).
        argument: String,
        /// Requested source (TRIGGER_SERVICE4), `None` when empty or absent.
        source: Option<String>,
        /// The agent's id for this call.
        request_id: RequestId,
    },
    /// A call the daemon refused by itself (SERVICE_REFUSED already queued).
    TriggerRefused {
        /// The agent's id for this call.
        request_id: RequestId,
        /// Why.
        reason: Refusal,
    },
    /// The agent closed a data channel.
    ConnectionTerminated {
        /// Its peer domain, as the agent reports it.
        peer: u32,
        /// Its port.
        port: u32,
        /// Whether this daemon had allocated the port to that peer and freed it now.
        released: bool,
    },
}

/// Room an answer to one agent message may need (HELLO or SERVICE_REFUSED). Our own messages
/// keep this much free, so only answers the agent has not read yet can stop input.
const REPLY_ROOM: usize = 48;

/// The daemon's control-channel machine.
#[derive(Debug)]
pub struct Daemon {
    reader: FrameReader<QrexecFraming>,
    out: OutQueue,
    events: EventQueue<Event>,
    version: Option<u32>,
    /// Data port `FIRST_DATA_PORT + i` is allocated to `ports[i]`.
    ports: [Option<DomId>; DATA_PORT_COUNT as usize],
    default_user: Option<String>,
    error: Option<Error>,
}

impl Daemon {
    /// A daemon that has connected to the agent and waits for its HELLO.
    pub fn new(limits: Limits) -> Self {
        Self {
            reader: FrameReader::new(QrexecFraming::new()),
            out: OutQueue::new(limits.out_bytes.max(MAX_CONTROL_BODY + 8 + REPLY_ROOM)),
            events: EventQueue::new(limits.max_events.max(1), "qrexec daemon events"),
            version: None,
            ports: [None; DATA_PORT_COUNT as usize],
            default_user: None,
            error: None,
        }
    }

    /// The negotiated version.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Takes bytes from the agent; returns how many were consumed. Stops early (keep the rest)
    /// while events wait to be polled, or while our unread answers fill the room that
    /// [`exec`](Self::exec), [`service_connect`](Self::service_connect) and
    /// [`refuse`](Self::refuse) keep free for them.
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
        let ty = msg.msg_type();
        let Some(version) = self.version else {
            let Message::Hello {
                version: agent_version,
            } = msg
            else {
                return Err(PeerError::ExpectedHello(ty).into());
            };
            if agent_version < PROTOCOL_V2 {
                return Err(PeerError::VersionTooOld(agent_version).into());
            }
            // [QX] handle_agent_hello echoes the agent's number rather than sending our own.
            self.out.push(&Message::Hello {
                version: agent_version,
            })?;
            let v = agent_version.min(DAEMON_VERSION);
            self.version = Some(v);
            self.reader.framing_mut().set_version(v);
            self.events.push(Event::Ready {
                agent_version,
                version: v,
            })?;
            return Ok(());
        };
        let allowed = match ty {
            MsgType::TriggerService => version < PROTOCOL_V3,
            MsgType::TriggerService3 => version >= PROTOCOL_V3,
            MsgType::TriggerService4 => version >= PROTOCOL_V4,
            _ => true,
        };
        if !allowed {
            return Err(PeerError::WrongVersion { msg: ty, version }.into());
        }
        // A frame from the reader is exactly header + body.
        let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
        match msg {
            Message::TriggerService {
                service_name,
                target_domain,
                ..
            } => self.trigger(ty, body, target_domain, service_name, None),
            Message::TriggerService3 {
                target_domain,
                service_name,
                ..
            } => self.trigger(ty, body, target_domain, service_name, None),
            Message::TriggerService4 {
                source_domain,
                target_domain,
                service_name,
                ..
            } => self.trigger(ty, body, target_domain, service_name, Some(source_domain)),
            Message::ConnectionTerminated {
                connect_domain,
                connect_port,
            } => {
                if !is_data_port(connect_port) {
                    return Err(PeerError::BadPort(connect_port).into());
                }
                let released = self.release_port(connect_port, connect_domain);
                self.events.push(Event::ConnectionTerminated {
                    peer: connect_domain,
                    port: connect_port,
                    released,
                })?;
                Ok(())
            }
            other => Err(PeerError::UnexpectedMessage(other.msg_type()).into()),
        }
    }

    fn trigger(
        &mut self,
        ty: MsgType,
        body: &[u8],
        target: &[u8],
        name: &[u8],
        source: Option<&[u8]>,
    ) -> Result<(), Error> {
        let raw_id = request_id_field(ty, body).ok_or(PeerError::BadRequestId)?;
        let request_id = RequestId::from_field(raw_id)?;
        let refusal = if name.contains(&0) {
            Some(Refusal::NulInName)
        } else if name.is_empty() {
            Some(Refusal::EmptyName)
        } else if name.first() == Some(&b'+') {
            Some(Refusal::LeadingPlus)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.out.push(&Message::ServiceRefused {
                request_id: request_id.as_bytes(),
            })?;
            self.events
                .push(Event::TriggerRefused { request_id, reason })?;
            return Ok(());
        }
        let service_and_arg = names::sanitize_service(name);
        let (service, argument) = match service_and_arg.split_once('+') {
            Some((s, a)) => (String::from(s), String::from(a)),
            None => (service_and_arg, String::new()),
        };
        let source = source.filter(|s| !s.is_empty()).map(names::sanitize_target);
        let target = names::sanitize_target(target);
        self.events.push(Event::Trigger {
            target,
            service,
            argument,
            source,
            request_id,
        })?;
        Ok(())
    }

    fn live(&self) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.version.map(|_| ()).ok_or(Error::HandshakePending)
    }

    /// Allocates a data port for a channel between this VM and `peer`; `None` when all 256
    /// are in use.
    pub fn allocate_port(&mut self, peer: DomId) -> Option<u32> {
        let i = self.ports.iter().position(Option::is_none)?;
        self.ports[i] = Some(peer);
        Some(FIRST_DATA_PORT + i as u32)
    }

    /// Frees `port` if this daemon allocated it to `peer` (\[QX\] `release_vchan_port`).
    pub fn release_port(&mut self, port: u32, peer: u32) -> bool {
        let slot = port
            .checked_sub(FIRST_DATA_PORT)
            .and_then(|i| self.ports.get_mut(i as usize));
        match slot {
            Some(s) if s.is_some_and(|d| u32::from(d.get()) == peer) => {
                *s = None;
                true
            }
            _ => false,
        }
    }

    /// The VM's `default_user`, put in place of a `DEFAULT:` user by [`exec`](Self::exec).
    pub fn set_default_user(&mut self, user: &str) -> Result<(), Error> {
        if user.is_empty() || user.len() > 64 || user.bytes().any(|b| b == 0 || b == b':') {
            return Err(Error::InvalidArgument("default user"));
        }
        self.default_user = Some(String::from(user));
        Ok(())
    }

    /// Sends `cmdline` (`user:…`, no NUL) to the agent to run with I/O (or, `just_exec`, without),
    /// its data channel going to `peer` on a newly allocated port, which is returned. A
    /// `DEFAULT:` user becomes the default user, if one is set.
    pub fn exec(&mut self, peer: DomId, cmdline: &[u8], just_exec: bool) -> Result<u32, Error> {
        self.live()?;
        let replaced = match (cmdline.strip_prefix(b"DEFAULT:"), &self.default_user) {
            (Some(rest), Some(user)) => Some([user.as_bytes(), b":", rest].concat()),
            _ => None,
        };
        let cmdline = replaced.as_deref().unwrap_or(cmdline);
        if cmdline.contains(&0) || EXEC_PARAMS_LEN + cmdline.len() + 1 > MAX_CONTROL_BODY {
            return Err(Error::InvalidArgument("command line"));
        }
        let port = self.allocate_port(peer).ok_or(Error::Full {
            what: "qrexec data ports",
        })?;
        let e = Exec {
            connect_domain: u32::from(peer.get()),
            connect_port: port,
            cmdline,
        };
        let msg = if just_exec {
            Message::JustExec(e)
        } else {
            Message::ExecCmdline(e)
        };
        if let Err(err) = self.out.push_keeping(&msg, REPLY_ROOM) {
            self.release_port(port, u32::from(peer.get()));
            return Err(err);
        }
        Ok(port)
    }

    /// Tells the agent its call `request_id` was allowed: serve the data vchan to `peer` on
    /// `port` (allocated by the target's daemon).
    pub fn service_connect(
        &mut self,
        peer: DomId,
        port: u32,
        request_id: RequestId,
    ) -> Result<(), Error> {
        self.live()?;
        let msg = Message::ServiceConnect {
            connect_domain: u32::from(peer.get()),
            connect_port: port,
            request_id: request_id.as_bytes(),
        };
        self.out.push_keeping(&msg, REPLY_ROOM)
    }

    /// Tells the agent its call `request_id` was refused (its caller exits with 126).
    pub fn refuse(&mut self, request_id: RequestId) -> Result<(), Error> {
        self.live()?;
        self.out.push_keeping(
            &Message::ServiceRefused {
                request_id: request_id.as_bytes(),
            },
            REPLY_ROOM,
        )
    }

    /// Copies bytes for the agent into `out`; `None` when there are none.
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
