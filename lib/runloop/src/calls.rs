//! The loop's plumbing: a vchan in either role with bounded receive and transmit buffers
//! ([`Pipe`]), the bounded queue behind `Cx::send`, and the table entry of one qrexec call.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;

use platform_api::{DomId, Instant, Platform};
use qubes::qrexec::{DataChannel, RequestId};
use vchan::setup::{GrantedServer, MappedClient, XsDir};
use vchan::{Interest, PeerState};

use crate::CallId;

/// Either end of a vchan over the platform's grants and ports.
pub(crate) enum Link<P: Platform> {
    /// We advertised it; the directory goes once the client attached (or at close).
    Server(GrantedServer<P::Grants, P::Events>, Option<XsDir>),
    /// We mapped the peer's pages.
    Client(MappedClient<P::Grants, P::Events>),
}

impl<P: Platform> Link<P> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, vchan::Error> {
        match self {
            Self::Server(s, _) => s.read(buf),
            Self::Client(c) => c.read(buf),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, vchan::Error> {
        match self {
            Self::Server(s, _) => s.write(data),
            Self::Client(c) => c.write(data),
        }
    }

    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, vchan::Error> {
        match self {
            Self::Server(s, _) => s.prepare_wait(interest),
            Self::Client(c) => c.prepare_wait(interest),
        }
    }

    /// Whether the peer has attached (a client always has).
    pub(crate) fn attached(&mut self) -> Result<bool, vchan::Error> {
        match self {
            Self::Server(s, _) => Ok(s.peer_state()? != PeerState::Waiting),
            Self::Client(_) => Ok(true),
        }
    }

    /// Removes a server's xenstore directory once its client is there, so that a later
    /// client of the same port cannot find this one (`libvchan_wait` does the same).
    fn tidy(&mut self, store: &mut P::Store) {
        if let Self::Server(s, dir) = self {
            if dir.is_some() && !matches!(s.peer_state(), Ok(PeerState::Waiting)) {
                if let Some(d) = dir.take() {
                    let _ = d.remove(store);
                }
            }
        }
    }

    /// Closes our end (live byte 0, notify) and removes a directory still advertised.
    /// Dropping the link afterwards ends the grants or unmaps.
    fn close(&mut self, store: &mut P::Store) {
        match self {
            Self::Server(s, dir) => {
                let _ = s.close();
                if let Some(d) = dir.take() {
                    let _ = d.remove(store);
                }
            }
            Self::Client(c) => {
                let _ = c.close();
            }
        }
    }
}

/// A vchan with a receive buffer its machine is fed from and a transmit buffer its machine is
/// drained into; both fixed at creation.
pub(crate) struct Pipe<P: Platform> {
    link: Link<P>,
    rx: Box<[u8]>,
    rx_len: usize,
    tx: Box<[u8]>,
    tx_off: usize,
    tx_len: usize,
    /// The peer closed and everything it sent has been read into `rx`.
    pub(crate) peer_closed: bool,
    attached: bool,
}

impl<P: Platform> Pipe<P> {
    pub(crate) fn new(link: Link<P>, rx: usize, tx: usize) -> Self {
        Self {
            link,
            rx: vec![0u8; rx.max(1)].into_boxed_slice(),
            rx_len: 0,
            tx: vec![0u8; tx.max(1)].into_boxed_slice(),
            tx_off: 0,
            tx_len: 0,
            peer_closed: false,
            attached: false,
        }
    }

