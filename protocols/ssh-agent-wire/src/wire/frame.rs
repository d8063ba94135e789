//! The agent stream's framing: `uint32 length || message`, with the length checked against
//! [`MAX_MESSAGE_LEN`] before any byte of the body is stored.

use alloc::vec::Vec;

/// Largest message body accepted, as OpenSSH's `AGENT_MAX_LEN` (256 KiB).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// What the reader produced after taking some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Frame {
    /// A complete message body (type byte first); may be empty, which is malformed.
    Message(Vec<u8>),
    /// A header declared a body above the maximum; its bytes are being skipped unstored so the
    /// stream stays in step. The agent answers it with FAILURE.
    Oversized {
        /// The declared length.
        declared: u32,
    },
}

#[derive(Debug, Clone)]
enum State {
    Header { buf: [u8; 4], have: usize },
    Body { len: usize, buf: Vec<u8> },
    Discard { left: usize },
}

/// Reassembles frames from a byte stream that may split or join them.
#[derive(Debug, Clone)]
pub struct FrameReader {
    max: usize,
    state: State,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_LEN)
    }
}

impl FrameReader {
    /// A reader accepting bodies up to `max` bytes (at most [`MAX_MESSAGE_LEN`] is sensible).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            state: State::Header {
                buf: [0; 4],
                have: 0,
            },
        }
    }

    /// Whether no partial frame is held.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Takes bytes from `data` up to the end of the next frame; returns how many it took and the
    /// frame, if one completed. Call again with the rest.
    pub fn push(&mut self, data: &[u8]) -> (usize, Option<Frame>) {
        let mut taken = 0;
        loop {
            let rest = data.get(taken..).unwrap_or(&[]);
            match &mut self.state {
                State::Header { buf, have } => {
                    let want = 4 - *have;
                    let n = want.min(rest.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(*have..*have + n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *have += n;
                    taken += n;
                    if *have < 4 {
                        return (taken, None);
                    }
                    let declared = u32::from_be_bytes(*buf);
                    let len = usize::try_from(declared).unwrap_or(usize::MAX);
                    if len > self.max {
                        self.state = State::Discard { left: len };
                        return (taken, Some(Frame::Oversized { declared }));
                    }
                    // Sized once (len is bounded above): growing would free copies of key
                    // material the caller can no longer zeroize.
                    self.state = State::Body {
                        len,
                        buf: Vec::with_capacity(len),
                    };
                }
                State::Body { len, buf } => {
                    let n = (*len - buf.len()).min(rest.len());
                    buf.extend_from_slice(rest.get(..n).unwrap_or(&[]));
                    taken += n;
                    if buf.len() < *len {
                        return (taken, None);
                    }
                    let body = core::mem::take(buf);
                    self.state = State::Header {
                        buf: [0; 4],
                        have: 0,
                    };
                    return (taken, Some(Frame::Message(body)));
                }
                State::Discard { left } => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    taken += n;
                    if *left > 0 {
                        return (taken, None);
                    }
                    self.state = State::Header {
                        buf: [0; 4],
                        have: 0,
                    };
                    if taken == data.len() {
                        return (taken, None);
                    }
                }
            }
        }
    }
}

/// Frames `body` for the stream: `uint32 length || body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    super::codec::put_string(&mut out, body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn split_and_joined_frames() {
        let stream = [0, 0, 0, 1, 11, 0, 0, 0, 2, 22, 7];
        let mut r = FrameReader::default();
        for i in 0..stream.len() {
            let mut r2 = FrameReader::default();
            let (a, b) = stream.split_at(i);
            let mut got = Vec::new();
            for part in [a, b] {
                let mut off = 0;
                while off < part.len() {
                    let (n, f) = r2.push(&part[off..]);
                    off += n;
                    got.extend(f);
                }
            }
            assert_eq!(
                got,
                [Frame::Message(vec![11]), Frame::Message(vec![22, 7])],
                "split at {i}"
            );
        }
        let (n, f) = r.push(&stream);
        assert_eq!((n, f), (5, Some(Frame::Message(vec![11]))));
    }

    #[test]
    fn oversized_length_refused_before_allocating_and_skipped() {
        let mut r = FrameReader::new(8);
        let mut s = vec![0, 0, 0, 9];
        s.extend_from_slice(&[0xaa; 9]);
        s.extend_from_slice(&[0, 0, 0, 1, 11]);
        let (n, f) = r.push(&s);
        assert_eq!((n, f), (4, Some(Frame::Oversized { declared: 9 })));
        let (n2, f) = r.push(&s[n..]);
        assert_eq!(f, Some(Frame::Message(vec![11])));
        assert_eq!(n + n2, s.len());
    }

    #[test]
    fn huge_declared_length_holds_nothing() {
        let mut r = FrameReader::default();
        let (_, f) = r.push(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(f, Some(Frame::Oversized { declared: u32::MAX }));
        assert!(matches!(r.state, State::Discard { .. }));
    }
}
