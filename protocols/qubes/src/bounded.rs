//! The one bounded FIFO behind every machine's outgoing bytes and qrexec's events: when full it
//! refuses with [`Full`] and changes nothing, so a queue never grows past its bound.

use alloc::collections::VecDeque;
use core::fmt;

/// A push did not fit; the queue is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// Which queue, as named at [`BoundedQueue::new`].
    pub what: &'static str,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} full", self.what)
    }
}

impl core::error::Error for Full {}

/// At most `cap` items, oldest first.
#[derive(Debug)]
pub(crate) struct BoundedQueue<T> {
    q: VecDeque<T>,
    cap: usize,
    what: &'static str,
}

impl<T> BoundedQueue<T> {
    /// An empty queue of at most `cap` items; `what` names it in [`Full`].
    pub(crate) fn new(cap: usize, what: &'static str) -> Self {
        Self {
            q: VecDeque::new(),
            cap,
            what,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// How many more items fit.
    pub(crate) fn room(&self) -> usize {
        self.cap.saturating_sub(self.q.len())
    }

    /// Whether `n` more items fit.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        n <= self.room()
    }

    fn full(&self) -> Full {
        Full { what: self.what }
    }

    /// Appends one item, or refuses when the bound is reached.
    pub(crate) fn push(&mut self, item: T) -> Result<(), Full> {
        if !self.has_room(1) {
            return Err(self.full());
        }
        self.q.push_back(item);
        Ok(())
    }

    /// The oldest item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.q.pop_front()
    }

    pub(crate) fn clear(&mut self) {
        self.q.clear();
    }
}

impl<T: Copy> BoundedQueue<T> {
    /// Appends the parts in order, all of them or (when their total does not fit) none.
    pub(crate) fn push_all(&mut self, parts: &[&[T]]) -> Result<(), Full> {
        let total = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()));
        if !total.is_some_and(|t| self.has_room(t)) {
            return Err(self.full());
        }
        for p in parts {
            self.q.extend(p.iter().copied());
        }
        Ok(())
    }

    /// Moves the oldest items into `out`, as many as fit; `None` when nothing moved.
    pub(crate) fn poll_transmit(&mut self, out: &mut [T]) -> Option<usize> {
        let n = self.q.len().min(out.len());
        if n == 0 {
            return None;
        }
        for (dst, src) in out.iter_mut().zip(self.q.drain(..n)) {
            *dst = src;
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn full_refuses_and_changes_nothing() {
        let mut q = BoundedQueue::new(3, "test queue");
        assert_eq!(q.push_all(&[b"ab"]), Ok(()));
        assert_eq!(q.push_all(&[b"c", b"d"]), Err(Full { what: "test queue" }));
        assert_eq!(q.room(), 1);
        assert_eq!(q.push(b'c'), Ok(()));
        assert_eq!(q.push(b'd'), Err(Full { what: "test queue" }));
        let mut out = [0u8; 8];
        assert_eq!(q.poll_transmit(&mut out), Some(3));
        assert_eq!(&out[..3], b"abc");
        assert_eq!(q.poll_transmit(&mut out), None);
    }

    #[test]
    fn zero_cap_refuses_everything_but_empty_parts() {
        let mut q = BoundedQueue::<u8>::new(0, "none");
        assert_eq!(q.push(1), Err(Full { what: "none" }));
        assert_eq!(q.push_all(&[&[], &[]]), Ok(()));
        assert!(q.is_empty());
        assert_eq!(Full { what: "none" }.to_string(), "none full");
    }

    #[test]
    fn poll_transmit_into_empty_buffer_moves_nothing() {
        let mut q = BoundedQueue::new(4, "q");
        q.push(7u8).unwrap();
        assert_eq!(q.poll_transmit(&mut []), None);
        assert_eq!(q.pop(), Some(7));
        q.push(8).unwrap();
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.room(), 4);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        PushAll(Vec<Vec<u16>>),
        Pop,
        Drain(usize),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        let part = proptest::collection::vec(any::<u16>(), 0..6);
        prop_oneof![
            any::<u16>().prop_map(Op::Push),
            proptest::collection::vec(part, 0..4).prop_map(Op::PushAll),
            Just(Op::Pop),
            (0usize..8).prop_map(Op::Drain),
            Just(Op::Clear),
        ]
    }

    proptest! {
        /// Against a model: never past the bound, FIFO order, a refused push changes nothing.
        #[test]
        fn bound_and_fifo_hold(cap in 0usize..12, ops in proptest::collection::vec(op(), 0..64)) {
            let mut q = BoundedQueue::new(cap, "model");
            let mut model: VecDeque<u16> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(x) => {
                        let r = q.push(x);
                        prop_assert_eq!(r.is_ok(), model.len() < cap);
                        if r.is_ok() {
                            model.push_back(x);
                        }
                    }
                    Op::PushAll(parts) => {
                        let refs: Vec<&[u16]> = parts.iter().map(Vec::as_slice).collect();
                        let total: usize = parts.iter().map(Vec::len).sum();
                        let r = q.push_all(&refs);
                        prop_assert_eq!(r.is_ok(), model.len() + total <= cap);
                        if r.is_ok() {
                            model.extend(parts.iter().flatten().copied());
                        }
                    }
                    Op::Pop => prop_assert_eq!(q.pop(), model.pop_front()),
                    Op::Drain(n) => {
                        let mut out = alloc::vec![0u16; n];
                        let got = q.poll_transmit(&mut out).unwrap_or(0);
                        let want: Vec<u16> = model.drain(..n.min(model.len())).collect();
                        prop_assert_eq!(&out[..got], &want[..]);
                    }
                    Op::Clear => {
                        q.clear();
                        model.clear();
                    }
                }
                prop_assert!(model.len() <= cap);
                prop_assert_eq!(q.room(), cap - model.len());
                prop_assert_eq!(q.is_empty(), model.is_empty());
            }
            // Everything left comes out exactly once, oldest first.
            let mut rest = alloc::vec![0u16; cap + 1];
            let n = q.poll_transmit(&mut rest).unwrap_or(0);
            prop_assert_eq!(&rest[..n], &model.iter().copied().collect::<Vec<_>>()[..]);
        }
    }
}
