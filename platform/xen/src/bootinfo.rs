//! What the domain builder hands us at boot: PVH `hvm_start_info` and its memory map, PV
//! `start_info`, and the command line, parsed from bytes copied out of guest memory.
#![forbid(unsafe_code)]

use core::fmt;

use crate::abi::Le;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// `MAX_GUEST_CMDLINE`: the PV command line field, and our bound for both modes.
pub const MAX_CMDLINE: usize = 1024;
/// Memory-map entries we keep; more are refused rather than truncated silently.
pub const MAX_MEMMAP: usize = 32;
/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const MEMMAP_RAM: u32 = 1;

/// Why boot information could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// Fewer bytes than the structure needs.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// `hvm_start_info.magic` is not `XEN_HVM_START_MAGIC_VALUE`.
    BadHvmMagic(u32),
    /// `start_info.magic` does not start with `xen-`.
    BadPvMagic,
    /// The memory map has more entries than [`MAX_MEMMAP`].
    TooManyMemmapEntries(u32),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => write!(f, "boot structure needs {needed} bytes"),
            Self::BadHvmMagic(m) => write!(
                f,
                "hvm_start_info magic is {m:#x}, not {HVM_START_MAGIC:#x}"
            ),
            Self::BadPvMagic => f.write_str("start_info magic does not start with \"xen-\""),
            Self::TooManyMemmapEntries(n) => {
                write!(f, "memory map has {n} entries, more than {MAX_MEMMAP}")
            }
        }
    }
}

impl core::error::Error for BootInfoError {}

fn need(b: &[u8], n: usize) -> Result<&[u8], BootInfoError> {
    b.get(..n)
        .ok_or(BootInfoError::BufferTooSmall { needed: n })
}

/// `struct hvm_start_info` (arch-x86/hvm/start_info.h \[X\]); `ebx` points at it on PVH entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Structure version (memmap fields from 1).
    pub version: u32,
    /// `SIF_*`.
    pub flags: u32,
    /// Modules in the list.
    pub nr_modules: u32,
    /// Physical address of the module list (0 = none).
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0 = none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0 = none).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version >= 1; 0 = none).
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
    /// Reserved.
    pub reserved: u32,
}

impl HvmStartInfo {
    /// `sizeof(struct hvm_start_info)`.
    pub const SIZE: usize = 56;

    /// Parses and checks the magic. Fields of a newer version beyond ours are ignored.
    pub fn parse(b: &[u8]) -> Result<Self, BootInfoError> {
        let b = need(b, Self::SIZE)?;
        let s = Self {
            magic: Le::get(b, 0),
            version: Le::get(b, 4),
            flags: Le::get(b, 8),
            nr_modules: Le::get(b, 12),
            modlist_paddr: Le::get(b, 16),
            cmdline_paddr: Le::get(b, 24),
            rsdp_paddr: Le::get(b, 32),
            memmap_paddr: Le::get(b, 40),
            memmap_entries: Le::get(b, 48),
            reserved: Le::get(b, 52),
        };
        if s.magic != HVM_START_MAGIC {
            return Err(BootInfoError::BadHvmMagic(s.magic));
        }
        Ok(s)
    }

    /// The bytes of this structure.
    pub fn emit(&self, out: &mut [u8; Self::SIZE]) {
        self.magic.put(out, 0);
        self.version.put(out, 4);
        self.flags.put(out, 8);
        self.nr_modules.put(out, 12);
        self.modlist_paddr.put(out, 16);
        self.cmdline_paddr.put(out, 24);
        self.rsdp_paddr.put(out, 32);
        self.memmap_paddr.put(out, 40);
        self.memmap_entries.put(out, 48);
        self.reserved.put(out, 52);
    }

