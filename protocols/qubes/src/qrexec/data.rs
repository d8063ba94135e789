//! One qrexec data channel (a 64 KiB vchan on ports 513..=768), either role: the service side
//! (stdout/stderr/exit code out, stdin in) or the caller side; VM agent or dom0 end.

use alloc::vec::Vec;

use super::error::{Error, PeerError};
use super::queue::{EventQueue, OutQueue};
use super::wire::{Message, QrexecFraming, Stream, HEADER_LEN};
use super::{max_chunk, PROTOCOL_V2};
use crate::framing::FrameReader;

/// Which end of the call this channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the service (got EXEC_CMDLINE/JUST_EXEC; the vchan client for an agent): sends
    /// stdout, stderr and the exit code, receives stdin.
    Service {
        /// `MSG_JUST_EXEC`: only an exit code is sent, stdin is ignored.
        just_exec: bool,
    },
    /// Made the call (got SERVICE_CONNECT, or dom0's qrexec-client; the vchan server): sends
    /// stdin, receives stdout, stderr and the exit code.
    Caller,
}

/// Who speaks first in the HELLO exchange. Agents and dom0's qrexec-client send first; dom0
/// running a service for a VM reads first (\[QX\] `remote_send_first`). Two readers deadlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Queue our HELLO at once.
    SendFirst,
    /// Answer the peer's HELLO.
    ReadFirst,
}

/// Bounds of one data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events waiting for [`DataChannel::poll_event`].
    pub max_events: usize,
    /// Payload bytes held in waiting events (one more chunk may overshoot it).
    pub event_bytes: usize,
    /// Bytes waiting for [`DataChannel::poll_transmit`]; at least one 64 KiB chunk.
    pub out_bytes: usize,
}

