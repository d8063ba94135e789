//! The runtime after boot: bring-up order, the console (serial without Xen, 0xE9 and the PV
//! ring on Xen), the panic path, and the `Xen` handle given to the application.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use platform_api::{Console, EvtchnPort};
use xen_rings::RingError;

use crate::abi::ShutdownReason;
use crate::bootinfo::{BootInfoError, Cmdline, Memmap, StartInfo};
use crate::console_ring::ConsoleOut;
use crate::shared::{RawPages, SpinCell, XenPages};
use crate::{boot, hypercall, mm};

pub use crate::events::{XenClock, XenEvents, XenPort};
pub use crate::grants::{GrantCopier, GrantMem, XenGrants};
pub use crate::store_ring::StoreRing;

/// How the domain was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PVH (or QEMU's PVH loader without Xen).
    Pvh,
    /// Classic PV.
    Pv,
}

/// What boot learned before the runtime starts.
#[derive(Debug)]
pub struct BootFacts {
    /// The entry taken.
    pub mode: Mode,
    /// The command line (copied).
    pub cmdline: Cmdline,
    /// RAM ranges (PV: the safe part of the bootstrap mapping).
    pub memmap: Memmap,
    /// PV only.
    pub start_info: Option<StartInfo>,
    /// A boot structure that could not be used.
    pub error: Option<BootInfoError>,
}

/// QEMU's isa-debug-exit port and the code the boot test expects: exit status (0x10 << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// The success code the no-Xen path exits with.
pub const NO_XEN_EXIT_CODE: u8 = 0x10;
const SERIAL: u16 = 0x3f8;
const DEBUGCON: u16 = 0xe9;
/// How many yields a full console ring may take before output is dropped (a dead backend
/// must not hang the domain).
const CONSOLE_PATIENCE: u32 = 10_000;

enum Sink {
    None,
    Serial,
    Xen {
        ring: Option<(ConsoleOut, RawPages, u32)>,
        debugcon: bool,
    },
}

static CONSOLE: SpinCell<Sink> = SpinCell::new(Sink::None);
/// Set on the no-Xen path, where a panic exits through QEMU's exit device.
static NO_XEN: AtomicBool = AtomicBool::new(false);

fn serial_put(b: u8) {
    // Bounded wait for the transmitter; QEMU's UART is always ready.
    for _ in 0..100_000 {
        if boot::inb(SERIAL + 5) & 0x20 != 0 {
            break;
        }
    }
    boot::outb(SERIAL, b);
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) {
        match self {
            Sink::None => {}
            Sink::Serial => {
                for &b in bytes {
                    if b == b'\n' {
                        serial_put(b'\r');
                    }
                    serial_put(b);
                }
            }
            Sink::Xen { ring, debugcon } => {
                if *debugcon {
                    bytes.iter().for_each(|&b| boot::outb(DEBUGCON, b));
                }
                if let Some((out, page, port)) = ring {
                    if ring_write(out, page, *port, bytes).is_err() {
                        // A backend that corrupts the indices loses its console, not us.
                        *ring = None;
                    }
                }
            }
        }
    }
}

fn ring_write(
    out: &mut ConsoleOut,
    page: &RawPages,
    port: u32,
    mut bytes: &[u8],
) -> Result<(), RingError> {
    let mut patience = CONSOLE_PATIENCE;
    while !bytes.is_empty() {
        let n = out.write(page, bytes)?;
        bytes = &bytes[n..];
        let _ = hypercall::evtchn_send(port);
        if n == 0 {
            patience = patience.saturating_sub(1);
            if patience == 0 {
                break;
            }
            hypercall::yield_now();
        }
    }
    Ok(())
}

/// Writes to the console; dropped if the console is busy (re-entry from a panic while printing).
pub fn console_write(bytes: &[u8]) {
    let _ = CONSOLE.try_with(|s| s.write(bytes));
}

