//! `xengnttab_*` (mapping a peer's grants) and `xengntshr_*` (sharing ours), with the Linux
//! driver's unmap-notify: on unmap/unshare, zero the notify byte and signal the notify port.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use platform_api::{
    DomId, EvtchnPort, GrantRef, Grants, Ordering, PlatformError, SharedMem, PAGE_SIZE,
};
use platform_hosted::events::{env_domain, notify_port};
use platform_hosted::grants::{GrantMem, HostedGrants, MAX_PAGES};

use crate::cutil::{fail, set_errno};

/// What to do when a mapping or share ends (`UNMAP_NOTIFY_CLEAR_BYTE`/`SEND_EVENT`).
#[derive(Debug, Clone, Copy, Default)]
struct UnmapNotify {
    clear_byte: Option<usize>,
    port: Option<EvtchnPort>,
}

#[derive(Debug)]
struct Region {
    mem: GrantMem,
    notify: UnmapNotify,
}

/// One `xengnttab_handle` or `xengntshr_handle`: the grant table and the regions it made,
/// keyed by start address.
#[derive(Debug)]
pub struct Handle {
    run_dir: PathBuf,
    me: DomId,
    grants: Mutex<HostedGrants>,
    regions: Mutex<HashMap<usize, Region>>,
}

impl Handle {
    fn open() -> Result<Box<Handle>, PlatformError> {
        let (run_dir, me) = env_domain()?;
        let grants = HostedGrants::new(&run_dir, me);
        Ok(Box::new(Handle {
            run_dir,
            me,
            grants: Mutex::new(grants),
            regions: Mutex::default(),
        }))
    }

    fn grants(&self) -> MutexGuard<'_, HostedGrants> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn regions(&self) -> MutexGuard<'_, HashMap<usize, Region>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, mem: GrantMem, notify: UnmapNotify) -> *mut c_void {
        let p = mem.as_ptr();
        self.regions().insert(p as usize, Region { mem, notify });
        p.cast()
    }

    /// Ends the region starting at `addr` of `count` pages, running its unmap-notify.
    fn end(&self, addr: *mut c_void, count: u32) -> i32 {
        let Some(r) = self.regions().remove(&(addr as usize)) else {
            set_errno(libc::EINVAL);
            return -1;
        };
        if usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(PAGE_SIZE))
            != Some(r.mem.size())
        {
            self.regions().insert(addr as usize, r);
            set_errno(libc::EINVAL);
            return -1;
        }
        if let Some(off) = r.notify.clear_byte {
            let _ = r.mem.store_u8(off, 0, Ordering::SeqCst);
        }
        drop(r.mem);
        if let Some(port) = r.notify.port {
            let _ = notify_port(&self.run_dir, self.me, port);
        }
        0
    }

    /// At close, regions the caller still holds stay mapped (the real driver leaves them
    /// too, and libxenvchan unmaps ring buffers with plain `munmap`); our grants end.
    fn close(self) {
        for (_, r) in self.regions().drain() {
            let _ = r.mem.end_grants_keep_mapping();
        }
    }
}

fn notify_of(offset: u32, port: u32, writable: bool) -> UnmapNotify {
    let clear_byte = usize::try_from(offset)
        .ok()
        .filter(|&o| o < PAGE_SIZE && writable);
    // `-1` (all ones) means no event, as in libxengnttab.
    let port = if port == u32::MAX {
        None
    } else {
        EvtchnPort::new(port).ok()
    };
    UnmapNotify { clear_byte, port }
}

fn domid(d: u32) -> Result<DomId, PlatformError> {
    DomId::new(d).map_err(|_| PlatformError::NoSuchDomain(DomId::DOM0))
}

/// Borrows a handle pointer from C.
///
/// # Safety
/// `h` must be null or a pointer returned by `xengnttab_open`/`xengntshr_open` and not closed.
unsafe fn handle<'a>(h: *mut Handle) -> Option<&'a Handle> {
    // SAFETY: per this function's contract, a non-null `h` points to a live boxed Handle.
    unsafe { h.as_ref() }
}

/// Copies `count` u32s from C.
///
/// # Safety
/// `p` must be valid for reading `count` u32s (or `count` is 0).
unsafe fn refs_from(p: *const u32, count: u32) -> Option<Vec<GrantRef>> {
    let n = usize::try_from(count)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_PAGES)?;
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and, per the contract, valid for `n` reads.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    Some(s.iter().map(|&r| GrantRef(r)).collect())
}

fn open_handle() -> *mut Handle {
    match Handle::open() {
        Ok(h) => Box::into_raw(h),
        Err(e) => fail(&e, std::ptr::null_mut()),
    }
}

/// `xengnttab_open`.
///
/// # Safety
/// Callable from C; `logger` is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_open(_logger: *mut c_void, _flags: u32) -> *mut Handle {
    open_handle()
}

/// `xengntshr_open`.
///
/// # Safety
/// Callable from C; `logger` is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_open(_logger: *mut c_void, _flags: u32) -> *mut Handle {
    open_handle()
}

/// Frees a handle.
///
/// # Safety
/// `h` is null or an open handle, not used afterwards.
unsafe fn close_handle(h: *mut Handle) -> i32 {
    if !h.is_null() {
        // SAFETY: per the contract `h` came from `Box::into_raw` and is closed only once.
        let b = unsafe { Box::from_raw(h) };
        b.close();
    }
    0
}

/// `xengnttab_close`.
///
/// # Safety
/// `h` is null or a handle from `xengnttab_open`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_close(h: *mut Handle) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { close_handle(h) }
}