impl Limits {
    /// Defaults: two full v3 chunks each way.
    pub const DEFAULT: Self = Self {
        max_events: 32,
        event_bytes: 128 * 1024,
        out_bytes: 2 * (65536 + HEADER_LEN),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What arrived on the data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The HELLO exchange is done.
    Ready {
        /// Negotiated version, `min(ours, peer's)`.
        version: u32,
    },
    /// A chunk of a stream.
    Data {
        /// Which stream.
        stream: Stream,
        /// Its bytes (never empty).
        data: Vec<u8>,
    },
    /// The stream ended.
    Eof(Stream),
    /// The service's exit status (caller side); the call is over.
    Exit(i32),
}

/// Room kept for the one reply input can cause after the handshake: STDIN EOF after EXIT_CODE
/// (our read-first HELLO goes into a queue that is still empty).
const REPLY_ROOM: usize = HEADER_LEN;

fn index(s: Stream) -> usize {
    match s {
        Stream::Stdin => 0,
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

/// The data-channel machine.
///
/// Caller contract: poll in the order [`handle_input`](Self::handle_input) (offer everything
/// the vchan has), [`poll_transmit`](Self::poll_transmit) (as much as the vchan takes),
/// [`poll_event`](Self::poll_event) (until `None`), then send. Input stops only while events
/// wait to be polled, never because the output queue is full: [`send`](Self::send) keeps
/// room for the STDIN EOF that EXIT_CODE answers with, and data chunks need no reply, so two
/// ends with full rings and full queues still make progress.
#[derive(Debug)]
pub struct DataChannel {
    role: Role,
    own_version: u32,
    handshake: Handshake,
    version: Option<u32>,
    reader: FrameReader<QrexecFraming>,
    out: OutQueue,
    events: EventQueue<Event>,
    event_bytes: usize,
    limits: Limits,
    eof_sent: [bool; 3],
    eof_seen: [bool; 3],
    exit_sent: bool,
    exit_seen: Option<i32>,
    error: Option<Error>,
}

impl DataChannel {
    /// A channel announcing `own_version` (an agent: [`AGENT_VERSION`](super::AGENT_VERSION)).
    pub fn new(role: Role, handshake: Handshake, own_version: u32, limits: Limits) -> Self {
        let mut out = OutQueue::new(limits.out_bytes.max(MAX_MSG_ROOM) + REPLY_ROOM);
        if handshake == Handshake::SendFirst {
            // A fresh queue always has room for HELLO.
            let _ = out.push(&Message::Hello {
                version: own_version,
            });
        }
        Self {
            role,
            own_version,
            handshake,
            version: None,
            reader: FrameReader::new(QrexecFraming::new()),
            out,
            events: EventQueue::new(limits.max_events.max(1), "qrexec data events"),
            event_bytes: 0,
            limits,
            eof_sent: [false; 3],
            eof_seen: [false; 3],
            exit_sent: false,
            exit_seen: None,
            error: None,
        }
    }

    /// The agent's service side for EXEC_CMDLINE (`just_exec` for JUST_EXEC): sends first.
    pub fn service(just_exec: bool, own_version: u32) -> Self {
        Self::new(
            Role::Service { just_exec },
            Handshake::SendFirst,
            own_version,
            Limits::DEFAULT,
        )
    }

    /// The caller side (agent on SERVICE_CONNECT, dom0 qrexec-client): sends first.
    pub fn caller(own_version: u32) -> Self {
        Self::new(
            Role::Caller,
            Handshake::SendFirst,
            own_version,
            Limits::DEFAULT,
        )
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The negotiated version, once the peer's HELLO arrived.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The exit status received (caller side).
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_seen
    }

    /// Whether the call is over and every byte handed out: the vchan may be closed now.
    pub fn is_finished(&self) -> bool {
        let done = match self.role {
            Role::Service { .. } => self.exit_sent,
            Role::Caller => self.exit_seen.is_some(),
        };
        done && self.out.is_empty()
    }

    fn fail(&mut self, e: Error) -> Error {
        self.error = Some(e);
        e
    }

    fn check(&self) -> Result<u32, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.version.ok_or(Error::HandshakePending)
    }

    /// Takes bytes from the peer; returns how many were consumed. Stops early (keep the rest)
    /// while events wait to be polled; a full output queue does not stop it.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut used = 0;
        while let Some(rest) = data.get(used..).filter(|r| !r.is_empty()) {
            let busy = !self.events.has_room(1) || self.event_bytes >= self.limits.event_bytes;
            if busy {
                break;
            }
            let n = self.reader.push(rest).map_err(|e| self.fail(e.into()))?;
            used += n;
            match self.reader.take() {
                Some(frame) => self.handle_frame(frame).map_err(|e| self.fail(e))?,
                None if n == 0 => break,
                None => {}
            }
        }
        Ok(used)
    }

    fn handle_frame(&mut self, frame: Vec<u8>) -> Result<(), Error> {
        let msg = Message::parse(&frame)?;
        let ty = msg.msg_type();
        let Some(_) = self.version else {
            let Message::Hello { version } = msg else {
                return Err(PeerError::ExpectedHello(ty).into());
            };
            if version < PROTOCOL_V2 {
                return Err(PeerError::VersionTooOld(version).into());
            }
            if self.handshake == Handshake::ReadFirst {
                self.out.push(&Message::Hello {
                    version: self.own_version,
                })?;
            }
            let v = version.min(self.own_version);
            self.version = Some(v);
            self.reader.framing_mut().set_version(v);
            self.events.push(Event::Ready { version: v })?;
            return Ok(());
        };
        if self.exit_seen.is_some() {
            return Err(PeerError::AfterExit(ty).into());
        }
        match (self.role, msg) {
            (
                Role::Service { just_exec },
                Message::Data {
                    stream: Stream::Stdin,
                    data,
                },
            ) => {
                // JUST_EXEC has no I/O: whatever the caller sends is dropped.
                let len = data.len();
                if !just_exec {
                    self.deliver(Stream::Stdin, len, frame)?;
                }
                Ok(())
            }
            (
                Role::Caller,
                Message::Data {
                    stream: s @ (Stream::Stdout | Stream::Stderr),
                    data,
                },
            ) => {
                let len = data.len();
                self.deliver(s, len, frame)
            }
            (Role::Caller, Message::ExitCode(code)) => {
                self.exit_seen = Some(code);
                if !self.eof_sent[index(Stream::Stdin)] {
                    self.eof_sent[index(Stream::Stdin)] = true;
                    self.out.push(&Message::Data {
                        stream: Stream::Stdin,
                        data: &[],
                    })?;
                }
                self.events.push(Event::Exit(code))?;
                Ok(())
            }
            _ => Err(PeerError::UnexpectedMessage(ty).into()),
        }
    }

    /// Queues a chunk as an event, reusing the frame's allocation.
    fn deliver(&mut self, stream: Stream, len: usize, mut frame: Vec<u8>) -> Result<(), Error> {
        let i = index(stream);
        if self.eof_seen[i] {
            return Err(PeerError::DataAfterEof(stream).into());
        }
        if len == 0 {
            self.eof_seen[i] = true;
            self.events.push(Event::Eof(stream))?;
            return Ok(());
        }
        frame.drain(..HEADER_LEN.min(frame.len()));
        self.event_bytes = self.event_bytes.saturating_add(frame.len());
        self.events.push(Event::Data {
            stream,
            data: frame,
        })?;
        Ok(())
    }

    fn may_send(&self, stream: Stream) -> Result<(), Error> {
        let ok = match self.role {
            Role::Service { just_exec } => !just_exec && stream != Stream::Stdin,
            Role::Caller => stream == Stream::Stdin,
        };
        if !ok {
            return Err(Error::NotAllowed("this role does not send that stream"));
        }
        if self.eof_sent[index(stream)] || self.exit_sent {
            return Err(Error::NotAllowed("data after EOF"));
        }
        Ok(())
    }

    /// Queues as much of `data` as fits, split at the negotiated chunk size; returns the count.
    pub fn send(&mut self, stream: Stream, data: &[u8]) -> Result<usize, Error> {
        let version = self.check()?;
        self.may_send(stream)?;
        let chunk = max_chunk(version);
        let mut sent = 0;
        while let Some(rest) = data.get(sent..).filter(|r| !r.is_empty()) {
            let n = rest
                .len()
                .min(chunk)
                .min(self.out.room().saturating_sub(HEADER_LEN + REPLY_ROOM));
            let Some(piece) = rest.get(..n).filter(|p| !p.is_empty()) else {
                break;
            };
            self.out.push_keeping(
                &Message::Data {
                    stream,
                    data: piece,
                },
                REPLY_ROOM,
            )?;
            sent += n;
        }
        Ok(sent)
    }

    /// Queues the stream's EOF (an empty chunk); a second call does nothing.
    pub fn send_eof(&mut self, stream: Stream) -> Result<(), Error> {
        self.check()?;
        if self.eof_sent[index(stream)] {
            return Ok(());
        }
        self.may_send(stream)?;
        self.out.push(&Message::Data { stream, data: &[] })?;
        self.eof_sent[index(stream)] = true;
        Ok(())
    }

    /// Service side: ends the call. Sends STDOUT EOF and STDERR EOF if not yet sent (the C
    /// start-failure path does both), then EXIT_CODE; for JUST_EXEC only EXIT_CODE.
    pub fn send_exit(&mut self, code: i32) -> Result<(), Error> {
        self.check()?;
        let Role::Service { just_exec } = self.role else {
            return Err(Error::NotAllowed(
                "only the service side sends an exit code",
            ));
        };
        if self.exit_sent {
            return Err(Error::NotAllowed("exit code already sent"));
        }
        if self.out.room() < 3 * HEADER_LEN + 4 {
            return Err(Error::Full {
                what: "qrexec output queue",
            });
        }
        if !just_exec {
            for s in [Stream::Stdout, Stream::Stderr] {
                if !self.eof_sent[index(s)] {
                    self.out.push(&Message::Data {
                        stream: s,
                        data: &[],
                    })?;
                    self.eof_sent[index(s)] = true;
                }
            }
        }
        self.out.push(&Message::ExitCode(code))?;
        self.exit_sent = true;
        Ok(())
    }

    /// The vchan closed. Before EXIT_CODE that is the caller's "closed early" error (sticky).
    pub fn handle_close(&mut self) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.role == Role::Caller && self.exit_seen.is_none() {
            return Err(self.fail(PeerError::ClosedEarly.into()));
        }
        Ok(())
    }

    /// Copies bytes for the peer into `out`; `None` when there are none.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.out.poll_transmit(out)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop()?;
        if let Event::Data { data, .. } = &e {
            self.event_bytes = self.event_bytes.saturating_sub(data.len());
        }
        Some(e)
    }
}

/// The output queue must hold at least one full v3 chunk and its header.
const MAX_MSG_ROOM: usize = super::MAX_DATA_CHUNK_V3 + HEADER_LEN;
