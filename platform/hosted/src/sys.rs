//! The hosted backend's raw system calls (getrandom, clock_gettime, poll, the TAP ioctl, setns),
//! each behind a safe wrapper, so the rest of the crate stays free of `unsafe`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// Fills `buf` from getrandom(2) (blocking until the pool is initialised).
pub(crate) fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..) {
        if rest.is_empty() {
            break;
        }
        // SAFETY: `rest` is a valid, writable byte slice of `rest.len()` bytes for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += usize::try_from(n).unwrap_or(0);
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec on our stack; CLOCK_MONOTONIC always exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Milliseconds for poll(2), rounded up so that a short non-zero timeout still sleeps.
fn poll_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    }
}

/// One fd to wait on and, after [`poll`], whether it is ready.
#[derive(Debug)]
pub(crate) struct PollFd<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) ready: bool,
}

/// Waits until one of `fds` is readable (or hung up / in error, which the owner must see) or
/// `timeout` passes; sets `ready` on each. Returns how many are ready (0: timed out or EINTR).
pub(crate) fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let nfds = libc::nfds_t::try_from(raw.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `raw` holds `nfds` valid pollfds for the duration of the call, and every fd is
    // borrowed from its owner, so open for the call.
    let n = unsafe { libc::poll(raw.as_mut_ptr(), nfds, poll_ms(timeout)) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let mask = libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    let mut count = 0;
    for (p, r) in fds.iter_mut().zip(&raw) {
        p.ready = r.revents & mask != 0;
        count += usize::from(p.ready);
    }
    Ok(count)
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest is a union we
/// leave zeroed; 40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` non-blocking and attaches a new TAP (`IFF_TAP | IFF_NO_PI`) named
/// `name` to it. The netdev lives exactly as long as the returned fd.
pub(crate) fn tap_open(name: &str) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if let Some(dst) = req.name.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    // SAFETY: TUNSETIFF reads (and may write back the name into) one `struct ifreq`; `req` is
    // a properly sized, initialised repr(C) ifreq on our stack, and `file` is an open tun fd.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Takes an exclusive advisory lock on `fd` without waiting; `Ok(false)` if another open file
/// description holds it. Released when the last fd of this description closes.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    loop {
        // SAFETY: flock takes an fd and flags and touches no memory; the fd is borrowed, so
        // open for the call.
        let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/<name>`).
/// Only ever called on a short-lived helper thread, never on one that goes on to serve.
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only changes the calling thread's network namespace; the fd is borrowed
    // and open for the call.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrandom_fills_and_differs() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b);
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_nanos();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_nanos();
        assert!(b >= a + 4_000_000, "{a} then {b}");
    }

    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn tap_names_too_long_or_empty_are_refused() {
        assert_eq!(
            tap_open("").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            tap_open("0123456789abcdef").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
