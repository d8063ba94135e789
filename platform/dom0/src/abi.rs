//! The Linux Xen device ABI (`xen/sys/{evtchn,gntdev,gntalloc}.h`): ioctl numbers, argument
//! layouts, and the byte images of the variable-length requests. Checked against the headers.
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

/// `_IOC(_IOC_NONE, ty, nr, size)`: every Xen device ioctl passes its argument by pointer
/// without a direction, so the number is just size, type and nr.
const fn ioc_none(ty: u8, nr: u8, size: usize) -> u64 {
    ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify` (both one port).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnPortArg {
    pub port: u32,
}

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with its one-element trailing array, as `sizeof` sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// `struct ioctl_gntdev_unmap_notify` and `struct ioctl_gntalloc_unmap_notify` (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UnmapNotifyArg {
    pub index: u64,
    pub action: u32,
    pub event_channel_port: u32,
}

/// `struct ioctl_gntalloc_alloc_gref` with its one-element trailing array.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntallocAllocGref {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    pub index: u64,
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref` (16 bytes with its tail padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntallocDeallocGref {
    pub index: u64,
    pub count: u32,
}

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc_none(b'E', 3, size_of::<EvtchnPortArg>());
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc_none(b'E', 4, size_of::<EvtchnPortArg>());
pub const IOCTL_EVTCHN_RESET: u64 = ioc_none(b'E', 5, 0);

pub const IOCTL_GNTDEV_MAP_GRANT_REF: u64 = ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 = ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: u64 = ioc_none(b'G', 7, size_of::<UnmapNotifyArg>());

pub const IOCTL_GNTALLOC_ALLOC_GREF: u64 = ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u64 = ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u64 = ioc_none(b'G', 7, size_of::<UnmapNotifyArg>());

pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// The kernel copies `sizeof` the fixed struct first (its one-element array included), so a
/// request buffer is never shorter than that even when fewer trailing entries are needed.
fn request_len(fixed: usize, head: usize, elem: usize, count: usize) -> Option<usize> {
    let len = count.checked_mul(elem)?.checked_add(head)?;
    Some(len.max(fixed))
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_ne_bytes(b)
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_ne_bytes(b)
}

/// The argument of `IOCTL_GNTDEV_MAP_GRANT_REF` for `refs` of `domid`: the struct with
/// `count` trailing `ioctl_gntdev_grant_ref`s. The kernel writes `index` back.
pub fn map_grant_ref_request(domid: u16, refs: &[u32]) -> Option<Vec<u8>> {
    let head = offset_of!(GntdevMapGrantRef, refs);
    let elem = size_of::<GntdevGrantRef>();
    let len = request_len(size_of::<GntdevMapGrantRef>(), head, elem, refs.len())?;
    let mut buf = vec![0u8; len];
    let count = u32::try_from(refs.len()).ok()?;
    put(
        &mut buf,
        offset_of!(GntdevMapGrantRef, count),
        &count.to_ne_bytes(),
    );
    for (i, r) in refs.iter().enumerate() {
        let at = head + i * elem;
        let domid = u32::from(domid).to_ne_bytes();
        put(&mut buf, at + offset_of!(GntdevGrantRef, domid), &domid);
        put(
            &mut buf,
            at + offset_of!(GntdevGrantRef, gref),
            &r.to_ne_bytes(),
        );
    }
    Some(buf)
}

/// The `index` the kernel wrote into a map request.
pub fn map_grant_ref_index(buf: &[u8]) -> u64 {
    get_u64(buf, offset_of!(GntdevMapGrantRef, index))
}

/// The argument of `IOCTL_GNTALLOC_ALLOC_GREF`: `count` pages for `domid`, room for the
/// `count` grant refs the kernel writes back.
pub fn alloc_gref_request(domid: u16, writable: bool, count: usize) -> Option<Vec<u8>> {
    let head = offset_of!(GntallocAllocGref, gref_ids);
    let len = request_len(size_of::<GntallocAllocGref>(), head, 4, count)?;
    let mut buf = vec![0u8; len];
    let flags = if writable { GNTALLOC_FLAG_WRITABLE } else { 0 };
    let count = u32::try_from(count).ok()?;
    put(
        &mut buf,
        offset_of!(GntallocAllocGref, domid),
        &domid.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(GntallocAllocGref, flags),
        &flags.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(GntallocAllocGref, count),
        &count.to_ne_bytes(),
    );
    Some(buf)
}

/// The `index` and the first `count` grant refs the kernel wrote into an alloc request.
pub fn alloc_gref_reply(buf: &[u8], count: usize) -> (u64, Vec<u32>) {
    let head = offset_of!(GntallocAllocGref, gref_ids);
    let index = get_u64(buf, offset_of!(GntallocAllocGref, index));
    let refs = (0..count).map(|i| get_u32(buf, head + 4 * i)).collect();
    (index, refs)
}

#[cfg(test)]
mod tests;
