//! GUI message bodies as one typed enum, with strict-size decoding and exact-length encoding;
//! the variable parts (grant refs, titles) and the daemon's dump rules.

use alloc::vec::Vec;
use core::fmt;

use super::*;

/// A list of little-endian u32 words (grant refs, frame numbers): borrowed bytes when parsed,
/// a borrowed slice when built for emitting.
#[derive(Debug, Clone, Copy)]
pub enum Words<'a> {
    /// Little-endian bytes, length a multiple of 4.
    Bytes(&'a [u8]),
    /// Values.
    Values(&'a [u32]),
}

impl<'a> Words<'a> {
    /// Number of words.
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len() / 4,
            Self::Values(v) => v.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The words in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let (b, v): (&'a [u8], &'a [u32]) = match *self {
            Self::Bytes(b) => (b, &[]),
            Self::Values(v) => (&[], v),
        };
        b.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .chain(v.iter().copied())
    }
    /// The words as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }
    fn emit(&self, out: &mut [u8]) {
        for (dst, w) in out.chunks_exact_mut(4).zip(self.iter()) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
}

impl PartialEq for Words<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
impl Eq for Words<'_> {}

/// Replaces what the daemon would filter from a title (non-printable and non-ASCII) with `_`.
fn sanitise(c: u8) -> u8 {
    if (0x20..0x7f).contains(&c) {
        c
    } else {
        b'_'
    }
}

/// Copies `src` up to its first NUL, sanitised, into a zeroed field, keeping a final NUL.
fn text_field<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut f = [0u8; N];
    let end = src
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(src.len())
        .min(N - 1);
    for (d, &s) in f.iter_mut().zip(&src[..end]) {
        *d = sanitise(s);
    }
    f
}

fn field_str(f: &[u8]) -> &str {
    let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    // text_field only stores printable ASCII.
    core::str::from_utf8(&f[..end]).unwrap_or("")
}

/// `msg_wmname`: a title of at most 127 printable ASCII bytes, NUL-padded to 128.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WmName([u8; WMNAME_LEN]);

impl WmName {
    /// Sanitises and truncates `title`.
    pub fn new(title: &str) -> Self {
        WmName(text_field(title.as_bytes()))
    }
    /// The title.
    pub fn as_str(&self) -> &str {
        field_str(&self.0)
    }
}

impl fmt::Debug for WmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `msg_wmclass`: `res_class[64]`, `res_name[64]`, sanitised like titles.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WmClass {
    class: [u8; WMCLASS_FIELD_LEN],
    name: [u8; WMCLASS_FIELD_LEN],
}

impl WmClass {
    /// Sanitises and truncates both fields.
    pub fn new(class: &str, name: &str) -> Self {
        WmClass {
            class: text_field(class.as_bytes()),
            name: text_field(name.as_bytes()),
        }
    }
    /// `res_class`.
    pub fn class(&self) -> &str {
        field_str(&self.class)
    }
    /// `res_name`.
    pub fn name(&self) -> &str {
        field_str(&self.name)
    }
}

impl fmt::Debug for WmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WmClass")
            .field("class", &self.class())
            .field("name", &self.name())
            .finish()
    }
}

/// Pages a `width`×`height` dump needs at 4 bytes per pixel: `ceil(w*h*4 / 4096)`.
pub fn dump_pages(width: u32, height: u32) -> u64 {
    (u64::from(width) * u64::from(height) * 4).div_ceil(PAGE_SIZE)
}

/// Checks a dump as the daemon does: grant-ref type, at most 16384×6144, refs cover the image
/// and number at most 98304.
pub fn check_dump(hdr: &WindowDumpHdr, refs: usize) -> Result<(), WireError> {
    if hdr.ty != WINDOW_DUMP_TYPE_GRANT_REFS {
        return Err(WireError::DumpType(hdr.ty));
    }
    if hdr.width > MAX_WINDOW_WIDTH || hdr.height > MAX_WINDOW_HEIGHT {
        return Err(WireError::DumpTooLarge {
            width: hdr.width,
            height: hdr.height,
        });
    }
    if refs as u64 > u64::from(MAX_GRANT_REFS) || (refs as u64) < dump_pages(hdr.width, hdr.height)
    {
        return Err(WireError::DumpRefs(
            (refs as u64 * 4).min(u64::from(u32::MAX)) as u32,
        ));
    }
    Ok(())
}

