//! Boot: the asm entry points (`entry.S`), the first Rust code of both modes, and the few CPU
//! instructions the runtime needs (CPUID, MSRs, port I/O, TSC), each behind a small function.

use core::arch::{asm, global_asm};

use crate::bootinfo::{
    Cmdline, HvmStartInfo, Memmap, MemmapEntry, StartInfo, MAX_CMDLINE, MEMMAP_RAM,
};
use crate::runtime::{self, BootFacts, Mode};

global_asm!(include_str!("entry.S"), options(att_syntax));

/// Where the boot identity map's RAM part ends (PVH): 4 GiB of 2 MiB pages.
pub const IDENTITY_MAP_END: u64 = 1 << 32;
/// The grant-mapping window (PVH), identity-mapped after the RAM part: 4 to 5 GiB.
pub const MAP_WINDOW: core::ops::Range<u64> = (1 << 32)..(5 << 30);

unsafe extern "C" {
    static __image_end: u8;
    static boot_stack_guard: u8;
    static hypercall_page: u8;
}

/// First byte after the image (after .bss, page-aligned).
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

/// The stack's guard page.
pub fn stack_guard() -> u64 {
    core::ptr::addr_of!(boot_stack_guard) as u64
}

/// The hypercall page (same address virtual and physical).
pub fn hypercall_page_addr() -> u64 {
    core::ptr::addr_of!(hypercall_page) as u64
}

