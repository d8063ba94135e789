//! What the domain builder and an image file hand platform-xen, as arbitrary bytes: PVH
//! `hvm_start_info` + memory map, PV `start_info`, ELF notes, and a grant table whose entries a
//! peer scribbles on. Parsers must refuse or accept without panicking; invariants are checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_api::{DomId, GrantRef, HeapMem, Ordering, SharedMem};
use platform_xen::bootinfo::{Cmdline, HvmStartInfo, Memmap, MemmapEntry, StartInfo, MAX_CMDLINE, MAX_MEMMAP};
use platform_xen::grant_table::{GrantError, GrantTable, FIRST_FREE_REF};
use platform_xen::note::{Note, Notes};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if let Ok(h) = HvmStartInfo::parse(rest) {
        let mut out = [0u8; HvmStartInfo::SIZE];
        h.emit(&mut out);
        assert_eq!(&out[..], &rest[..HvmStartInfo::SIZE]);
        if let Ok(Some((_, len))) = h.memmap_bytes() {
            assert!(len <= MAX_MEMMAP * MemmapEntry::SIZE);
        }
    }
    let n = usize::from(sel) % (MAX_MEMMAP + 4);
    if let Ok(m) = Memmap::parse(rest, n) {
        assert_eq!(m.entries().len(), n);
        let floor = u64::from(sel) << 20;
        if let Some((s, e)) = m.heap_range(floor, 1 << 32) {
            assert!(s >= floor && e <= 1 << 32 && s < e && s % 4096 == 0 && e % 4096 == 0);
        }
    }
    if let Ok(si) = StartInfo::parse(rest) {
        assert!(si.cmd_line.as_bytes().len() < MAX_CMDLINE);
        let _ = si.magic_str();
    }
    let c = Cmdline::from_c(rest);
    assert!(!c.as_bytes().contains(&0));
    let _ = c.as_str_lossy();
    for note in Notes::new(rest).take(256) {
        let Ok(note) = note else { break };
        let _ = (note.numeric(), note.text(), note.is_xen());
        let mut buf = vec![0u8; note.buffer_len()];
        let len = note.emit(&mut buf).expect("sized from buffer_len");
        let again = Notes::new(&buf[..len]).next().expect("one note").expect("re-parses");
        assert_eq!(again, Note { ty: note.ty, name: note.name, desc: note.desc });
    }
    // A peer (Xen on its behalf) sets any flag bits at any time: ending access must never hand
    // a busy page back, nor panic.
    let mem = HeapMem::new(64 * 8);
    let mut t = GrantTable::new(mem.clone());
    let mut live = Vec::new();
    for &b in rest.iter().take(200) {
        match b % 4 {
            0 | 1 => {
                if let Ok(r) = t.grant(DomId::DOM0, u32::from(b), b & 1 == 1) {
                    assert!(r.0 >= FIRST_FREE_REF && !live.contains(&r));
                    live.push(r);
                }
            }
            2 => {
                if let Some(r) = live.pop() {
                    let busy = b & 0x18;
                    let _ = mem.fetch_or_u8(r.0 as usize * 8, busy, Ordering::SeqCst);
                    match t.end_access(r) {
                        Ok(()) => assert_eq!(busy, 0),
                        Err(GrantError::InUse(x)) => assert!(busy != 0 && x == r),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            }
            _ => {
                // Ending an arbitrary ref: only refs we hold may succeed.
                let r = GrantRef(u32::from(b));
                let held = live.iter().position(|x| *x == r);
                match (t.end_access(r), held) {
                    (Ok(()), Some(i)) => {
                        live.swap_remove(i);
                    }
                    (Ok(()), None) => panic!("ended a ref we never granted: {r}"),
                    (Err(_), _) => {}
                }
            }
        }
    }
});
