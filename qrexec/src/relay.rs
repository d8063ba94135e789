//! One qrexec data channel over a `Link`, either the caller's end relayed to a local command
//! ([`CallerRelay`]) or a service end that only answers an exit code ([`ExitOnly`]).

use std::time::{Duration, Instant};

use platform_api::{Env, Platform};
use qubes::qrexec::data::Event as DataEvent;
use qubes::qrexec::{DataChannel, Stream, EXIT_PROBLEM};
use qubes_dom0d::link::Link;

use crate::local::{self, LocalConn, TAG_EXIT, TAG_STDERR, TAG_STDIN, TAG_STDOUT};

/// Output bytes queued for the local command before the channel stops being read.
const OUT_HIGH: usize = 256 * 1024;
/// How long the service side has to attach to our data vchan, and the caller to its.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// How a relayed call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The remote exit code reached the command.
    Exit(i32),
    /// The channel broke or timed out; the command got [`EXIT_PROBLEM`].
    Broken(String),
    /// The command went away before the call ended.
    CommandGone,
}

/// The caller's end of a call (vchan server, HELLO first) relayed to a local command.
pub struct CallerRelay<P: Platform> {
    link: Option<Link<P>>,
    chan: DataChannel,
    conn: LocalConn,
    stdin: Vec<u8>,
    stdin_eof: bool,
    exit_queued: bool,
    started: Instant,
    ended: Option<Ended>,
}

impl<P: Platform> std::fmt::Debug for CallerRelay<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRelay")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> CallerRelay<P> {
    /// Relays `chan` (a caller-side channel) on `link` to `conn`, which has been told
    /// `CONNECTED`.
    pub fn new(link: Link<P>, chan: DataChannel, conn: LocalConn) -> Self {
        CallerRelay {
            link: Some(link),
            chan,
            conn,
            stdin: Vec::new(),
            stdin_eof: false,
            exit_queued: false,
            started: Instant::now(),
            ended: None,
        }
    }

    /// Set once the call is over and the command has its exit frame (or is gone).
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    fn end(&mut self, env: &mut Env<P>, how: Ended) {
        if let Ended::Broken(_) = how {
            if !self.exit_queued {
                self.conn
                    .queue(&local::frame(TAG_EXIT, &EXIT_PROBLEM.to_le_bytes()));
                self.exit_queued = true;
            }
        }
        self.conn.flush();
        if let Some(l) = self.link.take() {
            l.close(env);
        }
        self.ended = Some(how);
    }

    /// One pass both ways; whether anything moved.
    pub fn step(&mut self, env: &mut Env<P>) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let mut progress = self.conn.fill();
        // The command's stdin frames, one held at a time until the channel takes it.
        while self.stdin.is_empty() && !self.stdin_eof {
            match self.conn.take_frame() {
                Ok(Some((TAG_STDIN, d))) if d.is_empty() => self.stdin_eof = true,
                Ok(Some((TAG_STDIN, d))) => self.stdin = d,
                Ok(Some((t, _))) => {
                    let why = local::LocalError::BadTag(t).to_string();
                    self.end(env, Ended::Broken(why));
                    return true;
                }
                Ok(None) => break,
                Err(e) => {
                    self.end(env, Ended::Broken(e.to_string()));
                    return true;
                }
            }
            progress = true;
        }
        if self.exit_queued {
            // Waiting only for the exit frame to reach the command.
            self.conn.flush();
            if self.conn.pending() == 0 || self.conn.broken {
                let code = self.chan.exit_code().unwrap_or(EXIT_PROBLEM);
                self.end(env, Ended::Exit(code));
            }
            return true;
        }
        if (self.conn.eof || self.conn.broken) && !self.stdin_eof && self.stdin.is_empty() {
            self.end(env, Ended::CommandGone);
            return true;
        }
        let Some(link) = self.link.as_mut() else {
            return progress;
        };
        if link.waiting() && self.started.elapsed() > ATTACH_TIMEOUT {
            self.end(env, Ended::Broken("the service never attached".into()));
            return true;
        }
        let r = link.step(&mut self.chan);
        link.tidy(env);
        progress |= matches!(r, Ok(true));
        while self.conn.pending() < OUT_HIGH {
            let Some(ev) = self.chan.poll_event() else {
                break;
            };
            progress = true;
            match ev {
                DataEvent::Data { stream, data } => {
                    let tag = if stream == Stream::Stderr {
                        TAG_STDERR
                    } else {
                        TAG_STDOUT
                    };
                    for piece in data.chunks(local::MAX_FRAME) {
                        self.conn.queue(&local::frame(tag, piece));
                    }
                }
                DataEvent::Exit(code) => {
                    self.conn
                        .queue(&local::frame(TAG_EXIT, &code.to_le_bytes()));
                    self.exit_queued = true;
                }
                DataEvent::Ready { .. } | DataEvent::Eof(_) => {}
            }
        }
        progress |= self.conn.flush();
        if self.exit_queued {
            return true;
        }
        if let Err(e) = r {
            self.end(env, Ended::Broken(format!("data channel: {e}")));
            return true;
        }
        if self.conn.broken {
            self.end(env, Ended::CommandGone);
            return true;
        }
        if self.chan.version().is_some() {
            if !self.stdin.is_empty() {
                match self.chan.send(Stream::Stdin, &self.stdin) {
                    Ok(n) => {
                        self.stdin.drain(..n.min(self.stdin.len()));
                        progress |= n > 0;
                    }
                    Err(e) => {
                        self.end(env, Ended::Broken(format!("stdin: {e}")));
                        return true;
                    }
                }
            }
            if self.stdin.is_empty() && self.stdin_eof {
                // A second EOF is a no-op in the machine.
                if let Err(e) = self.chan.send_eof(Stream::Stdin) {
                    self.end(env, Ended::Broken(format!("stdin EOF: {e}")));
                    return true;
                }
            }
        }
        progress
    }

    /// Posts interest for the next wait; `false` when there is work now.
    pub fn ready_to_sleep(&mut self) -> bool {
        if self.ended.is_some() {
            return true;
        }
        let local_idle =
            self.conn.pending() == 0 && (self.conn.buffered() == 0 || !self.stdin.is_empty());
        local_idle && self.link.as_mut().is_none_or(|l| l.ready_to_sleep())
    }
}

