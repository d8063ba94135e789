//! The backend's raw system calls (open, ioctl, mmap, poll, fcntl), each behind a safe wrapper
//! that takes owned or borrowed fds and typed arguments, so the other modules stay safe.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use platform_api::PlatformError;

use crate::abi;

/// An `Os` error for `what` from an io::Error.
pub(crate) fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// One Xen device node, with the words of its "missing" error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// The device path.
    pub path: &'static str,
    /// What an `open` that found no such file reports: one line naming the module to load.
    pub missing: &'static str,
    /// What any other failed `open` reports (with its errno).
    pub open_what: &'static str,
}

/// `/dev/xen/evtchn` (module xen-evtchn).
pub const EVTCHN: Device = Device {
    path: "/dev/xen/evtchn",
    missing: "no /dev/xen/evtchn: not running on Xen (load xen-evtchn); open",
    open_what: "open /dev/xen/evtchn",
};
/// `/dev/xen/gntdev` (module xen-gntdev).
pub const GNTDEV: Device = Device {
    path: "/dev/xen/gntdev",
    missing: "no /dev/xen/gntdev: not running on Xen (load xen-gntdev); open",
    open_what: "open /dev/xen/gntdev",
};
/// `/dev/xen/gntalloc` (module xen-gntalloc).
pub const GNTALLOC: Device = Device {
    path: "/dev/xen/gntalloc",
    missing: "no /dev/xen/gntalloc: not running on Xen (load xen-gntalloc); open",
    open_what: "open /dev/xen/gntalloc",
};
/// `/dev/xen/xenbus` (built into xenbus; absent when not on Xen or xenfs-only kernels).
pub const XENBUS: Device = Device {
    path: "/dev/xen/xenbus",
    missing: "no /dev/xen/xenbus: not running on Xen (mount devtmpfs on a Xen kernel); open",
    open_what: "open /dev/xen/xenbus",
};

/// Opens `dev` read-write, close-on-exec and (if asked) non-blocking. A missing node is
/// `Os { what: dev.missing, errno: ENOENT }`, whose Display starts with the clear line.
pub fn open_device(dev: &Device, nonblocking: bool) -> Result<File, PlatformError> {
    open_path(dev.path, nonblocking).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => PlatformError::Os {
            what: dev.missing,
            errno: e.raw_os_error().unwrap_or(libc::ENOENT),
        },
        _ => os(dev.open_what, &e),
    })
}

fn open_path(path: &str, nonblocking: bool) -> io::Result<File> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    // SAFETY: `c` is a NUL-terminated path that lives across the call; open touches no other
    // memory of ours.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL reads the flags of an fd borrowed (so open) for the call.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL sets the flags of an fd borrowed (so open) for the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An ioctl argument struct of the Xen devices (`abi`), passed by pointer.
pub trait IoctlArg: Copy + Sized {}
impl IoctlArg for abi::EvtchnBindInterdomain {}
impl IoctlArg for abi::EvtchnBindUnboundPort {}
impl IoctlArg for abi::EvtchnPortArg {}
impl IoctlArg for abi::GntdevUnmapGrantRef {}
impl IoctlArg for abi::UnmapNotifyArg {}
impl IoctlArg for abi::GntallocDeallocGref {}

fn ioctl_result(r: libc::c_int) -> io::Result<u32> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The size field of an `_IOC` number: how many bytes the driver copies in and out.
fn ioc_size(request: u64) -> usize {
    ((request >> 16) & 0x3fff) as usize
}

/// `ioctl(fd, request, &mut arg)`, retried on EINTR; returns the non-negative result. A
/// request whose size field is not `size_of::<T>()` is refused before the call.
pub fn ioctl<T: IoctlArg>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<u32> {
    if ioc_size(request) != std::mem::size_of::<T>() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    loop {
        // SAFETY: the Xen device drivers copy exactly the request's size field of bytes from
        // and to the argument, and that size is `size_of::<T>()` (checked above), so the
        // kernel touches only `*arg`, a live repr(C) value borrowed for the call; fd is open.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, arg as *mut T) };
        match ioctl_result(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return res,
        }
    }
}