/// A GUI message body, one variant per type. Which direction may send which is the machines'
/// business; this layer only knows sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `MSG_KEYPRESS`.
    Keypress(Keypress),
    /// `MSG_BUTTON`.
    Button(Button),
    /// `MSG_MOTION`.
    Motion(Motion),
    /// `MSG_CROSSING`.
    Crossing(Crossing),
    /// `MSG_FOCUS`.
    Focus(Focus),
    /// `MSG_RESIZE` (obsolete).
    Resize(Resize),
    /// `MSG_CREATE`.
    Create(Create),
    /// `MSG_DESTROY` (request or echoed ack).
    Destroy,
    /// `MSG_MAP`.
    Map(MapInfo),
    /// `MSG_UNMAP`.
    Unmap,
    /// `MSG_CONFIGURE`.
    Configure(Configure),
    /// `MSG_MFNDUMP` (deprecated): the command and its frame numbers.
    MfnDump(ShmCmd, Words<'a>),
    /// `MSG_SHMIMAGE`.
    ShmImage(ShmImage),
    /// `MSG_CLOSE`.
    Close,
    /// `MSG_EXECUTE` (obsolete): the raw 255-byte command field.
    Execute(&'a [u8]),
    /// `MSG_CLIPBOARD_REQ`.
    ClipboardReq,
    /// `MSG_CLIPBOARD_DATA` (length in `untrusted_len`, ≥1.2).
    ClipboardData(&'a [u8]),
    /// `MSG_WMNAME`.
    WmName(WmName),
    /// `MSG_KEYMAP_NOTIFY`: the key bitmap.
    KeymapNotify([u8; KEYMAP_LEN]),
    /// `MSG_DOCK`.
    Dock,
    /// `MSG_WINDOW_HINTS`.
    WindowHints(WindowHints),
    /// `MSG_WINDOW_FLAGS`.
    WindowFlags(WindowFlags),
    /// `MSG_WMCLASS`.
    WmClass(WmClass),
    /// `MSG_WINDOW_DUMP`: header and one grant ref per page.
    WindowDump(WindowDumpHdr, Words<'a>),
    /// `MSG_CURSOR`.
    Cursor(Cursor),
    /// `MSG_WINDOW_DUMP_ACK`.
    WindowDumpAck,
}

impl<'a> Message<'a> {
    /// Decodes a body of type `ty`; `body` must be exactly the body (strict sizes).
    pub fn parse_body(ty: MsgType, body: &'a [u8]) -> Result<Self, WireError> {
        if let Some(n) = ty.fixed_len() {
            if body.len() != n {
                return Err(WireError::BodyLength {
                    expected: n as u32,
                    got: body.len() as u32,
                });
            }
        }
        Ok(match ty {
            MsgType::Keypress => Self::Keypress(Keypress::parse(body)?),
            MsgType::Button => Self::Button(Button::parse(body)?),
            MsgType::Motion => Self::Motion(Motion::parse(body)?),
            MsgType::Crossing => Self::Crossing(Crossing::parse(body)?),
            MsgType::Focus => Self::Focus(Focus::parse(body)?),
            MsgType::Resize => Self::Resize(Resize::parse(body)?),
            MsgType::Create => Self::Create(Create::parse(body)?),
            MsgType::Destroy => Self::Destroy,
            MsgType::Map => Self::Map(MapInfo::parse(body)?),
            MsgType::Unmap => Self::Unmap,
            MsgType::Configure => Self::Configure(Configure::parse(body)?),
            MsgType::MfnDump => {
                let (cmd, frames) =
                    body.split_at_checked(ShmCmd::LEN)
                        .ok_or(WireError::BodyLength {
                            expected: ShmCmd::LEN as u32,
                            got: body.len() as u32,
                        })?;
                let cmd = ShmCmd::parse(cmd)?;
                if cmd.num_mfn > MAX_GRANT_REFS || frames.len() as u64 != u64::from(cmd.num_mfn) * 4
                {
                    return Err(WireError::MfnCount(cmd.num_mfn));
                }
                Self::MfnDump(cmd, Words::Bytes(frames))
            }
            MsgType::ShmImage => Self::ShmImage(ShmImage::parse(body)?),
            MsgType::Close => Self::Close,
            MsgType::Execute => Self::Execute(body),
            MsgType::ClipboardReq => Self::ClipboardReq,
            MsgType::ClipboardData => Self::ClipboardData(body),
            MsgType::WmName => Self::WmName(WmName(text_field(body))),
            MsgType::KeymapNotify => {
                let mut k = [0; KEYMAP_LEN];
                k.copy_from_slice(body);
                Self::KeymapNotify(k)
            }
            MsgType::Dock => Self::Dock,
            MsgType::WindowHints => Self::WindowHints(WindowHints::parse(body)?),
            MsgType::WindowFlags => Self::WindowFlags(WindowFlags::parse(body)?),
            MsgType::WmClass => {
                let (c, n) = body.split_at(WMCLASS_FIELD_LEN);
                Self::WmClass(WmClass {
                    class: text_field(c),
                    name: text_field(n),
                })
            }
            MsgType::WindowDump => {
                let (hdr, refs) =
                    body.split_at_checked(WindowDumpHdr::LEN)
                        .ok_or(WireError::BodyLength {
                            expected: WindowDumpHdr::LEN as u32,
                            got: body.len() as u32,
                        })?;
                if refs.len() % 4 != 0 {
                    return Err(WireError::DumpRefs(refs.len() as u32));
                }
                let hdr = WindowDumpHdr::parse(hdr)?;
                check_dump(&hdr, refs.len() / 4)?;
                Self::WindowDump(hdr, Words::Bytes(refs))
            }
            MsgType::Cursor => Self::Cursor(Cursor::parse(body)?),
            MsgType::WindowDumpAck => Self::WindowDumpAck,
            MsgType::Unknown(t) => return Err(WireError::UnknownType(t)),
        })
    }

    /// Decodes one whole frame (header and body) whose `untrusted_len` must equal the body size.
    pub fn parse(frame: &'a [u8]) -> Result<(WindowId, Self), WireError> {
        let h = MsgHeader::new_checked(frame)?;
        let body = &frame[HEADER_LEN..];
        if h.untrusted_len() as usize != body.len() {
            return Err(WireError::LengthMismatch {
                declared: h.untrusted_len(),
                got: body.len() as u32,
            });
        }
        Ok((h.window(), Self::parse_body(h.msg_type(), body)?))
    }

    /// The type code.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Keypress(_) => MsgType::Keypress,
            Self::Button(_) => MsgType::Button,
            Self::Motion(_) => MsgType::Motion,
            Self::Crossing(_) => MsgType::Crossing,
            Self::Focus(_) => MsgType::Focus,
            Self::Resize(_) => MsgType::Resize,
            Self::Create(_) => MsgType::Create,
            Self::Destroy => MsgType::Destroy,
            Self::Map(_) => MsgType::Map,
            Self::Unmap => MsgType::Unmap,
            Self::Configure(_) => MsgType::Configure,
            Self::MfnDump(..) => MsgType::MfnDump,
            Self::ShmImage(_) => MsgType::ShmImage,
            Self::Close => MsgType::Close,
            Self::Execute(_) => MsgType::Execute,
            Self::ClipboardReq => MsgType::ClipboardReq,
            Self::ClipboardData(_) => MsgType::ClipboardData,
            Self::WmName(_) => MsgType::WmName,
            Self::KeymapNotify(_) => MsgType::KeymapNotify,
            Self::Dock => MsgType::Dock,
            Self::WindowHints(_) => MsgType::WindowHints,
            Self::WindowFlags(_) => MsgType::WindowFlags,
            Self::WmClass(_) => MsgType::WmClass,
            Self::WindowDump(..) => MsgType::WindowDump,
            Self::Cursor(_) => MsgType::Cursor,
            Self::WindowDumpAck => MsgType::WindowDumpAck,
        }
    }

    /// The exact body size this message encodes to.
    pub fn body_len(&self) -> usize {
        match self {
            Self::MfnDump(_, w) => ShmCmd::LEN + 4 * w.len(),
            Self::WindowDump(_, w) => WindowDumpHdr::LEN + 4 * w.len(),
            Self::ClipboardData(d) => d.len(),
            other => other.msg_type().fixed_len().unwrap_or(0),
        }
    }

    /// Header plus body.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Checks what the daemon would refuse from us, so we never send it: dump rules, refs and
    /// frame counts, an EXECUTE field of the wrong size.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            Self::WindowDump(h, refs) => check_dump(h, refs.len()),
            Self::MfnDump(c, f) if c.num_mfn as usize != f.len() || c.num_mfn > MAX_GRANT_REFS => {
                Err(WireError::MfnCount(c.num_mfn))
            }
            Self::Execute(b) if b.len() != EXECUTE_LEN => Err(WireError::BodyLength {
                expected: EXECUTE_LEN as u32,
                got: b.len() as u32,
            }),
            Self::ClipboardData(d) if d.len() > MAX_CLIPBOARD_1_8 => {
                Err(WireError::ClipboardTooLong(d.len() as u32))
            }
            _ => Ok(()),
        }
    }

    /// Encodes header and body with the exact `untrusted_len`; returns the length.
    pub fn emit(&self, window: WindowId, out: &mut [u8]) -> Result<usize, EmitError> {
        self.check().map_err(EmitError::Wire)?;
        let n = self.buffer_len();
        let out = out
            .get_mut(..n)
            .ok_or(EmitError::BufferTooSmall(BufferTooSmall { needed: n }))?;
        out.fill(0);
        let (h, b) = out.split_at_mut(HEADER_LEN);
        MsgHeader::new_unchecked(h).set(self.msg_type(), window, b.len() as u32);
        match self {
            Self::Keypress(m) => m.emit(b),
            Self::Button(m) => m.emit(b),
            Self::Motion(m) => m.emit(b),
            Self::Crossing(m) => m.emit(b),
            Self::Focus(m) => m.emit(b),
            Self::Resize(m) => m.emit(b),
            Self::Create(m) => m.emit(b),
            Self::Map(m) => m.emit(b),
            Self::Configure(m) => m.emit(b),
            Self::ShmImage(m) => m.emit(b),
            Self::WindowHints(m) => m.emit(b),
            Self::WindowFlags(m) => m.emit(b),
            Self::Cursor(m) => m.emit(b),
            Self::MfnDump(c, f) => {
                let (cb, fb) = b.split_at_mut(ShmCmd::LEN);
                c.emit(cb);
                f.emit(fb);
            }
            Self::WindowDump(h, r) => {
                let (hb, rb) = b.split_at_mut(WindowDumpHdr::LEN);
                h.emit(hb);
                r.emit(rb);
            }
            Self::Execute(d) | Self::ClipboardData(d) => b.copy_from_slice(d),
            Self::WmName(t) => b.copy_from_slice(&t.0),
            Self::KeymapNotify(k) => b.copy_from_slice(k),
            Self::WmClass(c) => {
                b[..WMCLASS_FIELD_LEN].copy_from_slice(&c.class);
                b[WMCLASS_FIELD_LEN..].copy_from_slice(&c.name);
            }
            Self::Destroy
            | Self::Unmap
            | Self::Close
            | Self::ClipboardReq
            | Self::Dock
            | Self::WindowDumpAck => {}
        }
        Ok(n)
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self, window: WindowId) -> Result<Vec<u8>, WireError> {
        let mut v = alloc::vec![0; self.buffer_len()];
        match self.emit(window, &mut v) {
            Ok(_) => Ok(v),
            Err(EmitError::Wire(e)) => Err(e),
            Err(EmitError::BufferTooSmall(b)) => Err(WireError::Truncated { needed: b.needed }),
        }
    }
}

/// Why [`Message::emit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The message breaks a protocol rule.
    Wire(WireError),
    /// The output is too small.
    BufferTooSmall(BufferTooSmall),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => e.fmt(f),
            Self::BufferTooSmall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for EmitError {}
