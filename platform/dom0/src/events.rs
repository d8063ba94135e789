//! Event channels over `/dev/xen/evtchn`: bind by ioctl, read fired ports as `u32`s, unmask by
//! writing them back; pseudo-ports (from [`FIRST_PSEUDO_PORT`]) stand for fds such as sockets.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use platform_api::{DomId, Events, EvtchnPort, Notify, PlatformError, Port, PortSet, MAX_PORTS};

use crate::abi;
use crate::sys::{self, os};

/// The first pseudo-port, as in `platform-hosted`: a real port at or above it is refused (a
/// lab dom0 uses a few hundred ports at most; Linux hands out the lowest free one).
pub const FIRST_PSEUDO_PORT: u32 = 4000;

/// Ports read per `read(2)` of the device.
const READ_BATCH: usize = 256;
/// The driver takes at most one page of ports per unmask write.
const UNMASK_BATCH: usize = 1024;

#[derive(Debug)]
struct Inner {
    /// `/dev/xen/evtchn` (non-blocking); `None` for a handle that only waits on fds.
    dev: Option<File>,
    /// Our bound ports and the domain at the other end.
    ports: Mutex<BTreeMap<u32, DomId>>,
    /// Pseudo-ports and our duplicate of the fd each stands for (shared so that `wait` can
    /// poll it without holding the lock while an owner unregisters).
    fds: Mutex<BTreeMap<u32, Arc<OwnedFd>>>,
}

impl Inner {
    fn ports(&self) -> MutexGuard<'_, BTreeMap<u32, DomId>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fds(&self) -> MutexGuard<'_, BTreeMap<u32, Arc<OwnedFd>>> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dev(&self) -> Result<&File, PlatformError> {
        self.dev.as_ref().ok_or(PlatformError::Unsupported(
            "event channels on an fd-only handle",
        ))
    }

    fn port_ioctl(&self, request: u64, port: u32) -> io::Result<u32> {
        let dev = self.dev.as_ref().ok_or(io::ErrorKind::Unsupported)?;
        sys::ioctl(dev.as_fd(), request, &mut abi::EvtchnPortArg { port })
    }
}

/// An event-channel handle: one open `/dev/xen/evtchn` plus registered fds.
#[derive(Debug)]
pub struct DomEvents {
    inner: Arc<Inner>,
}

impl DomEvents {
    /// Opens `/dev/xen/evtchn`; a missing device is one clear line naming `xen-evtchn`.
    pub fn open() -> Result<Self, PlatformError> {
        Ok(Self::with_device(Some(sys::open_device(
            &sys::EVTCHN,
            true,
        )?)))
    }

    /// A handle without event channels that only waits on registered fds (a process that
    /// needs no Xen ports, and tests).
    pub fn fd_only() -> Self {
        Self::with_device(None)
    }

    /// A handle over an already open, non-blocking device (or a stand-in speaking its
    /// read/write protocol, for tests).
    fn with_device(dev: Option<File>) -> Self {
        Self {
            inner: Arc::new(Inner {
                dev,
                ports: Mutex::default(),
                fds: Mutex::default(),
            }),
        }
    }

    /// Registers `fd` as a pseudo-port: [`Events::wait`] wakes and reports the port while the
    /// fd is readable (or hung up). Level-triggered: the owner drains the fd after a wakeup.
    /// The handle keeps a duplicate of the fd until the returned [`FdPort`] is dropped.
    pub fn register_fd(&self, fd: BorrowedFd<'_>) -> Result<FdPort, PlatformError> {
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| os("duplicate fd for a pseudo-port", &e))?;
        let mut fds = self.inner.fds();
        let port = (FIRST_PSEUDO_PORT..MAX_PORTS)
            .find(|p| !fds.contains_key(p))
            .and_then(|p| EvtchnPort::new(p).ok())
            .ok_or(PlatformError::Full {
                what: "fd pseudo-ports",
            })?;
        fds.insert(port.get(), Arc::new(dup));
        Ok(FdPort {
            inner: self.inner.clone(),
            port,
        })
    }

    /// Checks a port number the driver returned and records it; one we cannot represent is
    /// unbound again.
    fn adopt(&self, raw: u32, remote: DomId) -> Result<DomPort, PlatformError> {
        match EvtchnPort::new(raw) {
            Ok(port) if raw < FIRST_PSEUDO_PORT => {
                self.inner.ports().insert(raw, remote);
                Ok(DomPort {
                    inner: self.inner.clone(),
                    port,
                    remote,
                })
            }
            _ => {
                let _ = self.inner.port_ioctl(abi::IOCTL_EVTCHN_UNBIND, raw);
                Err(PlatformError::Full {
                    what: "event channel ports below the pseudo-port range",
                })
            }
        }
    }

    /// Reads every fired port from the device into `set` and unmasks them again.
    fn read_pending(&self, set: &mut PortSet) -> Result<(), PlatformError> {
        let Some(mut dev) = self.inner.dev.as_ref() else {
            return Ok(());
        };
        let mut buf = [0u8; READ_BATCH * 4];
        let mut fired: BTreeSet<u32> = BTreeSet::new();
        loop {
            match dev.read(&mut buf) {
                Ok(n) => {
                    for c in buf.get(..n).unwrap_or(&[]).chunks_exact(4) {
                        fired.insert(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    // The driver's ring overflowed and it dropped ports: reset the ring and
                    // treat every port as fired (spurious wakeups are harmless).
                    sys::ioctl_none(dev.as_fd(), abi::IOCTL_EVTCHN_RESET)
                        .map_err(|e| os("reset overflowed evtchn ring", &e))?;
                    fired.extend(self.inner.ports().keys().copied());
                    break;
                }
                Err(e) => return Err(os("read /dev/xen/evtchn", &e)),
            }
        }
        let ours: Vec<u32> = {
            let ports = self.inner.ports();
            fired
                .into_iter()
                .filter(|p| ports.contains_key(p))
                .collect()
        };
        for &p in &ours {
            if let Ok(port) = EvtchnPort::new(p) {
                set.insert(port);
            }
        }
        // Unmask before the caller handles them: an event that fires from here on is read
        // by the next wait, so none is lost between handling and unmasking.
        for chunk in ours.chunks(UNMASK_BATCH) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_ne_bytes()).collect();
            loop {
                match dev.write(&bytes) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(os("unmask event channel ports", &e)),
                }
            }
        }
        Ok(())
    }
}

