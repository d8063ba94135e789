//! GUI messages and handshake words into the shared bounded byte queue, drained into the vchan
//! ring in whatever pieces fit; a message is queued whole or not at all.

use super::wire::{Message, WindowId};
use crate::bounded::BoundedQueue;

pub(crate) type OutQueue = BoundedQueue<u8>;

/// Encodes and queues a message; `false` (nothing queued) if it does not fit or is not valid.
#[must_use]
pub(crate) fn push_message(out: &mut OutQueue, window: WindowId, m: &Message<'_>) -> bool {
    m.to_vec(window).is_ok_and(|v| out.push_all(&[&v]).is_ok())
}
