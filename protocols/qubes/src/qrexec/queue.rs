//! qrexec messages into the shared bounded byte queue (a stream, so `poll_transmit` may take
//! any amount); a message is queued whole or refused with `Full`.

use alloc::vec;

use super::error::Error;
use super::wire::Message;
use crate::bounded::{BoundedQueue, Full};

pub(crate) use crate::bounded::BoundedQueue as EventQueue;

impl From<Full> for Error {
    fn from(f: Full) -> Self {
        Error::Full { what: f.what }
    }
}

/// Outgoing bytes, at most `cap` queued.
#[derive(Debug)]
pub(crate) struct OutQueue {
    buf: BoundedQueue<u8>,
}

impl OutQueue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: BoundedQueue::new(cap, "qrexec output queue"),
        }
    }

    /// Bytes that still fit.
    pub(crate) fn room(&self) -> usize {
        self.buf.room()
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
        let (head, body): (Message<'_>, &[u8]) = match msg {
            Message::Data { stream, data } => (
                Message::Data {
                    stream: *stream,
                    data: &[],
                },
                data,
            ),
            other => (*other, &[]),
        };
        let mut tmp = vec![0u8; total.saturating_sub(body.len())];
        head.emit(&mut tmp)
            .map_err(|_| Error::InvalidArgument("field too long for the wire"))?;
        if let Message::Data { data, .. } = msg {
            // The header was emitted for an empty body; patch in the real length.
            let len = (data.len() as u32).to_le_bytes();
            tmp.get_mut(4..8)
                .ok_or(Error::InvalidArgument("header"))?
                .copy_from_slice(&len);
        }
        Ok(self.buf.push_all(&[&tmp, body])?)
    }

    /// Copies queued bytes into `out`; `None` when nothing is queued.
    pub(crate) fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.buf.poll_transmit(out)
    }
}