fn bind_error(e: &io::Error, remote: DomId, port: Option<EvtchnPort>) -> PlatformError {
    match (e.raw_os_error(), port) {
        (Some(libc::ESRCH), _) => PlatformError::NoSuchDomain(remote),
        (Some(libc::EINVAL), Some(p)) => PlatformError::BadPort(p),
        (Some(libc::ENOSPC | libc::ENOMEM | libc::EMFILE), _) => PlatformError::Full {
            what: "event channel ports",
        },
        _ => os("bind event channel", e),
    }
}

impl Events for DomEvents {
    type Port = DomPort;

    fn alloc_unbound(&mut self, remote: DomId) -> Result<DomPort, PlatformError> {
        let mut arg = abi::EvtchnBindUnboundPort {
            remote_domain: u32::from(remote.get()),
        };
        let raw = sys::ioctl(
            self.inner.dev()?.as_fd(),
            abi::IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            &mut arg,
        )
        .map_err(|e| bind_error(&e, remote, None))?;
        self.adopt(raw, remote)
    }

    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<DomPort, PlatformError> {
        let mut arg = abi::EvtchnBindInterdomain {
            remote_domain: u32::from(remote.get()),
            remote_port: remote_port.get(),
        };
        let raw = sys::ioctl(
            self.inner.dev()?.as_fd(),
            abi::IOCTL_EVTCHN_BIND_INTERDOMAIN,
            &mut arg,
        )
        .map_err(|e| bind_error(&e, remote, Some(remote_port)))?;
        self.adopt(raw, remote)
    }

    /// One poll(2) on the device and every registered fd; fired ports are read, reported and
    /// unmasked, ready fds reported. May return empty before `timeout` (EINTR, or only a port
    /// closed meanwhile fired); callers loop anyway.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<PortSet, PlatformError> {
        let fds: Vec<(u32, Arc<OwnedFd>)> = self
            .inner
            .fds()
            .iter()
            .map(|(p, fd)| (*p, fd.clone()))
            .collect();
        let dev = self.inner.dev.as_ref().map(|d| d.as_fd());
        let polled: Vec<BorrowedFd<'_>> = dev
            .into_iter()
            .chain(fds.iter().map(|(_, fd)| fd.as_fd()))
            .collect();
        let mut set = PortSet::new();
        if polled.is_empty() {
            // Nothing can ever wake us: sleep out the timeout like an idle domain would.
            if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            return Ok(set);
        }
        let ready = sys::poll(&polled, libc::POLLIN, timeout).map_err(|e| os("poll", &e))?;
        let mut ready = ready.into_iter();
        if dev.is_some() && ready.next() == Some(true) {
            self.read_pending(&mut set)?;
        }
        for ((p, _), r) in fds.iter().zip(ready) {
            if let (true, Ok(port)) = (r, EvtchnPort::new(*p)) {
                set.insert(port);
            }
        }
        Ok(set)
    }
}

/// A bound (or allocated, not yet bound) port; dropping it unbinds it.
#[derive(Debug)]
pub struct DomPort {
    inner: Arc<Inner>,
    port: EvtchnPort,
    remote: DomId,
}

impl DomPort {
    /// The domain at the other end (or allowed to bind).
    pub fn remote(&self) -> DomId {
        self.remote
    }
}

impl Notify for DomPort {
    fn notify(&self) -> Result<(), PlatformError> {
        self.inner
            .port_ioctl(abi::IOCTL_EVTCHN_NOTIFY, self.port.get())
            .map(drop)
            .map_err(|e| os("notify event channel", &e))
    }
}

impl Port for DomPort {
    fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for DomPort {
    fn drop(&mut self) {
        self.inner.ports().remove(&self.port.get());
        // Unbinding a port whose peer is gone can fail; the port is ours to forget anyway.
        let _ = self
            .inner
            .port_ioctl(abi::IOCTL_EVTCHN_UNBIND, self.port.get());
    }
}

/// A registered fd's pseudo-port; dropping it unregisters the fd (and closes our duplicate).
#[derive(Debug)]
pub struct FdPort {
    inner: Arc<Inner>,
    port: EvtchnPort,
}

impl FdPort {
    /// The pseudo-port number [`Events::wait`] reports.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for FdPort {
    fn drop(&mut self) {
        self.inner.fds().remove(&self.port.get());
    }
}

#[cfg(test)]
mod tests;
