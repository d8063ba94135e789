//! Streaming decode: IDAT is inflated through a 32 KiB window, unfiltered row by row, and each
//! row is sampled straight into a canvas that fits the window, so memory never scales with the image.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::chunk::{crc32_update, ChunkKind, CRC_INIT, SIGNATURE};
use crate::error::{Limit, PngError};
use crate::header::{ColorType, Header, Pass, ADAM7, FULL};
use crate::inflate::{Either, InflateError, Inflater};

/// Budgets checked before allocating; a file beyond them is refused with `TooLarge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest width or height accepted.
    pub max_dimension: u32,
    /// Largest width × height of the source image.
    pub max_pixels: u64,
    /// Largest decoded scanline in bytes (two are kept).
    pub max_row_bytes: u64,
    /// Largest inflated stream in bytes: bounds decode time, as there is no clock here.
    pub max_decoded_bytes: u64,
    /// Largest declared length of one chunk other than IDAT.
    pub max_chunk_len: u32,
    /// Largest total of ancillary chunk data.
    pub max_ancillary_bytes: u64,
    /// Largest peak heap use of one decode (canvas, rows, column map, inflate state).
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_dimension: 1 << 20,
            max_pixels: 1 << 32,
            max_row_bytes: 64 << 20,
            max_decoded_bytes: 1 << 30,
            max_chunk_len: 16 << 20,
            max_ancillary_bytes: 32 << 20,
            max_memory: 128 << 20,
        }
    }
}

/// Decoded pixels, 4 bytes each in B, G, R, A order (A becomes X after compositing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// Replaces alpha by compositing over an 8-pixel grey checkerboard; X is then 0xff.
    pub fn composite_checkerboard(&mut self) {
        let w = self.width as usize;
        for (i, px) in self.pixels.chunks_exact_mut(4).enumerate() {
            if px[3] == 0xff {
                continue;
            }
            let (x, y) = (i % w.max(1), i / w.max(1));
            let bg: u16 = if (x / 8 + y / 8) % 2 == 0 { 0x99 } else { 0x66 };
            let a = u16::from(px[3]);
            for c in &mut px[..3] {
                *c = ((u16::from(*c) * a + bg * (255 - a) + 127) / 255) as u8;
            }
            px[3] = 0xff;
        }
    }
}

/// What a decode will cost, computed from IHDR alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub header: Header,
    pub out_width: u32,
    pub out_height: u32,
    pub row_bytes: u64,
    pub decoded_bytes: u64,
    pub memory: u64,
}

/// Largest chunk the decoder buffers (PLTE: 256 entries of 3 bytes).
const SMALL_CHUNK_MAX: u64 = 768;

/// Largest size with the image's aspect ratio that fits `max_w` × `max_h`, never enlarged.
pub fn fit(width: u32, height: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    let (w, h, mw, mh) = (
        u64::from(width),
        u64::from(height),
        u64::from(max_w.max(1)),
        u64::from(max_h.max(1)),
    );
    if w <= mw && h <= mh {
        return (width, height);
    }
    let (ow, oh) = if w * mh >= h * mw {
        (mw, (h * mw / w).max(1))
    } else {
        ((w * mh / h).max(1), mh)
    };
    (ow as u32, oh as u32)
}

impl Plan {
    /// Checks every budget against the header and the window before anything is allocated.
    pub fn new(header: Header, limits: &Limits, max_w: u32, max_h: u32) -> Result<Self, PngError> {
        let too = |what, needed: u64, max: u64| {
            if needed > max {
                Err(PngError::TooLarge { what, needed, max })
            } else {
                Ok(())
            }
        };
        let dim = u64::from(header.width.max(header.height));
        too(Limit::Dimension, dim, u64::from(limits.max_dimension))?;
        too(
            Limit::Pixels,
            u64::from(header.width) * u64::from(header.height),
            limits.max_pixels,
        )?;
        let row_bytes = header.row_bytes(u64::from(header.width)) + 1;
        too(Limit::RowBytes, row_bytes, limits.max_row_bytes)?;
        let decoded_bytes = header.raw_size();
        too(Limit::DecodedBytes, decoded_bytes, limits.max_decoded_bytes)?;
        let (out_width, out_height) = fit(header.width, header.height, max_w, max_h);
        let canvas = u64::from(out_width) * u64::from(out_height) * 4;
        let memory =
            canvas + 2 * row_bytes + u64::from(out_width) * 8 + Inflater::MEMORY + SMALL_CHUNK_MAX;
        too(Limit::Memory, memory, limits.max_memory)?;
        Ok(Self {
            header,
            out_width,
            out_height,
            row_bytes,
            decoded_bytes,
            memory,
        })
    }
}

