//! Xen's public ABI for x86_64: hypercall numbers, sub-ops and the argument structs, each a
//! `#[repr(C)]` type whose field offsets are checked at compile time against the C layout.
#![forbid(unsafe_code)]

/// Little-endian field codec for the integer types the ABI uses.
pub trait Le: Sized + Copy {
    /// Writes `self` at `off` (the macro guarantees the field lies inside `b`).
    fn put(&self, b: &mut [u8], off: usize);
    /// Reads a value at `off`.
    fn get(b: &[u8], off: usize) -> Self;
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl Le for $t {
            fn put(&self, b: &mut [u8], off: usize) {
                let n = core::mem::size_of::<$t>();
                b[off..off + n].copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8], off: usize) -> Self {
                const N: usize = core::mem::size_of::<$t>();
                let mut a = [0u8; N];
                a.copy_from_slice(&b[off..off + N]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64, i8, i16);

impl<const N: usize> Le for [u8; N] {
    fn put(&self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(self);
    }
    fn get(b: &[u8], off: usize) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[off..off + N]);
        a
    }
}

/// Integer view of a field, for the vector tests (arrays read as 0).
pub trait AsI64 {
    /// The value widened; arrays are not integers and give `None`.
    fn as_i64(&self) -> Option<i64>;
    /// Sets from a widened value (truncating, as the C field would).
    fn set_i64(&mut self, v: i64);
}

macro_rules! as_i64_int {
    ($($t:ty),*) => {$(
        impl AsI64 for $t {
            fn as_i64(&self) -> Option<i64> { Some(*self as i64) }
            fn set_i64(&mut self, v: i64) { *self = v as $t; }
        }
    )*};
}
as_i64_int!(u8, u16, u32, u64, i8, i16);

impl<const N: usize> AsI64 for [u8; N] {
    fn as_i64(&self) -> Option<i64> {
        None
    }
    fn set_i64(&mut self, _v: i64) {}
}

/// A fixed-layout ABI struct: its C name, size, and a byte codec.
pub trait Wire: Sized + Default {
    /// The C struct name (`evtchn_alloc_unbound`).
    const C_NAME: &'static str;
    /// `sizeof` in C.
    const SIZE: usize;
    /// `(name as in the vectors, offset)` of each field.
    const FIELDS: &'static [(&'static str, usize)];
    /// The bytes Xen sees; padding is zero.
    fn encode(&self, out: &mut [u8]);
    /// Decodes `SIZE` bytes; `None` if `b` is shorter.
    fn decode(b: &[u8]) -> Option<Self>;
    /// A field by its vector name, widened.
    fn field(&self, name: &str) -> Option<i64>;
    /// Sets a field by its vector name; false if there is no such integer field.
    fn set_field(&mut self, name: &str, v: i64) -> bool;
}

macro_rules! wire_struct {
    (
        $(#[$m:meta])* $name:ident = $c:literal, $size:literal {
            $( $(#[$fm:meta])* $f:ident : $t:ty = $wire:literal @ $off:literal ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        // The Rust layout is the C layout: size and every offset, checked by the compiler.
        const _: () = {
            assert!(core::mem::size_of::<$name>() == $size);
            $( assert!(core::mem::offset_of!($name, $f) == $off); )*
        };

        impl Wire for $name {
            const C_NAME: &'static str = $c;
            const SIZE: usize = $size;
            const FIELDS: &'static [(&'static str, usize)] = &[$(($wire, $off)),*];
            fn encode(&self, out: &mut [u8]) {
                out[..$size].fill(0);
                $( Le::put(&self.$f, out, $off); )*
            }
            fn decode(b: &[u8]) -> Option<Self> {
                let b = b.get(..$size)?;
                Some(Self { $( $f: Le::get(b, $off), )* })
            }
            fn field(&self, name: &str) -> Option<i64> {
                match name { $( $wire => AsI64::as_i64(&self.$f), )* _ => None }
            }
            fn set_field(&mut self, name: &str, v: i64) -> bool {
                match name {
                    $( $wire => { AsI64::set_i64(&mut self.$f, v); AsI64::as_i64(&self.$f).is_some() } )*
                    _ => false,
                }
            }
        }

        impl $name {
            /// The bytes as Xen sees them.
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut b = [0u8; $size];
                self.encode(&mut b);
                b
            }
        }
    };
}

