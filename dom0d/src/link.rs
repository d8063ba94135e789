//! One vchan end over any `Platform` with its input buffer and bounded output queue, and the
//! pump that moves bytes between it and one sans-IO machine.

use std::fmt;

use platform_api::{DomId, Env, Platform};
use vchan::setup::{client_init, server_init, GrantedServer, MappedClient, XsDir};
use vchan::{Interest, PeerState, SetupError};

/// A sans-IO protocol machine the pump drives.
pub trait Machine {
    /// Takes peer bytes; how many were consumed, or why the peer broke the protocol.
    fn input(&mut self, data: &[u8]) -> Result<usize, String>;
    /// Bytes for the peer.
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize>;
}

impl Machine for qubes::qubesdb::Daemon {
    fn input(&mut self, data: &[u8]) -> Result<usize, String> {
        self.handle_input(data).map_err(|e| e.to_string())
    }
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
}

impl Machine for qubes::qrexec::Daemon {
    fn input(&mut self, data: &[u8]) -> Result<usize, String> {
        self.handle_input(data).map_err(|e| e.to_string())
    }
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
}

impl Machine for qubes::qrexec::DataChannel {
    fn input(&mut self, data: &[u8]) -> Result<usize, String> {
        self.handle_input(data).map_err(|e| e.to_string())
    }
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
}

impl Machine for qubes::gui::Daemon {
    fn input(&mut self, data: &[u8]) -> Result<usize, String> {
        self.handle_input(data).map_err(|e| e.to_string())
    }
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
}

/// Why a link stopped.
#[derive(Debug)]
pub enum LinkError {
    /// The peer closed the vchan (after everything it sent was read).
    Closed,
    /// The vchan failed (shared memory, event channel, a broken ring).
    Vchan(vchan::Error),
    /// The peer broke the protocol on it.
    Protocol(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the peer closed the vchan"),
            Self::Vchan(e) => write!(f, "vchan: {e}"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}

impl From<vchan::Error> for LinkError {
    fn from(e: vchan::Error) -> Self {
        match e {
            vchan::Error::PeerClosed => Self::Closed,
            e => Self::Vchan(e),
        }
    }
}

enum End<P: Platform> {
    Server(GrantedServer<P::Grants, P::Events>),
    Client(MappedClient<P::Grants, P::Events>),
}

/// One vchan end and its buffers; the end closes on drop (`vchan` does it), its xenstore
/// directory is removed by [`Link::close`].
pub struct Link<P: Platform> {
    end: End<P>,
    dir: Option<XsDir>,
    inbuf: Vec<u8>,
    in_len: usize,
    out: Vec<u8>,
    out_off: usize,
    cap: usize,
    scratch: Vec<u8>,
}

impl<P: Platform> fmt::Debug for Link<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("server", &matches!(self.end, End::Server(_)))
            .field("in_len", &self.in_len)
            .field("out_pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Link<P> {
    fn new(end: End<P>, dir: Option<XsDir>, cap: usize) -> Self {
        Link {
            end,
            dir,
            inbuf: vec![0; 65536 + 64],
            in_len: 0,
            out: Vec::new(),
            out_off: 0,
            cap,
            scratch: vec![0; 65536 + 64],
        }
    }

    /// Advertises a server for `peer` on Qubes vchan `port` (we read the left ring).
    pub fn serve(
        env: &mut Env<P>,
        peer: DomId,
        port: u32,
        read_min: usize,
        write_min: usize,
        cap: usize,
    ) -> Result<Self, SetupError> {
        let (s, dir) = server_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            peer,
            port,
            read_min,
            write_min,
        )?;
        Ok(Self::new(End::Server(s), Some(dir), cap))
    }

    /// Connects to `server`'s vchan on `port`, once (callers retry while it is not there).
    pub fn connect(
        env: &mut Env<P>,
        server: DomId,
        port: u32,
        cap: usize,
    ) -> Result<Self, SetupError> {
        let c = client_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            server,
            port,
        )?;
        Ok(Self::new(End::Client(c), None, cap))
    }

