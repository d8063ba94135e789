//! Blkfront through `Platform::blkfront`: a pattern written, flushed and read back through
//! `BlockDevice`; `blk=verify` on a later boot only reads it back.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;

use platform_api::{BlockDevice, Clock, Platform, Store, Tx};
use platform_xen::{println, XenPlatform};

use crate::cksum::{Cksum, Stream as Pattern};

/// Where the pattern goes: 1 MiB from sector 2048 (1 MiB in).
pub const FIRST_SECTOR: u64 = 2048;
/// Bytes of pattern.
pub const BYTES: usize = 1 << 20;
const CHUNK: usize = 32 * 1024;
const SEED: u64 = 0xB10C_0001;

fn exercise<B: BlockDevice>(disk: &mut B, write: bool) -> Result<(u32, u64), String> {
    let ss = disk.sector_size() as u64;
    let first = FIRST_SECTOR * 512 / ss;
    if disk.sectors() < first + BYTES as u64 / ss {
        return Err(format!("disk of {} sectors is too small", disk.sectors()));
    }
    if write {
        let mut pattern = Pattern::new(SEED);
        let mut buf = alloc::vec![0u8; CHUNK];
        for i in 0..BYTES / CHUNK {
            pattern.fill(&mut buf);
            disk.write(first + (i * CHUNK) as u64 / ss, &buf)
                .map_err(|e| format!("write: {e}"))?;
        }
        disk.flush().map_err(|e| format!("flush: {e}"))?;
    }
    let mut pattern = Pattern::new(SEED);
    let (mut want, mut got) = (alloc::vec![0u8; CHUNK], alloc::vec![0u8; CHUNK]);
    let mut sum = Cksum::new();
    for i in 0..BYTES / CHUNK {
        let lba = first + (i * CHUNK) as u64 / ss;
        got.fill(0);
        disk.read(lba, &mut got).map_err(|e| format!("read: {e}"))?;
        pattern.fill(&mut want);
        sum.update(&got);
        if got != want {
            return Err(format!("lba {lba}: data differs from what was written"));
        }
    }
    // Hostile-caller guards: a read past the end and a partial sector are refused.
    let end = disk.sectors();
    if disk.read(end, &mut got[..512]).is_ok() || disk.read(0, &mut got[..100]).is_ok() {
        return Err("a read past the end or of a partial sector was accepted".into());
    }
    Ok((sum.finish(), sum.len()))
}

/// Runs the block check on the first `device/vbd`: `write` writes, flushes and reads back;
/// otherwise only reads back.
pub fn check(env: &mut platform_api::Env<XenPlatform>, write: bool) {
    let what = if write { "blk-write" } else { "blk-verify" };
    let Ok(devs) = env.store.directory(Tx::NONE, "device/vbd") else {
        return;
    };
    let Some(devid) = devs.first().and_then(|d| d.parse::<u32>().ok()) else {
        return;
    };
    let mut disk = match XenPlatform::blkfront(env, devid) {
        Ok(d) => d,
        Err(e) => return println!("xen-smoke: {what} FAIL connect: {e}"),
    };
    let t0 = env.clock.now();
    match exercise(&mut disk, write) {
        Ok((ck, len)) => println!(
            "xen-smoke: {what} ok {} sectors, 1 MiB at sector {FIRST_SECTOR} {}read back cksum={ck}/{len} in {} ms",
            disk.sectors(),
            if write { "written, flushed, " } else { "" },
            env.clock.now().saturating_duration_since(t0).as_millis()
        ),
        Err(e) => println!("xen-smoke: {what} FAIL {e}"),
    }
}