/// `fmt::Write` onto the console.
#[derive(Debug, Clone, Copy, Default)]
pub struct XenConsole;

impl Write for XenConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}

impl Console for XenConsole {
    fn write(&mut self, bytes: &[u8]) {
        console_write(bytes);
    }
}

/// Prints a line on the console.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::XenConsole, format_args!($($t)*));
        $crate::XenConsole.write_line_end();
    }};
}

impl XenConsole {
    /// Ends a line (used by `println!`).
    pub fn write_line_end(&mut self) {
        console_write(b"\n");
    }
}

/// Defines the application's entry: `platform_xen::entry!(main)` with `fn main(xen: Xen) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        fn __platform_xen_main(xen: $crate::Xen) -> ! {
            $main(xen)
        }
    };
}

fn heap_from(memmap: &Memmap) -> Option<(u64, u64)> {
    mm::init_heap_from(memmap)
}

/// Entered from `boot` once per boot, on the boot stack.
pub fn start(facts: BootFacts) -> ! {
    match (facts.mode, boot::xen_cpuid_base()) {
        (Mode::Pvh, None) => {
            NO_XEN.store(true, Ordering::SeqCst);
            boot::install_fault_handlers();
            no_xen(facts)
        }
        (Mode::Pvh, Some(base)) => {
            boot::install_fault_handlers();
            hypercall::install_page(base);
            let _ = CONSOLE.try_with(|s| {
                *s = Sink::Xen {
                    ring: None,
                    debugcon: true,
                }
            });
            let pages = crate::shared::discover_pvh();
            mm::guard_stack_pvh();
            // Say "PV drivers present" as Xen's own PVH code does, so `xl shutdown` works. The
            // vector is never taken: we run with interrupts off and poll.
            let _ = hypercall::hvm_set_param(
                crate::abi::HVM_PARAM_CALLBACK_IRQ,
                crate::abi::CALLBACK_TYPE_VECTOR | 0xf3,
            );
            on_xen(facts, pages)
        }
        (Mode::Pv, _) => {
            let pages = match &facts.start_info {
                Some(si) => crate::shared::discover_pv(si),
                None => hypercall::shutdown(ShutdownReason::Crash),
            };
            let _ = mm::guard_stack_pv();
            on_xen(facts, pages)
        }
    }
}

/// QEMU's PVH loader without Xen: report what boot found on the serial port and exit through
/// isa-debug-exit. The only path that runs without Xen; the CI boot test checks its output.
fn no_xen(facts: BootFacts) -> ! {
    let _ = CONSOLE.try_with(|s| *s = Sink::Serial);
    let heap = heap_from(&facts.memmap);
    mm::guard_stack_pvh();
    let mut c = XenConsole;
    let _ = writeln!(
        c,
        "platform-xen: PVH entry reached Rust (long mode, SSE, identity map, stack guard)"
    );
    let _ = writeln!(
        c,
        "platform-xen: cmdline \"{}\"",
        facts.cmdline.as_str_lossy()
    );
    let ram: u64 = facts
        .memmap
        .entries()
        .iter()
        .filter(|e| e.ty == 1)
        .map(|e| e.size)
        .sum();
    let _ = writeln!(
        c,
        "platform-xen: memory map {} entries, {} KiB RAM",
        facts.memmap.entries().len(),
        ram / 1024
    );
    match heap {
        Some((s, e)) => {
            // Exercise the heap and SSE-using formatting of the precompiled core.
            let v: alloc::vec::Vec<u64> = (0..1000).collect();
            let text = alloc::format!("{:.2}", v.iter().sum::<u64>() as f64 / 1000.0);
            let (free, total) = mm::heap_stats();
            let _ = writeln!(
                c,
                "platform-xen: heap {} KiB at {s:#x}..{e:#x} ({} KiB free), mean {text}",
                total / 1024,
                free / 1024
            );
        }
        None => {
            let _ = writeln!(c, "platform-xen: no RAM for a heap in the memory map");
        }
    }
    if let Some(e) = facts.error {
        let _ = writeln!(c, "platform-xen: boot info: {e}");
    }
    // The boot test's failure drills: the panic path and the stack guard page.
    let words = || facts.cmdline.as_str_lossy().split(' ');
    if words().any(|w| w == "boot-test=panic") {
        panic!("boot-test=panic requested");
    }
    if words().any(|w| w == "boot-test=overflow") {
        let _ = writeln!(c, "platform-xen: overflowing the stack into its guard page");
        let _ = overflow(0);
    }
    let _ = writeln!(
        c,
        "platform-xen: no Xen hypervisor (no XenVMMXenVMM CPUID leaf); exiting"
    );
    boot::outb(DEBUG_EXIT_PORT, NO_XEN_EXIT_CODE);
    boot::halt_forever()
}