/// `ioctl(fd, request)` with no argument (`IOCTL_EVTCHN_RESET`).
pub fn ioctl_none(fd: BorrowedFd<'_>, request: u64) -> io::Result<u32> {
    if ioc_size(request) != 0 {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: the request takes no argument, so the kernel touches none of our memory.
    ioctl_result(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, 0usize) })
}

/// `ioctl(fd, request, buf)` for the variable-length requests built by `abi`
/// (`*_request`), whose length covers the fixed struct and every trailing entry.
pub fn ioctl_bytes(fd: BorrowedFd<'_>, request: u64, buf: &mut [u8]) -> io::Result<u32> {
    if buf.len() < ioc_size(request) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    loop {
        // SAFETY: `buf` was built by `abi::map_grant_ref_request` / `alloc_gref_request` for
        // this request: at least `sizeof` the fixed struct, plus room for the `count` entries
        // it names, which is all the kernel reads or writes; it lives across the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, buf.as_mut_ptr()) };
        match ioctl_result(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return res,
        }
    }
}

/// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)` of a device's pages.
pub fn mmap_device(
    fd: BorrowedFd<'_>,
    len: usize,
    offset: u64,
    writable: bool,
) -> io::Result<NonNull<u8>> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new mapping at an address of the kernel's choosing touches no existing memory
    // of ours; the fd is borrowed (open) for the call; the result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))
}

/// An anonymous shared read-write mapping of `len` zeroed bytes (for tests of the accessors).
pub fn mmap_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: as in `mmap_device`, a fresh mapping; no fd is involved.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))
}

/// Unmaps a region made by `mmap_device` or `mmap_anonymous`.
///
/// # Safety
/// `base..base+len` must be exactly one mapping returned by those functions, not yet
/// unmapped, and no reference into it may be used afterwards.
pub unsafe fn munmap(base: NonNull<u8>, len: usize) {
    // SAFETY: the caller guarantees the range is one live mapping of ours that nothing uses.
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

/// Milliseconds for poll(2), rounded up so that a short non-zero timeout still sleeps.
fn poll_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    }
}

/// Waits until one of `fds` is ready for `events` (hang-up and errors count as ready, so the
/// owner sees them) or `timeout` passes; returns each fd's readiness. EINTR is a timeout.
pub fn poll(
    fds: &[BorrowedFd<'_>],
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    let nfds = libc::nfds_t::try_from(raw.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `raw` holds `nfds` valid pollfds for the duration of the call, and every fd is
    // borrowed from its owner, so open for the call.
    let n = unsafe { libc::poll(raw.as_mut_ptr(), nfds, poll_ms(timeout)) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        return Ok(vec![false; fds.len()]);
    }
    let mask = events | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    Ok(raw.iter().map(|r| r.revents & mask != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_missing_device_is_one_clear_line() {
        let dev = Device {
            path: "/nonexistent/dev/xen/gntdev",
            ..GNTDEV
        };
        let e = open_device(&dev, false).unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("no /dev/xen/gntdev: not running on Xen (load xen-gntdev)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn poll_times_out_and_sees_readable_fds() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = std::time::Instant::now();
        let r = poll(&[a.as_fd()], libc::POLLIN, Some(Duration::from_millis(20))).unwrap();
        assert_eq!(r, [false]);
        assert!(t.elapsed() >= Duration::from_millis(19));
        std::io::Write::write_all(&mut b, b"x").unwrap();
        let r = poll(&[a.as_fd()], libc::POLLIN, None).unwrap();
        assert_eq!(r, [true]);
    }

    #[test]
    fn ioctl_on_a_non_device_is_an_error_not_ub() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut arg = abi::EvtchnPortArg { port: 1 };
        let e = ioctl(a.as_fd(), abi::IOCTL_EVTCHN_NOTIFY, &mut arg).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }
}
