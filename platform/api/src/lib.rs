//! The platform boundary: small consumer-side traits that protocol and app crates use, and that
//! the Xen and hosted backends implement. Nothing here touches hardware or the OS.
//!
//! Layer: bottom of the logic stack (protocols and apps depend on it; backends implement it).
//! Trust: a [`SharedMem`] is writable by a hostile peer at any time; every access is a bounds-
//! checked copy or an atomic load/store, never a borrowed `&[u8]`.
//! Unsafe: none. Limits: [`PortSet`] covers the 4096 ports of the 2-level event ABI.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use core::sync::atomic::Ordering;
pub use core::time::Duration;

pub mod heap_mem;
mod ids;
mod platform;

pub use heap_mem::HeapMem;
pub use ids::{DomId, EvtchnPort, GrantRef, IdError, PortSet, MAX_PORTS};
pub use platform::{BlockDevice, Env, NetDevice, Platform, WatchEvent, Watches};

/// Size of one Xen page; every grant and ring page has this size.
pub const PAGE_SIZE: usize = 4096;

/// An access to shared memory that falls outside it, or an unaligned atomic access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// First byte of the access.
    pub offset: usize,
    /// Length of the access.
    pub len: usize,
    /// Size of the memory.
    pub size: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shared-memory access of {} bytes at offset {} is outside the {}-byte region or unaligned",
            self.len, self.offset, self.size
        )
    }
}

impl core::error::Error for OutOfBounds {}

/// Memory shared with another domain (a granted or mapped page group).
///
/// The peer may change any byte at any time, so nothing here hands out a reference into the
/// memory: data is copied in and out, and indices are loaded and stored atomically with an
/// explicit [`Ordering`]. Multi-byte atomics must be naturally aligned; an unaligned or out-of-
/// range access is an [`OutOfBounds`] error, never a panic.
pub trait SharedMem {
    /// Size in bytes.
    fn size(&self) -> usize;
    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds>;
    /// Copies `data` into the memory at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds>;
    /// Atomic byte load.
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, OutOfBounds>;
    /// Atomic byte store.
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), OutOfBounds>;
    /// Atomic 16-bit little-endian load (offset must be 2-aligned).
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, OutOfBounds>;
    /// Atomic 16-bit little-endian store (offset must be 2-aligned).
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), OutOfBounds>;
    /// Atomic 32-bit little-endian load (offset must be 4-aligned).
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds>;
    /// Atomic 32-bit little-endian store (offset must be 4-aligned).
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds>;
    /// Atomically ANDs `mask` into a byte and returns its previous value.
    fn fetch_and_u8(&self, offset: usize, mask: u8, order: Ordering) -> Result<u8, OutOfBounds>;
    /// Atomically ORs `bits` into a byte and returns its previous value.
    fn fetch_or_u8(&self, offset: usize, bits: u8, order: Ordering) -> Result<u8, OutOfBounds>;
    /// A memory fence of the given ordering, as seen by the peer.
    fn fence(&self, order: Ordering) {
        core::sync::atomic::fence(order);
    }
}

/// Checks `offset..offset+len` against `size` with checked arithmetic.
pub fn check_range(offset: usize, len: usize, size: usize) -> Result<(), OutOfBounds> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfBounds { offset, len, size }),
    }
}

/// What a backend operation failed on. One line each; the caller decides the disposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformError {
    /// A shared-memory access outside its region.
    OutOfBounds(OutOfBounds),
    /// The peer domain does not exist or is gone.
    NoSuchDomain(DomId),
    /// A grant reference the peer named is not granted to us (or not with that access).
    BadGrant(GrantRef),
    /// An event channel port is not bound, or not bound to the expected peer.
    BadPort(EvtchnPort),
    /// A bounded resource (ports, grant refs, pages) is exhausted.
    Full {
        /// What ran out.
        what: &'static str,
    },
    /// The xenstore answered with an error or could not be reached.
    Store(StoreError),
    /// An operating-system call failed (hosted backend), with its errno.
    Os {
        /// What was being done.
        what: &'static str,
        /// The errno value.
        errno: i32,
    },
    /// The backend does not implement this operation.
    Unsupported(&'static str),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfBounds(e) => e.fmt(f),
            Self::NoSuchDomain(d) => write!(f, "domain {d} does not exist or has gone away"),
            Self::BadGrant(g) => write!(f, "grant reference {g} is not granted to us"),
            Self::BadPort(p) => write!(f, "event channel port {p} is not bound"),
            Self::Full { what } => write!(f, "no free {what} left"),
            Self::Store(e) => write!(f, "xenstore: {e}"),
            Self::Os { what, errno } => write!(f, "{what} failed with errno {errno}"),
            Self::Unsupported(what) => write!(f, "{what} is not supported by this backend"),
        }
    }
}

impl core::error::Error for PlatformError {}

impl From<OutOfBounds> for PlatformError {
    fn from(e: OutOfBounds) -> Self {
        Self::OutOfBounds(e)
    }
}

impl From<StoreError> for PlatformError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Sends a notification on one bound event channel.
pub trait Notify {
    /// Signals the peer end of the channel.
    fn notify(&self) -> Result<(), PlatformError>;
}

/// One bound event channel port that can be notified.
pub trait Port: Notify {
    /// The local port number.
    fn port(&self) -> EvtchnPort;
}