/// A service end (vchan client) that answers only an exit code: a call to a service this VM
/// does not run gets 127, as the C agent answers.
pub struct ExitOnly<P: Platform> {
    link: Option<Link<P>>,
    chan: DataChannel,
    code: i32,
    sent: bool,
    started: Instant,
    /// The channel is done (answered, or given up).
    pub done: bool,
}

impl<P: Platform> std::fmt::Debug for ExitOnly<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitOnly")
            .field("code", &self.code)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> ExitOnly<P> {
    /// Will answer `code` on `chan` (a service-side channel) once connected.
    pub fn new(chan: DataChannel, code: i32) -> Self {
        ExitOnly {
            link: None,
            chan,
            code,
            sent: false,
            started: Instant::now(),
            done: false,
        }
    }

    /// One pass: connect (retrying while the caller has not advertised), answer, close.
    pub fn step(&mut self, env: &mut Env<P>, peer: platform_api::DomId, port: u32) -> bool {
        if self.done {
            return false;
        }
        if self.link.is_none() {
            match Link::connect(env, peer, port, 65536) {
                Ok(l) => self.link = Some(l),
                Err(_) if self.started.elapsed() < ATTACH_TIMEOUT => return false,
                Err(_) => {
                    self.done = true;
                    return true;
                }
            }
        }
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let r = link.step(&mut self.chan);
        let mut progress = matches!(r, Ok(true));
        while self.chan.poll_event().is_some() {
            progress = true;
        }
        if !self.sent && self.chan.version().is_some() && self.chan.send_exit(self.code).is_ok() {
            self.sent = true;
            progress = true;
        }
        let flushed = link.pending() == 0;
        if r.is_err() || (self.chan.is_finished() && flushed) {
            if let Some(l) = self.link.take() {
                l.close(env);
            }
            self.done = true;
            progress = true;
        }
        progress
    }

    /// Posts interest for the next wait.
    pub fn ready_to_sleep(&mut self) -> bool {
        self.link.as_mut().is_none_or(|l| l.ready_to_sleep())
    }
}
