//! `qubes.GetImageRGBA` as the Qubes agent script speaks it, for images on stdin only: a first
//! line `-` (or `FORMAT:-`), the file to EOF; the answer is `W H\n` and W·H·4 RGBA bytes.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;

use crate::decode::{Canvas, Decoder, Limits};
use crate::error::PngError;

/// The service name.
pub const SERVICE: &str = "qubes.GetImageRGBA";
/// Longest first line accepted (the agent reads it with `read -r`; paths are shorter).
pub const MAX_LINE: usize = 256;

/// Why a request was refused (the caller gets exit code 1, as from the script's `set -e`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RgbaError {
    /// No newline within [`MAX_LINE`] bytes, or EOF before it.
    BadLine,
    /// A file name or `xdgicon:`: this qube has no files, only stdin (`-`).
    NotStdin,
    /// The image was refused by the decoder.
    Png(PngError),
}

impl core::fmt::Display for RgbaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadLine => write!(f, "GetImageRGBA: no first line"),
            Self::NotStdin => write!(f, "GetImageRGBA: only `-` (image on stdin) is served"),
            Self::Png(e) => write!(f, "GetImageRGBA: {e}"),
        }
    }
}

/// One request: the first line, then the image streamed into a decoder, then the answer.
#[derive(Debug)]
pub struct RgbaRequest {
    line: Vec<u8>,
    decoder: Option<Box<Decoder>>,
    limits: Limits,
    canvas_pixels: u64,
}

impl RgbaRequest {
    /// A request whose image is decoded within `limits`, downscaled to `canvas_pixels`.
    pub fn new(limits: Limits, canvas_pixels: u64) -> Self {
        Self {
            line: Vec::new(),
            decoder: None,
            limits,
            canvas_pixels,
        }
    }

    /// Takes input; errors are final.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), RgbaError> {
        if self.decoder.is_none() {
            let nl = data.iter().position(|&b| b == b'\n');
            let take = nl.map_or(data.len(), |i| i + 1);
            if self.line.len() + take > MAX_LINE + 1 {
                return Err(RgbaError::BadLine);
            }
            self.line.extend_from_slice(&data[..take]);
            data = &data[take..];
            if nl.is_none() {
                return Ok(());
            }
            let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            if line != b"-" && !line.ends_with(b":-") || line.starts_with(b"xdgicon:") {
                return Err(RgbaError::NotStdin);
            }
            self.decoder = Some(Box::new(Decoder::with_canvas_pixels(
                self.limits,
                self.canvas_pixels,
            )));
        }
        match self.decoder.as_mut() {
            Some(d) => d.push(data).map_err(RgbaError::Png),
            None => Ok(()),
        }
    }

    /// The caller's EOF: the decoded image, ready to be sent.
    pub fn finish(self) -> Result<RgbaAnswer, RgbaError> {
        let d = self.decoder.ok_or(RgbaError::BadLine)?;
        let canvas = d.finish().map_err(RgbaError::Png)?;
        let head = format!("{} {}\n", canvas.width, canvas.height).into_bytes();
        Ok(RgbaAnswer {
            head,
            canvas,
            sent: 0,
        })
    }
}

/// `W H\n` and the RGBA rows (not premultiplied), produced piece by piece from the canvas so
/// no second copy of the image is held.
#[derive(Debug)]
pub struct RgbaAnswer {
    head: Vec<u8>,
    canvas: Canvas,
    sent: usize,
}

impl RgbaAnswer {
    /// Bytes of the whole answer.
    pub fn len(&self) -> usize {
        self.head.len() + self.canvas.pixels.len()
    }

    /// Whether everything was produced.
    pub fn is_empty(&self) -> bool {
        self.sent >= self.len()
    }

