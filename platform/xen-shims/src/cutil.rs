//! Small helpers for the C boundary: errno and mapping platform errors to it.

use platform_api::{PlatformError, StoreError, XsErrno};

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

/// The errno a C caller sees for a platform error.
pub(crate) fn platform_errno(e: &PlatformError) -> i32 {
    match e {
        PlatformError::OutOfBounds(_) => libc::EFAULT,
        PlatformError::NoSuchDomain(_) => libc::ESRCH,
        PlatformError::BadGrant(_) => libc::EINVAL,
        PlatformError::BadPort(_) => libc::EINVAL,
        PlatformError::Full { .. } => libc::ENOSPC,
        PlatformError::Store(s) => store_errno(s),
        PlatformError::Os { errno, .. } => *errno,
        PlatformError::Unsupported(_) => libc::ENOSYS,
    }
}

/// The errno libxenstore reports for a store error.
pub(crate) fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::Xs(x) => match x {
            XsErrno::Einval => libc::EINVAL,
            XsErrno::Eacces => libc::EACCES,
            XsErrno::Eexist => libc::EEXIST,
            XsErrno::Eisdir => libc::EISDIR,
            XsErrno::Enoent => libc::ENOENT,
            XsErrno::Enomem => libc::ENOMEM,
            XsErrno::Enospc => libc::ENOSPC,
            XsErrno::Eio => libc::EIO,
            XsErrno::Enotempty => libc::ENOTEMPTY,
            XsErrno::Enosys => libc::ENOSYS,
            XsErrno::Erofs => libc::EROFS,
            XsErrno::Ebusy => libc::EBUSY,
            XsErrno::Eagain => libc::EAGAIN,
            XsErrno::Eisconn => libc::EISCONN,
            XsErrno::E2big => libc::E2BIG,
            XsErrno::Eperm => libc::EPERM,
        },
        StoreError::UnknownError(_) | StoreError::BadReply(_) => libc::EIO,
        StoreError::Disconnected => libc::ECONNRESET,
    }
}

/// Reports `e` through errno and returns the C failure value `fail`.
pub(crate) fn fail<T>(e: &PlatformError, fail: T) -> T {
    set_errno(platform_errno(e));
    fail
}
