//! Grants over `/dev/xen/gntalloc` (share our pages: alloc refs, then mmap) and
//! `/dev/xen/gntdev` (map a peer's refs, then mmap), with libxenvchan-style unmap-notify.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use platform_api::{
    DomId, EvtchnPort, GrantRef, Grants, Ordering, OutOfBounds, PlatformError, SharedMem, PAGE_SIZE,
};

use crate::abi;
use crate::mem::Region;
use crate::sys::{self, os};

/// Most pages one `share`/`map` call handles, as in `platform-hosted` (a 1 MiB vchan ring is
/// 256 pages; the drivers' own limits, e.g. gntalloc's 1024 by default, may be lower).
pub const MAX_PAGES: usize = 8192;

/// Both grant devices, each opened once and shared by the memory made from it.
#[derive(Debug)]
pub struct DomGrants {
    gntalloc: Arc<File>,
    gntdev: Arc<File>,
}

impl DomGrants {
    /// Opens `/dev/xen/gntalloc` and `/dev/xen/gntdev`; a missing one is one clear line.
    pub fn open() -> Result<Self, PlatformError> {
        Ok(Self {
            gntdev: Arc::new(sys::open_device(&sys::GNTDEV, false)?),
            gntalloc: Arc::new(sys::open_device(&sys::GNTALLOC, false)?),
        })
    }
}

#[cfg(test)]
impl DomGrants {
    /// Grants over `/dev/null` instead of the devices: every ioctl fails (ENOTTY).
    pub(crate) fn stand_in() -> Self {
        let null = || {
            Arc::new(
                File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .unwrap(),
            )
        };
        Self {
            gntalloc: null(),
            gntdev: null(),
        }
    }
}

fn check_pages(pages: usize) -> Result<usize, PlatformError> {
    if pages == 0 || pages > MAX_PAGES {
        return Err(PlatformError::Full {
            what: "pages per grant call",
        });
    }
    Ok(pages * PAGE_SIZE)
}

fn alloc_error(what: &'static str, e: &io::Error) -> PlatformError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::ENOMEM) => PlatformError::Full { what },
        _ => os(what, e),
    }
}

impl Grants for DomGrants {
    type Mem = DomMem;

    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(DomMem, Vec<GrantRef>), PlatformError> {
        let len = check_pages(pages)?;
        let mut req =
            abi::alloc_gref_request(peer.get(), writable, pages).ok_or(PlatformError::Full {
                what: "pages per grant call",
            })?;
        sys::ioctl_bytes(
            self.gntalloc.as_fd(),
            abi::IOCTL_GNTALLOC_ALLOC_GREF,
            &mut req,
        )
        .map_err(|e| alloc_error("grant refs (gntalloc)", &e))?;
        let (index, refs) = abi::alloc_gref_reply(&req, pages);
        // From here the refs exist: `release` ends them on every path, including errors.
        let release = Release {
            dev: self.gntalloc.clone(),
            kind: Kind::Shared,
            index,
            pages,
        };
        // Our own side of a share is always writable, as in Xen.
        let region = Region::map_device(self.gntalloc.as_fd(), len, index, true)
            .map_err(|e| os("mmap shared pages (gntalloc)", &e))?;
        Ok((
            DomMem { region, release },
            refs.into_iter().map(GrantRef).collect(),
        ))
    }

    fn map(
        &mut self,
        peer: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<DomMem, PlatformError> {
        let len = check_pages(refs.len())?;
        let raw: Vec<u32> = refs.iter().map(|r| r.0).collect();
        let mut req = abi::map_grant_ref_request(peer.get(), &raw).ok_or(PlatformError::Full {
            what: "pages per grant call",
        })?;
        sys::ioctl_bytes(
            self.gntdev.as_fd(),
            abi::IOCTL_GNTDEV_MAP_GRANT_REF,
            &mut req,
        )
        .map_err(|e| alloc_error("grant mappings (gntdev)", &e))?;
        let index = abi::map_grant_ref_index(&req);
        let release = Release {
            dev: self.gntdev.clone(),
            kind: Kind::Mapped,
            index,
            pages: refs.len(),
        };
        // gntdev maps the grants at mmap time, so a ref the peer did not grant us (or not
        // writable) fails here.
        let region = Region::map_device(self.gntdev.as_fd(), len, index, writable).map_err(
            |e| match refs {
                [only] => PlatformError::BadGrant(*only),
                _ => os(
                    "mmap granted pages (gntdev; a ref may not be granted to us)",
                    &e,
                ),
            },
        )?;
        Ok(DomMem { region, release })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// gntalloc: our pages granted to a peer.
    Shared,
    /// gntdev: a peer's pages mapped here.
    Mapped,
}

/// Gives the driver's slots back after the region is unmapped (field order in [`DomMem`]).
#[derive(Debug)]
struct Release {
    dev: Arc<File>,
    kind: Kind,
    index: u64,
    pages: usize,
}

impl Drop for Release {
    fn drop(&mut self) {
        let count = u32::try_from(self.pages).unwrap_or(u32::MAX);
        // Failures leave the slot to the file's close; nothing better can be done in drop.
        let _ = match self.kind {
            Kind::Shared => sys::ioctl(
                self.dev.as_fd(),
                abi::IOCTL_GNTALLOC_DEALLOC_GREF,
                &mut abi::GntallocDeallocGref {
                    index: self.index,
                    count,
                },
            ),
            Kind::Mapped => sys::ioctl(
                self.dev.as_fd(),
                abi::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut abi::GntdevUnmapGrantRef {
                    index: self.index,
                    count,
                    pad: 0,
                },
            ),
        };
    }
}

/// What the driver does when this memory goes away, even if the process dies: the
/// libxenvchan pattern (clear the peer-visible "live" byte, then signal the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Offset of a byte (in the region) the driver sets to 0 (needs a writable mapping).
    pub clear_byte: Option<usize>,
    /// A port bound on this process's `/dev/xen/evtchn` the driver notifies.
    pub port: Option<EvtchnPort>,
}

/// A shared or mapped page group. Dropping it unmaps the pages and then ends the grants
/// (gntalloc: the refs go once the peer unmaps too) or releases the mapping slot (gntdev).
#[derive(Debug)]
pub struct DomMem {
    // Declared before `release`: the region is unmapped before the slot is given back.
    region: Region,
    release: Release,
}

impl DomMem {
    /// Whether this memory is mapped writable.
    pub fn writable(&self) -> bool {
        self.region.writable()
    }