/// Hypercall numbers (`__HYPERVISOR_*`, xen.h \[X\]).
pub mod hc {
    /// `set_trap_table`
    pub const SET_TRAP_TABLE: u32 = 0;
    /// `mmu_update`
    pub const MMU_UPDATE: u32 = 1;
    /// `set_callbacks`
    pub const SET_CALLBACKS: u32 = 4;
    /// `memory_op`
    pub const MEMORY_OP: u32 = 12;
    /// `update_va_mapping`
    pub const UPDATE_VA_MAPPING: u32 = 14;
    /// `set_timer_op`
    pub const SET_TIMER_OP: u32 = 15;
    /// `xen_version`
    pub const XEN_VERSION: u32 = 17;
    /// `console_io`
    pub const CONSOLE_IO: u32 = 18;
    /// `grant_table_op`
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `vcpu_op`
    pub const VCPU_OP: u32 = 24;
    /// `mmuext_op`
    pub const MMUEXT_OP: u32 = 26;
    /// `sched_op`
    pub const SCHED_OP: u32 = 29;
    /// `callback_op`
    pub const CALLBACK_OP: u32 = 30;
    /// `event_channel_op`
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `hvm_op`
    pub const HVM_OP: u32 = 34;
}

/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7FF0;
/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMEM_memory_map`.
pub const XENMEM_MEMORY_MAP: u32 = 9;
/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `HVMOP_set_param`.
pub const HVMOP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param`.
pub const HVMOP_GET_PARAM: u32 = 1;
/// `HVM_PARAM_CALLBACK_IRQ`: how events are delivered; non-zero tells the toolstack the guest
/// has PV drivers (libxl refuses `xl shutdown` of a PVH guest without it).
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_CALLBACK_TYPE_VECTOR` in bits 63:56 of the CALLBACK_IRQ value.
pub const CALLBACK_TYPE_VECTOR: u64 = 2 << 56;
/// `HVM_PARAM_STORE_PFN`.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN`.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u32 = 0;
/// `SCHEDOP_shutdown`.
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// `SCHEDOP_poll`.
pub const SCHEDOP_POLL: u32 = 3;
/// `EVTCHNOP_bind_interdomain`.
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_close`.
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_alloc_unbound`.
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u32 = 9;
/// `VIRQ_TIMER`.
pub const VIRQ_TIMER: u32 = 0;
/// `GNTTABOP_map_grant_ref`.
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref`.
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTMAP_host_map`.
pub const GNTMAP_HOST_MAP: u32 = 2;
/// `GNTMAP_readonly`.
pub const GNTMAP_READONLY: u32 = 4;
/// `GNTTABOP_setup_table`.
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// `GNTTABOP_query_size`.
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// `MMUEXT_TLB_FLUSH_LOCAL`.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `UVMF_INVLPG`.
pub const UVMF_INVLPG: u64 = 2;
/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u32 = 0;

/// CPUID leaves where a hypervisor signature may sit: `0x4000_0000 + 0x100 * k`.
pub const CPUID_BASES: core::ops::Range<u32> = 0x4000_0000..0x4001_0000;

/// Whether CPUID leaf `base` (`[eax, ebx, ecx, edx]`) is Xen's: "XenVMMXenVMM" in ebx:ecx:edx
/// and at least the leaves up to `base + 2` (which names the hypercall MSR).
pub fn is_xen_leaf(base: u32, regs: [u32; 4]) -> bool {
    let [eax, ebx, ecx, edx] = regs;
    ebx == 0x566e_6558 && ecx == 0x6558_4d4d && edx == 0x4d4d_566e && eax >= base.wrapping_add(2)
}

/// Why a domain stops (`SHUTDOWN_*`, sched.h \[X\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// Clean exit.
    Poweroff = 0,
    /// Restart.
    Reboot = 1,
    /// Suspend (not used here).
    Suspend = 2,
    /// Crashed: the toolstack keeps or restarts the domain per its `on_crash`.
    Crash = 3,
}

wire_struct! {
    /// `struct sched_shutdown` (sched.h \[X\]).
    SchedShutdown = "sched_shutdown", 4 {
        /// A [`ShutdownReason`].
        reason: u32 = "reason" @ 0,
    }
}

