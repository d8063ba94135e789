//! A bounded outgoing byte queue of encoded QubesDB messages, drained into the vchan ring in
//! whatever pieces fit (a message may leave in several parts).

use alloc::collections::VecDeque;

use super::wire::Message;

/// Encoded messages waiting for the transport.
#[derive(Debug)]
pub(crate) struct OutQueue {
    buf: VecDeque<u8>,
    max: usize,
}

impl OutQueue {
    pub(crate) fn new(max: usize) -> Self {
        OutQueue {
            buf: VecDeque::new(),
            max,
        }
    }

    /// Whether a message of `len` bytes fits.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.buf.len().saturating_add(len) <= self.max
    }

    /// Queues a message, or returns `false` if it does not fit (or is not encodable).
    #[must_use]
    pub(crate) fn push(&mut self, m: &Message<'_>) -> bool {
        if !self.has_room(m.buffer_len()) {
            return false;
        }
        let mut tmp = [0u8; super::wire::MAX_MESSAGE_LEN];
        match m.emit(&mut tmp) {
            Ok(n) => {
                self.buf.extend(&tmp[..n]);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// Copies queued bytes into `out`; `None` when nothing is queued or `out` is empty.
    pub(crate) fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        let n = self.buf.len().min(out.len());
        if n == 0 {
            return None;
        }
        for (d, s) in out.iter_mut().zip(self.buf.drain(..n)) {
            *d = s;
        }
        Some(n)
    }
}
