//! A streaming zlib inflater tuned for PNG IDAT: 64-bit bit buffer, 11-bit table lookups,
//! output into a linear buffer that slides its last 32 KiB; input arrives in pieces.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Why the compressed stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The two-byte zlib header is invalid or asks for a preset dictionary.
    BadHeader,
    /// Block type 3, a stored length whose complement is wrong, or a bad code-length sequence.
    BadBlock,
    /// Code lengths that oversubscribe the code space.
    BadCode,
    /// A symbol that no code stands for, or a length/distance symbol out of range.
    BadSymbol,
    /// A distance reaching before the start of the output.
    BadDistance,
    /// The input ended inside the stream.
    Truncated,
}

/// The most history a distance reaches.
const WINDOW: usize = 32 * 1024;
/// Output produced between two hand-overs to the consumer.
const CHUNK: usize = 128 * 1024;
/// Room one symbol may need past `limit`: up to 6 literal bytes (two entries of three), then
/// the longest match written in 16-byte pieces (258 + 15), rounded up.
const SLACK: usize = 258 + 32;
/// Input that must be buffered before a symbol is decoded in the fast path.
const FAST_INPUT: usize = 16;
/// Input a dynamic block header needs at most (14 + 19·3 + 320·(7 + 7) bits, rounded up).
const HEADER_INPUT: usize = 640;
/// Largest input buffer kept (pieces are consumed as they come; this bounds the leftover).
const MAX_INPUT: usize = 64 * 1024;

const LIT_BITS: u32 = 12;
const DIST_BITS: u32 = 10;
/// Longest code: subtables take the bits past a table's primary bits up to this.
const MAX_CODE: u32 = 15;

const K_LIT: u32 = 0;
const K_LEN: u32 = 1;
const K_EOB: u32 = 2;
const K_SUB: u32 = 3;
const K_BAD: u32 = 4;
const K_DIST: u32 = 5;
/// Set on every literal entry (kind K_LIT), so the hot loop tests one bit.
const F_LIT: u32 = 1 << 15;
/// With F_LIT: two literals in one lookup, value = first | second << 8, length = both codes.
const F_TWO: u32 = 1 << 14;
/// With F_LIT | F_TWO: a third literal in bits 5..13 (kind and extra mean nothing then).
const F_THREE: u32 = 1 << 13;

