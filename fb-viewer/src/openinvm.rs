//! The service side of `qubes.OpenInVM` as Qubes' `vm-file-editor` reads it: a 256-byte
//! NUL-padded name (optionally `view-only-` prefixed), then the file to EOF; nothing comes back.

use core::fmt;

/// `DVM_FILENAME_SIZE`: the name field, NUL-padded; its last byte is forced to NUL.
pub const NAME_LEN: usize = 256;
/// `DVM_VIEW_ONLY_PREFIX`: the caller asked for no edited copy back (we never send one anyway).
pub const VIEW_ONLY_PREFIX: &[u8] = b"view-only-";

/// Why a request was refused before its file was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The name contains `/` (vm-file-editor exits 1 on this).
    NameHasSlash,
    /// EOF before the 256-byte name field was complete.
    NameTruncated { got: usize },
    /// More file bytes than the budget allows.
    FileTooLarge { max: u64 },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameHasSlash => write!(f, "file name contains /"),
            Self::NameTruncated { got } => {
                write!(f, "request ended after {got} of {NAME_LEN} name bytes")
            }
            Self::FileTooLarge { max } => write!(f, "file larger than {max} bytes"),
        }
    }
}

/// The file name as vm-file-editor sanitises it: every byte outside `[0-9A-Za-z._+@-]` is `_`.
#[derive(Clone, PartialEq, Eq)]
pub struct FileName {
    bytes: [u8; NAME_LEN],
    len: usize,
    /// The `view-only-` prefix was present (and is not part of the name).
    pub view_only: bool,
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileName")
            .field("name", &self.as_str())
            .field("view_only", &self.view_only)
            .finish()
    }
}

impl FileName {
    /// Parses a received name field.
    pub fn parse(field: &[u8; NAME_LEN]) -> Result<Self, RequestError> {
        let mut raw = *field;
        raw[NAME_LEN - 1] = 0;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN - 1);
        let mut name = raw.get(..end).unwrap_or(&[]);
        let view_only = name.starts_with(VIEW_ONLY_PREFIX);
        if view_only {
            name = name.get(VIEW_ONLY_PREFIX.len()..).unwrap_or(&[]);
        }
        if name.contains(&b'/') {
            return Err(RequestError::NameHasSlash);
        }
        let mut bytes = [0u8; NAME_LEN];
        for (d, &s) in bytes.iter_mut().zip(name) {
            *d = if s.is_ascii_alphanumeric() || b"._-+@".contains(&s) {
                s
            } else {
                b'_'
            };
        }
        Ok(Self {
            bytes,
            len: name.len(),
            view_only,
        })
    }

    /// The sanitised name (ASCII only, so always valid UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

/// Splits the caller's stdin into the name field and the file, bounding the file's size.
#[derive(Debug)]
pub struct Request {
    field: [u8; NAME_LEN],
    got: usize,
    file_bytes: u64,
    max_file: u64,
}

impl Request {
    /// A request whose file may be at most `max_file` bytes.
    pub fn new(max_file: u64) -> Self {
        Self {
            field: [0; NAME_LEN],
            got: 0,
            file_bytes: 0,
            max_file,
        }
    }