/// Event channels: allocation, binding and waiting.
pub trait Events {
    /// A bound port; dropping it closes the port.
    type Port: Port;
    /// Allocates a port that `remote` may bind to (`EVTCHNOP_alloc_unbound`).
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Self::Port, PlatformError>;
    /// Binds to `remote`'s unbound port (`EVTCHNOP_bind_interdomain`).
    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<Self::Port, PlatformError>;
    /// Waits until at least one of our ports is pending or `timeout` passes; returns the
    /// pending ports and clears them. `Some(Duration::ZERO)` only polls.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<PortSet, PlatformError>;
}

/// Grant tables: sharing our pages and mapping a peer's.
pub trait Grants {
    /// Memory of a shared or mapped page group; dropping it ends the grant or unmaps.
    type Mem: SharedMem;
    /// Allocates `pages` zeroed pages, grants each to `peer` and returns the contiguous
    /// mapping with the refs in page order.
    fn share(
        &mut self,
        peer: DomId,
        pages: usize,
        writable: bool,
    ) -> Result<(Self::Mem, Vec<GrantRef>), PlatformError>;
    /// Maps `refs` granted by `peer` as one contiguous region, in order.
    fn map(
        &mut self,
        peer: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<Self::Mem, PlatformError>;
}

/// A xenstore error, by the name xenstored sends (`xsd_errors`, xs_wire.h [X]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XsErrno {
    /// EINVAL
    Einval,
    /// EACCES
    Eacces,
    /// EEXIST
    Eexist,
    /// EISDIR
    Eisdir,
    /// ENOENT
    Enoent,
    /// ENOMEM
    Enomem,
    /// ENOSPC
    Enospc,
    /// EIO
    Eio,
    /// ENOTEMPTY
    Enotempty,
    /// ENOSYS
    Enosys,
    /// EROFS
    Erofs,
    /// EBUSY
    Ebusy,
    /// EAGAIN
    Eagain,
    /// EISCONN
    Eisconn,
    /// E2BIG
    E2big,
    /// EPERM
    Eperm,
}

impl XsErrno {
    /// Every error in the order of xs_wire.h's `xsd_errors` table.
    pub const ALL: [XsErrno; 16] = [
        Self::Einval,
        Self::Eacces,
        Self::Eexist,
        Self::Eisdir,
        Self::Enoent,
        Self::Enomem,
        Self::Enospc,
        Self::Eio,
        Self::Enotempty,
        Self::Enosys,
        Self::Erofs,
        Self::Ebusy,
        Self::Eagain,
        Self::Eisconn,
        Self::E2big,
        Self::Eperm,
    ];

    /// The name on the wire, e.g. `"ENOENT"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Einval => "EINVAL",
            Self::Eacces => "EACCES",
            Self::Eexist => "EEXIST",
            Self::Eisdir => "EISDIR",
            Self::Enoent => "ENOENT",
            Self::Enomem => "ENOMEM",
            Self::Enospc => "ENOSPC",
            Self::Eio => "EIO",
            Self::Enotempty => "ENOTEMPTY",
            Self::Enosys => "ENOSYS",
            Self::Erofs => "EROFS",
            Self::Ebusy => "EBUSY",
            Self::Eagain => "EAGAIN",
            Self::Eisconn => "EISCONN",
            Self::E2big => "E2BIG",
            Self::Eperm => "EPERM",
        }
    }

    /// Looks a wire name up; unknown names are `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// xenstored answered with this error.
    Xs(XsErrno),
    /// xenstored answered with an error name we do not know.
    UnknownError(String),
    /// The reply was not what the request calls for.
    BadReply(&'static str),
    /// The connection to the store failed or closed.
    Disconnected,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xs(e) => write!(f, "xenstored answered {}", e.name()),
            Self::UnknownError(s) => write!(f, "xenstored answered unknown error {s:?}"),
            Self::BadReply(what) => write!(f, "malformed reply from xenstored: {what}"),
            Self::Disconnected => f.write_str("connection to xenstored lost"),
        }
    }
}

impl core::error::Error for StoreError {}

/// Access a domain has to a xenstore node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

/// One xenstore permission entry, `<letter><domid>`. The first entry of a list is the owner,
/// and its letter is the access of every domain not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// What it may do.
    pub access: Access,
}

/// A transaction id; [`Tx::NONE`] is outside any transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tx(pub u32);

impl Tx {
    /// No transaction.
    pub const NONE: Tx = Tx(0);
}

/// A blocking xenstore client, as the backends provide it (built on the `xen-store` machine).
///
/// Relative paths are relative to `/local/domain/<own domid>`.
pub trait Store {
    /// Reads a node's value.
    fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>, StoreError>;
    /// Writes a node, creating parents.
    fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Creates a node with an empty value.
    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError>;
    /// Removes a node and its children.
    fn rm(&mut self, tx: Tx, path: &str) -> Result<(), StoreError>;
    /// Lists the children's names.
    fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>, StoreError>;
    /// Reads a node's permissions.
    fn get_perms(&mut self, tx: Tx, path: &str) -> Result<Vec<Perm>, StoreError>;
    /// Sets a node's permissions; the first entry is the owner.
    fn set_perms(&mut self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), StoreError>;
    /// Starts a transaction.
    fn transaction_start(&mut self) -> Result<Tx, StoreError>;
    /// Ends a transaction; `Err(Xs(Eagain))` on commit means retry the whole transaction.
    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), StoreError>;
}

/// A monotonic point in time, in nanoseconds since an arbitrary origin of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// Nanoseconds since the origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A monotonic clock.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// A source of cryptographically secure random bytes.
pub trait Entropy {
    /// Fills `buf`; a backend without a good source refuses to start rather than fail here.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The console: where log lines and panics go.
pub trait Console {
    /// Writes bytes; may block until the console takes them.
    fn write(&mut self, bytes: &[u8]);
}
