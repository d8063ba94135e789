//! ELF notes (`Elf64_Nhdr` + name + desc, each padded to 4 bytes): the Xen notes that tell the
//! domain builder (and QEMU's PVH loader) how to boot an image. xtask checks built images with it.
#![forbid(unsafe_code)]

use core::fmt;

use crate::abi::Le;

/// `XEN_ELFNOTE_ENTRY`: PV entry (virtual).
pub const ENTRY: u32 = 1;
/// `XEN_ELFNOTE_HYPERCALL_PAGE`.
pub const HYPERCALL_PAGE: u32 = 2;
/// `XEN_ELFNOTE_VIRT_BASE`.
pub const VIRT_BASE: u32 = 3;
/// `XEN_ELFNOTE_PADDR_OFFSET`.
pub const PADDR_OFFSET: u32 = 4;
/// `XEN_ELFNOTE_XEN_VERSION`.
pub const XEN_VERSION: u32 = 5;
/// `XEN_ELFNOTE_GUEST_OS`.
pub const GUEST_OS: u32 = 6;
/// `XEN_ELFNOTE_LOADER`.
pub const LOADER: u32 = 8;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry (physical, 32-bit mode).
pub const PHYS32_ENTRY: u32 = 18;

/// A note that does not fit in its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteError {
    /// The header or padded name/desc runs past the end, at this offset.
    Truncated {
        /// Offset of the broken note.
        at: usize,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { at } => write!(f, "ELF note at offset {at} runs past its section"),
            Self::BufferTooSmall { needed } => write!(f, "ELF note needs {needed} bytes"),
        }
    }
}

impl core::error::Error for NoteError {}

/// One note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// `n_type`.
    pub ty: u32,
    /// Name without padding (with its NUL, e.g. `b"Xen\0"`).
    pub name: &'a [u8],
    /// Descriptor without padding.
    pub desc: &'a [u8],
}

fn pad4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|x| x & !3)
}

impl<'a> Note<'a> {
    /// Whether this is a Xen note.
    pub fn is_xen(&self) -> bool {
        self.name == b"Xen\0"
    }

    /// The descriptor as a little-endian number (4 or 8 bytes), as libelf reads it.
    pub fn numeric(&self) -> Option<u64> {
        match self.desc.len() {
            4 => Some(u64::from(u32::get(self.desc, 0))),
            8 => Some(u64::get(self.desc, 0)),
            _ => None,
        }
    }

    /// The descriptor as a C string (up to its NUL).
    pub fn text(&self) -> Option<&'a str> {
        let end = self
            .desc
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.desc.len());
        core::str::from_utf8(&self.desc[..end]).ok()
    }

    /// Bytes this note occupies.
    pub fn buffer_len(&self) -> usize {
        12 + pad4(self.name.len()).unwrap_or(usize::MAX - 12) + pad4(self.desc.len()).unwrap_or(0)
    }

    /// Writes the note with zero padding; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, NoteError> {
        let n = self.buffer_len();
        let out = out
            .get_mut(..n)
            .ok_or(NoteError::BufferTooSmall { needed: n })?;
        out.fill(0);
        (self.name.len() as u32).put(out, 0);
        (self.desc.len() as u32).put(out, 4);
        self.ty.put(out, 8);
        out[12..12 + self.name.len()].copy_from_slice(self.name);
        let d = 12 + pad4(self.name.len()).unwrap_or(0);
        out[d..d + self.desc.len()].copy_from_slice(self.desc);
        Ok(n)
    }
}