    /// File bytes received so far.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Takes the next input; returns the name once complete, and the file bytes of `data`.
    /// At most one `Name` and one `Data` come from one call (name first).
    pub fn push<'a>(
        &mut self,
        data: &'a [u8],
    ) -> Result<(Option<FileName>, &'a [u8]), RequestError> {
        let mut name = None;
        let mut rest = data;
        if self.got < NAME_LEN {
            let n = (NAME_LEN - self.got).min(rest.len());
            let (head, tail) = rest.split_at(n);
            self.field[self.got..self.got + n].copy_from_slice(head);
            self.got += n;
            rest = tail;
            if self.got == NAME_LEN {
                name = Some(FileName::parse(&self.field)?);
            }
        }
        self.file_bytes = self.file_bytes.saturating_add(rest.len() as u64);
        if self.file_bytes > self.max_file {
            return Err(RequestError::FileTooLarge { max: self.max_file });
        }
        Ok((name, rest))
    }

    /// The caller's EOF: refused if the name never completed.
    pub fn end(&self) -> Result<(), RequestError> {
        if self.got < NAME_LEN {
            return Err(RequestError::NameTruncated { got: self.got });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn field(name: &[u8]) -> [u8; NAME_LEN] {
        let mut f = [0u8; NAME_LEN];
        f[..name.len()].copy_from_slice(name);
        f
    }

    #[test]
    fn name_is_sanitised_like_vm_file_editor() {
        let n = FileName::parse(&field(b"my photo (1)!.png")).unwrap();
        assert_eq!(n.as_str(), "my_photo__1__.png");
        assert!(!n.view_only);
        let n = FileName::parse(&field(b"a+b@c-d_e.PNG")).unwrap();
        assert_eq!(n.as_str(), "a+b@c-d_e.PNG");
        let n = FileName::parse(&field("caf\u{e9}\n.png".as_bytes())).unwrap();
        assert_eq!(n.as_str(), "caf___.png");
    }

    #[test]
    fn view_only_prefix_is_stripped_and_flagged() {
        let n = FileName::parse(&field(b"view-only-x.png")).unwrap();
        assert_eq!(n.as_str(), "x.png");
        assert!(n.view_only);
    }

    #[test]
    fn hostile_name_with_slash_is_refused() {
        for bad in [&b"../etc/passwd"[..], b"a/b", b"view-only-/x"] {
            assert_eq!(
                FileName::parse(&field(bad)),
                Err(RequestError::NameHasSlash),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hostile_name_without_nul_ends_at_byte_255() {
        let n = FileName::parse(&[b'a'; NAME_LEN]).unwrap();
        assert_eq!(n.as_str().len(), NAME_LEN - 1);
    }

    #[test]
    fn request_splits_name_and_file_across_any_pieces() {
        let mut input = field(b"pic.png").to_vec();
        input.extend_from_slice(b"\x89PNG rest of file");
        for cut in [1, 7, 255, 256, 257, 300] {
            let mut r = Request::new(1 << 20);
            let mut names = Vec::new();
            let mut file = Vec::new();
            for part in input.chunks(cut) {
                let (n, d) = r.push(part).unwrap();
                names.extend(n);
                file.extend_from_slice(d);
            }
            r.end().unwrap();
            assert_eq!(names.len(), 1);
            assert_eq!(names[0].as_str(), "pic.png");
            assert_eq!(file, b"\x89PNG rest of file");
            assert_eq!(r.file_bytes(), file.len() as u64);
        }
    }

    #[test]
    fn hostile_request_truncated_name_is_refused_at_eof() {
        let mut r = Request::new(10);
        r.push(&[b'a'; 100]).unwrap();
        assert_eq!(r.end(), Err(RequestError::NameTruncated { got: 100 }));
    }

    proptest::proptest! {
        /// Any input, cut anywhere: never a panic, and the same name, file bytes and outcome
        /// as in one piece.
        #[test]
        fn hostile_input_in_any_pieces_matches_whole(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700),
            cut in 1usize..300,
        ) {
            let run = |step: usize| {
                let mut r = Request::new(400);
                let (mut names, mut file) = (Vec::new(), Vec::new());
                for p in data.chunks(step) {
                    match r.push(p) {
                        Ok((n, d)) => {
                            names.extend(n.map(|n| (alloc::string::String::from(n.as_str()), n.view_only)));
                            file.extend_from_slice(d);
                        }
                        Err(e) => return Err(e),
                    }
                }
                r.end().map(|()| (names, file))
            };
            proptest::prop_assert_eq!(run(cut), run(data.len().max(1)));
        }
    }

    #[test]
    fn hostile_request_beyond_file_budget_is_refused() {
        let mut r = Request::new(10);
        r.push(&field(b"x")).unwrap();
        r.push(&[0; 10]).unwrap();
        assert_eq!(r.push(&[0]), Err(RequestError::FileTooLarge { max: 10 }));
    }
}