fn try_zeroed<T: Clone + Default>(n: u64) -> Result<Vec<T>, PngError> {
    let bytes = n.saturating_mul(core::mem::size_of::<T>() as u64);
    let len = usize::try_from(n).map_err(|_| PngError::OutOfMemory { needed: bytes })?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| PngError::OutOfMemory { needed: bytes })?;
    v.resize(len, T::default());
    Ok(v)
}

/// Colour information a sample needs: palette expanded to RGBA, tRNS key.
#[derive(Debug)]
struct Format {
    header: Header,
    palette: [[u8; 4]; 256],
    /// tRNS colour key for grey (all three equal) or truecolour, at the image's bit depth.
    key: Option<[u16; 3]>,
}

impl Format {
    #[inline]
    fn sample(&self, row: &[u8], i: usize) -> [u8; 4] {
        let d = self.header.bit_depth;
        let key = |v: [u16; 3]| if self.key == Some(v) { 0 } else { 255 };
        let at = |k: usize| row.get(k).copied().unwrap_or(0);
        match (self.header.color, d) {
            (ColorType::Gray | ColorType::Indexed, 1 | 2 | 4) => {
                let bit = i * usize::from(d);
                let mask = (1u8 << d) - 1;
                let v = (at(bit / 8) >> (8 - usize::from(d) - bit % 8)) & mask;
                if self.header.color == ColorType::Indexed {
                    return self.palette[usize::from(v)];
                }
                let g = v * (255 / mask);
                [g, g, g, key([u16::from(v); 3])]
            }
            (ColorType::Indexed, _) => self.palette[usize::from(at(i))],
            (ColorType::Gray, 8) => {
                let g = at(i);
                [g, g, g, key([u16::from(g); 3])]
            }
            (ColorType::Gray, _) => {
                let v = u16::from_be_bytes([at(2 * i), at(2 * i + 1)]);
                let g = at(2 * i);
                [g, g, g, key([v; 3])]
            }
            (ColorType::GrayAlpha, 8) => {
                let g = at(2 * i);
                [g, g, g, at(2 * i + 1)]
            }
            (ColorType::GrayAlpha, _) => {
                let g = at(4 * i);
                [g, g, g, at(4 * i + 2)]
            }
            (ColorType::Rgb, 8) => {
                let (r, g, b) = (at(3 * i), at(3 * i + 1), at(3 * i + 2));
                [r, g, b, key([u16::from(r), u16::from(g), u16::from(b)])]
            }
            (ColorType::Rgb, _) => {
                let w = |k: usize| u16::from_be_bytes([at(6 * i + 2 * k), at(6 * i + 2 * k + 1)]);
                [
                    at(6 * i),
                    at(6 * i + 2),
                    at(6 * i + 4),
                    key([w(0), w(1), w(2)]),
                ]
            }
            (ColorType::Rgba, 8) => [at(4 * i), at(4 * i + 1), at(4 * i + 2), at(4 * i + 3)],
            (ColorType::Rgba, _) => [at(8 * i), at(8 * i + 2), at(8 * i + 4), at(8 * i + 6)],
        }
    }
}

/// Reassembles scanlines from inflated bytes, unfilters them and samples them into the canvas.
#[derive(Debug)]
struct Rows {
    format: Format,
    cur: Vec<u8>,
    prev: Vec<u8>,
    fill: usize,
    /// Index into ADAM7 (or 0 with `FULL`), the pass's row count and the current row in it.
    pass: usize,
    pass_rows: u64,
    row: u64,
    row_len: usize,
    done: bool,
    canvas: Canvas,
    /// Source x of each canvas column.
    cols: Vec<u32>,
}

impl Rows {
    fn pass_def(&self) -> Pass {
        if self.format.header.interlaced {
            ADAM7.get(self.pass).copied().unwrap_or(FULL)
        } else {
            FULL
        }
    }

    /// Moves to the next pass with at least one pixel, or marks the image done.
    fn start_pass(&mut self) {
        let h = self.format.header;
        let passes = if h.interlaced { ADAM7.len() } else { 1 };
        while self.pass < passes {
            let (w, rows) = self.pass_def().size(h.width, h.height);
            if w > 0 && rows > 0 {
                // Plan::new bounded the full row, and a pass row is never longer.
                self.row_len = h.row_bytes(w) as usize + 1;
                self.pass_rows = rows;
                self.row = 0;
                self.fill = 0;
                self.prev[..self.row_len].fill(0);
                return;
            }
            self.pass += 1;
        }
        self.done = true;
    }