#[inline(always)]
fn entry(kind: u32, value: u32, len: u32, extra: u32) -> u32 {
    (value << 16) | (kind << 10) | (extra << 5) | len
}
#[inline(always)]
fn e_len(e: u32) -> u32 {
    e & 31
}
#[inline(always)]
fn e_extra(e: u32) -> u32 {
    (e >> 5) & 31
}
#[inline(always)]
fn e_kind(e: u32) -> u32 {
    (e >> 10) & 7
}
#[inline(always)]
fn e_value(e: u32) -> u32 {
    e >> 16
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code-length code lengths are sent in.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// A canonical Huffman decoding table: a primary table indexed by the next `bits` input bits
/// and 16-entry subtables for longer codes.
#[derive(Debug, Clone)]
struct Table<const N: usize> {
    /// Indexed by the next `log2(N)` bits: a fixed size lets lookups skip bounds checks.
    primary: Box<[u32; N]>,
    sub: Vec<u32>,
    bits: u32,
}

impl<const N: usize> Table<N> {
    fn new() -> Self {
        Self {
            primary: Box::new([entry(K_BAD, 0, 1, 0); N]),
            sub: Vec::new(),
            bits: N.trailing_zeros(),
        }
    }

    /// Builds the table for `lengths`; `value(sym)` gives each symbol's entry (without length).
    fn build(&mut self, lengths: &[u8], value: impl Fn(usize) -> u32) -> Result<(), InflateError> {
        let mut count = [0u32; 16];
        for &l in lengths {
            count[usize::from(l & 15)] += 1;
        }
        count[0] = 0;
        let mut left: i32 = 1;
        for c in &count[1..] {
            left = left * 2 - *c as i32;
            if left < 0 {
                return Err(InflateError::BadCode);
            }
        }
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for l in 1..16 {
            code = (code + count[l - 1]) << 1;
            next[l] = code;
        }
        self.primary.fill(entry(K_BAD, 0, 1, 0));
        self.sub.clear();
        let pb = self.bits;
        for (sym, &l) in lengths.iter().enumerate() {
            let l = u32::from(l);
            if l == 0 {
                continue;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            let rev = c.reverse_bits() >> (32 - l);
            let v = value(sym);
            if l <= pb {
                let mut i = rev;
                while i < (1 << pb) {
                    self.primary[i as usize] = v | l;
                    i += 1 << l;
                }
            } else {
                let low = (rev & ((1 << pb) - 1)) as usize;
                let p = self.primary[low];
                let base = if e_kind(p) == K_SUB {
                    e_value(p) as usize
                } else {
                    let base = self.sub.len();
                    self.sub.extend(core::iter::repeat_n(
                        entry(K_BAD, 0, 1, 0),
                        1 << (MAX_CODE - pb),
                    ));
                    self.primary[low] = entry(K_SUB, base as u32, pb, 0);
                    base
                };
                let rest = rev >> pb;
                let sl = l - pb;
                let mut i = rest;
                while i < (1 << (MAX_CODE - pb)) {
                    self.sub[base + i as usize] = v | sl;
                    i += 1 << sl;
                }
            }
        }
        Ok(())
    }

    /// Where a short literal code is followed by bits that already decide a second literal,
    /// the entry gives both at once (photos are mostly literals).
    fn pair_literals(&mut self) {
        let pb = self.bits;
        let single = |e: u32| e & (F_LIT | F_TWO) == F_LIT;
        // Downwards: the later codes' entries (indices i >> l1 and i >> (l1 + l2), below i)
        // are still single literals.
        for i in (0..N).rev() {
            let e1 = self.primary[i];
            let l1 = e_len(e1);
            if !single(e1) || l1 >= pb {
                continue;
            }
            let e2 = self.primary[i >> l1];
            let l2 = e_len(e2);
            if !single(e2) || l1 + l2 > pb {
                continue;
            }
            let v = e_value(e1) | (e_value(e2) << 8);
            let e3 = self.primary[(i >> l1) >> l2];
            let l3 = e_len(e3);
            self.primary[i] = if single(e3) && l1 + l2 + l3 <= pb {
                // The third literal goes where non-literal entries keep kind and extra bits.
                (v << 16) | (e_value(e3) << 5) | F_LIT | F_TWO | F_THREE | (l1 + l2 + l3)
            } else {
                entry(K_LIT, v, l1 + l2, 0) | F_LIT | F_TWO
            };
        }
    }
}

fn litlen_value(sym: usize) -> u32 {
    match sym {
        0..=255 => entry(K_LIT, sym as u32, 0, 0) | F_LIT,
        256 => entry(K_EOB, 0, 0, 0),
        257..=285 => entry(
            K_LEN,
            u32::from(LEN_BASE[sym - 257]),
            0,
            u32::from(LEN_EXTRA[sym - 257]),
        ),
        _ => entry(K_BAD, 0, 0, 0),
    }
}

fn dist_value(sym: usize) -> u32 {
    match sym {
        0..=29 => entry(
            K_DIST,
            u32::from(DIST_BASE[sym]),
            0,
            u32::from(DIST_EXTRA[sym]),
        ),
        _ => entry(K_BAD, 0, 0, 0),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ZlibHeader,
    BlockHeader,
    Stored { left: u32 },
    Codes,
    Done,
}

/// Bits taken from the input, least significant first.
#[derive(Debug, Clone, Copy)]
struct Bits {
    buf: u64,
    n: u32,
    pos: usize,
    /// Zero bits made up past the end of the final input (any use is truncation).
    over: u32,
}

impl Bits {
    /// Tops the buffer up to at least 56 bits; past the end of `input` it adds zeros.
    #[inline(always)]
    fn refill(&mut self, input: &[u8]) {
        if let Some(b) = input.get(self.pos..self.pos + 8) {
            let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            self.buf |= v << self.n;
            self.pos += ((63 - self.n) >> 3) as usize;
            self.n |= 56;
        } else {
            while self.n < 56 {
                match input.get(self.pos) {
                    Some(&b) => {
                        self.buf |= u64::from(b) << self.n;
                        self.pos += 1;
                    }
                    None => self.over += 8,
                }
                self.n += 8;
            }
        }
    }

    #[inline(always)]
    fn peek(&self, k: u32) -> u32 {
        (self.buf & ((1u64 << k) - 1)) as u32
    }

    #[inline(always)]
    fn drop(&mut self, k: u32) {
        self.buf >>= k;
        self.n -= k;
    }

    #[inline(always)]
    fn take(&mut self, k: u32) -> u32 {
        let v = self.peek(k);
        self.drop(k);
        v
    }

    /// Whether bits made up past the end were used.
    fn overran(&self) -> bool {
        self.over > 0 && self.n < self.over
    }
}

/// The inflater. Feed compressed pieces with [`Inflater::push`]; decoded bytes are handed to
/// the consumer callback in order, at most [`CHUNK`] at a time.
#[derive(Debug)]
pub struct Inflater {
    state: State,
    input: Vec<u8>,
    bits: Bits,
    out: Vec<u8>,
    /// Output cursor; `out[..op]` is history, `out[given..op]` not yet handed over.
    op: usize,
    given: usize,
    last_block: bool,
    lit: Table<{ 1 << LIT_BITS }>,
    dist: Table<{ 1 << DIST_BITS }>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// Heap use: output buffer, input buffer, tables.
    pub const MEMORY: u64 = (WINDOW + CHUNK + SLACK + MAX_INPUT + FAST_INPUT) as u64
        + 4 * ((1 << LIT_BITS)
            + (1 << DIST_BITS)
            + 286 * (1 << (MAX_CODE - LIT_BITS))
            + 30 * (1 << (MAX_CODE - DIST_BITS)));

    /// A new stream, or `None` if its buffers cannot be allocated.
    pub fn try_new() -> Option<Self> {
        let mut out = Vec::new();
        out.try_reserve_exact(WINDOW + CHUNK + SLACK).ok()?;
        out.resize(WINDOW + CHUNK + SLACK, 0);
        let mut input = Vec::new();
        input.try_reserve_exact(MAX_INPUT).ok()?;
        let mut s = Self::new_with(out);
        s.input = input;
        Some(s)
    }

    /// A new stream.
    pub fn new() -> Self {
        Self::new_with(vec![0; WINDOW + CHUNK + SLACK])
    }

    fn new_with(out: Vec<u8>) -> Self {
        Self {
            state: State::ZlibHeader,
            input: Vec::new(),
            bits: Bits {
                buf: 0,
                n: 0,
                pos: 0,
                over: 0,
            },
            out,
            op: 0,
            given: 0,
            last_block: false,
            lit: Table::new(),
            dist: Table::new(),
        }
    }

    /// Whether the final block has ended.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Inflates `piece` (more may follow); `sink` gets decoded bytes and returns `false` to
    /// stop (the rest of the stream is then ignored).
    pub fn push<E>(
        &mut self,
        piece: &[u8],
        sink: &mut impl FnMut(&[u8]) -> Result<bool, E>,
    ) -> Result<bool, Either<E>> {
        let mut piece = piece;
        loop {
            // Keep only what is not consumed, then take as much of the piece as fits.
            let keep = self.input.len().saturating_sub(self.bits.pos);
            self.input.copy_within(self.bits.pos.., 0);
            self.input.truncate(keep);
            self.bits.pos = 0;
            let n = (MAX_INPUT - self.input.len()).min(piece.len());
            self.input.extend_from_slice(&piece[..n]);
            piece = &piece[n..];
            if !self.run(false, sink)? {
                return Ok(false);
            }
            if piece.is_empty() || self.state == State::Done {
                return Ok(true);
            }
        }
    }

    /// The input has ended: decodes what is buffered to the end of the stream.
    pub fn finish<E>(
        &mut self,
        sink: &mut impl FnMut(&[u8]) -> Result<bool, E>,
    ) -> Result<bool, Either<E>> {
        self.run(true, sink)
    }

    fn hand_over<E>(
        &mut self,
        sink: &mut impl FnMut(&[u8]) -> Result<bool, E>,
    ) -> Result<bool, Either<E>> {
        let more = match self.out.get(self.given..self.op) {
            Some(d) if !d.is_empty() => sink(d).map_err(Either::Sink)?,
            _ => true,
        };
        self.given = self.op;
        if self.op > WINDOW + CHUNK - SLACK {
            let from = self.op - WINDOW.min(self.op);
            self.out.copy_within(from..self.op, 0);
            self.op -= from;
            self.given = self.op;
        }
        Ok(more)
    }

    fn run<E>(
        &mut self,
        last: bool,
        sink: &mut impl FnMut(&[u8]) -> Result<bool, E>,
    ) -> Result<bool, Either<E>> {
        loop {
            let r = self.run_inner(last);
            if !self.hand_over(sink)? {
                return Ok(false);
            }
            match r {
                Err(e) => return Err(Either::Inflate(e)),
                Ok(Progress::OutputFull) => {}
                Ok(_) => return Ok(true),
            }
        }
    }

    fn avail(&self) -> usize {
        self.input.len().saturating_sub(self.bits.pos)
    }

    fn check_over(&self) -> Result<(), InflateError> {
        if self.bits.overran() {
            Err(InflateError::Truncated)
        } else {
            Ok(())
        }
    }

    fn run_inner(&mut self, last: bool) -> Result<Progress, InflateError> {
        loop {
            match self.state {
                State::Done => return Ok(Progress::Stalled),
                State::ZlibHeader => {
                    // Never refill past the end of input that may still grow.
                    if self.avail() < 8 && !last {
                        return Ok(Progress::Stalled);
                    }
                    self.bits.refill(&self.input);
                    let cmf = self.bits.take(8);
                    let flg = self.bits.take(8);
                    self.check_over()?;
                    if cmf & 15 != 8
                        || cmf >> 4 > 7
                        || !(cmf * 256 + flg).is_multiple_of(31)
                        || flg & 32 != 0
                    {
                        return Err(InflateError::BadHeader);
                    }
                    self.state = State::BlockHeader;
                }
                State::BlockHeader => {
                    if self.last_block {
                        self.state = State::Done;
                        continue;
                    }
                    if self.avail() < HEADER_INPUT && !last {
                        return Ok(Progress::Stalled);
                    }
                    self.bits.refill(&self.input);
                    self.last_block = self.bits.take(1) == 1;
                    match self.bits.take(2) {
                        0 => {
                            let k = self.bits.n & 7;
                            self.bits.drop(k);
                            self.bits.refill(&self.input);
                            let len = self.bits.take(16);
                            let nlen = self.bits.take(16);
                            self.check_over()?;
                            if len != !nlen & 0xffff {
                                return Err(InflateError::BadBlock);
                            }
                            self.state = State::Stored { left: len };
                        }
                        1 => {
                            self.fixed_tables()?;
                            self.state = State::Codes;
                        }
                        2 => {
                            self.dynamic_tables()?;
                            self.check_over()?;
                            self.state = State::Codes;
                        }
                        _ => return Err(InflateError::BadBlock),
                    }
                }
                State::Stored { left } => {
                    if left == 0 {
                        self.state = State::BlockHeader;
                        continue;
                    }
                    // Whole bytes still in the bit buffer come first.
                    let mut left = left;
                    while left > 0 && self.bits.n >= 8 && self.op < self.out.len() - SLACK {
                        self.out[self.op] = self.bits.take(8) as u8;
                        self.check_over()?;
                        self.op += 1;
                        left -= 1;
                    }
                    if self.bits.n < 8 {
                        // A refill leaves copies of unconsumed bytes above `n`; the copy below
                        // moves past them, so they must go.
                        self.bits.buf = 0;
                        self.bits.n = 0;
                        let room = self.out.len() - SLACK - self.op;
                        let n = (left as usize).min(self.avail()).min(room);
                        let src = self.bits.pos;
                        self.out[self.op..self.op + n].copy_from_slice(&self.input[src..src + n]);
                        self.bits.pos += n;
                        self.op += n;
                        left -= n as u32;
                    }
                    self.state = State::Stored { left };
                    if left > 0 {
                        if self.op >= self.out.len() - SLACK {
                            return Ok(Progress::OutputFull);
                        }
                        if self.avail() == 0 {
                            if last {
                                return Err(InflateError::Truncated);
                            }
                            return Ok(Progress::Stalled);
                        }
                    }
                }
                State::Codes => {
                    let r = self.codes(last)?;
                    if r != Progress::Done {
                        return Ok(r);
                    }
                    self.state = State::BlockHeader;
                }
            }
        }
    }

    fn fixed_tables(&mut self) -> Result<(), InflateError> {
        let mut l = [0u8; 288];
        l[..144].fill(8);
        l[144..256].fill(9);
        l[256..280].fill(7);
        l[280..].fill(8);
        self.lit.build(&l, litlen_value)?;
        self.lit.pair_literals();
        self.dist.build(&[5u8; 30], dist_value)
    }

    fn dynamic_tables(&mut self) -> Result<(), InflateError> {
        let b = &mut self.bits;
        b.refill(&self.input);
        let hlit = b.take(5) as usize + 257;
        let hdist = b.take(5) as usize + 1;
        let hclen = b.take(4) as usize + 4;
        if hlit > 286 || hdist > 30 {
            return Err(InflateError::BadBlock);
        }
        let mut cl = [0u8; 19];
        for &i in &CL_ORDER[..hclen] {
            b.refill(&self.input);
            cl[i] = b.take(3) as u8;
        }
        let mut t = Table::<128>::new();
        t.build(&cl, |s| entry(K_LIT, s as u32, 0, 0))?;
        let mut lens = [0u8; 286 + 30];
        let n = hlit + hdist;
        let mut i = 0;
        while i < n {
            b.refill(&self.input);
            let e = t.primary[b.peek(7) as usize];
            if e_kind(e) != K_LIT {
                return Err(InflateError::BadCode);
            }
            b.drop(e_len(e));
            let sym = e_value(e);
            let (val, rep) = match sym {
                0..=15 => (sym as u8, 1),
                16 => {
                    let prev = *lens.get(i.wrapping_sub(1)).ok_or(InflateError::BadBlock)?;
                    (prev, 3 + b.take(2) as usize)
                }
                17 => (0, 3 + b.take(3) as usize),
                _ => (0, 11 + b.take(7) as usize),
            };
            if i + rep > n {
                return Err(InflateError::BadBlock);
            }
            lens[i..i + rep].fill(val);
            i += rep;
        }
        if lens[256] == 0 {
            return Err(InflateError::BadBlock);
        }
        self.lit.build(&lens[..hlit], litlen_value)?;
        self.lit.pair_literals();
        self.dist.build(&lens[hlit..n], dist_value)
    }

    /// Decodes symbols of the current block until its end, the output chunk is full or the
    /// buffered input runs low (non-final input).
    fn codes(&mut self, last: bool) -> Result<Progress, InflateError> {
        let lit = &self.lit;
        let dist = &self.dist;
        let input = &self.input[..];
        let out = &mut self.out[..];
        let mut b = self.bits;
        let mut op = self.op;
        let limit = out.len() - SLACK;
        let lmask = (1u64 << LIT_BITS) - 1;
        let dmask = (1u64 << DIST_BITS) - 1;
        let lsub = (1u64 << (MAX_CODE - LIT_BITS)) - 1;
        let dsub = (1u64 << (MAX_CODE - DIST_BITS)) - 1;
        let result = loop {
            // Checked here, so every path that decoded from made-up bits passes it next.
            if last && b.overran() {
                break Progress::Error(InflateError::Truncated);
            }
            if op >= limit {
                break Progress::OutputFull;
            }
            if !last && input.len() < b.pos + FAST_INPUT {
                break Progress::Stalled;
            }
            // Looked up before the refill when the buffer already holds a primary code's bits
            // (the refill only adds bits above them), so the load need not wait for it.
            let mut e = lit.primary[(b.buf & lmask) as usize];
            let early = b.n >= LIT_BITS;
            b.refill(input);
            if !early {
                e = lit.primary[(b.buf & lmask) as usize];
            }
            if e & F_LIT != 0 {
                // Primary literal entries take at most LIT_BITS bits: three fit in a refill,
                // and they write at most 10 bytes past `limit` (inside SLACK).
                b.drop(e_len(e));
                put_literals(out, op, e);
                op += lit_count(e);
                e = lit.primary[(b.buf & lmask) as usize];
                if e & F_LIT != 0 {
                    b.drop(e_len(e));
                    put_literals(out, op, e);
                    op += lit_count(e);
                    e = lit.primary[(b.buf & lmask) as usize];
                    if e & F_LIT != 0 {
                        b.drop(e_len(e));
                        put_literals(out, op, e);
                        op += lit_count(e);
                        continue;
                    }
                }
                // A length and distance need up to 48 bits; `e` stays valid (refill only
                // adds bits above the ones looked at).
                b.refill(input);
            }
            if e_kind(e) == K_SUB {
                b.drop(LIT_BITS);
                e = lit.sub[e_value(e) as usize + (b.buf & lsub) as usize];
                if e & F_LIT != 0 {
                    b.drop(e_len(e));
                    put_literals(out, op, e);
                    op += 1;
                    continue;
                }
            }
            b.drop(e_len(e));
            let kind = e_kind(e);
            if kind == K_LEN {
                let len = (e_value(e) + b.take(e_extra(e))) as usize;
                let mut d = dist.primary[(b.buf & dmask) as usize];
                if e_kind(d) == K_SUB {
                    b.drop(DIST_BITS);
                    d = dist.sub[e_value(d) as usize + (b.buf & dsub) as usize];
                }
                b.drop(e_len(d));
                if e_kind(d) != K_DIST {
                    break Progress::Error(InflateError::BadSymbol);
                }
                let dd = (e_value(d) + b.take(e_extra(d))) as usize;
                // Before the first slide `op` is all that was produced; after it, `op` is
                // at least the 32 KiB a distance can reach.
                if dd > op {
                    break Progress::Error(InflateError::BadDistance);
                }
                if last && b.overran() {
                    break Progress::Error(InflateError::Truncated);
                }
                copy_match(out, op, dd, len);
                op += len;
            } else if kind == K_EOB {
                if last && b.overran() {
                    break Progress::Error(InflateError::Truncated);
                }
                break Progress::Done;
            } else {
                break Progress::Error(InflateError::BadSymbol);
            }
        };
        self.op = op;
        self.bits = b;
        match result {
            Progress::Error(e) => Err(e),
            r => Ok(r),
        }
    }
}

/// Writes a literal entry's value bytes at `op`, always 4 (only `lit_count` of them count).
#[inline(always)]
fn put_literals(out: &mut [u8], op: usize, e: u32) {
    let w = (e >> 16) | (((e >> 5) & 0xff) << 16);
    out[op..op + 4].copy_from_slice(&w.to_le_bytes());
}

/// Bytes a literal entry stands for: 1, 2 for a pair, 3 for a triple.
#[inline(always)]
fn lit_count(e: u32) -> usize {
    1 + ((e >> 14) & 1) as usize + ((e >> 13) & 1) as usize
}

/// Copies a `len`-byte match from `dist` back; the source may overlap the destination.
/// Writes whole 16-byte pieces, so up to 15 bytes past the match (inside the slack) are
/// scribbled, to be overwritten by later output.
#[inline(always)]
fn copy_match(out: &mut [u8], op: usize, dist: usize, len: usize) {
    let src = op - dist;
    let end = op + len;
    if dist >= 16 {
        // Each piece reads bytes already final: it ends `dist` >= 16 before its destination.
        let (mut s, mut d) = (src, op);
        while d < end {
            if let Ok(c) = <[u8; 16]>::try_from(&out[s..s + 16]) {
                out[d..d + 16].copy_from_slice(&c);
            }
            s += 16;
            d += 16;
        }
    } else {
        // The match repeats its first `dist` bytes: build 16 bytes of that pattern, then
        // store it every whole number of periods.
        let mut pat = [0u8; 16];
        pat.copy_from_slice(&out[src..src + 16]);
        for i in dist..16 {
            pat[i] = pat[i - dist];
        }
        let step = 16 - 16 % dist;
        let mut d = op;
        while d < end {
            out[d..d + 16].copy_from_slice(&pat);
            d += step;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The block ended.
    Done,
    /// More input is needed.
    Stalled,
    /// The output chunk is full: hand it over and go on.
    OutputFull,
    Error(InflateError),
}

/// An error of the inflater or of the consumer it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<E> {
    Inflate(InflateError),
    Sink(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use miniz_oxide::deflate::compress_to_vec_zlib;
    use proptest::prelude::*;

    fn inflate_pieces(z: &[u8], cut: usize) -> Result<Vec<u8>, InflateError> {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        let mut sink = |d: &[u8]| -> Result<bool, ()> {
            out.extend_from_slice(d);
            Ok(true)
        };
        for p in z.chunks(cut.max(1)) {
            inf.push(p, &mut sink).map_err(|e| match e {
                Either::Inflate(e) => e,
                Either::Sink(()) => InflateError::BadBlock,
            })?;
        }
        inf.finish(&mut sink).map_err(|e| match e {
            Either::Inflate(e) => e,
            Either::Sink(()) => InflateError::BadBlock,
        })?;
        if !inf.is_done() {
            return Err(InflateError::Truncated);
        }
        Ok(out)
    }

    fn sample(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                if s % 7 < 3 {
                    (i / 97) as u8
                } else {
                    (s % 13) as u8
                }
            })
            .collect()
    }

    #[test]
    fn every_level_round_trips_in_any_pieces() {
        let data = sample(300_000, 7);
        for level in [0u8, 1, 6, 9] {
            let z = compress_to_vec_zlib(&data, level);
            for cut in [1, 7, 100, 4096, 65536, 1 << 20] {
                let got = inflate_pieces(&z, cut);
                let ok = got.as_deref() == Ok(&data[..]);
                let first_diff = got
                    .as_ref()
                    .map(|g| (g.len(), g.iter().zip(&data).position(|(a, b)| a != b)));
                assert!(
                    ok,
                    "level {level} cut {cut}: {first_diff:?} of {}",
                    data.len()
                );
            }
        }
    }

    #[test]
    fn long_runs_and_short_distances() {
        let mut data = vec![0u8; 100_000];
        data.extend((0..50_000).map(|i| (i % 3) as u8));
        data.extend((0..50_000).map(|i| (i % 5) as u8));
        let z = compress_to_vec_zlib(&data, 9);
        assert_eq!(inflate_pieces(&z, 333).unwrap(), data);
    }

    #[test]
    fn hostile_stream_truncated_is_refused() {
        let data = sample(50_000, 3);
        let z = compress_to_vec_zlib(&data, 6);
        for cut in [1, 2, 10, z.len() / 2, z.len() - 5] {
            assert!(inflate_pieces(&z[..cut], 1000).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn codes_of_every_length_up_to_15_decode() {
        // Lengths 1..=15 plus one more of 15: a complete code with a 15-bit pair.
        let mut lens: Vec<u8> = (1..=15).collect();
        lens.push(15);
        let mut t = Table::<1024>::new();
        t.build(&lens, dist_value).unwrap();
        for (sym, &l) in lens.iter().enumerate() {
            // Canonical code of `sym`: all ones for l-1 bits then 0 (the last two: 15 ones
            // and 14 ones plus a zero, in that order).
            let code: u32 = if sym == 15 {
                (1 << 15) - 1
            } else {
                ((1 << l) - 1) & !1
            };
            let rev = code.reverse_bits() >> (32 - u32::from(l));
            let mut e = t.primary[(rev & 1023) as usize];
            if e_kind(e) == K_SUB {
                e = t.sub[e_value(e) as usize + (rev >> 10) as usize];
                assert_eq!(e_len(e) + 10, u32::from(l), "symbol {sym}");
            } else {
                assert_eq!(e_len(e), u32::from(l), "symbol {sym}");
            }
            assert_eq!(e_kind(e), K_DIST, "symbol {sym}");
        }
    }

    #[test]
    fn hostile_distance_before_start_is_refused() {
        // Fixed block: a length 3 / distance 1 match as the very first symbol.
        // zlib header 78 01, then bits: BFINAL=1, BTYPE=01, code 257 (0000001), dist 0 (00000).
        let z = [0x78, 0x01, 0x03, 0x02, 0x00, 0x00];
        assert_eq!(inflate_pieces(&z, 100), Err(InflateError::BadDistance));
    }

    #[test]
    fn hostile_header_and_block_type_are_refused() {
        assert_eq!(
            inflate_pieces(&[0x78, 0x02, 0, 0], 10),
            Err(InflateError::BadHeader)
        );
        assert_eq!(
            inflate_pieces(&[0x78, 0x01, 0x07, 0, 0, 0], 10),
            Err(InflateError::BadBlock)
        );
        // Stored block whose NLEN is not the complement of LEN.
        assert_eq!(
            inflate_pieces(&[0x78, 0x01, 0x01, 5, 0, 0, 0, 1, 2, 3, 4, 5], 10),
            Err(InflateError::BadBlock)
        );
    }

    proptest! {
        #[test]
        fn matches_miniz_for_any_data(
            data in proptest::collection::vec(0u8..6, 0..20_000),
            level in 0u8..10,
            cut in 1usize..5000,
        ) {
            let z = compress_to_vec_zlib(&data, level);
            prop_assert_eq!(inflate_pieces(&z, cut).unwrap(), data);
        }

        /// Periods around the 16-byte copy boundary give matches of every short distance.
        #[test]
        fn matches_miniz_for_periodic_data(
            parts in proptest::collection::vec((1usize..40, 1usize..700, any::<u8>()), 1..40),
            level in 1u8..10,
            cut in 1usize..3000,
        ) {
            let mut data = Vec::new();
            for (period, n, seed) in parts {
                let pat: Vec<u8> = (0..period).map(|i| seed.wrapping_mul(i as u8 | 1)).collect();
                data.extend(pat.iter().cycle().take(n));
            }
            let z = compress_to_vec_zlib(&data, level);
            prop_assert_eq!(inflate_pieces(&z, cut).unwrap(), data);
        }

        /// The piecewise match copy leaves exactly what a byte-at-a-time copy does (bytes
        /// past the match are scratch).
        #[test]
        fn copy_match_equals_bytewise_copy(
            history in proptest::collection::vec(any::<u8>(), 1..600),
            dist_pick in any::<usize>(),
            len in 3usize..=258,
        ) {
            let op = history.len();
            let dist = 1 + dist_pick % op;
            let mut out = history.clone();
            out.resize(op + SLACK, 0xaa);
            let mut want = out.clone();
            for i in 0..len {
                want[op + i] = want[op + i - dist];
            }
            copy_match(&mut out, op, dist, len);
            prop_assert_eq!(&out[..op + len], &want[..op + len]);
        }

        #[test]
        fn never_panics_on_garbage(z in proptest::collection::vec(any::<u8>(), 0..2000), cut in 1usize..300) {
            let _ = inflate_pieces(&z, cut);
        }
    }
}