/// Iterates over the notes of a `PT_NOTE` segment; stops at the first broken one.
#[derive(Debug, Clone)]
pub struct Notes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Notes<'a> {
    /// Notes in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn next_note(&mut self) -> Result<Option<Note<'a>>, NoteError> {
        let rest = match self.bytes.get(self.at..) {
            Some(r) if !r.is_empty() => r,
            _ => return Ok(None),
        };
        let bad = NoteError::Truncated { at: self.at };
        let hdr = rest.get(..12).ok_or(bad)?;
        let namesz = u32::get(hdr, 0) as usize;
        let descsz = u32::get(hdr, 4) as usize;
        let ty = u32::get(hdr, 8);
        let name_end = 12usize.checked_add(namesz).ok_or(bad)?;
        let desc_start = pad4(name_end).ok_or(bad)?;
        let desc_end = desc_start.checked_add(descsz).ok_or(bad)?;
        let next = pad4(desc_end).ok_or(bad)?;
        let name = rest.get(12..name_end).ok_or(bad)?;
        let desc = rest.get(desc_start..desc_end).ok_or(bad)?;
        self.at = self.at.checked_add(next.min(rest.len())).ok_or(bad)?;
        Ok(Some(Note { ty, name, desc }))
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, NoteError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_note() {
            Ok(Some(n)) => Some(Ok(n)),
            Ok(None) => None,
            Err(e) => {
                self.at = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_vectors::load;

    #[test]
    fn vector_phys32_entry_both_ways() {
        let vf = load("boot.json");
        let v = vf.get("ELF note XEN_ELFNOTE_PHYS32_ENTRY");
        let hex = v.bytes();
        let n = Notes::new(&hex).next().unwrap().unwrap();
        assert_eq!(u64::from(n.ty), v.u64("n_type"));
        assert_eq!(n.name, v.raw("name").as_slice());
        assert_eq!(n.name.len() as u64, v.u64("n_namesz"));
        assert_eq!(n.desc.len() as u64, v.u64("n_descsz"));
        assert_eq!(n.numeric(), Some(v.u64("desc.entry")));
        assert!(n.is_xen());
        assert_eq!(
            vf.constant("XEN_ELFNOTE_PHYS32_ENTRY"),
            i64::from(PHYS32_ENTRY)
        );
        let mut out = [0xFFu8; 20];
        let entry = 0x10_0000u32.to_le_bytes();
        assert_eq!(
            Note {
                ty: PHYS32_ENTRY,
                name: b"Xen\0",
                desc: &entry
            }
            .emit(&mut out),
            Ok(20)
        );
        assert_eq!(out[..], hex[..]);
    }

    #[test]
    fn note_type_constants_match_header() {
        let vf = load("boot.json");
        for (c, v) in [
            ("XEN_ELFNOTE_ENTRY", ENTRY),
            ("XEN_ELFNOTE_HYPERCALL_PAGE", HYPERCALL_PAGE),
            ("XEN_ELFNOTE_VIRT_BASE", VIRT_BASE),
            ("XEN_ELFNOTE_PADDR_OFFSET", PADDR_OFFSET),
            ("XEN_ELFNOTE_XEN_VERSION", XEN_VERSION),
            ("XEN_ELFNOTE_GUEST_OS", GUEST_OS),
            ("XEN_ELFNOTE_LOADER", LOADER),
        ] {
            assert_eq!(vf.constant(c), i64::from(v), "{c}");
        }
    }

    #[test]
    fn hostile_image_truncated_note_refused() {
        let mut b = [0u8; 16];
        b[0] = 4;
        b[4] = 0xff; // descsz 255, past the end
        let r: Vec<_> = Notes::new(&b).collect();
        assert_eq!(r, [Err(NoteError::Truncated { at: 0 })]);
        let mut huge = [0u8; 12];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Notes::new(&huge).next().unwrap().is_err());
    }

    proptest! {
        #[test]
        fn notes_roundtrip(items in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..9), proptest::collection::vec(any::<u8>(), 0..17)), 0..5)) {
            let mut buf = vec![0u8; 512];
            let mut at = 0;
            for (ty, name, desc) in &items {
                at += Note { ty: *ty, name, desc }.emit(&mut buf[at..]).unwrap();
            }
            let got: Vec<_> = Notes::new(&buf[..at]).map(|n| n.unwrap()).map(|n| (n.ty, n.name.to_vec(), n.desc.to_vec())).collect();
            prop_assert_eq!(got, items);
        }

        #[test]
        fn notes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            for n in Notes::new(&b).take(64) { let _ = n; }
        }
    }
}