    /// Consumes inflated bytes; returns once the image is complete or `data` is used up.
    fn push(&mut self, mut data: &[u8]) -> Result<(), PngError> {
        while !data.is_empty() && !self.done {
            let want = self.row_len - self.fill;
            let n = want.min(data.len());
            self.cur[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.row_len {
                self.finish_row()?;
            }
        }
        Ok(())
    }

    fn finish_row(&mut self) -> Result<(), PngError> {
        let len = self.row_len;
        let bpp = self.format.header.filter_bpp();
        let fused = match self.full_width_line() {
            // The left-dependent filters are bound by the chain they carry along the row, so
            // storing each canvas pixel in the same loop is nearly free and saves a pass.
            Some(r) if matches!(self.cur.first(), Some(1 | 3 | 4)) => {
                let line = self.canvas.pixels.get_mut(r).unwrap_or(&mut []);
                let mut emit = Bgra(line);
                unfilter(&mut self.cur[..len], &self.prev[..len], bpp, &mut emit)?
            }
            _ => unfilter(&mut self.cur[..len], &self.prev[..len], bpp, &mut NoEmit)?,
        };
        if !fused {
            self.emit_row();
        }
        core::mem::swap(&mut self.cur, &mut self.prev);
        self.fill = 0;
        self.row += 1;
        if self.row == self.pass_rows {
            self.pass += 1;
            self.start_pass();
        }
        Ok(())
    }

    /// The canvas bytes of the current row when it is an 8-bit RGB (no key) or RGBA row shown
    /// at full width (canvas column x is source column x).
    fn full_width_line(&self) -> Option<core::ops::Range<usize>> {
        let f = &self.format;
        let simple = match f.header.color {
            ColorType::Rgba => true,
            ColorType::Rgb => f.key.is_none(),
            _ => false,
        };
        let px = row_px(self.row_len.saturating_sub(1), f.header.color);
        if !simple || f.header.bit_depth != 8 || self.pass_def().dx != 1 {
            return None;
        }
        if self.canvas.width as usize != px {
            return None;
        }
        self.canvas_line()
    }

    /// The canvas bytes that show the current source row, if any.
    fn canvas_line(&self) -> Option<core::ops::Range<usize>> {
        let p = self.pass_def();
        let h = u64::from(self.format.header.height);
        let oh = u64::from(self.canvas.height);
        let y = p.y0 + self.row * p.dy;
        // Canvas row ty shows source row floor(ty*h/oh); oh <= h, so at most one ty per y.
        let ty = (y * oh).div_ceil(h);
        if ty >= oh || ty * h / oh != y {
            return None;
        }
        let ow = self.canvas.width as usize;
        let start = ty as usize * ow * 4;
        Some(start..start + ow * 4)
    }

    /// Samples the unfiltered row into the canvas rows and columns that select it.
    fn emit_row(&mut self) {
        let p = self.pass_def();
        let Some(r) = self.canvas_line() else {
            return;
        };
        let ow = self.canvas.width as usize;
        let Some(line) = self.canvas.pixels.get_mut(r) else {
            return;
        };
        let row = &self.cur[1..self.row_len];
        if p.dx == 1
            && self.format.header.bit_depth == 8
            && ow == row_px(row.len(), self.format.header.color)
        {
            // Full width: canvas column x is source column x.
            match self.format.header.color {
                ColorType::Rgba => {
                    for (px, s) in line.chunks_exact_mut(4).zip(row.chunks_exact(4)) {
                        px.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
                    }
                    return;
                }
                ColorType::Rgb if self.format.key.is_none() => {
                    for (px, s) in line.chunks_exact_mut(4).zip(row.chunks_exact(3)) {
                        px.copy_from_slice(&[s[2], s[1], s[0], 255]);
                    }
                    return;
                }
                _ => {}
            }
        }
        if p.dx == 1 && self.format.header.bit_depth == 8 {
            // Whole-row fast paths for the common 8-bit truecolour layouts.
            match self.format.header.color {
                ColorType::Rgba => {
                    for (px, &sx) in line.chunks_exact_mut(4).zip(&self.cols) {
                        if let Some(s) = row.get(sx as usize * 4..sx as usize * 4 + 4) {
                            px.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
                        }
                    }
                    return;
                }
                ColorType::Rgb if self.format.key.is_none() => {
                    for (px, &sx) in line.chunks_exact_mut(4).zip(&self.cols) {
                        if let Some(s) = row.get(sx as usize * 3..sx as usize * 3 + 3) {
                            px.copy_from_slice(&[s[2], s[1], s[0], 255]);
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
        for (px, &sx) in line.chunks_exact_mut(4).zip(&self.cols) {
            let sx = u64::from(sx);
            if sx < p.x0 || !(sx - p.x0).is_multiple_of(p.dx) {
                continue;
            }
            let [r, g, b, a] = self.format.sample(row, ((sx - p.x0) / p.dx) as usize);
            px.copy_from_slice(&[b, g, r, a]);
        }
    }
}

/// Pixels in an 8-bit row of `len` bytes (0 for layouts without a whole-row fast path).
fn row_px(len: usize, color: ColorType) -> usize {
    match color {
        ColorType::Rgba => len / 4,
        ColorType::Rgb => len / 3,
        _ => 0,
    }
}

/// Unfilters the scanline `cur` (filter byte first) in place against the previous unfiltered
/// row. Returns whether `emit` got every pixel (only the left-dependent filters feed it).
fn unfilter<E: Emit>(
    cur: &mut [u8],
    prev: &[u8],
    bpp: usize,
    emit: &mut E,
) -> Result<bool, PngError> {
    let Some((filter, line)) = cur.split_first_mut() else {
        return Ok(false);
    };
    let filter = *filter;
    let up = prev.get(1..=line.len()).unwrap_or(&[]);
    if up.len() != line.len() {
        // Both buffers are sized from the same row length; a mismatch is a decoder bug, not input.
        return Err(PngError::Inflate);
    }
    macro_rules! by_bpp {
        ($f:ident) => {
            match bpp {
                1 => $f::<1, E>(line, up, emit),
                2 => $f::<2, E>(line, up, emit),
                3 => $f::<3, E>(line, up, emit),
                4 => $f::<4, E>(line, up, emit),
                6 => $f::<6, E>(line, up, emit),
                _ => $f::<8, E>(line, up, emit),
            }
        };
    }
    match filter {
        0 => return Ok(false),
        1 => by_bpp!(sub_row),
        2 => {
            for (c, &u) in line.iter_mut().zip(up) {
                *c = c.wrapping_add(u);
            }
            return Ok(false);
        }
        3 => by_bpp!(avg_row),
        4 => by_bpp!(paeth_row),
        f => return Err(PngError::BadFilter { filter: f }),
    }
    Ok(E::ACTIVE)
}

/// Where the left-dependent filters also put each finished pixel.
trait Emit {
    const ACTIVE: bool;
    fn px<const BPP: usize>(&mut self, i: usize, a: &[u8; BPP]);
}

/// Nothing: the row is sampled afterwards.
struct NoEmit;

impl Emit for NoEmit {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn px<const BPP: usize>(&mut self, _: usize, _: &[u8; BPP]) {}
}

/// The canvas row of a full-width 8-bit RGB or RGBA row: pixel i as B, G, R, A.
struct Bgra<'a>(&'a mut [u8]);

impl Emit for Bgra<'_> {
    const ACTIVE: bool = true;
    #[inline(always)]
    fn px<const BPP: usize>(&mut self, i: usize, a: &[u8; BPP]) {
        let c = |k: usize| a.get(k).copied().unwrap_or(255);
        if let Some(d) = self.0.get_mut(i * 4..i * 4 + 4) {
            d.copy_from_slice(&[c(2), c(1), c(0), c(3)]);
        }
    }
}

// The three filters that depend on the pixel to the left, with the pixel size known at compile
// time: one pass over whole pixels, the left (and upper-left) pixel carried in registers, no
// index arithmetic to bounds-check. Rows are whole pixels (bpp divides the row length).

#[inline(always)]
fn sub_row<const BPP: usize, E: Emit>(line: &mut [u8], _up: &[u8], emit: &mut E) {
    let mut a = [0u8; BPP];
    for (i, px) in line.chunks_exact_mut(BPP).enumerate() {
        let Ok(px) = <&mut [u8; BPP]>::try_from(px) else {
            continue;
        };
        for k in 0..BPP {
            a[k] = px[k].wrapping_add(a[k]);
            px[k] = a[k];
        }
        emit.px(i, &a);
    }
}

#[inline(always)]
fn avg_row<const BPP: usize, E: Emit>(line: &mut [u8], up: &[u8], emit: &mut E) {
    let mut a = [0u8; BPP];
    for (i, (px, u)) in line
        .chunks_exact_mut(BPP)
        .zip(up.chunks_exact(BPP))
        .enumerate()
    {
        // As arrays, the channel loop needs no bounds checks (a chunk's length is not a
        // constant to the optimiser).
        let (Ok(px), Ok(u)) = (<&mut [u8; BPP]>::try_from(px), <&[u8; BPP]>::try_from(u)) else {
            continue;
        };
        for k in 0..BPP {
            let avg = ((u16::from(a[k]) + u16::from(u[k])) >> 1) as u8;
            a[k] = px[k].wrapping_add(avg);
            px[k] = a[k];
        }
        emit.px(i, &a);
    }
}

#[inline(always)]
fn paeth_row<const BPP: usize, E: Emit>(line: &mut [u8], up: &[u8], emit: &mut E) {
    let (mut a, mut c) = ([0u8; BPP], [0u8; BPP]);
    for (i, (px, u)) in line
        .chunks_exact_mut(BPP)
        .zip(up.chunks_exact(BPP))
        .enumerate()
    {
        // As arrays, the channel loop needs no bounds checks (a chunk's length is not a
        // constant to the optimiser).
        let (Ok(px), Ok(u)) = (<&mut [u8; BPP]>::try_from(px), <&[u8; BPP]>::try_from(u)) else {
            continue;
        };
        for k in 0..BPP {
            a[k] = px[k].wrapping_add(paeth(a[k], u[k], c[k]));
            px[k] = a[k];
            c[k] = u[k];
        }
        emit.px(i, &a);
    }
}

/// The Paeth predictor in a form with a short dependency on `a` (the pixel just decoded,
/// carried along the row): with lo/hi the smaller/larger of a and b, the estimate p = a + b - c
/// is closest to hi when 3c - (a + b) <= lo, to lo when it is >= hi, else to c (ties as the
/// spec breaks them; the exhaustive test checks every input).
#[inline(always)]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let t = 3 * i16::from(c) - (i16::from(a) + i16::from(b));
    let (lo, hi) = (a.min(b), a.max(b));
    if t <= i16::from(lo) {
        hi
    } else if t >= i16::from(hi) {
        lo
    } else {
        c
    }
}

/// The zlib stream of the IDAT chunks, inflated straight into the row assembler.
#[derive(Debug)]
struct Idat {
    inflater: Box<Inflater>,
}

fn inflate_error(e: Either<PngError>) -> PngError {
    match e {
        Either::Sink(e) => e,
        Either::Inflate(InflateError::Truncated) => PngError::ImageDataShort,
        Either::Inflate(_) => PngError::Inflate,
    }
}

impl Idat {
    /// Feeds one piece of IDAT data; once `rows` is complete the rest is never inflated.
    fn feed(&mut self, input: &[u8], rows: &mut Rows) -> Result<(), PngError> {
        let mut sink = |d: &[u8]| -> Result<bool, PngError> {
            rows.push(d)?;
            Ok(!rows.done)
        };
        match self.inflater.push(input, &mut sink) {
            // What the stream holds after the last scanline is never used, so neither its
            // errors nor its length matter; ignoring them keeps results independent of how
            // the input was split.
            Err(_) if rows.done => Ok(()),
            Err(e) => Err(inflate_error(e)),
            Ok(_) => Ok(()),
        }
    }

    /// The IDAT chunks ended: inflates what is buffered to the end of the stream.
    fn finish(&mut self, rows: &mut Rows) -> Result<(), PngError> {
        if rows.done {
            return Ok(());
        }
        let mut sink = |d: &[u8]| -> Result<bool, PngError> {
            rows.push(d)?;
            Ok(!rows.done)
        };
        match self.inflater.finish(&mut sink) {
            Err(_) if rows.done => Ok(()),
            Err(e) => Err(inflate_error(e)),
            Ok(_) if rows.done => Ok(()),
            Ok(_) => Err(PngError::ImageDataShort),
        }
    }
}

/// Decodes `file` into a canvas no larger than `max_w` × `max_h` (aspect kept, never enlarged).
pub fn decode(file: &[u8], limits: &Limits, max_w: u32, max_h: u32) -> Result<Canvas, PngError> {
    let mut d = Decoder::new(*limits, max_w, max_h);
    d.push(file)?;
    d.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Signature,
    ChunkHeader,
    ChunkData,
    ChunkCrc,
    End,
}

/// Push decoder: the file may arrive in pieces of any size; only IHDR, PLTE and tRNS are
/// buffered (at most 768 bytes), IDAT is inflated as it arrives and other chunks are skipped.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    max_w: u32,
    max_h: u32,
    /// When set, the box is chosen from IHDR: the whole image if it has at most this many
    /// pixels, else the same aspect within that many (see [`crate::view::canvas_box`]).
    canvas_pixels: Option<u64>,
    stage: Stage,
    /// Signature, chunk header or CRC bytes gathered so far.
    head: [u8; 8],
    head_len: usize,
    kind: ChunkKind,
    left: u32,
    crc: u32,
    small: Vec<u8>,
    header: Option<Header>,
    palette: Option<[[u8; 4]; 256]>,
    key: Option<[u16; 3]>,
    trns_seen: bool,
    ancillary: u64,
    image: Option<(Rows, Idat)>,
    idat_ended: bool,
}

impl Decoder {
    /// A decoder that will fit the image into `max_w` × `max_h` within `limits`.
    pub fn new(limits: Limits, max_w: u32, max_h: u32) -> Self {
        Self {
            limits,
            max_w,
            max_h,
            canvas_pixels: None,
            stage: Stage::Signature,
            head: [0; 8],
            head_len: 0,
            kind: [0; 4],
            left: 0,
            crc: CRC_INIT,
            small: Vec::new(),
            header: None,
            palette: None,
            key: None,
            trns_seen: false,
            ancillary: 0,
            image: None,
            idat_ended: false,
        }
    }

    /// A decoder whose canvas holds at most `pixels` pixels: the image at full size when it
    /// fits, else downscaled keeping its aspect.
    pub fn with_canvas_pixels(limits: Limits, pixels: u64) -> Self {
        let mut d = Self::new(limits, u32::MAX, u32::MAX);
        d.canvas_pixels = Some(pixels);
        d
    }

    /// The validated IHDR, once it has been read.
    pub fn header(&self) -> Option<Header> {
        self.header
    }

    /// Consumes the next piece of the file. After an error the decoder must be dropped.
    pub fn push(&mut self, mut input: &[u8]) -> Result<(), PngError> {
        while !input.is_empty() {
            match self.stage {
                Stage::Signature | Stage::ChunkHeader | Stage::ChunkCrc => {
                    let need = if self.stage == Stage::ChunkCrc { 4 } else { 8 };
                    let n = (need - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == need {
                        self.head_len = 0;
                        match self.stage {
                            Stage::Signature if self.head != SIGNATURE => {
                                return Err(PngError::BadSignature)
                            }
                            Stage::Signature => self.stage = Stage::ChunkHeader,
                            Stage::ChunkHeader => self.begin_chunk()?,
                            _ => self.end_chunk()?,
                        }
                    }
                }
                Stage::ChunkData => {
                    let n = (self.left as usize).min(input.len());
                    let (part, rest) = input.split_at(n);
                    input = rest;
                    self.crc = crc32_update(self.crc, part);
                    self.left -= n as u32;
                    if &self.kind == b"IDAT" {
                        if let Some((rows, inflater)) = self.image.as_mut() {
                            if !rows.done {
                                inflater.feed(part, rows)?;
                            }
                        }
                    } else if matches!(&self.kind, b"IHDR" | b"PLTE" | b"tRNS") {
                        // begin_chunk capped these lengths at 768 bytes.
                        self.small.extend_from_slice(part);
                    }
                    if self.left == 0 {
                        self.stage = Stage::ChunkCrc;
                    }
                }
                // Bytes after IEND are ignored, as other decoders do.
                Stage::End => return Ok(()),
            }
        }
        Ok(())
    }

    /// Ends the file: returns the canvas if IEND was read and every scanline decoded.
    pub fn finish(self) -> Result<Canvas, PngError> {
        if self.stage != Stage::End {
            return Err(PngError::Truncated);
        }
        match self.image {
            Some((rows, _)) if rows.done => Ok(rows.canvas),
            Some(_) => Err(PngError::ImageDataShort),
            None => Err(PngError::NoImageData),
        }
    }

    /// Checks a chunk's length, type and position from its header alone, before its data.
    fn begin_chunk(&mut self) -> Result<(), PngError> {
        let h = self.head;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let kind: ChunkKind = [h[4], h[5], h[6], h[7]];
        let order = Err(PngError::ChunkOrder { kind });
        if len > 0x7fff_ffff {
            return Err(PngError::BadChunkLength { kind });
        }
        if &kind != b"IDAT" && len > self.limits.max_chunk_len {
            return Err(PngError::TooLarge {
                what: Limit::ChunkLength,
                needed: u64::from(len),
                max: u64::from(self.limits.max_chunk_len),
            });
        }
        if (self.header.is_none()) != (&kind == b"IHDR") {
            return order;
        }
        if &kind != b"IDAT" && !self.idat_ended {
            if let Some((rows, idat)) = self.image.as_mut() {
                self.idat_ended = true;
                idat.finish(rows)?;
            }
        }
        match &kind {
            b"IHDR" if len != 13 => {
                return Err(PngError::BadHeader {
                    what: "length is not 13",
                })
            }
            b"PLTE" if u64::from(len) > SMALL_CHUNK_MAX => return Err(PngError::BadPalette),
            b"tRNS" if len > 256 => return Err(PngError::BadPalette),
            b"PLTE" | b"tRNS" if self.image.is_some() => return order,
            b"IDAT" if self.idat_ended => return order,
            b"IDAT" if self.image.is_none() => {
                let header = self.header.ok_or(PngError::ChunkOrder { kind })?;
                let pal = match (header.color, self.palette) {
                    (ColorType::Indexed, None) => return Err(PngError::MissingPalette),
                    (_, p) => p.unwrap_or([[0, 0, 0, 255]; 256]),
                };
                let (max_w, max_h) = match self.canvas_pixels {
                    Some(p) => crate::view::canvas_box(header.width, header.height, p),
                    None => (self.max_w, self.max_h),
                };
                self.image = Some(start(header, &self.limits, max_w, max_h, pal, self.key)?);
            }
            b"IHDR" | b"PLTE" | b"tRNS" | b"IDAT" | b"IEND" => {}
            _ if kind[0] & 0x20 == 0 => return Err(PngError::UnknownCritical { kind }),
            _ => {
                self.ancillary += u64::from(len);
                if self.ancillary > self.limits.max_ancillary_bytes {
                    return Err(PngError::TooLarge {
                        what: Limit::AncillaryBytes,
                        needed: self.ancillary,
                        max: self.limits.max_ancillary_bytes,
                    });
                }
            }
        }
        self.kind = kind;
        self.left = len;
        self.crc = crc32_update(CRC_INIT, &kind);
        self.small.clear();
        self.stage = if len == 0 {
            Stage::ChunkCrc
        } else {
            Stage::ChunkData
        };
        Ok(())
    }

    /// Checks the CRC, then acts on the buffered chunks.
    fn end_chunk(&mut self) -> Result<(), PngError> {
        let kind = self.kind;
        let want = u32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
        // Fuzzers cannot forge CRCs, so under cfg(fuzzing) the check is skipped to reach deeper code.
        if !cfg!(fuzzing) && self.crc ^ 0xffff_ffff != want {
            return Err(PngError::BadCrc { kind });
        }
        self.stage = Stage::ChunkHeader;
        let d = core::mem::take(&mut self.small);
        match &kind {
            b"IHDR" => self.header = Some(Header::parse(&d)?),
            b"PLTE" => self.palette_chunk(&d)?,
            b"tRNS" => self.trns_chunk(&d)?,
            b"IEND" => self.stage = Stage::End,
            _ => {}
        }
        self.small = d;
        Ok(())
    }

    fn palette_chunk(&mut self, d: &[u8]) -> Result<(), PngError> {
        let header = self.header.ok_or(PngError::ChunkOrder { kind: *b"PLTE" })?;
        if self.palette.is_some() || self.trns_seen {
            return Err(PngError::ChunkOrder { kind: *b"PLTE" });
        }
        let n = d.len();
        if n == 0 || !n.is_multiple_of(3) || n / 3 > (1usize << header.bit_depth.min(8)) {
            return Err(PngError::BadPalette);
        }
        if matches!(header.color, ColorType::Gray | ColorType::GrayAlpha) {
            return Err(PngError::ChunkOrder { kind: *b"PLTE" });
        }
        // Missing entries decode as opaque black, like the reference decoder.
        let mut pal = [[0, 0, 0, 255]; 256];
        for (e, c) in pal.iter_mut().zip(d.chunks_exact(3)) {
            *e = [c[0], c[1], c[2], 255];
        }
        self.palette = Some(pal);
        Ok(())
    }

    fn trns_chunk(&mut self, d: &[u8]) -> Result<(), PngError> {
        let header = self.header.ok_or(PngError::ChunkOrder { kind: *b"tRNS" })?;
        if self.trns_seen {
            return Err(PngError::ChunkOrder { kind: *b"tRNS" });
        }
        self.trns_seen = true;
        let be = |k: usize| {
            u16::from_be_bytes([
                d.get(k).copied().unwrap_or(0),
                d.get(k + 1).copied().unwrap_or(0),
            ])
        };
        match header.color {
            ColorType::Gray if d.len() == 2 => self.key = Some([be(0); 3]),
            ColorType::Rgb if d.len() == 6 => self.key = Some([be(0), be(2), be(4)]),
            ColorType::Indexed => {
                let pal = self
                    .palette
                    .as_mut()
                    .ok_or(PngError::ChunkOrder { kind: *b"tRNS" })?;
                for (e, &a) in pal.iter_mut().zip(d) {
                    e[3] = a;
                }
            }
            _ => return Err(PngError::BadPalette),
        }
        Ok(())
    }
}

fn start(
    header: Header,
    limits: &Limits,
    max_w: u32,
    max_h: u32,
    palette: [[u8; 4]; 256],
    key: Option<[u16; 3]>,
) -> Result<(Rows, Idat), PngError> {
    let plan = Plan::new(header, limits, max_w, max_h)?;
    let (ow, oh) = (u64::from(plan.out_width), u64::from(plan.out_height));
    let w = u64::from(header.width);
    let mut cols: Vec<u32> = try_zeroed(ow)?;
    for (tx, c) in cols.iter_mut().enumerate() {
        *c = (tx as u64 * w / ow) as u32;
    }
    let mut rows = Rows {
        format: Format {
            header,
            palette,
            key,
        },
        cur: try_zeroed(plan.row_bytes)?,
        prev: try_zeroed(plan.row_bytes)?,
        fill: 0,
        pass: 0,
        pass_rows: 0,
        row: 0,
        row_len: 0,
        done: false,
        canvas: Canvas {
            width: plan.out_width,
            height: plan.out_height,
            pixels: try_zeroed(ow * oh * 4)?,
        },
        cols,
    };
    rows.start_pass();
    let inflater = Inflater::try_new().ok_or(PngError::OutOfMemory {
        needed: Inflater::MEMORY,
    })?;
    Ok((
        rows,
        Idat {
            inflater: Box::new(inflater),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::ColorType;

    fn header(w: u32, h: u32) -> Header {
        Header {
            width: w,
            height: h,
            bit_depth: 8,
            color: ColorType::Rgba,
            interlaced: false,
        }
    }

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit(100, 50, 1920, 1080), (100, 50));
        assert_eq!(fit(4000, 3000, 1920, 1080), (1440, 1080));
        assert_eq!(fit(100_000, 1, 1920, 1080), (1920, 1));
        assert_eq!(fit(1, 100_000, 1920, 1080), (1, 1080));
        assert_eq!(fit(5, 5, 0, 0), (1, 1));
    }

    #[test]
    fn plan_refuses_rows_beyond_row_budget() {
        let limits = Limits {
            max_row_bytes: 1000,
            ..Limits::default()
        };
        let r = Plan::new(header(1000, 1), &limits, 64, 64);
        assert_eq!(
            r,
            Err(PngError::TooLarge {
                what: Limit::RowBytes,
                needed: 4001,
                max: 1000
            })
        );
    }

    #[test]
    fn plan_memory_is_independent_of_image_height() {
        let a = Plan::new(header(2000, 2000), &Limits::default(), 500, 500).unwrap();
        let b = Plan::new(header(2000, 100_000), &Limits::default(), 500, 500).unwrap();
        assert!(b.memory <= a.memory, "{} > {}", b.memory, a.memory);
    }

    #[test]
    fn checkerboard_composite_blends_alpha_and_sets_x() {
        let mut c = Canvas {
            width: 9,
            height: 1,
            pixels: [[10, 20, 30, 255], [0, 0, 0, 0]].repeat(4).concat(),
        };
        c.pixels.extend_from_slice(&[255, 255, 255, 128]);
        c.composite_checkerboard();
        assert_eq!(&c.pixels[..4], &[10, 20, 30, 255]);
        assert_eq!(&c.pixels[4..8], &[0x99, 0x99, 0x99, 255]);
        // x = 8 is on the dark square: 255*128/255 + 0x66*127/255, rounded.
        assert_eq!(&c.pixels[32..36], &[179, 179, 179, 255]);
    }

    #[test]
    fn filter_type_above_four_is_refused() {
        let mut cur = [5u8, 1, 2];
        assert_eq!(
            unfilter(&mut cur, &[0, 0, 0], 1, &mut NoEmit),
            Err(PngError::BadFilter { filter: 5 })
        );
    }

    proptest::proptest! {
        /// Unfiltering with the canvas fed in the same loop gives the same row as without,
        /// and the canvas gets exactly that row as B, G, R, A.
        #[test]
        fn fused_unfilter_matches_unfilter_then_convert(
            bpp in 3usize..=4,
            filter in 0u8..=4,
            px in proptest::collection::vec(proptest::prelude::any::<[u8; 8]>(), 1..40),
        ) {
            let n = px.len();
            let mut cur: Vec<u8> = core::iter::once(filter)
                .chain(px.iter().flat_map(|p| p[..bpp].to_vec()))
                .collect();
            let prev: Vec<u8> = core::iter::once(0)
                .chain(px.iter().flat_map(|p| p[8 - bpp..].to_vec()))
                .collect();
            let mut plain = cur.clone();
            let mut line = alloc::vec![0u8; n * 4];
            let fed = unfilter(&mut cur, &prev, bpp, &mut Bgra(&mut line)).unwrap();
            unfilter(&mut plain, &prev, bpp, &mut NoEmit).unwrap();
            proptest::prop_assert_eq!(&cur, &plain);
            proptest::prop_assert_eq!(fed, matches!(filter, 1 | 3 | 4));
            if fed {
                for (d, s) in line.chunks_exact(4).zip(plain[1..].chunks_exact(bpp)) {
                    let a = if bpp == 4 { s[3] } else { 255 };
                    proptest::prop_assert_eq!(d, &[s[2], s[1], s[0], a][..]);
                }
            }
        }
    }

    #[test]
    fn paeth_predictor_matches_spec_definition_for_every_input() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in 0..=255u8 {
                    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
                    let p = ia + ib - ic;
                    let (pa, pb, pc) = ((p - ia).abs(), (p - ib).abs(), (p - ic).abs());
                    let want = if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    };
                    assert_eq!(paeth(a, b, c), want, "{a} {b} {c}");
                }
            }
        }
    }

    #[test]
    fn paeth_predictor_matches_spec_definition() {
        for (a, b, c) in [
            (0u8, 0u8, 0u8),
            (10, 200, 30),
            (255, 0, 128),
            (7, 7, 200),
            (100, 50, 75),
        ] {
            let p = i16::from(a) + i16::from(b) - i16::from(c);
            let (pa, pb, pc) = (
                (p - i16::from(a)).abs(),
                (p - i16::from(b)).abs(),
                (p - i16::from(c)).abs(),
            );
            let want = if pa <= pb && pa <= pc {
                a
            } else if pb <= pc {
                b
            } else {
                c
            };
            assert_eq!(paeth(a, b, c), want, "{a} {b} {c}");
        }
    }
}