wire_struct! {
    /// `struct sched_poll` (sched.h \[X\]): wait for any of `ports` or until `timeout` (Xen
    /// system time, ns; 0 = none).
    SchedPoll = "sched_poll", 24 {
        /// Guest address of a `u32` port array.
        ports: u64 = "ports" @ 0,
        /// Number of ports.
        nr_ports: u32 = "nr_ports" @ 8,
        /// Absolute timeout in Xen system time.
        timeout: u64 = "timeout" @ 16,
    }
}

wire_struct! {
    /// `struct evtchn_alloc_unbound` (event_channel.h \[X\]).
    EvtchnAllocUnbound = "evtchn_alloc_unbound", 8 {
        /// `DOMID_SELF`.
        dom: u16 = "dom" @ 0,
        /// Who may bind.
        remote_dom: u16 = "remote_dom" @ 2,
        /// OUT: the new port.
        port: u32 = "port" @ 4,
    }
}

wire_struct! {
    /// `struct evtchn_bind_interdomain` (event_channel.h \[X\]).
    EvtchnBindInterdomain = "evtchn_bind_interdomain", 12 {
        /// The peer.
        remote_dom: u16 = "remote_dom" @ 0,
        /// The peer's unbound port.
        remote_port: u32 = "remote_port" @ 4,
        /// OUT: our port.
        local_port: u32 = "local_port" @ 8,
    }
}

wire_struct! {
    /// `struct evtchn_bind_virq` (event_channel.h \[X\]).
    EvtchnBindVirq = "evtchn_bind_virq", 12 {
        /// `VIRQ_*`.
        virq: u32 = "virq" @ 0,
        /// The vCPU to notify.
        vcpu: u32 = "vcpu" @ 4,
        /// OUT: the port.
        port: u32 = "port" @ 8,
    }
}

wire_struct! {
    /// `struct evtchn_close`, `evtchn_send` and `evtchn_unmask` share this layout.
    EvtchnPortArg = "evtchn_send", 4 {
        /// The port.
        port: u32 = "port" @ 0,
    }
}

wire_struct! {
    /// `struct evtchn_status` with the interdomain member of its union (event_channel.h \[X\]).
    EvtchnStatus = "evtchn_status", 24 {
        /// `DOMID_SELF`.
        dom: u16 = "dom" @ 0,
        /// The port asked about.
        port: u32 = "port" @ 4,
        /// OUT: `EVTCHNSTAT_*`.
        status: u32 = "status" @ 8,
        /// OUT: the vCPU notified.
        vcpu: u32 = "vcpu" @ 12,
        /// OUT: interdomain peer.
        peer_dom: u16 = "u.interdomain.dom" @ 16,
        /// OUT: interdomain peer port.
        peer_port: u32 = "u.interdomain.port" @ 20,
    }
}

wire_struct! {
    /// `struct xen_add_to_physmap` (memory.h \[X\]).
    AddToPhysmap = "xen_add_to_physmap", 24 {
        /// `DOMID_SELF`.
        domid: u16 = "domid" @ 0,
        /// Only for the gmfn_range space.
        size: u16 = "size" @ 2,
        /// `XENMAPSPACE_*`.
        space: u32 = "space" @ 4,
        /// Index in the space (grant frame number).
        idx: u64 = "idx" @ 8,
        /// Where to put it.
        gpfn: u64 = "gpfn" @ 16,
    }
}

wire_struct! {
    /// `struct xen_memory_map` (memory.h \[X\]).
    MemoryMap = "xen_memory_map", 16 {
        /// IN: capacity; OUT: entries written.
        nr_entries: u32 = "nr_entries" @ 0,
        /// Guest address of the e820 buffer.
        buffer: u64 = "buffer" @ 8,
    }
}

wire_struct! {
    /// `struct xen_hvm_param` (hvm_op.h \[X\]).
    HvmParam = "xen_hvm_param", 16 {
        /// `DOMID_SELF`.
        domid: u16 = "domid" @ 0,
        /// Zero.
        pad: u16 = "pad" @ 2,
        /// `HVM_PARAM_*`.
        index: u32 = "index" @ 4,
        /// IN (set) or OUT (get).
        value: u64 = "value" @ 8,
    }
}