/// Recurses with 4 KiB frames until the guard page stops it (a fault with no IDT: the CPU
/// resets, and QEMU with -no-reboot exits).
#[inline(never)]
fn overflow(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = core::hint::black_box([depth; 512]);
    overflow(depth + 1).wrapping_add(frame[(depth % 512) as usize])
}

fn on_xen(facts: BootFacts, pages: Result<XenPages, hypercall::XenErrno>) -> ! {
    let pages = match pages {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                XenConsole,
                "platform-xen: cannot map Xen's shared pages: {e}"
            );
            hypercall::shutdown(ShutdownReason::Crash)
        }
    };
    let pv = facts.mode == Mode::Pv;
    if let Some((page, port)) = pages.console {
        let ring = ConsoleOut::attach(&page).ok().map(|o| (o, page, port));
        let _ = CONSOLE.try_with(|s| {
            *s = Sink::Xen {
                ring,
                debugcon: !pv,
            }
        });
    }
    let heap = heap_from(&facts.memmap);
    if let (Some(si), Some((_, end))) = (&facts.start_info, heap) {
        // PV: map the rest of the domain's pages (the builder mapped only 512 KiB spare).
        let _ = mm::pv_extend_heap(si.pt_base, si.mfn_list, end >> 12, si.nr_pages);
    }
    let (major, minor) = hypercall::xen_version();
    let shared: &'static RawPages = match heap {
        Some(_) => Box::leak(Box::new(pages.shared_info)),
        None => {
            let _ = writeln!(XenConsole, "platform-xen: no RAM for a heap");
            hypercall::shutdown(ShutdownReason::Crash)
        }
    };
    if pv {
        // No upcalls: we poll. Set vcpu_info[0].evtchn_upcall_mask so Xen never bounces one.
        let _ = platform_api::SharedMem::store_u8(shared, 1, 1, platform_api::Ordering::SeqCst);
    }
    let (free, total) = mm::heap_stats();
    let _ = writeln!(
        XenConsole,
        "platform-xen: {} domain on Xen {major}.{minor}, heap {} KiB ({} KiB free), cmdline \"{}\"",
        if pv { "PV" } else { "PVH" },
        total / 1024,
        free / 1024,
        facts.cmdline.as_str_lossy()
    );
    let clock = XenClock::new(shared);
    let store = pages.store.and_then(|(page, port)| {
        let port = EvtchnPort::new(port).ok()?;
        crate::store_ring::attach(page, port, XenEvents::new(shared, clock)).ok()
    });
    let mfn_list = facts.start_info.as_ref().map(|si| si.mfn_list);
    let grants = match crate::shared::grant_frames(pv) {
        Ok(frames) => {
            let w = boot::MAP_WINDOW;
            let window_free = !facts.memmap.entries().iter().any(|e| {
                e.ty == crate::bootinfo::MEMMAP_RAM
                    && e.addr < w.end
                    && e.addr.saturating_add(e.size) > w.start
            });
            Some(XenGrants::new(frames, mfn_list, window_free))
        }
        Err(e) => {
            let _ = writeln!(XenConsole, "platform-xen: no grant table: {e}");
            None
        }
    };
    let xen = Xen {
        mode: facts.mode,
        cmdline: facts.cmdline,
        version: (major, minor),
        shared,
        clock,
        store,
        grants,
    };
    boot::call_app(xen)
}

