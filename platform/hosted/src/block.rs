//! Hosted blkfront: the image file the toolstack named in the vbd backend's `params`, read and
//! written with pread/pwrite; `flush` is fdatasync, so a returned flush means durable.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use platform_api::{BlockDevice, OutOfBounds, PlatformError, Store, StoreError, Tx, XsErrno};

use crate::sys;

/// Largest sector size we accept from the backend directory.
const MAX_SECTOR_SIZE: usize = 4096;
/// Longest xenstore value we read for a device (paths and numbers).
const MAX_VALUE: usize = 4096;

fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Reads a short UTF-8 xenstore value.
pub(crate) fn read_str(store: &mut impl Store, path: &str) -> Result<String, PlatformError> {
    let v = store.read(Tx::NONE, path)?;
    if v.len() > MAX_VALUE {
        return Err(StoreError::BadReply("device value too long").into());
    }
    String::from_utf8(v).map_err(|_| StoreError::BadReply("device value is not UTF-8").into())
}

/// Reads a xenstore value that must be a decimal number.
pub(crate) fn read_u64(store: &mut impl Store, path: &str) -> Result<u64, PlatformError> {
    read_str(store, path)?
        .trim()
        .parse()
        .map_err(|_| StoreError::BadReply("device value is not a number").into())
}

/// A block device backed by a file.
#[derive(Debug)]
pub struct HostedBlock {
    file: File,
    path: PathBuf,
    sector_size: usize,
    sectors: u64,
    writable: bool,
}

impl HostedBlock {
    /// Our `device/vbd/<devid>`: follows its `backend` to `params`, `sectors`, `sector-size`
    /// and `mode` (`w` for read-write), and opens the file.
    pub fn from_store(store: &mut impl Store, devid: u32) -> Result<Self, PlatformError> {
        let backend = read_str(store, &format!("device/vbd/{devid}/backend"))?;
        let params = read_str(store, &format!("{backend}/params"))?;
        let sectors = read_u64(store, &format!("{backend}/sectors"))?;
        let sector_size = read_u64(store, &format!("{backend}/sector-size"))?;
        let mode = match store.read(Tx::NONE, &format!("{backend}/mode")) {
            Ok(m) => m,
            Err(StoreError::Xs(XsErrno::Enoent)) => b"w".to_vec(),
            Err(e) => return Err(e.into()),
        };
        let sector_size = usize::try_from(sector_size).unwrap_or(usize::MAX);
        Self::open(Path::new(&params), sector_size, sectors, mode == b"w")
    }

