//! Hosted grant tables: a granted page is a file `<run>/gnt/d<owner>/<ref>` (one page plus an
//! 8-byte trailer naming the grantee and access), mapped `MAP_SHARED` by the peer.
#![deny(unsafe_code)]

mod mmap;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use platform_api::{
    DomId, GrantRef, Grants, Ordering, OutOfBounds, PlatformError, SharedMem, PAGE_SIZE,
};

pub use mmap::Mapping;

/// Refs 0..8 are reserved in Xen (the toolstack's console/xenstore entries live there).
pub const FIRST_REF: u32 = 8;
/// Highest ref handed out (a 64-frame v1 grant table holds 32768 entries).
pub const MAX_REFS: u32 = 32768;
/// Most pages one `share`/`map` call handles (a 1 MiB vchan ring is 256 pages; a GUI window
/// dump of a 3840x2160 screen is 8100).
pub const MAX_PAGES: usize = 8192;

const TRAILER_LEN: u64 = 8;
const FILE_LEN: u64 = PAGE_SIZE as u64 + TRAILER_LEN;
const FLAG_WRITABLE: u32 = 1;

static TMP_SEQ: AtomicU32 = AtomicU32::new(0);

fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// `<run>/gnt/d<dom>`: the grant directory of one domain.
pub fn grant_dir(run_dir: &Path, dom: DomId) -> PathBuf {
    run_dir.join("gnt").join(format!("d{}", dom.get()))
}

/// Grant-table handle of one domain of a hosted run.
#[derive(Debug)]
pub struct HostedGrants {
    run_dir: PathBuf,
    me: DomId,
    next_ref: u32,
}

impl HostedGrants {
    /// The grant table of domain `me` in `run_dir`.
    pub fn new(run_dir: &Path, me: DomId) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            me,
            next_ref: FIRST_REF,
        }
    }

    /// The grant table named by `QUBES_HOSTED_DIR` and `QUBES_HOSTED_DOMID`.
    pub fn from_env() -> Result<Self, PlatformError> {
        let (dir, me) = crate::events::env_domain()?;
        Ok(Self::new(&dir, me))
    }

    /// Our domain id.
    pub fn domid(&self) -> DomId {
        self.me
    }

    /// Creates one zeroed grant file for `peer` under a fresh ref, atomically (write a private
    /// temporary file, then `link` it to its ref name, which fails if the ref is taken).
    fn grant_one(
        &mut self,
        peer: DomId,
        writable: bool,
    ) -> Result<(GrantRef, PathBuf), PlatformError> {
        let dir = grant_dir(&self.run_dir, self.me);
        fs::create_dir_all(&dir).map_err(|e| os("create grant directory", &e))?;
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{seq}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| os("create grant file", &e))?;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        trailer[..4].copy_from_slice(&u32::from(peer.get()).to_le_bytes());
        trailer[4..].copy_from_slice(&(if writable { FLAG_WRITABLE } else { 0 }).to_le_bytes());
        let res = f
            .set_len(FILE_LEN)
            .and_then(|()| f.write_all_at(&trailer, PAGE_SIZE as u64))
            .map_err(|e| os("write grant file", &e));
        let res = res.and_then(|()| {
            let span = MAX_REFS - FIRST_REF;
            for i in 0..span {
                let r = FIRST_REF + (self.next_ref - FIRST_REF + i) % span;
                let path = dir.join(r.to_string());
                match fs::hard_link(&tmp, &path) {
                    Ok(()) => {
                        self.next_ref = if r + 1 >= MAX_REFS { FIRST_REF } else { r + 1 };
                        return Ok((GrantRef(r), path));
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(os("link grant file", &e)),
                }
            }
            Err(PlatformError::Full { what: "grant refs" })
        });
        let _ = fs::remove_file(&tmp);
        res
    }

    /// Opens and checks one grant of `peer` for us; any mismatch is `BadGrant`.
    fn open_grant(&self, peer: DomId, r: GrantRef, writable: bool) -> Result<File, PlatformError> {
        let path = grant_dir(&self.run_dir, peer).join(r.0.to_string());
        let bad = PlatformError::BadGrant(r);
        let f = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|_| bad.clone())?;
        let meta = f.metadata().map_err(|e| os("stat grant file", &e))?;
        if meta.len() != FILE_LEN {
            return Err(bad);
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        f.read_exact_at(&mut trailer, PAGE_SIZE as u64)
            .map_err(|_| bad.clone())?;
        let grantee = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let flags = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if grantee != u32::from(self.me.get()) || (writable && flags & FLAG_WRITABLE == 0) {
            return Err(bad);
        }
        Ok(f)
    }

    /// Shares `pages` pages like [`Grants::share`], returning the grant files as well.
    fn share_files(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(GrantMem, Vec<GrantRef>), PlatformError> {
        if pages == 0 || pages > MAX_PAGES {
            return Err(PlatformError::Full {
                what: "pages per grant call",
            });
        }
        let mut refs = Vec::with_capacity(pages);
        let mut files = Vec::with_capacity(pages);
        let mut paths = Vec::with_capacity(pages);
        let cleanup = |paths: &[PathBuf]| paths.iter().for_each(|p| drop(fs::remove_file(p)));
        for _ in 0..pages {
            let (r, path) = match self.grant_one(peer, writable) {
                Ok(x) => x,
                Err(e) => {
                    cleanup(&paths);
                    return Err(e);
                }
            };
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => files.push(f),
                Err(e) => {
                    paths.push(path);
                    cleanup(&paths);
                    return Err(os("open grant file", &e));
                }
            }
            refs.push(r);
            paths.push(path);
        }
        // Our own side of a share is always writable, as in Xen.
        match Mapping::map_files(&files, true) {
            Ok(map) => Ok((
                GrantMem {
                    map,
                    granted: GrantFiles(paths),
                },
                refs,
            )),
            Err(e) => {
                cleanup(&paths);
                Err(os("mmap grant", &e))
            }
        }
    }
}