/// The running domain, handed to the application's entry.
#[derive(Debug)]
pub struct Xen {
    mode: Mode,
    cmdline: Cmdline,
    version: (u32, u32),
    shared: &'static RawPages,
    clock: XenClock,
    store: Option<StoreRing>,
    grants: Option<XenGrants>,
}

impl Xen {
    /// Heap bytes `(free, total)`: what the image uses beyond its static size.
    pub fn heap_stats(&self) -> (usize, usize) {
        mm::heap_stats()
    }

    /// PV or PVH.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The command line (Qubes `kernelopts`).
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_str_lossy()
    }
    /// Xen's `(major, minor)` version.
    pub fn xen_version(&self) -> (u32, u32) {
        self.version
    }
    /// The console.
    pub fn console(&self) -> XenConsole {
        XenConsole
    }
    /// The PV clock.
    pub fn clock(&self) -> XenClock {
        self.clock
    }
    /// A fresh set of event channels (ports bound through it are polled by its `wait`).
    pub fn events(&self) -> XenEvents {
        XenEvents::new(self.shared, self.clock)
    }
    /// The xenstore ring transport, once (the application builds its store client on it).
    pub fn take_store(&mut self) -> Option<StoreRing> {
        self.store.take()
    }
    /// Our grant table (`None` if Xen refused to set it up). Clones share one table.
    pub fn grants(&self) -> Option<XenGrants> {
        self.grants.clone()
    }
    /// Stops the domain.
    pub fn shutdown(&self, reason: ShutdownReason) -> ! {
        hypercall::shutdown(reason)
    }
}

/// Writes without the console lock (a fault may strike while it is held): serial without
/// Xen, the 0xE9 debug port on PVH.
fn emergency_write(text: &str) {
    let no_xen = NO_XEN.load(Ordering::SeqCst);
    for b in text.bytes() {
        if no_xen {
            if b == b'\n' {
                serial_put(b'\r');
            }
            serial_put(b);
        } else {
            boot::outb(DEBUGCON, b);
        }
    }
}

struct Emergency;

impl Write for Emergency {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emergency_write(s);
        Ok(())
    }
}

const EXCEPTIONS: [&str; 21] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP",
    "alignment check",
    "machine check",
    "SIMD FP",
    "virtualization",
];

/// A CPU exception (PVH and no Xen; `boot`'s IDT sends all 32 here): report and stop.
pub fn fault(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    let name = EXCEPTIONS
        .get(vector as usize)
        .copied()
        .unwrap_or("exception");
    let guard = boot::stack_guard();
    let hint = if vector == 14 && (guard..guard + 4096).contains(&cr2) {
        " (stack overflow into the guard page)"
    } else {
        ""
    };
    let _ = writeln!(
        Emergency,
        "platform-xen: CPU exception {vector} ({name}) at rip {rip:#x}, error {error:#x}, address {cr2:#x}{hint}"
    );
    if NO_XEN.load(Ordering::SeqCst) {
        boot::outb(DEBUG_EXIT_PORT, 0x32);
        boot::halt_forever();
    }
    hypercall::shutdown(ShutdownReason::Crash)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(XenConsole, "panic: {info}");
    if NO_XEN.load(Ordering::SeqCst) {
        // Without Xen (QEMU boot test) the exit device reports a failure code.
        boot::outb(DEBUG_EXIT_PORT, 0x31);
        boot::halt_forever();
    }
    hypercall::shutdown(ShutdownReason::Crash)
}
