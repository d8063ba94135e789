//! SSH binary encoding (RFC 4251 §5): u8/u32/bool/string/mpint over a cursor that cannot overrun,
//! with sub-readers for length-prefixed nesting and a check that nothing trails.

use alloc::string::String;
use alloc::vec::Vec;

use super::WireError;

/// A read cursor over one message (rustls `codec::Reader` style): every read is checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Number of bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, or `None` (and no progress) if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Everything not read yet.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let out = self.rest();
        self.pos = self.buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        self.take(1)
            .and_then(|b| b.first().copied())
            .ok_or(WireError::Truncated { field })
    }

    /// A big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let b = self.take(4).ok_or(WireError::Truncated { field })?;
        let a: [u8; 4] = b.try_into().map_err(|_| WireError::Truncated { field })?;
        Ok(u32::from_be_bytes(a))
    }

    /// A boolean byte; like OpenSSH, any nonzero value is true.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        Ok(self.u8(field)? != 0)
    }

    /// A length-prefixed byte string, borrowed.
    pub fn string(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(field)?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated { field })?;
        self.take(len).ok_or(WireError::Truncated { field })
    }

    /// A length-prefixed string that must be UTF-8.
    pub fn utf8(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.string(field)?).map_err(|_| WireError::NotUtf8 { field })
    }

    /// A length-prefixed string, owned as UTF-8.
    pub fn utf8_owned(&mut self, field: &'static str) -> Result<String, WireError> {
        self.utf8(field).map(String::from)
    }

    /// A length-prefixed string read as a nested message of its own.
    pub fn sub(&mut self, field: &'static str) -> Result<Reader<'a>, WireError> {
        self.string(field).map(Reader::new)
    }

    /// Refuses trailing bytes after the last field of `what`.
    pub fn expect_empty(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes { what, extra }),
        }
    }
}

/// Appends an SSH u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends an SSH string. Callers keep `b` below the frame maximum, so the length fits a u32.
pub fn put_string(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

/// Appends an SSH boolean.
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Appends an mpint (RFC 4251 §5) of an unsigned big-endian magnitude.
pub fn put_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let m = magnitude.get(start..).unwrap_or(&[]);
    let pad = m.first().is_some_and(|&b| b & 0x80 != 0);
    put_u32(
        out,
        u32::try_from(m.len() + usize::from(pad)).unwrap_or(u32::MAX),
    );
    if pad {
        out.push(0);
    }
    out.extend_from_slice(m);
}

/// Reads an mpint that must be non-negative and minimally encoded; returns its magnitude.
pub fn get_mpint<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], WireError> {
    let b = r.string(field)?;
    match b {
        [] => Ok(b),
        [first, ..] if first & 0x80 != 0 => Err(WireError::BadMpint { field }),
        [0, second, ..] if second & 0x80 != 0 => Ok(b.get(1..).unwrap_or(&[])),
        [0, ..] => Err(WireError::BadMpint { field }),
        _ => Ok(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_never_overruns() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4), None);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.take(2), Some(&[1u8, 2][..]));
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            r.expect_empty("x"),
            Err(WireError::TrailingBytes {
                what: "x",
                extra: 1
            })
        );
    }

    #[test]
    fn string_declaring_more_than_present_is_truncated() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(r.string("s"), Err(WireError::Truncated { field: "s" }));
    }

    #[test]
    fn mpint_literals_from_rfc4251() {
        let mut out = Vec::new();
        put_mpint(&mut out, &[]);
        assert_eq!(out, [0, 0, 0, 0]);
        out.clear();
        put_mpint(&mut out, &[0x00, 0x80]);
        assert_eq!(out, [0, 0, 0, 2, 0x00, 0x80]);
        out.clear();
        put_mpint(&mut out, &[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]);
        assert_eq!(
            out,
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        let mut r = Reader::new(&[0, 0, 0, 2, 0x00, 0x80]);
        assert_eq!(get_mpint(&mut r, "m"), Ok(&[0x80u8][..]));
    }

    #[test]
    fn negative_or_padded_mpint_is_refused() {
        let mut r = Reader::new(&[0, 0, 0, 1, 0x80]);
        assert_eq!(
            get_mpint(&mut r, "m"),
            Err(WireError::BadMpint { field: "m" })
        );
        let mut r = Reader::new(&[0, 0, 0, 2, 0x00, 0x01]);
        assert_eq!(
            get_mpint(&mut r, "m"),
            Err(WireError::BadMpint { field: "m" })
        );
    }
}