    /// Reads what the vchan has into the free part of the receive buffer; whether any came.
    pub(crate) fn fill(&mut self, store: &mut P::Store) -> Result<bool, vchan::Error> {
        self.link.tidy(store);
        if !self.attached {
            self.attached = self.link.attached().unwrap_or(true);
        }
        if self.peer_closed {
            return Ok(false);
        }
        let Some(free) = self.rx.get_mut(self.rx_len..).filter(|f| !f.is_empty()) else {
            return Ok(false);
        };
        match self.link.read(free) {
            Ok(n) => {
                self.rx_len += n;
                Ok(n > 0)
            }
            Err(vchan::Error::PeerClosed) => {
                self.peer_closed = true;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Offers the buffered bytes to `take` (a machine's `handle_input`), keeps the rest;
    /// whether any were taken.
    pub(crate) fn feed<E>(
        &mut self,
        take: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<bool, E> {
        let data = self.rx.get(..self.rx_len).unwrap_or(&[]);
        if data.is_empty() {
            return Ok(false);
        }
        let n = take(data)?.min(self.rx_len);
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
        Ok(n > 0)
    }

    /// Whether the peer has attached, as last seen by [`Pipe::fill`].
    pub(crate) fn attached(&self) -> bool {
        self.attached
    }

    /// Bytes received but not yet taken by the machine.
    pub(crate) fn unread(&self) -> usize {
        self.rx_len
    }

    /// Writes what the machine has queued (`poll` is its `poll_transmit`) until the ring is
    /// full; whether anything moved. Bytes for a peer that closed are dropped.
    pub(crate) fn flush(
        &mut self,
        mut poll: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, vchan::Error> {
        let mut moved = false;
        loop {
            if self.tx_off == self.tx_len {
                match poll(&mut self.tx) {
                    Some(n) => {
                        self.tx_off = 0;
                        self.tx_len = n.min(self.tx.len());
                        moved = true;
                    }
                    None => return Ok(moved),
                }
            }
            if self.peer_closed {
                self.tx_off = self.tx_len;
                continue;
            }
            let pending = self.tx.get(self.tx_off..self.tx_len).unwrap_or(&[]);
            match self.link.write(pending) {
                Ok(0) => return Ok(moved),
                Ok(n) => {
                    self.tx_off += n;
                    moved = true;
                }
                Err(vchan::Error::PeerClosed) => {
                    self.peer_closed = true;
                    self.tx_off = self.tx_len;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes taken from the machine still wait for ring space.
    pub(crate) fn tx_pending(&self) -> bool {
        self.tx_off < self.tx_len
    }

    /// Posts our notification interest (reads only if `reading`); `Ok(false)` means there
    /// is work now, do not sleep.
    pub(crate) fn may_sleep(&mut self, reading: bool) -> Result<bool, vchan::Error> {
        if self.peer_closed && reading {
            return Ok(false);
        }
        let interest = Interest {
            read: reading && self.rx_len < self.rx.len(),
            write: self.tx_pending(),
        };
        if !interest.read && !interest.write {
            return Ok(true);
        }
        match self.link.prepare_wait(interest) {
            Err(vchan::Error::PeerClosed) => Ok(false),
            r => r,
        }
    }

    /// Removes a server's xenstore directory if it is still advertised, leaving the vchan
    /// open (dropping the pipe then ends the grants without telling the peer).
    pub(crate) fn unadvertise(&mut self, store: &mut P::Store) {
        if let Link::Server(_, dir) = &mut self.link {
            if let Some(d) = dir.take() {
                let _ = d.remove(store);
            }
        }
    }

    /// Closes the vchan; see [`Link::close`].
    pub(crate) fn close(mut self, store: &mut P::Store) {
        self.link.close(store);
    }
}

/// Bytes waiting to enter a data channel, at most `cap`; a push is all or nothing.
#[derive(Debug)]
pub(crate) struct ByteQueue {
    buf: VecDeque<u8>,
    cap: usize,
}

impl ByteQueue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap,
        }
    }

    /// Free bytes.
    pub(crate) fn space(&self) -> usize {
        self.cap.saturating_sub(self.buf.len())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Queues all of `data`, or nothing and the free space.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), usize> {
        if data.len() > self.space() {
            return Err(self.space());
        }
        self.buf.extend(data);
        Ok(())
    }

    /// The oldest contiguous bytes.
    pub(crate) fn front(&self) -> &[u8] {
        self.buf.as_slices().0
    }

    /// Drops the `n` oldest bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Someone called us; we run the service (data vchan client).
    Served {
        /// `MSG_JUST_EXEC`: no I/O, only an exit code.
        just_exec: bool,
        /// Set for a call the app never sees: the exit code answers it (125/126/127).
        answer: Option<i32>,
    },
    /// We called (`Cx::call`); we are the data vchan server.
    Outgoing,
}

/// Where a call's data channel is.
pub(crate) enum State<P: Platform> {
    /// Served: waiting for the caller's vchan server to be advertised.
    Connecting {
        /// Next `client_init` attempt.
        next_try: Instant,
    },
    /// Ours: waiting for the daemon's SERVICE_CONNECT or SERVICE_REFUSED.
    Pending(RequestId),
    /// The data vchan exists.
    Open {
        pipe: Box<Pipe<P>>,
        chan: Box<DataChannel>,
    },
}

/// One qrexec call in the table.
pub(crate) struct Slot<P: Platform> {
    pub(crate) id: CallId,
    pub(crate) kind: Kind,
    /// The data channel's peer and port, once known (needed for CONNECTION_TERMINATED).
    pub(crate) chan: Option<(DomId, u32)>,
    pub(crate) state: State<P>,
    /// Since when the current state waits for the peer (connect timeouts).
    pub(crate) since: Instant,
    /// App bytes for the peer.
    pub(crate) out: ByteQueue,
    /// Ours: `Cx::end_input` was called. Served: stdout EOF goes with the exit code.
    pub(crate) end_input: bool,
    pub(crate) eof_sent: bool,
    /// Served: `Cx::finish` was called with this code.
    pub(crate) finish: Option<i32>,
    pub(crate) exit_sent: bool,
    /// Ours: the remote exit code arrived.
    pub(crate) exit_seen: Option<i32>,
    /// The app paused delivery of this call's incoming bytes (`Cx::pause`).
    pub(crate) paused: bool,
    /// The app aborted it or the loop decided it is over; removed at the end of the pass.
    pub(crate) dead: Option<Option<i32>>,
}

impl<P: Platform> Slot<P> {
    pub(crate) fn new(id: CallId, kind: Kind, state: State<P>, now: Instant, out: usize) -> Self {
        Self {
            id,
            kind,
            chan: None,
            state,
            since: now,
            out: ByteQueue::new(out),
            end_input: false,
            eof_sent: false,
            finish: None,
            exit_sent: false,
            exit_seen: None,
            paused: false,
            dead: None,
        }
    }

    /// Whether the app knows this call.
    pub(crate) fn visible(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Served {
                answer: Some(_),
                ..
            }
        )
    }

    /// Whether `Cx::send` may still queue bytes.
    pub(crate) fn accepts_data(&self) -> bool {
        self.dead.is_none()
            && match self.kind {
                Kind::Served { answer, .. } => answer.is_none() && self.finish.is_none(),
                Kind::Outgoing => !self.end_input && self.exit_seen.is_none(),
            }
    }
}

/// Closes the data vchan of a call that goes away, if it has one.
pub(crate) fn close_state<P: Platform>(state: State<P>, store: &mut P::Store) {
    if let State::Open { pipe, .. } = state {
        pipe.close(store);
    }
}

#[cfg(test)]
mod tests {
    use super::ByteQueue;
    use proptest::prelude::*;

    #[test]
    fn byte_queue_push_is_all_or_nothing() {
        let mut q = ByteQueue::new(10);
        assert_eq!(q.push(&[1; 7]), Ok(()));
        assert_eq!(q.push(&[2; 4]), Err(3));
        assert_eq!(q.len(), 7);
        assert_eq!(q.push(&[2; 3]), Ok(()));
        assert_eq!(q.space(), 0);
        assert_eq!(q.push(&[]), Ok(()));
        assert_eq!(q.push(&[9]), Err(0));
    }

    proptest! {
        /// Whatever the sequence of pushes and consumes, the queue never holds more than its
        /// cap and hands the bytes back in order.
        #[test]
        fn byte_queue_bounded_and_ordered(
            cap in 0usize..200,
            ops in proptest::collection::vec((any::<bool>(), 0usize..80), 0..60),
        ) {
            let mut q = ByteQueue::new(cap);
            let mut model: std::collections::VecDeque<u8> = Default::default();
            let mut next = 0u8;
            for (push, n) in ops {
                if push {
                    let data: std::vec::Vec<u8> =
                        (0..n).map(|i| next.wrapping_add(i as u8)).collect();
                    let fits = model.len() + n <= cap;
                    prop_assert_eq!(q.push(&data).is_ok(), fits);
                    if fits {
                        model.extend(&data);
                        next = next.wrapping_add(n as u8);
                    }
                } else {
                    let take = n.min(q.front().len());
                    let front: std::vec::Vec<u8> = q.front()[..take].to_vec();
                    let want: std::vec::Vec<u8> = model.drain(..take).collect();
                    prop_assert_eq!(front, want);
                    q.consume(take);
                }
                prop_assert!(q.len() <= cap);
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.space(), cap - model.len());
            }
        }
    }
}