wire_struct! {
    /// `struct xen_hvm_evtchn_upcall_vector` (hvm_op.h \[X\]).
    HvmUpcallVector = "xen_hvm_evtchn_upcall_vector", 8 {
        /// The vCPU.
        vcpu: u32 = "vcpu" @ 0,
        /// The IDT vector.
        vector: u8 = "vector" @ 4,
    }
}

wire_struct! {
    /// `struct vcpu_set_singleshot_timer` (vcpu.h \[X\]).
    SingleshotTimer = "vcpu_set_singleshot_timer", 16 {
        /// Absolute Xen system time.
        timeout_abs_ns: u64 = "timeout_abs_ns" @ 0,
        /// `VCPU_SSHOTTMR_future` = 1.
        flags: u32 = "flags" @ 8,
    }
}

wire_struct! {
    /// `struct vcpu_register_vcpu_info` (vcpu.h \[X\]).
    RegisterVcpuInfo = "vcpu_register_vcpu_info", 16 {
        /// Frame holding the new vcpu_info.
        mfn: u64 = "mfn" @ 0,
        /// Offset in that frame.
        offset: u32 = "offset" @ 8,
        /// Zero.
        rsvd: u32 = "rsvd" @ 12,
    }
}

wire_struct! {
    /// `struct mmu_update` (xen.h \[X\]).
    MmuUpdate = "mmu_update", 16 {
        /// Machine address of the PTE, low bits = `MMU_*` command.
        ptr: u64 = "ptr" @ 0,
        /// The new PTE.
        val: u64 = "val" @ 8,
    }
}

wire_struct! {
    /// `struct mmuext_op` with a frame (`arg1.mfn`) and an unused `arg2`.
    MmuextOp = "mmuext_op", 24 {
        /// `MMUEXT_*`.
        cmd: u32 = "cmd" @ 0,
        /// `arg1.mfn` or `arg1.linear_addr`.
        arg1: u64 = "arg1.mfn" @ 8,
        /// `arg2` (nr_ents, vcpumask or src_mfn).
        arg2: u64 = "arg2" @ 16,
    }
}

wire_struct! {
    /// `struct callback_register` (callback.h \[X\]).
    CallbackRegister = "callback_register", 16 {
        /// `CALLBACKTYPE_*`.
        ty: u16 = "type" @ 0,
        /// `CALLBACKF_*`.
        flags: u16 = "flags" @ 2,
        /// Handler address.
        address: u64 = "address" @ 8,
    }
}

wire_struct! {
    /// `struct grant_entry_v1` (grant_table.h \[X\]).
    GrantEntryV1 = "grant_entry_v1", 8 {
        /// `GTF_*`; written last when granting.
        flags: u16 = "flags" @ 0,
        /// The domain allowed to use the grant.
        domid: u16 = "domid" @ 2,
        /// The frame (a GFN on PVH, an MFN on PV).
        frame: u32 = "frame" @ 4,
    }
}

wire_struct! {
    /// `struct gnttab_map_grant_ref` (grant_table.h \[X\]).
    GnttabMapGrantRef = "gnttab_map_grant_ref", 32 {
        /// Where to map (a GPA on PVH, a VA on PV).
        host_addr: u64 = "host_addr" @ 0,
        /// `GNTMAP_*`.
        flags: u32 = "flags" @ 8,
        /// The grant.
        gref: u32 = "ref" @ 12,
        /// The granting domain.
        dom: u16 = "dom" @ 16,
        /// OUT: `GNTST_*`.
        status: i16 = "status" @ 18,
        /// OUT: handle for unmapping.
        handle: u32 = "handle" @ 20,
        /// OUT: bus address.
        dev_bus_addr: u64 = "dev_bus_addr" @ 24,
    }
}

wire_struct! {
    /// `struct gnttab_unmap_grant_ref` (grant_table.h \[X\]).
    GnttabUnmapGrantRef = "gnttab_unmap_grant_ref", 24 {
        /// The mapped address.
        host_addr: u64 = "host_addr" @ 0,
        /// The bus address (0).
        dev_bus_addr: u64 = "dev_bus_addr" @ 8,
        /// The map handle.
        handle: u32 = "handle" @ 16,
        /// OUT: `GNTST_*`.
        status: i16 = "status" @ 20,
    }
}