impl Grants for HostedGrants {
    type Mem = GrantMem;

    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(GrantMem, Vec<GrantRef>), PlatformError> {
        self.share_files(peer, pages, writable)
    }

    fn map(
        &mut self,
        peer: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMem, PlatformError> {
        if refs.is_empty() || refs.len() > MAX_PAGES {
            return Err(PlatformError::Full {
                what: "pages per grant call",
            });
        }
        let files = refs
            .iter()
            .map(|&r| self.open_grant(peer, r, writable))
            .collect::<Result<Vec<_>, _>>()?;
        let map = Mapping::map_files(&files, writable).map_err(|e| os("mmap grant", &e))?;
        Ok(GrantMem {
            map,
            granted: GrantFiles(Vec::new()),
        })
    }
}

/// A shared or mapped page group. Dropping it unmaps it and, for our own shares, ends the
/// grants (removes their files; a peer that still maps them keeps its mapping, as in Xen).
#[derive(Debug)]
pub struct GrantMem {
    map: Mapping,
    granted: GrantFiles,
}

/// Grant files of our own share; dropping them ends the grants.
#[derive(Debug)]
struct GrantFiles(Vec<PathBuf>);

impl Drop for GrantFiles {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

impl GrantMem {
    /// Start of the mapping (for the C shims).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Whether the mapping may be written.
    pub fn writable(&self) -> bool {
        self.map.writable()
    }

