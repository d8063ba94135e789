//! Encoded QubesDB messages into the shared bounded byte queue, drained into the vchan ring in
//! whatever pieces fit (a message may leave in several parts, but is queued whole or not at all).

use super::wire::Message;
use crate::bounded::BoundedQueue;

pub(crate) type OutQueue = BoundedQueue<u8>;

/// Queues a message; `false` (nothing queued) if it does not fit or is not encodable.
#[must_use]
pub(crate) fn push_message(out: &mut OutQueue, m: &Message<'_>) -> bool {
    m.to_vec().is_ok_and(|v| out.push_all(&[&v]).is_ok())
}