/// `xengntshr_close`.
///
/// # Safety
/// `h` is null or a handle from `xengntshr_open`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_close(h: *mut Handle) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { close_handle(h) }
}

fn map_refs(
    h: &Handle,
    dom: u32,
    refs: &[GrantRef],
    prot: i32,
    notify: UnmapNotify,
) -> *mut c_void {
    let writable = prot & libc::PROT_WRITE != 0;
    let res = domid(dom).and_then(|d| h.grants().map(d, refs, writable));
    match res {
        Ok(mem) => h.insert(mem, notify),
        Err(e) => fail(&e, std::ptr::null_mut()),
    }
}

/// `xengnttab_map_domain_grant_refs`: maps `count` refs of `domid` contiguously.
///
/// # Safety
/// `h` is an open handle; `refs` is valid for `count` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_domain_grant_refs(
    h: *mut Handle,
    count: u32,
    domid: u32,
    refs: *const u32,
    prot: i32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    let (Some(h), Some(refs)) = (unsafe { handle(h) }, unsafe { refs_from(refs, count) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    map_refs(h, domid, &refs, prot, UnmapNotify::default())
}

/// `xengnttab_map_grant_refs`: like the above with one domid per ref (all must be equal here).
///
/// # Safety
/// `h` is an open handle; `domids` and `refs` are valid for `count` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_refs(
    h: *mut Handle,
    count: u32,
    domids: *const u32,
    refs: *const u32,
    prot: i32,
) -> *mut c_void {
    // SAFETY: forwarded contract (domids has the same length as refs).
    let (Some(h), Some(refs), Some(doms)) = (
        unsafe { handle(h) },
        unsafe { refs_from(refs, count) },
        unsafe { refs_from(domids, count) },
    ) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    let first = doms.first().map_or(0, |d| d.0);
    if doms.iter().any(|d| d.0 != first) {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    map_refs(h, first, &refs, prot, UnmapNotify::default())
}

/// `xengnttab_map_grant_ref`: maps one ref.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_ref(
    h: *mut Handle,
    domid: u32,
    r: u32,
    prot: i32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    map_refs(h, domid, &[GrantRef(r)], prot, UnmapNotify::default())
}

/// `xengnttab_map_grant_ref_notify`: maps one ref; on unmap, zeroes the byte at
/// `notify_offset` (if < page size) and signals `notify_port` (if not -1).
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_map_grant_ref_notify(
    h: *mut Handle,
    domid: u32,
    r: u32,
    prot: i32,
    notify_offset: u32,
    notify_port: u32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    let notify = notify_of(notify_offset, notify_port, prot & libc::PROT_WRITE != 0);
    map_refs(h, domid, &[GrantRef(r)], prot, notify)
}

/// `xengnttab_unmap`.
///
/// # Safety
/// `h` is an open handle; `addr` was returned by one of its map calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_unmap(h: *mut Handle, addr: *mut c_void, count: u32) -> i32 {
    // SAFETY: forwarded contract.
    match unsafe { handle(h) } {
        Some(h) => h.end(addr, count),
        None => {
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// `xengnttab_set_max_grants`: our table has a fixed limit; accepted and ignored.
///
/// # Safety
/// Callable from C.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengnttab_set_max_grants(_h: *mut Handle, _n: u32) -> i32 {
    0
}

fn share(
    h: &Handle,
    dom: u32,
    count: usize,
    writable: bool,
    notify: UnmapNotify,
) -> Option<(*mut c_void, Vec<GrantRef>)> {
    match domid(dom).and_then(|d| h.grants().share(d, count, writable)) {
        Ok((mem, refs)) => Some((h.insert(mem, notify), refs)),
        Err(e) => fail(&e, None),
    }
}

/// `xengntshr_share_pages`: shares `count` zeroed pages with `domid`, refs written to `refs`.
///
/// # Safety
/// `h` is an open handle; `refs` is valid for writing `count` u32s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_share_pages(
    h: *mut Handle,
    domid: u32,
    count: i32,
    refs: *mut u32,
    writable: i32,
) -> *mut c_void {
    let n = usize::try_from(count)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_PAGES);
    // SAFETY: forwarded contract.
    let (Some(h), Some(n)) = (unsafe { handle(h) }, n) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    if refs.is_null() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    let Some((p, got)) = share(h, domid, n, writable != 0, UnmapNotify::default()) else {
        return std::ptr::null_mut();
    };
    for (i, r) in got.iter().enumerate() {
        // SAFETY: `refs` is non-null and valid for writing `n` u32s per the contract; i < n.
        // It may point into shared memory (libxenvchan's `grants[]`), hence no slice.
        unsafe { refs.add(i).write_volatile(r.0) };
    }
    p
}

/// `xengntshr_share_page_notify`: shares one page; on unshare, zeroes the byte at
/// `notify_offset` and signals `notify_port`.
///
/// # Safety
/// `h` is an open handle; `r` is valid for writing one u32.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_share_page_notify(
    h: *mut Handle,
    domid: u32,
    r: *mut u32,
    writable: i32,
    notify_offset: u32,
    notify_port: u32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    if r.is_null() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    // Our side of a share is always writable, so the byte can always be cleared.
    let notify = notify_of(notify_offset, notify_port, true);
    let Some((p, got)) = share(h, domid, 1, writable != 0, notify) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `r` is non-null and valid for one write per the contract.
    unsafe { *r = got.first().map_or(0, |g| g.0) };
    p
}

/// `xengntshr_unshare`.
///
/// # Safety
/// `h` is an open handle; `addr` was returned by one of its share calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xengntshr_unshare(h: *mut Handle, addr: *mut c_void, count: u32) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { xengnttab_unmap(h, addr, count) }
}
