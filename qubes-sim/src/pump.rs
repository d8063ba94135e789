//! Runs one qrexec data channel over a vchan until the call ends: bytes from the vchan into the
//! sans-IO [`DataChannel`], its events into a [`Sink`], local streams from a bounded queue out.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use platform_api::DomId;
use qubes::qrexec::data::Event;
use qubes::qrexec::{DataChannel, Error as QError, Stream};
use vchan::{Interest, PeerState};

use crate::chan::{Hosted, Vchan, CONNECT_TIMEOUT};

/// What the local side hands the channel, in order.
#[derive(Debug)]
pub enum Input {
    /// A chunk of a stream.
    Data(Stream, Vec<u8>),
    /// The stream ended.
    Eof(Stream),
    /// The service's exit status (service side).
    Exit(i32),
}

/// Where the channel's events go.
pub trait Sink {
    /// Takes an event; `false` means not now (it is offered again later, and nothing more
    /// is read from the vchan meanwhile).
    fn offer(&mut self, ev: &Event) -> bool;
}

/// Queue depth of local input: chunks of at most 64 KiB, so a few hundred KiB in flight.
pub const INPUT_DEPTH: usize = 4;
/// Chunk size the local readers use (one v3 data chunk).
pub const CHUNK: usize = 65536;
/// Longest sleep of an idle pump.
const PUMP_TICK: Duration = Duration::from_millis(5);
/// Bytes waiting for the vchan above which no more local input is taken.
const TX_CAP: usize = 4 * CHUNK;
/// How often an idle pump asks whether the peer domain still exists.
const ALIVE_EVERY: Duration = Duration::from_millis(250);

/// How a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Caller side: the service's exit status. Service side: our exit status was delivered.
    Exit(i32),
    /// Service side: the caller closed the vchan before we finished.
    CallerGone,
}