    /// Ends the grants but leaves the memory mapped for a C caller that unmaps it itself.
    pub fn end_grants_keep_mapping(self) -> (*mut u8, usize) {
        let GrantMem { map, granted } = self;
        drop(granted);
        map.leak()
    }
}

impl SharedMem for GrantMem {
    fn size(&self) -> usize {
        self.map.size()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.map.read(offset, buf)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.map.write(offset, data)
    }
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        self.map.load_u8(offset, order)
    }
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        self.map.store_u8(offset, value, order)
    }
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        self.map.load_u16(offset, order)
    }
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        self.map.store_u16(offset, value, order)
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.map.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.map.store_u32(offset, value, order)
    }
    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.map.fetch_and_u8(offset, mask, order)
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.map.fetch_or_u8(offset, bits, order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::test_dir::TestDir;

    fn dom(d: u32) -> DomId {
        DomId::new(d).unwrap()
    }

    #[test]
    fn share_then_map_sees_same_bytes_across_threads() {
        let t = TestDir::new();
        let mut a = HostedGrants::new(t.path(), dom(1));
        let mut b = HostedGrants::new(t.path(), dom(2));
        let (mem, refs) = a.share(dom(2), 3, true).unwrap();
        assert_eq!(refs.len(), 3);
        assert_eq!(mem.size(), 3 * PAGE_SIZE);
        let peer = std::thread::spawn(move || {
            let m = b.map(dom(1), &refs, true).unwrap();
            while m.load_u32(8192, Ordering::Acquire).unwrap() != 0xC0FFEE {
                std::thread::yield_now();
            }
            let mut buf = [0u8; 11];
            m.read(4090, &mut buf).unwrap();
            m.store_u16(12, 0xBEEF, Ordering::Release).unwrap();
            buf
        });
        mem.write(4090, b"hello world").unwrap();
        mem.store_u32(8192, 0xC0FFEE, Ordering::Release).unwrap();
        assert_eq!(&peer.join().unwrap(), b"hello world");
        assert_eq!(mem.load_u16(12, Ordering::Acquire).unwrap(), 0xBEEF);
        assert_eq!(mem.fetch_or_u8(13, 1, Ordering::AcqRel).unwrap(), 0xBE);
        assert_eq!(mem.fetch_and_u8(13, 0x0F, Ordering::AcqRel).unwrap(), 0xBF);
        assert_eq!(mem.load_u8(13, Ordering::Acquire).unwrap(), 0x0F);
    }

    #[test]
    fn refs_start_at_8_and_are_unique_per_owner() {
        let t = TestDir::new();
        let mut a = HostedGrants::new(t.path(), dom(1));
        let mut a2 = HostedGrants::new(t.path(), dom(1));
        let (_m1, r1) = a.share(dom(2), 2, true).unwrap();
        let (_m2, r2) = a2.share(dom(2), 2, true).unwrap();
        assert_eq!(r1, [GrantRef(8), GrantRef(9)]);
        assert_eq!(r2, [GrantRef(10), GrantRef(11)]);
    }

    #[test]
    fn map_refuses_grant_made_to_another_domain() {
        let t = TestDir::new();
        let (_m, refs) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 1, true)
            .unwrap();
        let e = HostedGrants::new(t.path(), dom(3))
            .map(dom(1), &refs, false)
            .unwrap_err();
        assert_eq!(e, PlatformError::BadGrant(refs[0]));
    }

    #[test]
    fn map_refuses_writable_map_of_read_only_grant() {
        let t = TestDir::new();
        let (_m, refs) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 1, false)
            .unwrap();
        let mut b = HostedGrants::new(t.path(), dom(2));
        assert_eq!(
            b.map(dom(1), &refs, true).unwrap_err(),
            PlatformError::BadGrant(refs[0])
        );
        let ro = b.map(dom(1), &refs, false).unwrap();
        assert!(
            ro.store_u8(0, 1, Ordering::Relaxed).is_err(),
            "read-only mapping must refuse writes"
        );
        assert!(ro.write(0, &[1]).is_err());
        assert!(ro.fetch_or_u8(0, 1, Ordering::Relaxed).is_err());
        assert_eq!(ro.load_u8(0, Ordering::Relaxed).unwrap(), 0);
    }

    #[test]
    fn map_refuses_unknown_ref_and_wrong_owner() {
        let t = TestDir::new();
        let (_m, refs) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 1, true)
            .unwrap();
        let mut b = HostedGrants::new(t.path(), dom(2));
        assert_eq!(
            b.map(dom(1), &[GrantRef(7)], false).unwrap_err(),
            PlatformError::BadGrant(GrantRef(7))
        );
        assert!(b.map(dom(4), &refs, false).is_err());
        // One bad ref in a list fails the whole map.
        assert!(b.map(dom(1), &[refs[0], GrantRef(99)], false).is_err());
        assert!(b.map(dom(1), &[], false).is_err());
    }

    #[test]
    fn hostile_grant_file_with_wrong_length_is_refused() {
        let t = TestDir::new();
        let dir = grant_dir(t.path(), dom(1));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("8"), [2u8, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        let e = HostedGrants::new(t.path(), dom(2))
            .map(dom(1), &[GrantRef(8)], true)
            .unwrap_err();
        assert_eq!(e, PlatformError::BadGrant(GrantRef(8)));
    }

    #[test]
    fn dropping_a_share_ends_its_grants() {
        let t = TestDir::new();
        let (m, refs) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 2, true)
            .unwrap();
        let mut b = HostedGrants::new(t.path(), dom(2));
        let mapped = b.map(dom(1), &refs, true).unwrap();
        m.store_u8(5, 7, Ordering::Release).unwrap();
        drop(m);
        // The peer keeps what it mapped, but cannot map the ended grant again.
        assert_eq!(mapped.load_u8(5, Ordering::Acquire).unwrap(), 7);
        assert!(b.map(dom(1), &refs[..1], true).is_err());
        assert_eq!(
            fs::read_dir(grant_dir(t.path(), dom(1))).unwrap().count(),
            0
        );
    }

    #[test]
    fn accesses_outside_or_unaligned_are_refused() {
        let t = TestDir::new();
        let (m, _) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 1, true)
            .unwrap();
        assert!(m.read(4095, &mut [0; 2]).is_err());
        assert!(m.write(usize::MAX, &[1]).is_err());
        assert!(m.load_u32(2, Ordering::Relaxed).is_err());
        assert!(m.load_u32(4096, Ordering::Relaxed).is_err());
        assert!(m.store_u16(1, 0, Ordering::Relaxed).is_err());
        m.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
        let mut b = [0u8; 13];
        m.read(2, &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0]);
    }

    #[test]
    fn bulk_copies_agree_with_byte_loads_at_every_alignment() {
        let t = TestDir::new();
        let (m, _) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 2, true)
            .unwrap();
        for off in [0usize, 1, 7, 8, 15, 16, 17, 4090] {
            for len in [0usize, 1, 15, 16, 17, 33, 100] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + off) as u8 | 1).collect();
                m.write(off, &data).unwrap();
                let bytes: Vec<u8> = (0..len)
                    .map(|i| m.load_u8(off + i, Ordering::Relaxed).unwrap())
                    .collect();
                assert_eq!(bytes, data, "write at {off}+{len}");
                let mut back = vec![0u8; len];
                m.read(off, &mut back).unwrap();
                assert_eq!(back, data, "read at {off}+{len}");
                m.write(off, &vec![0u8; len]).unwrap();
            }
        }
    }

    #[test]
    fn share_refuses_zero_and_too_many_pages() {
        let t = TestDir::new();
        let mut a = HostedGrants::new(t.path(), dom(1));
        assert!(a.share(dom(2), 0, true).is_err());
        assert!(a.share(dom(2), MAX_PAGES + 1, true).is_err());
    }

    /// Child half of `share_is_visible_to_another_process` (run by re-executing this binary).
    #[test]
    #[ignore = "run as a child process by share_is_visible_to_another_process"]
    fn child_maps_and_writes() {
        let Ok(dir) = std::env::var("HOSTED_TEST_GRANT_DIR") else {
            return;
        };
        let r: u32 = std::env::var("HOSTED_TEST_GRANT_REF")
            .unwrap()
            .parse()
            .unwrap();
        let m = HostedGrants::new(Path::new(&dir), dom(2))
            .map(dom(1), &[GrantRef(r)], true)
            .unwrap();
        assert_eq!(m.load_u32(0, Ordering::Acquire).unwrap(), 0x1234_5678);
        m.write(100, b"from child").unwrap();
    }

    #[test]
    fn share_is_visible_to_another_process() {
        let t = TestDir::new();
        let (m, refs) = HostedGrants::new(t.path(), dom(1))
            .share(dom(2), 1, true)
            .unwrap();
        m.store_u32(0, 0x1234_5678, Ordering::Release).unwrap();
        let st = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "grants::tests::child_maps_and_writes",
                "--nocapture",
            ])
            .env("HOSTED_TEST_GRANT_DIR", t.path())
            .env("HOSTED_TEST_GRANT_REF", refs[0].0.to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let mut b = [0u8; 10];
        m.read(100, &mut b).unwrap();
        assert_eq!(&b, b"from child");
    }
}