wire_struct! {
    /// `struct gnttab_setup_table` (grant_table.h \[X\]).
    GnttabSetupTable = "gnttab_setup_table", 24 {
        /// `DOMID_SELF`.
        dom: u16 = "dom" @ 0,
        /// Frames wanted.
        nr_frames: u32 = "nr_frames" @ 4,
        /// OUT: `GNTST_*`.
        status: i16 = "status" @ 8,
        /// Guest address of a `u64` frame array (OUT).
        frame_list: u64 = "frame_list" @ 16,
    }
}

wire_struct! {
    /// `struct gnttab_query_size` (grant_table.h \[X\]).
    GnttabQuerySize = "gnttab_query_size", 16 {
        /// `DOMID_SELF`.
        dom: u16 = "dom" @ 0,
        /// OUT: frames in use.
        nr_frames: u32 = "nr_frames" @ 4,
        /// OUT: the most frames allowed.
        max_nr_frames: u32 = "max_nr_frames" @ 8,
        /// OUT: `GNTST_*`.
        status: i16 = "status" @ 12,
    }
}

wire_struct! {
    /// `struct gnttab_copy` with a grant-ref source and a GMFN destination.
    GnttabCopy = "gnttab_copy", 40 {
        /// `source.u.ref`.
        src_ref: u32 = "source.u.ref" @ 0,
        /// The rest of the `source.u` union (`gmfn` is 8 bytes).
        src_pad: u32 = "_source.u.pad" @ 4,
        /// `source.domid`.
        src_dom: u16 = "source.domid" @ 8,
        /// `source.offset`.
        src_offset: u16 = "source.offset" @ 10,
        /// `dest.u.gmfn`.
        dst_gmfn: u64 = "dest.u.gmfn" @ 16,
        /// `dest.domid`.
        dst_dom: u16 = "dest.domid" @ 24,
        /// `dest.offset`.
        dst_offset: u16 = "dest.offset" @ 26,
        /// Tail padding of the `dest` struct.
        dst_pad: u32 = "_dest.pad" @ 28,
        /// Bytes to copy.
        len: u16 = "len" @ 32,
        /// `GNTCOPY_*`.
        flags: u16 = "flags" @ 34,
        /// OUT: `GNTST_*`.
        status: i16 = "status" @ 36,
    }
}

wire_struct! {
    /// `struct vcpu_time_info` (xen.h \[X\]): Xen's scale from TSC to system time.
    VcpuTimeInfo = "vcpu_time_info", 32 {
        /// Odd while Xen updates the record.
        version: u32 = "version" @ 0,
        /// Padding.
        pad0: u32 = "pad0" @ 4,
        /// TSC at the last update.
        tsc_timestamp: u64 = "tsc_timestamp" @ 8,
        /// System time (ns since boot) at the last update.
        system_time: u64 = "system_time" @ 16,
        /// 32.32 fixed-point multiplier.
        tsc_to_system_mul: u32 = "tsc_to_system_mul" @ 24,
        /// Shift applied to the TSC delta before multiplying.
        tsc_shift: i8 = "tsc_shift" @ 28,
        /// `XEN_PVCLOCK_*`.
        flags: u8 = "flags" @ 29,
        /// Padding.
        pad1: [u8; 2] = "pad1" @ 30,
    }
}

wire_struct! {
    /// `struct vcpu_info` (xen.h \[X\]), time record flattened.
    VcpuInfo = "vcpu_info", 64 {
        /// Set by Xen when an event is pending.
        upcall_pending: u8 = "evtchn_upcall_pending" @ 0,
        /// PV only: events are not delivered while set.
        upcall_mask: u8 = "evtchn_upcall_mask" @ 1,
        /// Which words of `evtchn_pending` may have bits set.
        pending_sel: u64 = "evtchn_pending_sel" @ 8,
        /// `arch.cr2`.
        cr2: u64 = "arch.cr2" @ 16,
        /// `arch.pad`.
        arch_pad: u64 = "arch.pad" @ 24,
        /// `time.version`.
        time_version: u32 = "time.version" @ 32,
        /// `time.pad0`.
        time_pad0: u32 = "time.pad0" @ 36,
        /// `time.tsc_timestamp`.
        tsc_timestamp: u64 = "time.tsc_timestamp" @ 40,
        /// `time.system_time`.
        system_time: u64 = "time.system_time" @ 48,
        /// `time.tsc_to_system_mul`.
        tsc_to_system_mul: u32 = "time.tsc_to_system_mul" @ 56,
        /// `time.tsc_shift`.
        tsc_shift: i8 = "time.tsc_shift" @ 60,
        /// `time.flags`.
        time_flags: u8 = "time.flags" @ 61,
        /// `time.pad1`.
        time_pad1: [u8; 2] = "time.pad1" @ 62,
    }
}

