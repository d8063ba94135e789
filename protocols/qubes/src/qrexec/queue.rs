//! Bounded queues shared by the qrexec machines: outgoing bytes (a stream, so `poll_transmit`
//! may take any amount) and events; both refuse with `Full` instead of growing.

use alloc::collections::VecDeque;
use alloc::vec;

use super::error::Error;
use super::wire::{Message, HEADER_LEN};

/// Outgoing bytes, at most `cap` queued.
#[derive(Debug)]
pub(crate) struct OutQueue {
    buf: VecDeque<u8>,
    cap: usize,
}

impl OutQueue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap,
        }
    }

    /// Bytes that still fit.
    pub(crate) fn room(&self) -> usize {
        self.cap.saturating_sub(self.buf.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Queues one whole message, or nothing.
    pub(crate) fn push(&mut self, msg: &Message<'_>) -> Result<(), Error> {
        self.push_keeping(msg, 0)
    }

    /// Queues one whole message only if `keep` bytes still fit after it: the application's
    /// sends keep room for the replies `handle_input` may have to queue, so that a full queue
    /// of the application's own bytes never stops input.
    pub(crate) fn push_keeping(&mut self, msg: &Message<'_>, keep: usize) -> Result<(), Error> {
        let total = msg.buffer_len();
        if total.saturating_add(keep) > self.room() {
            return Err(Error::Full {
                what: "qrexec output queue",
            });
        }
        // Data chunks can be 64 KiB: emit only the header and append the payload as is.
        let mut tmp = match msg {
            Message::Data { .. } => vec![0u8; HEADER_LEN],
            _ => vec![0u8; total],
        };
        let head = match msg {
            Message::Data { stream, .. } => Message::Data {
                stream: *stream,
                data: &[],
            },
            other => *other,
        };
        head.emit(&mut tmp)
            .map_err(|_| Error::InvalidArgument("field too long for the wire"))?;
        if let Message::Data { data, .. } = msg {
            // The header was emitted for an empty body; patch in the real length.
            let len = (data.len() as u32).to_le_bytes();
            tmp.get_mut(4..8)
                .ok_or(Error::InvalidArgument("header"))?
                .copy_from_slice(&len);
            self.buf.extend(tmp);
            self.buf.extend(data.iter().copied());
        } else {
            self.buf.extend(tmp);
        }
        Ok(())
    }

    /// Copies queued bytes into `out`; `None` when nothing is queued.
    pub(crate) fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.buf.is_empty() || out.is_empty() {
            return None;
        }
        let n = out.len().min(self.buf.len());
        for (dst, src) in out.iter_mut().zip(self.buf.drain(..n)) {
            *dst = src;
        }
        Some(n)
    }
}

/// Events waiting for `poll_event`, at most `cap`.
#[derive(Debug)]
pub(crate) struct EventQueue<E> {
    q: VecDeque<E>,
    cap: usize,
}

impl<E> EventQueue<E> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            q: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.q.len() < self.cap
    }

    /// Callers check [`has_room`](Self::has_room) before consuming the input that makes an event.
    pub(crate) fn push(&mut self, e: E) {
        self.q.push_back(e);
    }

    pub(crate) fn pop(&mut self) -> Option<E> {
        self.q.pop_front()
    }
}