    /// The next at most `max` bytes, appended to `out` (cleared first).
    pub fn next_piece(&mut self, max: usize, out: &mut Vec<u8>) {
        out.clear();
        while out.len() < max && self.sent < self.len() {
            if let Some(&b) = self.head.get(self.sent) {
                out.push(b);
                self.sent += 1;
                continue;
            }
            // Whole pixels only, so a pixel is never split between pieces' conversions.
            let at = self.sent - self.head.len();
            let room = (max - out.len()) / 4 * 4;
            if room == 0 {
                break;
            }
            let end = (at + room).min(self.canvas.pixels.len());
            for px in self
                .canvas
                .pixels
                .get(at..end)
                .unwrap_or(&[])
                .chunks_exact(4)
            {
                out.extend_from_slice(&[px[2], px[1], px[0], px[3]]);
            }
            self.sent += end - at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_png() -> Vec<u8> {
        // 2x1 RGBA: red opaque, green half transparent; stored deflate block.
        let raw = [0u8, 255, 0, 0, 255, 0, 255, 0, 128];
        let mut z = alloc::vec![
            0x78,
            0x01,
            0x01,
            raw.len() as u8,
            0,
            !(raw.len() as u8),
            0xff
        ];
        z.extend_from_slice(&raw);
        let mut adler = (1u32, 0u32);
        for &b in &raw {
            adler.0 = (adler.0 + u32::from(b)) % 65521;
            adler.1 = (adler.1 + adler.0) % 65521;
        }
        z.extend_from_slice(&((adler.1 << 16) | adler.0).to_be_bytes());
        let mut f = crate::SIGNATURE.to_vec();
        let mut chunk = |kind: &[u8; 4], data: &[u8]| {
            f.extend_from_slice(&(data.len() as u32).to_be_bytes());
            f.extend_from_slice(kind);
            f.extend_from_slice(data);
            let c = crate::crc32_update(crate::crc32_update(crate::CRC_INIT, kind), data);
            f.extend_from_slice(&(c ^ 0xffff_ffff).to_be_bytes());
        };
        chunk(b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
        chunk(b"IDAT", &z);
        chunk(b"IEND", &[]);
        f
    }

    #[test]
    fn stdin_image_answers_size_line_and_rgba() {
        for first in [&b"-\n"[..], b"png:-\n"] {
            let mut r = RgbaRequest::new(Limits::default(), 1 << 20);
            let mut input = first.to_vec();
            input.extend_from_slice(&tiny_png());
            for piece in input.chunks(3) {
                r.push(piece).unwrap();
            }
            let mut a = r.finish().unwrap();
            let mut out = Vec::new();
            let mut piece = Vec::new();
            while !a.is_empty() {
                a.next_piece(5, &mut piece);
                assert!(!piece.is_empty() && piece.len() <= 5);
                out.extend_from_slice(&piece);
            }
            assert_eq!(&out[..4], b"2 1\n");
            assert_eq!(&out[4..], &[255, 0, 0, 255, 0, 255, 0, 128]);
        }
    }

    #[test]
    fn hostile_request_for_a_file_or_icon_is_refused() {
        for line in [&b"/etc/passwd\n"[..], b"xdgicon:foo\n", b"\n"] {
            let mut r = RgbaRequest::new(Limits::default(), 1 << 20);
            assert_eq!(r.push(line), Err(RgbaError::NotStdin), "{line:?}");
        }
    }

    proptest::proptest! {
        /// Any first line and bytes after it: a typed error or a decode, never a panic.
        #[test]
        fn hostile_input_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cut in 1usize..100,
        ) {
            let mut r = RgbaRequest::new(Limits::default(), 1 << 16);
            let mut ok = true;
            for p in data.chunks(cut) {
                if r.push(p).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                let _ = r.finish();
            }
        }
    }

    #[test]
    fn hostile_request_without_newline_is_refused() {
        let mut r = RgbaRequest::new(Limits::default(), 1 << 20);
        assert_eq!(r.push(&[b'a'; MAX_LINE + 5]), Err(RgbaError::BadLine));
        let r = RgbaRequest::new(Limits::default(), 1 << 20);
        assert!(matches!(r.finish(), Err(RgbaError::BadLine)));
    }
}
