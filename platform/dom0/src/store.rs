//! Xenstore over `/dev/xen/xenbus`: the kernel passes the xs_wire byte stream through (it keeps
//! watches and transactions per open file), so the `xen-store` client runs on it unchanged.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use platform_api::{EvtchnPort, PlatformError, StoreError, XsErrno};
use xen_store::blocking::{BlockingStore, Transport};

use crate::events::{DomEvents, FdPort};
use crate::sys::{self, os};

/// A non-blocking byte-stream fd (the xenbus device, or any socket speaking xs_wire) as a
/// [`Transport`], optionally registered as a pseudo-port so replies and watches wake `wait`.
#[derive(Debug)]
pub struct FdTransport {
    file: File,
    pseudo: Option<FdPort>,
}

impl FdTransport {
    /// Wraps `fd`, making it non-blocking (no pseudo-port: [`Transport::port`] is `None`).
    pub fn new(fd: OwnedFd) -> Result<Self, PlatformError> {
        sys::set_nonblocking(fd.as_fd()).map_err(|e| os("make xenstore fd non-blocking", &e))?;
        Ok(Self {
            file: File::from(fd),
            pseudo: None,
        })
    }

    /// [`FdTransport::new`], registered as a pseudo-port of `events`.
    pub fn with_events(fd: OwnedFd, events: &DomEvents) -> Result<Self, PlatformError> {
        let mut t = Self::new(fd)?;
        t.pseudo = Some(events.register_fd(t.file.as_fd())?);
        Ok(t)
    }

    /// Waits until the fd is ready for `events` or `timeout` passes; false on timeout.
    fn ready(&self, events: libc::c_short, timeout: Option<Duration>) -> Result<bool, StoreError> {
        let r = sys::poll(&[self.file.as_fd()], events, timeout)
            .map_err(|_| StoreError::Disconnected)?;
        Ok(r.first() == Some(&true))
    }
}

impl AsFd for FdTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// What a failed write means. The xenbus driver handles a complete message inside `write`
/// and reports some refusals (a watch it cannot register, a message too long) as the write's
/// errno without queueing a reply; the file stays usable, so those are xenstore errors. The
/// rest (a closed socket, a dead fd) are a lost connection.
fn write_error(e: &std::io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EILSEQ) => StoreError::Xs(XsErrno::Einval),
        Some(libc::ENOENT) => StoreError::Xs(XsErrno::Enoent),
        Some(libc::EACCES) => StoreError::Xs(XsErrno::Eacces),
        Some(libc::EPERM) => StoreError::Xs(XsErrno::Eperm),
        Some(libc::E2BIG) => StoreError::Xs(XsErrno::E2big),
        Some(libc::ENOMEM) => StoreError::Xs(XsErrno::Enomem),
        Some(libc::ENOSPC) => StoreError::Xs(XsErrno::Enospc),
        Some(libc::EEXIST) => StoreError::Xs(XsErrno::Eexist),
        _ => StoreError::Disconnected,
    }
}

impl Transport for FdTransport {
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        loop {
            match self.file.write(data) {
                Ok(0) if !data.is_empty() => return Err(StoreError::Disconnected),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready(libc::POLLOUT, None)?;
                }
                Err(e) => return Err(write_error(&e)),
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match self.file.read(buf) {
                Ok(0) if !buf.is_empty() => return Err(StoreError::Disconnected),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(StoreError::Disconnected),
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(0),
                },
            };
            self.ready(libc::POLLIN, left)?;
        }
    }

    fn port(&self) -> Option<EvtchnPort> {
        self.pseudo.as_ref().map(FdPort::port)
    }
}

/// The xenstore client of this backend: `platform_api::Store` plus `Watches`.
pub type DomStore = BlockingStore<FdTransport>;

/// Environment variable naming another way to xenstored, as libxenstore reads it: a Unix
/// socket (e.g. `/run/xenstored/socket` in dom0) or a device node. Unset: `/dev/xen/xenbus`.
pub const ENV_XENSTORED_PATH: &str = "XENSTORED_PATH";

/// Opens `/dev/xen/xenbus` (or [`ENV_XENSTORED_PATH`]) as a store whose replies and watches
/// wake `events.wait`.
pub fn open_xenbus(events: &DomEvents) -> Result<DomStore, PlatformError> {
    let fd = match std::env::var_os(ENV_XENSTORED_PATH) {
        Some(path) => open_path(std::path::Path::new(&path))?,
        None => OwnedFd::from(sys::open_device(&sys::XENBUS, true)?),
    };
    Ok(BlockingStore::new(FdTransport::with_events(fd, events)?))
}

/// Connects to a Unix socket, or opens any other node read-write.
fn open_path(path: &std::path::Path) -> Result<OwnedFd, PlatformError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| os("stat XENSTORED_PATH", &e))?;
    if meta.file_type().is_socket() {
        let s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| os("connect to XENSTORED_PATH", &e))?;
        return Ok(OwnedFd::from(s));
    }
    let f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| os("open XENSTORED_PATH", &e))?;
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
pub(crate) mod tests;