/// Copies `buf.len()` bytes of physical memory at `paddr` (PVH: identity-mapped below 4 GiB).
/// Returns false, copying nothing, if the range is outside the identity map.
fn copy_phys(paddr: u64, buf: &mut [u8]) -> bool {
    match paddr.checked_add(buf.len() as u64) {
        Some(end) if paddr != 0 && end <= IDENTITY_MAP_END => {
            // SAFETY: the range lies inside the boot identity map (checked above), so it is
            // mapped; it holds what the loader placed there, which we only copy.
            unsafe {
                core::ptr::copy_nonoverlapping(paddr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            true
        }
        _ => false,
    }
}

/// Reads a NUL-terminated command line of at most [`MAX_CMDLINE`] bytes at `paddr`, stopping
/// before the identity map ends.
fn read_cmdline(paddr: u64) -> Cmdline {
    let mut buf = [0u8; MAX_CMDLINE];
    let n = (IDENTITY_MAP_END.saturating_sub(paddr)).min(MAX_CMDLINE as u64) as usize;
    if copy_phys(paddr, &mut buf[..n]) {
        Cmdline::from_c(&buf[..n])
    } else {
        Cmdline::EMPTY
    }
}

/// The first Rust code on PVH (and under QEMU's PVH loader): long mode, SSE and the identity map
/// are set up by `entry.S`; `info` is the physical address of `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn pvh_rust_entry(info: u64) -> ! {
    let mut raw = [0u8; HvmStartInfo::SIZE];
    let start = if copy_phys(info, &mut raw) {
        HvmStartInfo::parse(&raw)
    } else {
        Err(crate::bootinfo::BootInfoError::BadHvmMagic(0))
    };
    let mut facts = BootFacts {
        mode: Mode::Pvh,
        cmdline: Cmdline::EMPTY,
        memmap: Memmap::new(),
        start_info: None,
        error: None,
    };
    match start {
        Ok(s) => {
            if s.cmdline_paddr != 0 {
                facts.cmdline = read_cmdline(s.cmdline_paddr);
            }
            match s.memmap_bytes() {
                Ok(Some((addr, len))) => {
                    let mut buf = [0u8; crate::bootinfo::MAX_MEMMAP * MemmapEntry::SIZE];
                    if copy_phys(addr, &mut buf[..len]) {
                        match Memmap::parse(&buf[..len], len / MemmapEntry::SIZE) {
                            Ok(m) => facts.memmap = m,
                            Err(e) => facts.error = Some(e),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => facts.error = Some(e),
            }
        }
        Err(e) => facts.error = Some(e),
    }
    runtime::start(facts)
}

/// The first Rust code on PV: ring 3, Xen's bootstrap page tables, `info` = start_info's address.
#[unsafe(no_mangle)]
extern "C" fn pv_rust_entry(info: u64) -> ! {
    let mut raw = [0u8; StartInfo::SIZE];
    // SAFETY: Xen maps start_info at `info` (a whole page) before entering us.
    unsafe { core::ptr::copy_nonoverlapping(info as *const u8, raw.as_mut_ptr(), raw.len()) };
    let mut facts = BootFacts {
        mode: Mode::Pv,
        cmdline: Cmdline::EMPTY,
        memmap: Memmap::new(),
        start_info: None,
        error: None,
    };
    match StartInfo::parse(&raw) {
        Ok(si) => {
            facts.cmdline = si.cmd_line;
            // The bootstrap mapping ends at least 512 KiB after the bootstrap stack, which is
            // the page after the page tables (xen.h's start-of-day layout): that is our RAM.
            let pt_end = si
                .pt_base
                .saturating_add(si.nr_pt_frames.saturating_mul(4096));
            let ram_start = pt_end.saturating_add(4096);
            let ram_end = ram_start
                .saturating_add(512 * 1024)
                .min(si.nr_pages.saturating_mul(4096));
            let _ = facts.memmap.push(MemmapEntry {
                addr: ram_start,
                size: ram_end.saturating_sub(ram_start),
                ty: MEMMAP_RAM,
                reserved: 0,
            });
            facts.start_info = Some(si);
        }
        Err(e) => facts.error = Some(e),
    }
    runtime::start(facts)
}

/// CPUID `leaf` (subleaf 0): `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: CPUID only reads CPU identification; rbx is reserved by LLVM, so it is saved in
    // a scratch register around the instruction.
    unsafe {
        asm!(
            "mov {t:r}, rbx",
            "cpuid",
            "xchg {t:r}, rbx",
            t = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") 0u32 => c,
            out("edx") d,
            options(nomem, nostack, preserves_flags),
        );
    }
    [a, b, c, d]
}

/// Writes a byte to an I/O port. Only used where the port exists (QEMU's serial and exit
/// device without Xen; the HVM debug port 0xE9 on PVH).
pub fn outb(port: u16, v: u8) {
    // SAFETY: the callers use only ports that have no memory side effects visible to Rust.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a model-specific register (PVH only: the hypercall-page MSR).
///
/// # Safety
/// The MSR write must not change memory or CPU state Rust relies on in ways it cannot see.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the effect of this MSR.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter (RDTSCP is avoided: the lab's emulation faults on it).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Whether the CPU has RDRAND (CPUID.1:ECX bit 30).
pub fn has_rdrand() -> bool {
    cpuid(1)[2] & (1 << 30) != 0
}

/// One RDRAND draw; `None` when the CPU's generator had nothing ready (retry).
pub fn rdrand64() -> Option<u64> {
    let (v, ok): (u64, u8);
    // SAFETY: RDRAND only writes the named register and the carry flag; callers check
    // `has_rdrand` first, so the instruction exists.
    unsafe {
        asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
    };
    (ok == 1).then_some(v)
}

/// Stops this vCPU for good when nothing else can be done (no Xen, exit device absent).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// The CPUID base of Xen's leaves, if we run on Xen (PVH; a PV guest knows from its entry).
pub fn xen_cpuid_base() -> Option<u32> {
    crate::abi::CPUID_BASES
        .step_by(0x100)
        .find(|&b| crate::abi::is_xen_leaf(b, cpuid(b)))
}

/// Calls the application's entry, which `platform_xen::entry!` defines.
pub fn call_app(xen: crate::runtime::Xen) -> ! {
    unsafe extern "Rust" {
        fn __platform_xen_main(xen: crate::runtime::Xen) -> !;
    }
    // SAFETY: the symbol is defined by the `entry!` macro with exactly this signature; an image
    // without it fails to link.
    unsafe { __platform_xen_main(xen) }
}

/// The precompiled `core`/`alloc` are built with unwinding and reference this; with
/// `panic = "abort"` it is never called.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    halt_forever()
}

/// As `_Unwind_Resume`: referenced by the precompiled crates, never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// The 64-bit TSS (only its IST1 slot is used) and the IDT, filled once at boot.
#[repr(C, align(16))]
struct Tables {
    tss: [u8; 104],
    idt: [u64; 64],
}

/// The stack CPU exceptions run on (IST1), so a fault on a broken stack can still be reported.
#[repr(C, align(16))]
struct FaultStack([u8; 16384]);

static TABLES: crate::shared::SpinCell<Tables> = crate::shared::SpinCell::new(Tables {
    tss: [0; 104],
    idt: [0; 64],
});
static FAULT_STACK: crate::shared::SpinCell<FaultStack> =
    crate::shared::SpinCell::new(FaultStack([0; 16384]));

unsafe extern "C" {
    static fault_stubs: [u64; 32];
    static mut boot_gdt: [u64; 5];
}

/// PVH (and no Xen): an IDT for the 32 CPU exceptions, each on the IST1 stack, reporting through
/// `runtime::fault`. Without it any fault (the stack guard included) resets the CPU silently.
pub fn install_fault_handlers() {
    let stack_top = FAULT_STACK
        .try_with(|s| s.0.as_ptr() as u64 + s.0.len() as u64)
        .unwrap_or(0);
    let ok = TABLES.try_with(|t| {
        // IST1 is at offset 36 of the 64-bit TSS; the I/O map base (offset 102) points past it.
        t.tss[36..44].copy_from_slice(&stack_top.to_le_bytes());
        t.tss[102..104].copy_from_slice(&104u16.to_le_bytes());
        for (v, &stub) in fault_stubs_table().iter().enumerate() {
            // 64-bit interrupt gate: selector 0x08, IST 1, present, DPL 0, type 0xE.
            t.idt[2 * v] = (stub & 0xffff)
                | (0x08 << 16)
                | (1 << 32)
                | (0x8e << 40)
                | ((stub >> 16) & 0xffff) << 48;
            t.idt[2 * v + 1] = stub >> 32;
        }
        (t.tss.as_ptr() as u64, t.idt.as_ptr() as u64)
    });
    let Some((tss, idt)) = ok else { return };
    // 64-bit available TSS descriptor (type 9), limit 103, split base.
    let lo = 103 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | ((tss >> 24) & 0xff) << 56;
    let hi = tss >> 32;
    let idtr: [u64; 2] = [(idt << 16) | (64 * 8 - 1), idt >> 48];
    // SAFETY: boot_gdt's slots 3 and 4 are reserved for this TSS and unused until `ltr`; the
    // TSS and IDT are statics that live forever and are not written again; the IDTR image is
    // read by `lidt` only. The gates point at entry.S's stubs, which never return.
    unsafe {
        core::ptr::addr_of_mut!(boot_gdt[3]).write_volatile(lo);
        core::ptr::addr_of_mut!(boot_gdt[4]).write_volatile(hi);
        asm!("ltr {0:x}", in(reg) 0x18u16, options(nostack, preserves_flags));
        asm!("lidt [{0}]", in(reg) idtr.as_ptr(), options(readonly, nostack, preserves_flags));
    }
}

fn fault_stubs_table() -> [u64; 32] {
    // SAFETY: a read-only table of 32 code addresses emitted by entry.S.
    unsafe { core::ptr::addr_of!(fault_stubs).read() }
}

/// Called by `fault_common` in entry.S on the IST stack.
#[unsafe(no_mangle)]
extern "C" fn rust_fault(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    runtime::fault(vector, error, rip, cr2)
}
