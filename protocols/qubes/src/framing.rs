//! One bounded frame reader for qrexec, QubesDB and GUI messages: each protocol says its header
//! size and how to read (and cap) the body length; the reader never allocates past that cap.

use alloc::vec::Vec;
use core::fmt;

/// How one protocol frames its messages (mirage's `FRAMING`, with a cap before allocation).
pub trait Framing {
    /// Size of the fixed header.
    const HEADER_LEN: usize;
    /// The body length a complete header declares, refused if above the protocol's maximum
    /// for the current state (e.g. the negotiated qrexec version).
    fn body_len(&self, header: &[u8]) -> Result<usize, FrameError>;
}

/// Why a frame could not be read. Sticky: the stream is broken after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header declares a body longer than the protocol allows.
    TooLong {
        /// Declared length.
        len: u64,
        /// Maximum allowed.
        max: usize,
    },
    /// The header is invalid for another reason (unknown type where that is fatal, ...).
    BadHeader(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => {
                write!(
                    f,
                    "message declares a {len}-byte body, more than the {max} allowed"
                )
            }
            Self::BadHeader(why) => write!(f, "bad message header: {why}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Reassembles frames from a byte stream (vchan reads may split or join messages).
#[derive(Debug)]
pub struct FrameReader<F: Framing> {
    framing: F,
    buf: Vec<u8>,
    /// Total frame length once the header is known.
    frame_len: Option<usize>,
    error: Option<FrameError>,
}

impl<F: Framing> FrameReader<F> {
    /// An empty reader.
    pub fn new(framing: F) -> Self {
        Self {
            framing,
            buf: Vec::new(),
            frame_len: None,
            error: None,
        }
    }

    /// The framing, e.g. to update a negotiated version.
    pub fn framing_mut(&mut self) -> &mut F {
        &mut self.framing
    }

    /// The framing.
    pub fn framing(&self) -> &F {
        &self.framing
    }

    /// Bytes still needed to complete the current frame (header first). Reading exactly this
    /// many from the transport never takes bytes of the next frame.
    pub fn wanted(&self) -> usize {
        match self.frame_len {
            Some(n) => n - self.buf.len(),
            None => F::HEADER_LEN - self.buf.len(),
        }
    }

    /// Whether a complete frame is waiting in [`take`](Self::take).
    pub fn is_complete(&self) -> bool {
        self.frame_len == Some(self.buf.len())
    }

    /// Feeds bytes; takes at most up to the end of the current frame and returns how many it
    /// took. Returns 0 while a complete frame waits to be taken.
    pub fn push(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut taken = 0;
        while taken < data.len() && !self.is_complete() {
            let n = self.wanted().min(data.len() - taken);
            self.buf.extend_from_slice(&data[taken..taken + n]);
            taken += n;
            if self.frame_len.is_none() && self.buf.len() == F::HEADER_LEN {
                match self.framing.body_len(&self.buf) {
                    Ok(body) => {
                        self.frame_len = Some(F::HEADER_LEN + body);
                        self.buf.reserve_exact(body);
                    }
                    Err(e) => {
                        self.error = Some(e);
                        return Err(e);
                    }
                }
            }
        }
        Ok(taken)
    }

    /// Takes the complete frame (header and body), if there is one.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if !self.is_complete() {
            return None;
        }
        self.frame_len = None;
        Some(core::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// u32 length header, max 8.
    struct Len;
    impl Framing for Len {
        const HEADER_LEN: usize = 4;
        fn body_len(&self, h: &[u8]) -> Result<usize, FrameError> {
            let n = u32::from_le_bytes(h.try_into().unwrap());
            if n > 8 {
                return Err(FrameError::TooLong {
                    len: n.into(),
                    max: 8,
                });
            }
            Ok(n as usize)
        }
    }

    #[test]
    fn split_and_joined_frames() {
        let mut r = FrameReader::new(Len);
        let stream = [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0, 1, 0, 0, 0, b'x'];
        let mut frames = alloc::vec::Vec::new();
        for chunk in stream.chunks(3) {
            let mut off = 0;
            while off < chunk.len() {
                off += r.push(&chunk[off..]).unwrap();
                if let Some(f) = r.take() {
                    frames.push(f);
                }
            }
        }
        assert_eq!(
            frames,
            [
                &[2, 0, 0, 0, b'h', b'i'][..],
                &[0, 0, 0, 0],
                &[1, 0, 0, 0, b'x']
            ]
        );
    }

    #[test]
    fn oversize_refused_before_allocation_and_sticky() {
        let mut r = FrameReader::new(Len);
        assert_eq!(
            r.push(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLong {
                len: 0xffff_ffff,
                max: 8
            })
        );
        assert!(r.buf.capacity() < 64);
        assert!(r.push(&[0]).is_err());
    }
}