    /// The memory map's location and byte length, if present and within [`MAX_MEMMAP`].
    pub fn memmap_bytes(&self) -> Result<Option<(u64, usize)>, BootInfoError> {
        if self.version < 1 || self.memmap_paddr == 0 || self.memmap_entries == 0 {
            return Ok(None);
        }
        if self.memmap_entries as usize > MAX_MEMMAP {
            return Err(BootInfoError::TooManyMemmapEntries(self.memmap_entries));
        }
        Ok(Some((
            self.memmap_paddr,
            self.memmap_entries as usize * MemmapEntry::SIZE,
        )))
    }
}

/// `struct hvm_memmap_table_entry`: one e820-style range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemmapEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `XEN_HVM_MEMMAP_TYPE_*` (1 = RAM).
    pub ty: u32,
    /// Reserved.
    pub reserved: u32,
}

impl MemmapEntry {
    /// Size of one entry.
    pub const SIZE: usize = 24;

    /// Parses one entry.
    pub fn parse(b: &[u8]) -> Result<Self, BootInfoError> {
        let b = need(b, Self::SIZE)?;
        Ok(Self {
            addr: Le::get(b, 0),
            size: Le::get(b, 8),
            ty: Le::get(b, 16),
            reserved: Le::get(b, 20),
        })
    }

    /// The bytes of this entry.
    pub fn emit(&self, out: &mut [u8; Self::SIZE]) {
        self.addr.put(out, 0);
        self.size.put(out, 8);
        self.ty.put(out, 16);
        self.reserved.put(out, 20);
    }
}

/// A bounded copy of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memmap {
    entries: [MemmapEntry; MAX_MEMMAP],
    len: usize,
}

impl Default for Memmap {
    fn default() -> Self {
        Self::new()
    }
}

impl Memmap {
    /// No entries.
    pub const fn new() -> Self {
        Self {
            entries: [MemmapEntry {
                addr: 0,
                size: 0,
                ty: 0,
                reserved: 0,
            }; MAX_MEMMAP],
            len: 0,
        }
    }

    /// Parses `n` consecutive entries.
    pub fn parse(b: &[u8], n: usize) -> Result<Self, BootInfoError> {
        if n > MAX_MEMMAP {
            return Err(BootInfoError::TooManyMemmapEntries(n as u32));
        }
        let mut m = Self::new();
        for (i, chunk) in need(b, n * MemmapEntry::SIZE)?
            .chunks_exact(MemmapEntry::SIZE)
            .enumerate()
        {
            m.entries[i] = MemmapEntry::parse(chunk)?;
        }
        m.len = n;
        Ok(m)
    }

    /// Adds a RAM range (PV, where the builder gives a page count instead of a map).
    pub fn push(&mut self, e: MemmapEntry) -> Result<(), BootInfoError> {
        let slot = self
            .entries
            .get_mut(self.len)
            .ok_or(BootInfoError::TooManyMemmapEntries(MAX_MEMMAP as u32 + 1))?;
        *slot = e;
        self.len += 1;
        Ok(())
    }

    /// The entries.
    pub fn entries(&self) -> &[MemmapEntry] {
        &self.entries[..self.len]
    }

    /// The largest RAM range inside `[floor, ceiling)`, as `(start, end)`, page-aligned inward.
    /// `floor` is where our image ends; `ceiling` is the end of what our page tables map.
    pub fn heap_range(&self, floor: u64, ceiling: u64) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for e in self.entries().iter().filter(|e| e.ty == MEMMAP_RAM) {
            let start = e.addr.max(floor).checked_add(4095)? & !4095;
            let end = e.addr.saturating_add(e.size).min(ceiling) & !4095;
            if end > start && best.is_none_or(|(s, t)| end - start > t - s) {
                best = Some((start, end));
            }
        }
        best
    }
}

/// The command line, copied out of guest memory at boot (up to the first NUL, bounded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cmdline {
    buf: [u8; MAX_CMDLINE],
    len: usize,
}

impl Default for Cmdline {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl fmt::Debug for Cmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_str_lossy(), f)
    }
}

impl Cmdline {
    /// An empty line.
    pub const EMPTY: Cmdline = Cmdline {
        buf: [0; MAX_CMDLINE],
        len: 0,
    };