/// Offsets in `struct shared_info` (xen.h \[X\]).
pub mod shared_info {
    /// `vcpu_info[0]`.
    pub const VCPU_INFO: usize = 0;
    /// Size of one `vcpu_info`.
    pub const VCPU_INFO_SIZE: usize = 64;
    /// Offset of the time record inside a `vcpu_info`.
    pub const VCPU_TIME: usize = 32;
    /// `evtchn_pending[64]`.
    pub const EVTCHN_PENDING: usize = 2048;
    /// `evtchn_mask[64]`.
    pub const EVTCHN_MASK: usize = 2560;
    /// `wc_version`.
    pub const WC_VERSION: usize = 3072;
    /// `wc_sec`.
    pub const WC_SEC: usize = 3076;
    /// `wc_nsec`.
    pub const WC_NSEC: usize = 3080;
    /// `wc_sec_hi`.
    pub const WC_SEC_HI: usize = 3084;
    /// `sizeof(struct shared_info)`.
    pub const SIZE: usize = 3136;
}

/// Grant flags (`GTF_*`, grant_table.h \[X\]).
pub mod gtf {
    /// `GTF_permit_access`.
    pub const PERMIT_ACCESS: u16 = 1;
    /// `GTF_readonly`.
    pub const READONLY: u16 = 4;
    /// `GTF_reading`: the peer has it mapped or is copying from it.
    pub const READING: u16 = 8;
    /// `GTF_writing`: the peer has it mapped writable or is copying to it.
    pub const WRITING: u16 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_vectors::{load, Vector};

    /// Both directions for one vector: fields -> bytes == hex, hex -> fields == values.
    fn both_ways<T: Wire + core::fmt::Debug + PartialEq>(v: &Vector) {
        let hex = v.bytes();
        assert_eq!(hex.len(), T::SIZE, "{}: size", v.name);
        let mut t = T::default();
        for f in &v.fields {
            if f.ty == "pad" || f.ty == "region" || f.ty.starts_with("u8[") {
                continue;
            }
            let val = v.u64(&f.name) as i64;
            assert!(
                t.set_field(&f.name, val),
                "{}: {} has no field {}",
                v.name,
                T::C_NAME,
                f.name
            );
            let off = T::FIELDS
                .iter()
                .find(|(n, _)| *n == f.name)
                .map(|(_, o)| *o);
            assert_eq!(off, Some(f.offset), "{}: offset of {}", v.name, f.name);
        }
        let mut out = vec![0xAAu8; T::SIZE];
        t.encode(&mut out);
        assert_eq!(out, hex, "{}: encode", v.name);
        let d = T::decode(&hex).expect("full length");
        for f in v
            .fields
            .iter()
            .filter(|f| f.value.is_i64() || f.value.is_u64())
        {
            if let Some(got) = d.field(&f.name) {
                assert_eq!(got, v.u64(&f.name) as i64, "{}: decoded {}", v.name, f.name);
            }
        }
        assert_eq!(d, t);
        assert!(
            T::decode(&hex[..T::SIZE - 1]).is_none(),
            "short input refused"
        );
    }