/// Pumps until the call is over. `stop()` aborts (checked whenever idle).
pub fn pump(
    h: &mut Hosted,
    v: &mut Vchan,
    peer: DomId,
    chan: &mut DataChannel,
    input: &Receiver<Input>,
    sink: &mut dyn Sink,
    stop: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let mut inbuf = vec![0u8; 2 * CHUNK];
    let mut in_len = 0usize;
    let mut scratch = vec![0u8; 2 * CHUNK];
    let mut txq: Vec<u8> = Vec::with_capacity(TX_CAP + 2 * CHUNK);
    let mut tx_off = 0usize;
    let mut held: Option<Event> = None;
    let mut pending: Option<(Input, usize)> = None;
    let mut input_done = false;
    let mut peer_closed = false;
    let mut exit = None;
    let mut last_check = Instant::now();
    let started = last_check;
    loop {
        let mut progress = false;
        v.tidy(h);
        if !peer_closed && in_len < inbuf.len() {
            match v.read(&mut inbuf[in_len..]) {
                Ok(n) => {
                    in_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => peer_closed = true,
                Err(e) => bail!("data vchan: {e}"),
            }
        }
        if let Some(ev) = held.take() {
            if sink.offer(&ev) {
                progress = true;
            } else {
                held = Some(ev);
            }
        }
        if held.is_none() && in_len > 0 {
            let n = chan.handle_input(&inbuf[..in_len])?;
            inbuf.copy_within(n..in_len, 0);
            in_len -= n;
            progress |= n > 0;
            drain(chan, &mut scratch, &mut txq, &mut tx_off);
        }
        while held.is_none() {
            let Some(ev) = chan.poll_event() else { break };
            if let Event::Exit(c) = ev {
                exit = Some(c);
            }
            if sink.offer(&ev) {
                progress = true;
            } else {
                held = Some(ev);
            }
        }
        if chan.version().is_some() {
            while txq.len() - tx_off < TX_CAP {
                if pending.is_none() && !input_done {
                    match input.try_recv() {
                        Ok(i) => pending = Some((i, 0)),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => input_done = true,
                    }
                }
                let Some((inp, off)) = pending.as_mut() else {
                    break;
                };
                let sent = match inp {
                    Input::Data(s, d) => match chan.send(*s, &d[*off..]) {
                        Ok(n) => {
                            *off += n;
                            progress |= n > 0;
                            *off == d.len()
                        }
                        // The caller is gone or the call ended: drop what is left.
                        Err(QError::NotAllowed(_)) => true,
                        Err(e) => return Err(e.into()),
                    },
                    Input::Eof(s) => match chan.send_eof(*s) {
                        Ok(()) | Err(QError::NotAllowed(_)) => true,
                        Err(QError::Full { .. }) => false,
                        Err(e) => return Err(e.into()),
                    },
                    Input::Exit(c) => match chan.send_exit(*c) {
                        Ok(()) => {
                            exit = Some(*c);
                            true
                        }
                        Err(QError::Full { .. }) => false,
                        Err(e) => return Err(e.into()),
                    },
                };
                drain(chan, &mut scratch, &mut txq, &mut tx_off);
                if !sent {
                    break;
                }
                pending = None;
                progress = true;
            }
        }
        drain(chan, &mut scratch, &mut txq, &mut tx_off);
        while tx_off < txq.len() {
            match v.write(&txq[tx_off..]) {
                Ok(0) => break,
                Ok(n) => {
                    tx_off += n;
                    progress = true;
                }
                Err(vchan::Error::PeerClosed) => {
                    peer_closed = true;
                    (txq, tx_off) = (Vec::new(), 0);
                    break;
                }
                Err(e) => bail!("data vchan: {e}"),
            }
        }
        if chan.is_finished() && tx_off == txq.len() && held.is_none() {
            return Ok(Outcome::Exit(exit.unwrap_or(0)));
        }
        if peer_closed && !progress {
            chan.handle_close()?;
            return Ok(Outcome::CallerGone);
        }
        if !progress {
            if stop() {
                bail!("cancelled");
            }
            if last_check.elapsed() >= ALIVE_EVERY {
                last_check = Instant::now();
                // A service side that was dropped (its agent was full) never attaches.
                if started.elapsed() >= CONNECT_TIMEOUT
                    && matches!(v.peer_state(), Ok(PeerState::Waiting))
                {
                    bail!("the other end never connected");
                }
                if !h.domain_alive(peer) {
                    bail!("domain {peer} died during the call");
                }
            }
            let interest = Interest {
                read: true,
                write: tx_off < txq.len(),
            };
            v.wait(h, interest, PUMP_TICK)?;
        }
    }
}

/// Moves everything the machine has queued into `txq`, compacting it first. The machine's
/// own queue is kept empty this way: a full one makes `DataChannel::handle_input` stop
/// reading (it keeps room for a reply), and two peers that both stop reading while their
/// rings are full deadlock. `txq` stays bounded because input is only fed while it holds
/// less than [`TX_CAP`].
fn drain(chan: &mut DataChannel, scratch: &mut [u8], txq: &mut Vec<u8>, tx_off: &mut usize) {
    if *tx_off == txq.len() {
        txq.clear();
        *tx_off = 0;
    } else if *tx_off >= CHUNK {
        txq.drain(..*tx_off);
        *tx_off = 0;
    }
    while let Some(n) = chan.poll_transmit(scratch) {
        txq.extend_from_slice(scratch.get(..n).unwrap_or(&[]));
    }
}

/// Reads `r` in chunks into `tx` as `stream` data, then its EOF; stops if the pump is gone.
pub fn spawn_reader(
    mut r: impl Read + Send + 'static,
    stream: Stream,
    tx: SyncSender<Input>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Input::Data(stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Input::Eof(stream));
    })
}

/// A service's sink: caller stdin to a writer thread through a bounded queue.
#[derive(Debug)]
pub struct ChildSink {
    stdin: Option<SyncSender<Vec<u8>>>,
}

impl ChildSink {
    /// Feeds `w` (the child's stdin) from a thread; dropping the queue closes it.
    pub fn new(w: Option<impl Write + Send + 'static>) -> ChildSink {
        let Some(mut w) = w else {
            return ChildSink { stdin: None };
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(INPUT_DEPTH);
        std::thread::spawn(move || {
            let mut broken = false;
            // Keep draining after EPIPE so that the pump never waits on a dead reader.
            for chunk in rx {
                if !broken && w.write_all(&chunk).is_err() {
                    broken = true;
                }
            }
        });
        ChildSink { stdin: Some(tx) }
    }
}

impl Sink for ChildSink {
    fn offer(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Data {
                stream: Stream::Stdin,
                data,
            } => match &self.stdin {
                Some(tx) => match tx.try_send(data.clone()) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => true,
                    Err(TrySendError::Full(_)) => false,
                },
                None => true,
            },
            Event::Eof(Stream::Stdin) => {
                self.stdin = None;
                true
            }
            _ => true,
        }
    }
}