    /// The bytes before the first NUL of `raw`, cut at `MAX_CMDLINE - 1` bytes.
    pub fn from_c(raw: &[u8]) -> Self {
        let text = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        let len = text.len().min(MAX_CMDLINE - 1);
        let mut c = Self::EMPTY;
        c.buf[..len].copy_from_slice(&text[..len]);
        c.len = len;
        c
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text, or the longest valid UTF-8 prefix.
    pub fn as_str_lossy(&self) -> &str {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

/// `struct start_info` (xen.h \[X\]): what a PV domain finds at `rsi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// `"xen-<version>-<platform>"`.
    pub magic: [u8; 32],
    /// Pages of memory.
    pub nr_pages: u64,
    /// Machine address of shared_info.
    pub shared_info: u64,
    /// `SIF_*`.
    pub flags: u32,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u64,
    /// Xenstore event channel.
    pub store_evtchn: u32,
    /// Machine frame of the console ring.
    pub console_mfn: u64,
    /// Console event channel.
    pub console_evtchn: u32,
    /// Virtual address of the bootstrap page tables.
    pub pt_base: u64,
    /// Frames of bootstrap page tables.
    pub nr_pt_frames: u64,
    /// Virtual address of the p2m list.
    pub mfn_list: u64,
    /// Initial ramdisk (virtual address or PFN per flags).
    pub mod_start: u64,
    /// Ramdisk size.
    pub mod_len: u64,
    /// The command line.
    pub cmd_line: Cmdline,
    /// First PFN of the p2m list (when mapped by the tools).
    pub first_p2m_pfn: u64,
    /// Frames of the p2m list.
    pub nr_p2m_frames: u64,
}

impl StartInfo {
    /// `sizeof(struct start_info)`.
    pub const SIZE: usize = 1168;

    /// Parses and checks the magic prefix.
    pub fn parse(b: &[u8]) -> Result<Self, BootInfoError> {
        let b = need(b, Self::SIZE)?;
        let magic: [u8; 32] = Le::get(b, 0);
        if !magic.starts_with(b"xen-") {
            return Err(BootInfoError::BadPvMagic);
        }
        Ok(Self {
            magic,
            nr_pages: Le::get(b, 32),
            shared_info: Le::get(b, 40),
            flags: Le::get(b, 48),
            store_mfn: Le::get(b, 56),
            store_evtchn: Le::get(b, 64),
            console_mfn: Le::get(b, 72),
            console_evtchn: Le::get(b, 80),
            pt_base: Le::get(b, 88),
            nr_pt_frames: Le::get(b, 96),
            mfn_list: Le::get(b, 104),
            mod_start: Le::get(b, 112),
            mod_len: Le::get(b, 120),
            cmd_line: Cmdline::from_c(&b[128..128 + MAX_CMDLINE]),
            first_p2m_pfn: Le::get(b, 1152),
            nr_p2m_frames: Le::get(b, 1160),
        })
    }

    /// The bytes of this structure (padding and the command line's tail zeroed).
    pub fn emit(&self, out: &mut [u8; Self::SIZE]) {
        out.fill(0);
        self.magic.put(out, 0);
        self.nr_pages.put(out, 32);
        self.shared_info.put(out, 40);
        self.flags.put(out, 48);
        self.store_mfn.put(out, 56);
        self.store_evtchn.put(out, 64);
        self.console_mfn.put(out, 72);
        self.console_evtchn.put(out, 80);
        self.pt_base.put(out, 88);
        self.nr_pt_frames.put(out, 96);
        self.mfn_list.put(out, 104);
        self.mod_start.put(out, 112);
        self.mod_len.put(out, 120);
        let c = self.cmd_line.as_bytes();
        out[128..128 + c.len()].copy_from_slice(c);
        self.first_p2m_pfn.put(out, 1152);
        self.nr_p2m_frames.put(out, 1160);
    }

    /// The magic as text (up to its NUL).
    pub fn magic_str(&self) -> &str {
        let n = self.magic.iter().position(|b| *b == 0).unwrap_or(32);
        core::str::from_utf8(&self.magic[..n]).unwrap_or("?")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_vectors::load;

    #[test]
    fn vectors_hvm_start_info_both_ways() {
        let vf = load("boot.json");
        for name in ["hvm_start_info realistic", "hvm_start_info distinctive"] {
            let v = vf.get(name);
            let hex = v.bytes();
            let s = HvmStartInfo::parse(&hex).unwrap();
            assert_eq!(u64::from(s.magic), v.u64("magic"));
            assert_eq!(u64::from(s.version), v.u64("version"));
            assert_eq!(u64::from(s.flags), v.u64("flags"));
            assert_eq!(u64::from(s.nr_modules), v.u64("nr_modules"));
            assert_eq!(s.modlist_paddr, v.u64("modlist_paddr"));
            assert_eq!(s.cmdline_paddr, v.u64("cmdline_paddr"));
            assert_eq!(s.rsdp_paddr, v.u64("rsdp_paddr"));
            assert_eq!(s.memmap_paddr, v.u64("memmap_paddr"));
            assert_eq!(u64::from(s.memmap_entries), v.u64("memmap_entries"));
            assert_eq!(u64::from(s.reserved), v.u64("reserved"));
            let mut out = [0u8; 56];
            s.emit(&mut out);
            assert_eq!(out[..], hex[..], "{name}");
        }
        let real = HvmStartInfo::parse(&vf.get("hvm_start_info realistic").bytes()).unwrap();
        assert_eq!(real.memmap_bytes(), Ok(Some((16580608, 96))));
    }

    #[test]
    fn vectors_memmap_both_ways() {
        let vf = load("boot.json");
        let v = vf.get("hvm_memmap_table_entry x4");
        let hex = v.bytes();
        let m = Memmap::parse(&hex, 4).unwrap();
        for (i, e) in m.entries().iter().enumerate() {
            assert_eq!(e.addr, v.u64(&format!("[{i}].addr")));
            assert_eq!(e.size, v.u64(&format!("[{i}].size")));
            assert_eq!(u64::from(e.ty), v.u64(&format!("[{i}].type")));
            let mut out = [0u8; 24];
            e.emit(&mut out);
            assert_eq!(out[..], hex[i * 24..i * 24 + 24]);
        }
        // RAM is [0, 0x9fc00) and [1 MiB, 256 MiB); an image ending at 2 MiB gets the rest.
        assert_eq!(
            m.heap_range(0x20_0000, 1 << 32),
            Some((0x20_0000, 0x1000_0000))
        );
        // A ceiling below the floor leaves nothing.
        assert_eq!(m.heap_range(0x20_0000, 0x10_0000), None);
        // Low memory is used only when the floor allows it, trimmed to whole pages.
        assert_eq!(m.heap_range(0x1234, 0x9_0000), Some((0x2000, 0x9_0000)));
    }

    #[test]
    fn vectors_start_info_both_ways() {
        let vf = load("boot.json");
        for name in ["start_info PV domU", "start_info distinctive"] {
            let v = vf.get(name);
            let hex = v.bytes();
            let s = StartInfo::parse(&hex).unwrap();
            assert_eq!(s.magic_str(), v.str("magic"));
            assert_eq!(s.nr_pages, v.u64("nr_pages"));
            assert_eq!(s.shared_info, v.u64("shared_info"));
            assert_eq!(u64::from(s.flags), v.u64("flags"));
            assert_eq!(s.store_mfn, v.u64("store_mfn"));
            assert_eq!(u64::from(s.store_evtchn), v.u64("store_evtchn"));
            assert_eq!(s.console_mfn, v.u64("console.domU.mfn"));
            assert_eq!(u64::from(s.console_evtchn), v.u64("console.domU.evtchn"));
            assert_eq!(s.pt_base, v.u64("pt_base"));
            assert_eq!(s.nr_pt_frames, v.u64("nr_pt_frames"));
            assert_eq!(s.mfn_list, v.u64("mfn_list"));
            assert_eq!(s.mod_start, v.u64("mod_start"));
            assert_eq!(s.mod_len, v.u64("mod_len"));
            assert_eq!(s.cmd_line.as_str_lossy(), v.str("cmd_line"));
            assert_eq!(s.first_p2m_pfn, v.u64("first_p2m_pfn"));
            assert_eq!(s.nr_p2m_frames, v.u64("nr_p2m_frames"));
            let mut out = [0u8; StartInfo::SIZE];
            s.emit(&mut out);
            assert_eq!(out[..], hex[..], "{name}");
        }
    }

    #[test]
    fn hostile_builder_bad_magic_refused() {
        let vf = load("boot.json");
        let mut hex = vf.get("hvm_start_info realistic").bytes();
        hex[0] ^= 1;
        assert!(matches!(
            HvmStartInfo::parse(&hex),
            Err(BootInfoError::BadHvmMagic(_))
        ));
        let mut pv = vf.get("start_info PV domU").bytes();
        pv[0] = b'X';
        assert_eq!(StartInfo::parse(&pv), Err(BootInfoError::BadPvMagic));
        assert_eq!(
            StartInfo::parse(&pv[..100]),
            Err(BootInfoError::BufferTooSmall { needed: 1168 })
        );
    }

    #[test]
    fn hostile_builder_memmap_count_bounded() {
        let mut s = HvmStartInfo {
            magic: HVM_START_MAGIC,
            version: 1,
            memmap_paddr: 0x1000,
            ..Default::default()
        };
        s.memmap_entries = 1_000_000;
        assert_eq!(
            s.memmap_bytes(),
            Err(BootInfoError::TooManyMemmapEntries(1_000_000))
        );
        s.version = 0;
        assert_eq!(s.memmap_bytes(), Ok(None), "version 0 has no memmap");
        assert!(Memmap::parse(&[0; 24], 2).is_err());
    }

    #[test]
    fn cmdline_stops_at_nul_and_is_bounded() {
        assert_eq!(Cmdline::from_c(b"a b\0junk").as_bytes(), b"a b");
        let long = [b'x'; 5000];
        assert_eq!(Cmdline::from_c(&long).as_bytes().len(), MAX_CMDLINE - 1);
        assert_eq!(Cmdline::from_c(b"ok\xffbad").as_str_lossy(), "ok");
    }

    proptest! {
        #[test]
        fn heap_range_inside_ram_and_bounds(entries in proptest::collection::vec((0u64..1 << 34, 0u64..1 << 32, 1u32..4), 0..8),
                                             floor in 0u64..1 << 33, ceiling in 0u64..1 << 35) {
            let mut m = Memmap::new();
            for (addr, size, ty) in entries {
                m.push(MemmapEntry { addr, size, ty, reserved: 0 }).unwrap();
            }
            if let Some((s, e)) = m.heap_range(floor, ceiling) {
                prop_assert!(s >= floor && e <= ceiling && s < e);
                prop_assert_eq!(s % 4096, 0);
                prop_assert_eq!(e % 4096, 0);
                prop_assert!(m.entries().iter().any(|x| x.ty == MEMMAP_RAM && x.addr <= s && e <= x.addr + x.size));
            }
        }

        #[test]
        fn start_info_roundtrip(nr_pages: u64, store_mfn: u64, evt: u32, cmd in "[ -~]{0,200}") {
            let vf = load("boot.json");
            let mut s = StartInfo::parse(&vf.get("start_info PV domU").bytes()).unwrap();
            s.nr_pages = nr_pages;
            s.store_mfn = store_mfn;
            s.console_evtchn = evt;
            s.cmd_line = Cmdline::from_c(cmd.as_bytes());
            let mut out = [0u8; StartInfo::SIZE];
            s.emit(&mut out);
            prop_assert_eq!(StartInfo::parse(&out).unwrap(), s);
        }
    }
}