    #[test]
    fn vectors_every_hypercall_struct_both_ways() {
        let vf = load("boot.json");
        let mut n = 0;
        for v in &vf.vectors {
            match v.struct_.as_str() {
                "sched_shutdown" => both_ways::<SchedShutdown>(v),
                "sched_poll" => both_ways::<SchedPoll>(v),
                "evtchn_alloc_unbound" => both_ways::<EvtchnAllocUnbound>(v),
                "evtchn_bind_interdomain" => both_ways::<EvtchnBindInterdomain>(v),
                "evtchn_bind_virq" => both_ways::<EvtchnBindVirq>(v),
                "evtchn_close" | "evtchn_send" | "evtchn_unmask" => both_ways::<EvtchnPortArg>(v),
                "evtchn_status" => both_ways::<EvtchnStatus>(v),
                "xen_add_to_physmap" => both_ways::<AddToPhysmap>(v),
                "xen_memory_map" => both_ways::<MemoryMap>(v),
                "xen_hvm_param" => both_ways::<HvmParam>(v),
                "xen_hvm_evtchn_upcall_vector" => both_ways::<HvmUpcallVector>(v),
                "vcpu_set_singleshot_timer" => both_ways::<SingleshotTimer>(v),
                "vcpu_register_vcpu_info" => both_ways::<RegisterVcpuInfo>(v),
                "mmu_update" => both_ways::<MmuUpdate>(v),
                "mmuext_op" => both_ways::<MmuextOp>(v),
                "callback_register" => both_ways::<CallbackRegister>(v),
                "gnttab_map_grant_ref" => both_ways::<GnttabMapGrantRef>(v),
                "gnttab_unmap_grant_ref" => both_ways::<GnttabUnmapGrantRef>(v),
                "gnttab_setup_table" => both_ways::<GnttabSetupTable>(v),
                "gnttab_query_size" => both_ways::<GnttabQuerySize>(v),
                "gnttab_copy" => both_ways::<GnttabCopy>(v),
                "vcpu_time_info" => both_ways::<VcpuTimeInfo>(v),
                "vcpu_info" => both_ways::<VcpuInfo>(v),
                _ => continue,
            }
            n += 1;
        }
        assert_eq!(n, 27, "every hypercall-struct vector was checked");
    }

