//! Hypercalls through the hypercall page, and typed wrappers for the ones the runtime uses.
//! Wrappers that only pass values or our own argument structs are safe; the ones that change
//! our memory map are `unsafe fn`.

use core::arch::asm;

use crate::abi::{self, hc, Wire};
use crate::boot;

/// A negative errno from Xen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenErrno(pub i64);

impl core::fmt::Display for XenErrno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Xen returned error {}", self.0)
    }
}

fn result(r: i64) -> Result<i64, XenErrno> {
    if r < 0 {
        Err(XenErrno(r))
    } else {
        Ok(r)
    }
}

/// Issues hypercall `nr` through the page.
///
/// # Safety
/// 1. The hypercall page is installed (PV: by the builder; PVH: [`install_page`]).
/// 2. Any pointer argument points at memory valid for what this hypercall reads or writes.
/// 3. The hypercall's effect on our memory map is one the caller has accounted for.
pub unsafe fn raw(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let entry = boot::hypercall_page_addr() + u64::from(nr) * 32;
    let ret: i64;
    // SAFETY: the stub at `entry` is Xen's and clobbers only the argument registers, rax, rcx
    // and r11 (listed); memory effects are the caller's contract. Our crates are built without
    // a red zone, so the `call`'s push overwrites nothing live.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Calls with a pointer to one of our argument structs.
fn with_arg<T: Wire>(nr: u32, cmd: u32, arg: &mut T) -> Result<i64, XenErrno> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` struct of the C layout (checked
    // at compile time in `abi`); these commands read and write only that struct.
    result(unsafe { raw(nr, u64::from(cmd), arg as *mut T as u64, 0, 0, 0) })
}

/// PVH: asks Xen to fill our hypercall page, through the MSR CPUID leaf `base + 2` names.
pub fn install_page(cpuid_base: u32) {
    let [_pages, msr, _, _] = boot::cpuid(cpuid_base + 2);
    // SAFETY: this MSR makes Xen write its stubs into our hypercall page, which is reserved for
    // them in .text; Xen writes nothing else.
    unsafe { boot::wrmsr(msr, boot::hypercall_page_addr()) };
}

/// `xen_version(XENVER_version)`: `(major, minor)`.
pub fn xen_version() -> (u32, u32) {
    // SAFETY: XENVER_version takes no buffer.
    let v = unsafe { raw(hc::XEN_VERSION, u64::from(abi::XENVER_VERSION), 0, 0, 0, 0) } as u32;
    (v >> 16, v & 0xffff)
}

/// `SCHEDOP_shutdown`: never returns when Xen accepts it.
pub fn shutdown(reason: abi::ShutdownReason) -> ! {
    let mut a = abi::SchedShutdown {
        reason: reason as u32,
    };
    loop {
        let _ = with_arg(hc::SCHED_OP, abi::SCHEDOP_SHUTDOWN, &mut a);
    }
}

/// `SCHEDOP_yield`.
pub fn yield_now() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { raw(hc::SCHED_OP, u64::from(abi::SCHEDOP_YIELD), 0, 0, 0, 0) };
}

/// `SCHEDOP_poll`: waits until one of `ports` is pending or Xen system time reaches
/// `timeout_ns` (0 = no timeout). Event delivery stays masked.
pub fn poll(ports: &[u32], timeout_ns: u64) -> Result<(), XenErrno> {
    let mut a = abi::SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        timeout: timeout_ns,
    };
    with_arg(hc::SCHED_OP, abi::SCHEDOP_POLL, &mut a).map(|_| ())
}

/// `HVMOP_get_param` for our own domain.
pub fn hvm_get_param(index: u32) -> Result<u64, XenErrno> {
    let mut a = abi::HvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    with_arg(hc::HVM_OP, abi::HVMOP_GET_PARAM, &mut a).map(|_| a.value)
}

/// `HVMOP_set_param` for our own domain.
pub fn hvm_set_param(index: u32, value: u64) -> Result<(), XenErrno> {
    let mut a = abi::HvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value,
    };
    with_arg(hc::HVM_OP, abi::HVMOP_SET_PARAM, &mut a).map(|_| ())
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> Result<(), XenErrno> {
    let mut a = abi::EvtchnPortArg { port };
    with_arg(hc::EVENT_CHANNEL_OP, abi::EVTCHNOP_SEND, &mut a).map(|_| ())
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> Result<(), XenErrno> {
    let mut a = abi::EvtchnPortArg { port };
    with_arg(hc::EVENT_CHANNEL_OP, abi::EVTCHNOP_CLOSE, &mut a).map(|_| ())
}

/// `EVTCHNOP_alloc_unbound`: a port `remote` may bind.
pub fn evtchn_alloc_unbound(remote: u16) -> Result<u32, XenErrno> {
    let mut a = abi::EvtchnAllocUnbound {
        dom: abi::DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    with_arg(hc::EVENT_CHANNEL_OP, abi::EVTCHNOP_ALLOC_UNBOUND, &mut a).map(|_| a.port)
}

/// `EVTCHNOP_bind_interdomain`.
pub fn evtchn_bind_interdomain(remote: u16, remote_port: u32) -> Result<u32, XenErrno> {
    let mut a = abi::EvtchnBindInterdomain {
        remote_dom: remote,
        remote_port,
        local_port: 0,
    };
    with_arg(hc::EVENT_CHANNEL_OP, abi::EVTCHNOP_BIND_INTERDOMAIN, &mut a).map(|_| a.local_port)
}

/// `EVTCHNOP_bind_virq` on vCPU 0.
pub fn evtchn_bind_virq(virq: u32) -> Result<u32, XenErrno> {
    let mut a = abi::EvtchnBindVirq {
        virq,
        vcpu: 0,
        port: 0,
    };
    with_arg(hc::EVENT_CHANNEL_OP, abi::EVTCHNOP_BIND_VIRQ, &mut a).map(|_| a.port)
}

/// `set_timer_op`: a one-shot timer at Xen system time `ns` (fires VIRQ_TIMER); 0 cancels.
pub fn set_timer(ns: u64) -> Result<(), XenErrno> {
    // SAFETY: set_timer_op takes a value, no memory.
    result(unsafe { raw(hc::SET_TIMER_OP, ns, 0, 0, 0, 0) }).map(|_| ())
}

/// `XENMEM_add_to_physmap` for our own domain (PVH: shared_info, grant frames).
///
/// # Safety
/// The page at `gpfn` is replaced by Xen's: nothing in Rust may use its old contents.
pub unsafe fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), XenErrno> {
    let mut a = abi::AddToPhysmap {
        domid: abi::DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    with_arg(hc::MEMORY_OP, abi::XENMEM_ADD_TO_PHYSMAP, &mut a).map(|_| ())
}

/// `update_va_mapping` (PV): sets the PTE of `va` to `pte` and flushes it.
///
/// # Safety
/// The old mapping of `va` must not be in use by Rust; the new one must be what the caller's
/// accesses expect.
pub unsafe fn update_va_mapping(va: u64, pte: u64) -> Result<(), XenErrno> {
    // SAFETY: the caller vouches for the mapping change (contract above).
    result(unsafe { raw(hc::UPDATE_VA_MAPPING, va, pte, abi::UVMF_INVLPG, 0, 0) }).map(|_| ())
}

/// `GNTTABOP_copy`.
const GNTTABOP_COPY: u64 = 5;
/// `GNTCOPY_source_gref`: the source names a grant ref of `source.domid`.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// `GNTCOPY_dest_gref`: the destination names a grant ref of `dest.domid`.
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// One `GNTTABOP_copy`; `Err` carries Xen's return or the op's `GNTST_*` status.
pub fn grant_copy(op: &mut abi::GnttabCopy) -> Result<(), XenErrno> {
    // SAFETY: `op` is a live, exclusively borrowed C-layout `gnttab_copy`; Xen reads it and
    // writes its status, and copies only between the frames it names (its own checks refuse
    // frames we do not own and refs not granted to us).
    let r = unsafe {
        raw(
            hc::GRANT_TABLE_OP,
            GNTTABOP_COPY,
            op as *mut abi::GnttabCopy as u64,
            1,
            0,
            0,
        )
    };
    result(r)?;
    match op.status {
        0 => Ok(()),
        s => Err(XenErrno(i64::from(s))),
    }
}
