//! `xs_*` over the hosted xenstore client: each `xs_open` is one connection to the domain's
//! socket; values and directory lists are returned in `malloc`ed memory as libxenstore does.

use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, MutexGuard};

use platform_api::{Access, DomId, Perm, PlatformError, Store, StoreError, Tx};

use crate::cutil::{set_errno, store_errno};

/// Largest value or list we hand back (xs_wire's payload limit is 4096).
const MAX_REPLY: usize = 65536;
/// Most permission entries accepted from C.
const MAX_PERMS: u32 = 1024;

const XS_PERM_READ: u32 = 1;
const XS_PERM_WRITE: u32 = 2;

/// One `struct xs_handle`.
pub struct Handle {
    store: Mutex<Box<dyn Store + Send>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("xs_handle")
    }
}

/// `struct xs_permissions`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XsPermissions {
    id: u32,
    perms: u32,
}

fn connect() -> Result<Box<dyn Store + Send>, StoreError> {
    match platform_hosted::store::connect_from_env() {
        Ok(s) => Ok(Box::new(s)),
        Err(PlatformError::Store(e)) => Err(e),
        Err(_) => Err(StoreError::Disconnected),
    }
}

impl Handle {
    fn store(&self) -> MutexGuard<'_, Box<dyn Store + Send>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Borrows a handle pointer from C.
///
/// # Safety
/// `h` must be null or a pointer returned by `xs_open` and not closed.
unsafe fn handle<'a>(h: *mut Handle) -> Option<&'a Handle> {
    // SAFETY: per this function's contract, a non-null `h` points to a live boxed Handle.
    unsafe { h.as_ref() }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` must be null or a valid NUL-terminated string.
unsafe fn path<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

fn einval<T>(v: T) -> T {
    set_errno(libc::EINVAL);
    v
}

fn store_fail<T>(e: &StoreError, v: T) -> T {
    set_errno(store_errno(e));
    v
}

/// Copies `data` into a new `malloc`ed buffer with a NUL after it.
fn malloc_copy(data: &[u8]) -> *mut c_void {
    if data.len() > MAX_REPLY {
        set_errno(libc::E2BIG);
        return std::ptr::null_mut();
    }
    // SAFETY: plain allocation; checked for NULL below.
    let p = unsafe { libc::malloc(data.len() + 1) }.cast::<u8>();
    if p.is_null() {
        set_errno(libc::ENOMEM);
        return p.cast();
    }
    // SAFETY: `p` has room for `data.len() + 1` bytes and does not overlap `data`.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
        *p.add(data.len()) = 0;
    }
    p.cast()
}

/// `xs_open`: connects to our domain's xenstore socket.
///
/// # Safety
/// Callable from C.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_open(_flags: libc::c_ulong) -> *mut Handle {
    match connect() {
        Ok(s) => Box::into_raw(Box::new(Handle {
            store: Mutex::new(s),
        })),
        Err(e) => store_fail(&e, std::ptr::null_mut()),
    }
}

/// `xs_close` (NULL is fine).
///
/// # Safety
/// `h` is null or a handle from `xs_open`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_close(h: *mut Handle) {
    if !h.is_null() {
        // SAFETY: per the contract `h` came from `Box::into_raw` and is closed only once.
        drop(unsafe { Box::from_raw(h) });
    }
}

/// `xs_read`: the value, NUL-terminated, in `malloc`ed memory; its length in `*len`.
///
/// # Safety
/// `h` is an open handle, `p` a C string, `len` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_read(
    h: *mut Handle,
    t: u32,
    p: *const c_char,
    len: *mut u32,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(std::ptr::null_mut());
    };
    let r = h.store().read(Tx(t), p);
    match r {
        Ok(v) => {
            let out = malloc_copy(&v);
            if !out.is_null() && !len.is_null() {
                // SAFETY: `len` is non-null and writable per the contract; `v.len()` fits
                // (checked against MAX_REPLY by malloc_copy).
                unsafe { *len = v.len() as u32 };
            }
            out
        }
        Err(e) => store_fail(&e, std::ptr::null_mut()),
    }
}

/// `xs_write`.
///
/// # Safety
/// `h` is an open handle, `p` a C string, `data` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_write(
    h: *mut Handle,
    t: u32,
    p: *const c_char,
    data: *const c_void,
    len: u32,
) -> bool {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(false);
    };
    let Ok(n) = usize::try_from(len) else {
        return einval(false);
    };
    let value: &[u8] = if n == 0 {
        &[]
    } else if data.is_null() {
        return einval(false);
    } else {
        // SAFETY: non-null and valid for `len` bytes per the contract.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) }
    };
    let r = h.store().write(Tx(t), p, value);
    r.map_or_else(|e| store_fail(&e, false), |()| true)
}

/// `xs_mkdir`.
///
/// # Safety
/// `h` is an open handle, `p` a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_mkdir(h: *mut Handle, t: u32, p: *const c_char) -> bool {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(false);
    };
    let r = h.store().mkdir(Tx(t), p);
    r.map_or_else(|e| store_fail(&e, false), |()| true)
}

/// `xs_rm`.
///
/// # Safety
/// `h` is an open handle, `p` a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_rm(h: *mut Handle, t: u32, p: *const c_char) -> bool {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(false);
    };
    let r = h.store().rm(Tx(t), p);
    r.map_or_else(|e| store_fail(&e, false), |()| true)
}

/// `xs_directory`: one `malloc`ed block holding the pointer array and then the names.
///
/// # Safety
/// `h` is an open handle, `p` a C string, `num` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_directory(
    h: *mut Handle,
    t: u32,
    p: *const c_char,
    num: *mut u32,
) -> *mut *mut c_char {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(std::ptr::null_mut());
    };
    if num.is_null() {
        return einval(std::ptr::null_mut());
    }
    let names = match h.store().directory(Tx(t), p) {
        Ok(n) => n,
        Err(e) => return store_fail(&e, std::ptr::null_mut()),
    };
    let ptrs = names.len() * std::mem::size_of::<*mut c_char>();
    let total = ptrs + names.iter().map(|n| n.len() + 1).sum::<usize>();
    if total > MAX_REPLY {
        set_errno(libc::E2BIG);
        return std::ptr::null_mut();
    }
    // SAFETY: plain allocation (at least 1 byte), checked for NULL below.
    let block = unsafe { libc::malloc(total.max(1)) }.cast::<u8>();
    if block.is_null() {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    }
    let mut off = ptrs;
    for (i, n) in names.iter().enumerate() {
        // SAFETY: `block` has `total` bytes: slot i of the pointer array is below `ptrs`
        // (malloc's alignment suits pointers), and `off + n.len() + 1 <= total` by the sum.
        unsafe {
            let s = block.add(off);
            std::ptr::copy_nonoverlapping(n.as_ptr(), s, n.len());
            *s.add(n.len()) = 0;
            block.cast::<*mut c_char>().add(i).write(s.cast());
        }
        off += n.len() + 1;
    }
    // SAFETY: `num` is non-null and writable per the contract.
    unsafe { *num = names.len() as u32 };
    block.cast()
}

/// `xs_set_permissions`: the first entry is the owner and the default access.
///
/// # Safety
/// `h` is an open handle, `p` a C string, `perms` valid for `num` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_set_permissions(
    h: *mut Handle,
    t: u32,
    p: *const c_char,
    perms: *const XsPermissions,
    num: u32,
) -> bool {
    // SAFETY: forwarded contract.
    let (Some(h), Some(p)) = (unsafe { handle(h) }, unsafe { path(p) }) else {
        return einval(false);
    };
    if perms.is_null() || num == 0 || num > MAX_PERMS {
        return einval(false);
    }
    // SAFETY: non-null and valid for `num` entries per the contract.
    let raw = unsafe { std::slice::from_raw_parts(perms, num as usize) };
    let mut list = Vec::with_capacity(raw.len());
    for e in raw {
        let Ok(domid) = DomId::new(e.id) else {
            return einval(false);
        };
        let access = match (e.perms & XS_PERM_READ != 0, e.perms & XS_PERM_WRITE != 0) {
            (false, false) => Access::None,
            (true, false) => Access::Read,
            (false, true) => Access::Write,
            (true, true) => Access::Both,
        };
        list.push(Perm { domid, access });
    }
    let r = h.store().set_perms(Tx(t), p, &list);
    r.map_or_else(|e| store_fail(&e, false), |()| true)
}

/// `xs_transaction_start`: 0 (`XBT_NULL`) on failure.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_transaction_start(h: *mut Handle) -> u32 {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(0);
    };
    let r = h.store().transaction_start();
    r.map_or_else(|e| store_fail(&e, 0), |t| t.0)
}

/// `xs_transaction_end`: false with errno `EAGAIN` means retry the transaction.
///
/// # Safety
/// `h` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_transaction_end(h: *mut Handle, t: u32, abort: bool) -> bool {
    // SAFETY: forwarded contract.
    let Some(h) = (unsafe { handle(h) }) else {
        return einval(false);
    };
    let r = h.store().transaction_end(Tx(t), !abort);
    r.map_or_else(|e| store_fail(&e, false), |()| true)
}

/// `xs_get_domain_path`: `/local/domain/<domid>` in `malloc`ed memory.
///
/// # Safety
/// Callable from C.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xs_get_domain_path(_h: *mut Handle, domid: u32) -> *mut c_char {
    malloc_copy(format!("/local/domain/{domid}").as_bytes()).cast()
}