    #[test]
    fn xen_signature_is_xenvmmxenvmm() {
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&0x566e_6558u32.to_le_bytes());
        sig[4..8].copy_from_slice(&0x6558_4d4du32.to_le_bytes());
        sig[8..].copy_from_slice(&0x4d4d_566eu32.to_le_bytes());
        assert_eq!(&sig, b"XenVMMXenVMM");
        let regs = [0x4000_0105, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
        assert!(is_xen_leaf(0x4000_0100, regs));
        assert!(!is_xen_leaf(0x4000_0104, regs), "leaf base+2 must exist");
        assert!(
            !is_xen_leaf(0x4000_0000, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
            "KVM is not Xen"
        );
    }

    #[test]
    fn vectors_grant_entries_both_ways() {
        let vf = load("boot.json");
        let v = vf.get("grant_entry_v1 x2");
        let hex = v.bytes();
        for i in 0..2 {
            let e = GrantEntryV1 {
                flags: v.u64(&format!("[{i}].flags")) as u16,
                domid: v.u64(&format!("[{i}].domid")) as u16,
                frame: v.u64(&format!("[{i}].frame")) as u32,
            };
            assert_eq!(e.to_bytes()[..], hex[i * 8..i * 8 + 8]);
            assert_eq!(GrantEntryV1::decode(&hex[i * 8..]), Some(e));
        }
    }

    #[test]
    fn sizes_match_header_constants() {
        let vf = load("boot.json");
        for (c, size) in [
            ("sizeof(struct sched_poll)", SchedPoll::SIZE),
            ("sizeof(struct evtchn_status)", EvtchnStatus::SIZE),
            ("sizeof(struct xen_add_to_physmap)", AddToPhysmap::SIZE),
            ("sizeof(struct vcpu_time_info)", VcpuTimeInfo::SIZE),
            ("sizeof(struct vcpu_info)", VcpuInfo::SIZE),
            ("sizeof(struct gnttab_copy)", GnttabCopy::SIZE),
            ("sizeof(struct grant_entry_v1)", GrantEntryV1::SIZE),
            ("sizeof(struct shared_info)", shared_info::SIZE),
            (
                "offsetof(struct shared_info, evtchn_pending)",
                shared_info::EVTCHN_PENDING,
            ),
            (
                "offsetof(struct shared_info, evtchn_mask)",
                shared_info::EVTCHN_MASK,
            ),
            (
                "offsetof(struct shared_info, wc_version)",
                shared_info::WC_VERSION,
            ),
            ("offsetof(struct shared_info, wc_sec)", shared_info::WC_SEC),
            (
                "offsetof(struct shared_info, wc_nsec)",
                shared_info::WC_NSEC,
            ),
            (
                "offsetof(struct shared_info, wc_sec_hi)",
                shared_info::WC_SEC_HI,
            ),
            ("offsetof(struct vcpu_info, time)", shared_info::VCPU_TIME),
        ] {
            assert_eq!(vf.constant(c), size as i64, "{c}");
        }
        for (c, v) in [
            ("__HYPERVISOR_memory_op", hc::MEMORY_OP),
            ("__HYPERVISOR_sched_op", hc::SCHED_OP),
            ("__HYPERVISOR_event_channel_op", hc::EVENT_CHANNEL_OP),
            ("__HYPERVISOR_hvm_op", hc::HVM_OP),
            ("__HYPERVISOR_grant_table_op", hc::GRANT_TABLE_OP),
            ("__HYPERVISOR_update_va_mapping", hc::UPDATE_VA_MAPPING),
            ("__HYPERVISOR_xen_version", hc::XEN_VERSION),
            ("__HYPERVISOR_vcpu_op", hc::VCPU_OP),
            ("SCHEDOP_poll", SCHEDOP_POLL),
            ("SCHEDOP_shutdown", SCHEDOP_SHUTDOWN),
            ("EVTCHNOP_alloc_unbound", EVTCHNOP_ALLOC_UNBOUND),
            ("EVTCHNOP_bind_interdomain", EVTCHNOP_BIND_INTERDOMAIN),
            ("EVTCHNOP_bind_virq", EVTCHNOP_BIND_VIRQ),
            ("EVTCHNOP_send", EVTCHNOP_SEND),
            ("EVTCHNOP_close", EVTCHNOP_CLOSE),
            ("EVTCHNOP_unmask", EVTCHNOP_UNMASK),
            ("HVM_PARAM_CONSOLE_PFN", HVM_PARAM_CONSOLE_PFN),
            ("HVM_PARAM_CONSOLE_EVTCHN", HVM_PARAM_CONSOLE_EVTCHN),
            ("HVM_PARAM_STORE_PFN", HVM_PARAM_STORE_PFN),
            ("HVM_PARAM_CALLBACK_IRQ", HVM_PARAM_CALLBACK_IRQ),
            ("HVM_PARAM_STORE_EVTCHN", HVM_PARAM_STORE_EVTCHN),
            ("XENMEM_add_to_physmap", XENMEM_ADD_TO_PHYSMAP),
            ("XENMAPSPACE_grant_table", XENMAPSPACE_GRANT_TABLE),
            ("GNTTABOP_setup_table", GNTTABOP_SETUP_TABLE),
            ("GNTTABOP_map_grant_ref", GNTTABOP_MAP_GRANT_REF),
            ("MMUEXT_TLB_FLUSH_LOCAL", MMUEXT_TLB_FLUSH_LOCAL),
            ("GNTTABOP_unmap_grant_ref", GNTTABOP_UNMAP_GRANT_REF),
            ("GNTMAP_host_map", GNTMAP_HOST_MAP),
            ("GNTMAP_readonly", GNTMAP_READONLY),
            ("VCPUOP_set_singleshot_timer", VCPUOP_SET_SINGLESHOT_TIMER),
        ] {
            assert_eq!(vf.constant(c), i64::from(v), "{c}");
        }
        assert_eq!(vf.constant("DOMID_SELF"), i64::from(DOMID_SELF));
        let t = vf.constant("HVM_PARAM_CALLBACK_TYPE_VECTOR") as u64;
        assert_eq!(t << 56, CALLBACK_TYPE_VECTOR);
        assert_eq!(vf.constant("SHUTDOWN_crash"), ShutdownReason::Crash as i64);
        assert_eq!(
            vf.constant("GTF_permit_access"),
            i64::from(gtf::PERMIT_ACCESS)
        );
        assert_eq!(vf.constant("GTF_reading"), i64::from(gtf::READING));
        assert_eq!(vf.constant("GTF_writing"), i64::from(gtf::WRITING));
        assert_eq!(vf.constant("GTF_readonly"), i64::from(gtf::READONLY));
    }
}