    /// Start of the mapping (for diagnostics or a C caller; never dereferenced here).
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Asks the driver to clear a byte and/or notify a port when this memory is unmapped or
    /// the process exits (`IOCTL_GNT{ALLOC,DEV}_SET_UNMAP_NOTIFY`). The byte must lie in the
    /// region; one notify per driver page group (the last call wins, as in the driver).
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<(), PlatformError> {
        let offset = notify.clear_byte.unwrap_or(0);
        let oob = OutOfBounds {
            offset,
            len: 1,
            size: self.region.size(),
        };
        if offset >= self.region.size() || (notify.clear_byte.is_some() && !self.writable()) {
            return Err(PlatformError::OutOfBounds(oob));
        }
        let mut action = 0;
        if notify.clear_byte.is_some() {
            action |= abi::UNMAP_NOTIFY_CLEAR_BYTE;
        }
        if notify.port.is_some() {
            action |= abi::UNMAP_NOTIFY_SEND_EVENT;
        }
        let mut arg = abi::UnmapNotifyArg {
            index: self.release.index + offset as u64,
            action,
            event_channel_port: notify.port.map_or(0, EvtchnPort::get),
        };
        let request = match self.release.kind {
            Kind::Shared => abi::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
            Kind::Mapped => abi::IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
        };
        sys::ioctl(self.release.dev.as_fd(), request, &mut arg)
            .map(drop)
            .map_err(|e| os("set unmap notify", &e))
    }
}

impl SharedMem for DomMem {
    fn size(&self) -> usize {
        self.region.size()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.region.read(offset, buf)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.region.write(offset, data)
    }
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds> {
        self.region.load_u8(offset, order)
    }
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds> {
        self.region.store_u8(offset, value, order)
    }
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds> {
        self.region.load_u16(offset, order)
    }
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds> {
        self.region.store_u16(offset, value, order)
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.region.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.region.store_u32(offset, value, order)
    }
    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.region.fetch_and_u8(offset, mask, order)
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds> {
        self.region.fetch_or_u8(offset, bits, order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(d: u32) -> DomId {
        DomId::new(d).unwrap()
    }

    #[test]
    fn a_driver_refusing_the_ioctl_is_an_error_with_its_errno() {
        let mut g = DomGrants::stand_in();
        assert_eq!(
            g.share(dom(3), 2, true).unwrap_err(),
            PlatformError::Os {
                what: "grant refs (gntalloc)",
                errno: libc::ENOTTY
            }
        );
        assert_eq!(
            g.map(dom(3), &[GrantRef(8)], false).unwrap_err(),
            PlatformError::Os {
                what: "grant mappings (gntdev)",
                errno: libc::ENOTTY
            }
        );
        assert!(g.map(dom(3), &[], false).is_err(), "no refs");
        assert!(g.share(dom(3), MAX_PAGES + 1, true).is_err());
    }

    #[test]
    fn page_counts_outside_one_call_are_refused_before_any_ioctl() {
        assert!(check_pages(0).is_err());
        assert!(check_pages(MAX_PAGES + 1).is_err());
        assert!(check_pages(usize::MAX).is_err());
        assert_eq!(check_pages(2).unwrap(), 2 * PAGE_SIZE);
    }

    #[test]
    fn driver_exhaustion_is_full_and_other_errors_keep_their_errno() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            alloc_error("grant refs (gntalloc)", &e(libc::ENOSPC)),
            PlatformError::Full {
                what: "grant refs (gntalloc)"
            }
        );
        assert_eq!(
            alloc_error("x", &e(libc::EPERM)),
            PlatformError::Os {
                what: "x",
                errno: libc::EPERM
            }
        );
    }
}
