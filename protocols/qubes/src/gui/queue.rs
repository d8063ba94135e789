//! A bounded outgoing byte queue for GUI messages and handshake words, drained into the vchan
//! ring in whatever pieces fit.

use alloc::collections::VecDeque;

use super::wire::{Message, WindowId};

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

    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.buf.len().saturating_add(len) <= self.max
    }

    /// Queues raw bytes (handshake words) if they fit.
    #[must_use]
    pub(crate) fn push_raw(&mut self, b: &[u8]) -> bool {
        if !self.has_room(b.len()) {
            return false;
        }
        self.buf.extend(b);
        true
    }

    /// Encodes and queues a message if it fits and is valid.
    #[must_use]
    pub(crate) fn push(&mut self, window: WindowId, m: &Message<'_>) -> bool {
        if !self.has_room(m.buffer_len()) {
            return false;
        }
        match m.to_vec(window) {
            Ok(v) => {
                self.buf.extend(v);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

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
