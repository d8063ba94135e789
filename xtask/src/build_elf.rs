//! Checks a built image: a static x86_64 ELF whose notes carry both the PVH entry and the
//! classic PV notes, with the note segment 4-aligned (QEMU's PVH loader needs that).

use anyhow::{bail, ensure, Context, Result};
use platform_xen::note::{self, Notes};

/// What the check found.
#[derive(Debug)]
pub struct ImageNotes {
    /// `XEN_ELFNOTE_PHYS32_ENTRY`.
    pub phys32_entry: u64,
    /// `XEN_ELFNOTE_ENTRY`.
    pub pv_entry: u64,
    /// `XEN_ELFNOTE_HYPERCALL_PAGE`.
    pub hypercall_page: u64,
    /// Bytes of memory the loadable segments occupy.
    pub loaded: u64,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(o..o + 2).context("ELF truncated")?.try_into()?,
    ))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(o..o + 4).context("ELF truncated")?.try_into()?,
    ))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(o..o + 8).context("ELF truncated")?.try_into()?,
    ))
}

struct Phdr {
    ty: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// Parses the program headers and the Xen notes, and checks what both boot modes need.
pub fn check_image(b: &[u8]) -> Result<ImageNotes> {
    ensure!(b.get(..4) == Some(b"\x7fELF".as_slice()), "not an ELF file");
    ensure!(b[4] == 2 && b[5] == 1, "not a little-endian ELF64");
    ensure!(u16_at(b, 16)? == 2, "not an executable (ET_EXEC)");
    ensure!(u16_at(b, 18)? == 0x3e, "not x86_64");
    let e_entry = u64_at(b, 24)?;
    let phoff = u64_at(b, 32)? as usize;
    let phentsize = u16_at(b, 54)? as usize;
    let phnum = u16_at(b, 56)? as usize;
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        phdrs.push(Phdr {
            ty: u32_at(b, o)?,
            flags: u32_at(b, o + 4)?,
            offset: u64_at(b, o + 8)?,
            vaddr: u64_at(b, o + 16)?,
            filesz: u64_at(b, o + 32)?,
            memsz: u64_at(b, o + 40)?,
            align: u64_at(b, o + 48)?,
        });
    }
    if phdrs.iter().any(|p| p.ty == 2 || p.ty == 3) {
        bail!("the image has PT_DYNAMIC or PT_INTERP: it linked against libc");
    }
    let exec = |a: u64| {
        phdrs
            .iter()
            .any(|p| p.ty == 1 && p.flags & 1 != 0 && a >= p.vaddr && a < p.vaddr + p.memsz)
    };
    let (mut phys32, mut entry, mut hpage, mut found) = (None, None, None, Vec::new());
    for p in phdrs.iter().filter(|p| p.ty == 4) {
        ensure!(
            p.align == 4,
            "PT_NOTE aligned to {}, QEMU's PVH loader needs 4",
            p.align
        );
        let seg = b
            .get(p.offset as usize..(p.offset + p.filesz) as usize)
            .context("PT_NOTE outside the file")?;
        for n in Notes::new(seg) {
            let n = n.map_err(|e| anyhow::anyhow!("{e}"))?;
            if !n.is_xen() {
                continue;
            }
            found.push(n.ty);
            match n.ty {
                note::PHYS32_ENTRY => phys32 = n.numeric(),
                note::ENTRY => entry = n.numeric(),
                note::HYPERCALL_PAGE => hpage = n.numeric(),
                note::XEN_VERSION => {
                    ensure!(n.text() == Some("xen-3.0"), "XEN_VERSION is {:?}", n.text())
                }
                note::LOADER => ensure!(n.text() == Some("generic"), "LOADER is {:?}", n.text()),
                note::VIRT_BASE | note::PADDR_OFFSET => {
                    ensure!(n.numeric() == Some(0), "VIRT_BASE/PADDR_OFFSET not 0")
                }
                _ => {}
            }
        }
    }
    for (ty, name) in [
        (note::GUEST_OS, "GUEST_OS"),
        (note::XEN_VERSION, "XEN_VERSION"),
        (note::LOADER, "LOADER"),
        (note::VIRT_BASE, "VIRT_BASE"),
        (note::PADDR_OFFSET, "PADDR_OFFSET"),
    ] {
        ensure!(found.contains(&ty), "no {name} note");
    }
    let phys32_entry = phys32.context("no PHYS32_ENTRY note (PVH)")?;
    let pv_entry = entry.context("no ENTRY note (PV)")?;
    let hypercall_page = hpage.context("no HYPERCALL_PAGE note (PV)")?;
    ensure!(
        phys32_entry < 1 << 32 && exec(phys32_entry),
        "PVH entry {phys32_entry:#x} is not in a 32-bit executable segment"
    );
    ensure!(
        exec(pv_entry) && pv_entry == e_entry,
        "PV entry {pv_entry:#x} is not the ELF entry in executable code"
    );
    ensure!(
        hypercall_page.is_multiple_of(4096) && exec(hypercall_page),
        "hypercall page {hypercall_page:#x} is not an executable page"
    );
    let loaded = phdrs.iter().filter(|p| p.ty == 1).map(|p| p.memsz).sum();
    Ok(ImageNotes {
        phys32_entry,
        pv_entry,
        hypercall_page,
        loaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_elf_and_truncated() {
        assert!(check_image(b"not an elf").is_err());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        assert!(check_image(&b).is_err(), "not ET_EXEC");
        b[16] = 2;
        b[18] = 0x3e;
        b[32] = 200; // program headers past the end
        b[56] = 1;
        b[54] = 56;
        assert!(check_image(&b).is_err());
    }
}