    /// Bytes queued for the peer.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_off
    }

    fn peer_state(&mut self) -> Result<PeerState, vchan::Error> {
        match &mut self.end {
            End::Server(s) => s.peer_state(),
            End::Client(c) => c.peer_state(),
        }
    }

    /// A server whose client has not attached yet.
    pub fn waiting(&mut self) -> bool {
        matches!(self.peer_state(), Ok(PeerState::Waiting))
    }

    /// Removes a server's advertisement once its client is attached, so that a later client
    /// cannot find this one.
    pub fn tidy(&mut self, env: &mut Env<P>) {
        if self.dir.is_some() && !self.waiting() {
            if let Some(d) = self.dir.take() {
                let _ = d.remove(&mut env.store);
            }
        }
    }

    fn read(&mut self) -> Result<usize, vchan::Error> {
        let buf = self.inbuf.get_mut(self.in_len..).unwrap_or(&mut []);
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.end {
            End::Server(s) => s.read(buf),
            End::Client(c) => c.read(buf),
        }
    }

    fn write(&mut self) -> Result<bool, vchan::Error> {
        let mut wrote = false;
        loop {
            let rest = self.out.get(self.out_off..).unwrap_or(&[]);
            if rest.is_empty() {
                self.out.clear();
                self.out_off = 0;
                return Ok(wrote);
            }
            let n = match &mut self.end {
                End::Server(s) => s.write(rest),
                End::Client(c) => c.write(rest),
            }?;
            if n == 0 {
                return Ok(wrote);
            }
            self.out_off += n;
            wrote = true;
        }
    }

    /// One pass: vchan → machine, machine → queue (while under the bound), queue → vchan.
    /// `Ok(progress)`. Call the machine's `poll_event` until empty after each pass: machines
    /// stop taking input while their events wait.
    pub fn step<M: Machine>(&mut self, m: &mut M) -> Result<bool, LinkError> {
        if self.waiting() {
            return Ok(false);
        }
        let mut progress = false;
        let got = self.read();
        if let Ok(n) = got {
            self.in_len += n;
            progress |= n > 0;
        }
        if self.in_len > 0 {
            let data = self.inbuf.get(..self.in_len).unwrap_or(&[]);
            let n = m.input(data).map_err(LinkError::Protocol)?.min(self.in_len);
            self.inbuf.copy_within(n..self.in_len, 0);
            self.in_len -= n;
            progress |= n > 0;
        }
        if self.out_off > 0 && self.out_off >= self.cap {
            self.out.drain(..self.out_off);
            self.out_off = 0;
        }
        while self.pending() < self.cap {
            match m.transmit(&mut self.scratch) {
                Some(n) => {
                    let b = self.scratch.get(..n).unwrap_or(&[]);
                    self.out.extend_from_slice(b);
                    progress = true;
                }
                None => break,
            }
        }
        progress |= self.write()?;
        // A closed peer is reported once its last bytes were handed to the machine.
        if let Err(e) = got {
            if self.in_len == 0 || !matches!(e, vchan::Error::PeerClosed) {
                return Err(e.into());
            }
        }
        Ok(progress)
    }

    /// Posts interest for the next wait; `false` when something is ready now (do not sleep).
    pub fn ready_to_sleep(&mut self) -> bool {
        let interest = Interest {
            read: true,
            write: self.pending() > 0,
        };
        let r = match &mut self.end {
            End::Server(s) => s.prepare_wait(interest),
            End::Client(c) => c.prepare_wait(interest),
        };
        // An error is seen by the next `step`.
        r.unwrap_or(false)
    }

    /// Closes the end and removes a server's advertisement if it is still there.
    pub fn close(mut self, env: &mut Env<P>) {
        if let Some(d) = self.dir.take() {
            let _ = d.remove(&mut env.store);
        }
    }
}