    /// Opens `path` as `sectors` sectors of `sector_size` bytes. The file must be at least that
    /// long; the sector size must be a power of two from 512 to 4096.
    pub fn open(
        path: &Path,
        sector_size: usize,
        sectors: u64,
        writable: bool,
    ) -> Result<Self, PlatformError> {
        if !path.is_absolute() {
            return Err(PlatformError::Unsupported("a relative vbd params path"));
        }
        if !(512..=MAX_SECTOR_SIZE).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(PlatformError::Unsupported(
                "a vbd sector size other than 512..4096",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| os("open vbd image", &e))?;
        // Two domains (or a restarted one and its leftover) writing one image would corrupt it.
        if !sys::try_lock_exclusive(file.as_fd()).map_err(|e| os("lock vbd image", &e))? {
            return Err(PlatformError::Os {
                what: "lock vbd image (in use by another device)",
                errno: libc::EBUSY,
            });
        }
        let len = file.metadata().map_err(|e| os("stat vbd image", &e))?.len();
        let want = sectors.checked_mul(sector_size as u64);
        if want.is_none_or(|w| len < w) {
            return Err(PlatformError::OutOfBounds(OutOfBounds {
                offset: 0,
                len: usize::try_from(want.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
                size: usize::try_from(len).unwrap_or(usize::MAX),
            }));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            sector_size,
            sectors,
            writable,
        })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of `lba` for a transfer of `len` bytes, checked for whole sectors
    /// inside the device.
    fn check(&self, lba: u64, len: usize) -> Result<u64, PlatformError> {
        let ss = self.sector_size as u64;
        let size = self.sectors.saturating_mul(ss);
        let offset = lba.checked_mul(ss);
        let end = offset.and_then(|o| o.checked_add(len as u64));
        match (offset, end) {
            (Some(o), Some(e)) if len.is_multiple_of(self.sector_size) && e <= size => Ok(o),
            _ => Err(PlatformError::OutOfBounds(OutOfBounds {
                offset: usize::try_from(offset.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
                len,
                size: usize::try_from(size).unwrap_or(usize::MAX),
            })),
        }
    }
}

impl BlockDevice for HostedBlock {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), PlatformError> {
        let offset = self.check(lba, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| os("read vbd image", &e))
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), PlatformError> {
        let offset = self.check(lba, data.len())?;
        if !self.writable {
            return Err(PlatformError::Unsupported("writing a read-only vbd"));
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| os("write vbd image", &e))
    }

    fn flush(&mut self) -> Result<(), PlatformError> {
        self.file
            .sync_data()
            .map_err(|e| os("fdatasync vbd image", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::test_dir::TestDir;

    fn image(t: &TestDir, bytes: u64) -> PathBuf {
        let p = t.path().join("disk.img");
        let f = File::create(&p).unwrap();
        f.set_len(bytes).unwrap();
        p
    }

    #[test]
    fn written_sectors_read_back_after_reopen() {
        let t = TestDir::new();
        let p = image(&t, 64 * 512);
        let mut b = HostedBlock::open(&p, 512, 64, true).unwrap();
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
        b.write(62, &data).unwrap();
        b.flush().unwrap();
        drop(b);
        let mut b = HostedBlock::open(&p, 512, 64, true).unwrap();
        let mut back = vec![0u8; 1024];
        b.read(62, &mut back).unwrap();
        assert_eq!(back, data);
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[62 * 512..], &data[..], "bytes are in the file itself");
    }

    #[test]
    fn transfers_past_the_end_or_of_partial_sectors_are_refused() {
        let t = TestDir::new();
        let p = image(&t, 8 * 512);
        let mut b = HostedBlock::open(&p, 512, 8, true).unwrap();
        let mut buf = vec![0u8; 1024];
        assert!(matches!(
            b.read(7, &mut buf),
            Err(PlatformError::OutOfBounds(OutOfBounds {
                offset: 3584,
                len: 1024,
                size: 4096
            }))
        ));
        assert!(b.write(8, &buf[..512]).is_err());
        assert!(b.write(0, &buf[..100]).is_err(), "partial sector");
        assert!(b.read(u64::MAX, &mut buf[..512]).is_err(), "lba overflow");
        assert!(b.read(u64::MAX / 512, &mut buf[..512]).is_err());
        b.read(7, &mut buf[..512]).unwrap();
        b.write(0, &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            4096,
            "file never grew"
        );
    }

    #[test]
    fn a_file_shorter_than_the_declared_sectors_is_refused() {
        let t = TestDir::new();
        let p = image(&t, 7 * 512);
        assert!(matches!(
            HostedBlock::open(&p, 512, 8, true),
            Err(PlatformError::OutOfBounds(_))
        ));
        assert!(HostedBlock::open(&p, 512, u64::MAX, true).is_err());
        assert!(HostedBlock::open(&p, 500, 1, true).is_err(), "sector size");
        assert!(HostedBlock::open(Path::new("disk.img"), 512, 1, true).is_err());
    }

    #[test]
    fn blkfront_follows_the_vbd_backend_the_toolstack_wrote() {
        use crate::store::{connect, Daemon};
        use platform_api::{Access, DomId, Perm};
        let t = TestDir::new();
        let p = image(&t, 128 * 512);
        let (d0, d5) = (DomId::new(0).unwrap(), DomId::new(5).unwrap());
        let _xs = Daemon::spawn(t.path(), &[d0, d5]).unwrap();
        let mut dom0 = connect(t.path(), d0).unwrap();
        let back = "/local/domain/0/backend/vbd/5/51712";
        dom0.mkdir(Tx::NONE, back).unwrap();
        let perms = [
            Perm {
                domid: d0,
                access: Access::None,
            },
            Perm {
                domid: d5,
                access: Access::Read,
            },
        ];
        dom0.set_perms(Tx::NONE, back, &perms).unwrap();
        for (k, v) in [
            ("params", p.to_str().unwrap()),
            ("sectors", "128"),
            ("sector-size", "512"),
            ("mode", "w"),
        ] {
            dom0.write(Tx::NONE, &format!("{back}/{k}"), v.as_bytes())
                .unwrap();
        }
        dom0.write(
            Tx::NONE,
            "/local/domain/5/device/vbd/51712/backend",
            back.as_bytes(),
        )
        .unwrap();
        let mut d5s = connect(t.path(), d5).unwrap();
        let mut b = HostedBlock::from_store(&mut d5s, 51712).unwrap();
        assert_eq!(
            (b.sectors(), b.sector_size(), b.path()),
            (128, 512, p.as_path())
        );
        b.write(127, &[0xa5; 512]).unwrap();
        b.flush().unwrap();
        assert!(HostedBlock::from_store(&mut d5s, 1).is_err(), "no such vbd");
        dom0.write(Tx::NONE, &format!("{back}/sectors"), b"129")
            .unwrap();
        assert!(
            HostedBlock::from_store(&mut d5s, 51712).is_err(),
            "a backend claiming more sectors than the file holds is refused"
        );
        dom0.write(Tx::NONE, &format!("{back}/sectors"), b"12x")
            .unwrap();
        assert!(HostedBlock::from_store(&mut d5s, 51712).is_err());
    }

    #[test]
    fn an_image_in_use_by_another_device_is_refused_until_it_closes() {
        let t = TestDir::new();
        let p = image(&t, 8 * 512);
        let first = HostedBlock::open(&p, 512, 8, true).unwrap();
        assert_eq!(
            HostedBlock::open(&p, 512, 8, true).unwrap_err(),
            PlatformError::Os {
                what: "lock vbd image (in use by another device)",
                errno: libc::EBUSY
            }
        );
        drop(first);
        HostedBlock::open(&p, 512, 8, true).unwrap();
    }

    #[test]
    fn read_only_mode_refuses_writes() {
        let t = TestDir::new();
        let p = image(&t, 4 * 512);
        let mut b = HostedBlock::open(&p, 512, 4, false).unwrap();
        assert!(matches!(
            b.write(0, &[1u8; 512]),
            Err(PlatformError::Unsupported(_))
        ));
        let mut buf = [9u8; 512];
        b.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0u8; 512]);
    }
}
