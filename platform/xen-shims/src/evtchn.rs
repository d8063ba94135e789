//! `xenevtchn_*` over hosted event channels: the handle's socket is the fd callers poll, and
//! `xenevtchn_pending` hands out the signalled ports one at a time.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

use platform_api::{DomId, Events, EvtchnPort, Notify, PlatformError, Port};
use platform_hosted::events::{HostedEvents, HostedPort};

use crate::cutil::{fail, set_errno};

/// One `xenevtchn_handle`.
#[derive(Debug)]
pub struct Handle {
    fd: i32,
    events: Mutex<HostedEvents>,
    ports: Mutex<HashMap<u32, HostedPort>>,
    pending: Mutex<VecDeque<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Borrows a handle pointer from C.
///
/// # Safety
/// `h` must be null or a pointer returned by `xenevtchn_open` and not closed.
unsafe fn handle<'a>(h: *mut Handle) -> Option<&'a Handle> {
    // SAFETY: per this function's contract, a non-null `h` points to a live boxed Handle.
    unsafe { h.as_ref() }
}

fn einval<T>(v: T) -> T {
    set_errno(libc::EINVAL);
    v
}

/// `xenevtchn_open`.
///
/// # Safety
/// Callable from C; `logger` is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_open(_logger: *mut c_void, _flags: u32) -> *mut Handle {
    match HostedEvents::from_env() {
        Ok(ev) => Box::into_raw(Box::new(Handle {
            fd: ev.as_raw_fd(),
            events: Mutex::new(ev),
            ports: Mutex::default(),
            pending: Mutex::default(),
        })),
        Err(e) => fail(&e, std::ptr::null_mut()),
    }
}

/// `xenevtchn_close`: closes every port of the handle.
///
/// # Safety
/// `h` is null or a handle from `xenevtchn_open`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_close(h: *mut Handle) -> i32 {
    if !h.is_null() {
        // SAFETY: per the contract `h` came from `Box::into_raw` and is closed only once.
        drop(unsafe { Box::from_raw(h) });
    }
    0
}

/// `xenevtchn_fd`: readable when a port is pending.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_fd(h: *mut Handle) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { handle(h) }.map_or_else(|| einval(-1), |h| h.fd)
}

/// `xenevtchn_notify`.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_notify(h: *mut Handle, port: u32) -> i32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(-1);
    };
    match lock(&h.ports).get(&port).map(|p| p.notify()) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(&e, -1),
        None => einval(-1),
    }
}

fn add_port(h: &Handle, r: Result<HostedPort, PlatformError>) -> i32 {
    match r {
        Ok(p) => {
            let n = p.port().get();
            lock(&h.ports).insert(n, p);
            i32::try_from(n).unwrap_or(-1)
        }
        Err(e) => fail(&e, -1),
    }
}

/// `xenevtchn_bind_unbound_port`: a new port that `domid` may bind.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_bind_unbound_port(h: *mut Handle, domid: u32) -> i32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(-1);
    };
    let Ok(d) = DomId::new(domid) else {
        return einval(-1);
    };
    let r = lock(&h.events).alloc_unbound(d);
    add_port(h, r)
}

/// `xenevtchn_bind_interdomain`: binds to `domid`'s unbound `remote_port`.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_bind_interdomain(
    h: *mut Handle,
    domid: u32,
    remote_port: u32,
) -> i32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(-1);
    };
    let (Ok(d), Ok(rp)) = (DomId::new(domid), EvtchnPort::new(remote_port)) else {
        return einval(-1);
    };
    let r = lock(&h.events).bind_interdomain(d, rp);
    add_port(h, r)
}

/// `xenevtchn_unbind`.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_unbind(h: *mut Handle, port: u32) -> i32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(-1);
    };
    match lock(&h.ports).remove(&port) {
        Some(_) => 0,
        None => einval(-1),
    }
}

/// `xenevtchn_pending`: the next signalled port, blocking until one is.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_pending(h: *mut Handle) -> i32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(-1);
    };
    let mut q = lock(&h.pending);
    while q.is_empty() {
        match lock(&h.events).wait(None) {
            Ok(set) => q.extend(set.iter().map(|p| p.get())),
            Err(e) => return fail(&e, -1),
        }
    }
    q.pop_front()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(-1)
}

/// `xenevtchn_unmask`: ports here are never masked, so nothing to do.
///
/// # Safety
/// Callable from C.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xenevtchn_unmask(_h: *mut Handle, _port: u32) -> i32 {
    0
}
