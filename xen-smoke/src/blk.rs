//! Blkfront on the first `device/vbd`: the frontend handshake with dom0's blkback, then a
//! pattern written, flushed and read back; `blk=verify` on a later boot only reads it back.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{
    Clock, DomId, Duration, Events, GrantRef, Grants, Notify, Port, SharedMem, Store, Tx,
};
use platform_xen::{GrantMem, XenClock, XenEvents, XenGrants, XenPort};
use xen_rings::blkif::front::{BlkOp, BlkStatus, Blkfront};
use xen_rings::blkif::wire::Segment;

use crate::cksum::{Cksum, Stream as Pattern};

/// Pages per request (blkif's direct maximum is 11).
const SEGS: usize = 8;
/// Where the pattern goes: 1 MiB from sector 2048 (1 MiB in).
pub const FIRST_SECTOR: u64 = 2048;
/// Bytes of pattern.
pub const BYTES: usize = 1 << 20;
const PATIENCE: Duration = Duration::from_secs(60);
const SEED: u64 = 0xB10C_0001;

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

struct Disk {
    front: Blkfront<GrantMem>,
    port: XenPort,
    events: XenEvents,
    clock: XenClock,
    pages: GrantMem,
    refs: Vec<GrantRef>,
    sectors: u64,
}

fn wait_state<S: Store>(
    store: &mut S,
    ev: &mut XenEvents,
    clock: &XenClock,
    path: &str,
    want: &str,
) -> Result<(), String> {
    let t0 = clock.now();
    loop {
        let s = store.read(Tx::NONE, path).map(text).unwrap_or_default();
        if s.trim() == want {
            return Ok(());
        }
        if clock.now().saturating_duration_since(t0) > PATIENCE {
            return Err(format!("{path} stayed {s:?}, wanted {want}"));
        }
        let _ = ev.wait(Some(Duration::from_millis(50)));
    }
}

fn connect<S: Store>(
    g: &mut XenGrants,
    mut events: XenEvents,
    clock: XenClock,
    store: &mut S,
) -> Result<Option<Disk>, String> {
    let Ok(devs) = store.directory(Tx::NONE, "device/vbd") else {
        return Ok(None);
    };
    let Some(devid) = devs.first() else {
        return Ok(None);
    };
    let dev = format!("device/vbd/{devid}");
    let backend = store
        .read(Tx::NONE, &format!("{dev}/backend"))
        .map(text)
        .map_err(|e| format!("backend: {e}"))?;
    let backend_id = store
        .read(Tx::NONE, &format!("{dev}/backend-id"))
        .map(text)
        .ok()
        .and_then(|s| DomId::parse(s.trim()).ok())
        .ok_or("no backend-id")?;
    wait_state(store, &mut events, &clock, &format!("{backend}/state"), "2")?;
    let (ring, ring_refs) = g.share(backend_id, 1, true).map_err(|e| format!("{e}"))?;
    let front = Blkfront::new(ring, 0).map_err(|e| format!("{e}"))?;
    let port = events
        .alloc_unbound(backend_id)
        .map_err(|e| format!("{e}"))?;
    let keys = [
        ("ring-ref", format!("{}", ring_refs[0])),
        ("event-channel", format!("{}", port.port())),
        ("protocol", "x86_64-abi".into()),
        ("state", "3".into()),
    ];
    let mut written = false;
    for _ in 0..16 {
        let tx = store.transaction_start().map_err(|e| format!("{e}"))?;
        for (k, v) in &keys {
            store
                .write(tx, &format!("{dev}/{k}"), v.as_bytes())
                .map_err(|e| format!("{k}: {e}"))?;
        }
        if store.transaction_end(tx, true).is_ok() {
            written = true;
            break;
        }
    }
    if !written {
        return Err("transaction kept failing".into());
    }
    wait_state(store, &mut events, &clock, &format!("{backend}/state"), "4")?;
    let sectors = store
        .read(Tx::NONE, &format!("{backend}/sectors"))
        .map(text)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or("no sectors")?;
    store
        .write(Tx::NONE, &format!("{dev}/state"), b"4")
        .map_err(|e| format!("state: {e}"))?;
    let (pages, refs) = g
        .share(backend_id, SEGS, true)
        .map_err(|e| format!("data pages: {e}"))?;
    Ok(Some(Disk {
        front,
        port,
        events,
        clock,
        pages,
        refs,
        sectors,
    }))
}

impl Disk {
    /// Submits one request and waits for its completion.
    fn run(&mut self, op: BlkOp<'_>) -> Result<(), String> {
        let id = self.front.submit(op).map_err(|e| format!("submit: {e}"))?;
        if self.front.take_notify() {
            let _ = self.port.notify();
        }
        let t0 = self.clock.now();
        loop {
            if let Some(c) = self.front.poll().map_err(|e| format!("poll: {e}"))? {
                if c.id != id {
                    return Err(format!("completion {} while waiting for {id}", c.id));
                }
                return match c.status {
                    BlkStatus::Okay => Ok(()),
                    s => Err(format!("op {} status {s:?}", c.operation)),
                };
            }
            if self.clock.now().saturating_duration_since(t0) > PATIENCE {
                return Err("no completion".into());
            }
            let _ = self.events.wait(Some(Duration::from_millis(100)));
        }
    }

    fn segments(&self) -> Vec<Segment> {
        self.refs
            .iter()
            .map(|&gref| Segment {
                gref,
                first_sect: 0,
                last_sect: 7,
            })
            .collect()
    }

    /// Writes the pattern (if `write`), flushes, then reads it back; returns the cksum read.
    fn exercise(&mut self, write: bool) -> Result<(u32, u64), String> {
        let chunk = SEGS * 4096;
        if self.sectors < FIRST_SECTOR + (BYTES / 512) as u64 {
            return Err(format!("disk of {} sectors is too small", self.sectors));
        }
        let segs = self.segments();
        if write {
            let mut pattern = Pattern::new(SEED);
            let mut buf = alloc::vec![0u8; chunk];
            for i in 0..BYTES / chunk {
                pattern.fill(&mut buf);
                self.pages.write(0, &buf).map_err(|e| format!("{e}"))?;
                let sector = FIRST_SECTOR + (i * chunk / 512) as u64;
                self.run(BlkOp::Write {
                    sector,
                    segments: &segs,
                })?;
            }
            // blkback answers EOPNOTSUPP when its device has no write cache: nothing to flush.
            if let Err(e) = self.run(BlkOp::Flush) {
                if !e.contains("NotSupported") {
                    return Err(format!("flush: {e}"));
                }
            }
        }
        let mut pattern = Pattern::new(SEED);
        let (mut want, mut got) = (alloc::vec![0u8; chunk], alloc::vec![0u8; chunk]);
        let mut sum = Cksum::new();
        for i in 0..BYTES / chunk {
            self.pages
                .write(0, &alloc::vec![0u8; chunk])
                .map_err(|e| format!("{e}"))?;
            let sector = FIRST_SECTOR + (i * chunk / 512) as u64;
            self.run(BlkOp::Read {
                sector,
                segments: &segs,
            })?;
            self.pages.read(0, &mut got).map_err(|e| format!("{e}"))?;
            pattern.fill(&mut want);
            sum.update(&got);
            if got != want {
                return Err(format!(
                    "sector {sector}: data differs from what was written"
                ));
            }
        }
        Ok((sum.finish(), sum.len()))
    }
}

/// Runs the block check: `write` writes, flushes and reads back; otherwise only reads back.
pub fn check<S: Store>(xen: &platform_xen::Xen, store: &mut S, write: bool) {
    let what = if write { "blk-write" } else { "blk-verify" };
    let Some(mut g) = xen.grants() else {
        return platform_xen::println!("xen-smoke: {what} FAIL no grant table");
    };
    let mut disk = match connect(&mut g, xen.events(), xen.clock(), store) {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => return platform_xen::println!("xen-smoke: {what} FAIL connect: {e}"),
    };
    let t0 = disk.clock.now();
    match disk.exercise(write) {
        Ok((ck, len)) => platform_xen::println!(
            "xen-smoke: {what} ok {} sectors, 1 MiB at sector {FIRST_SECTOR} {}read back cksum={ck}/{len} in {} ms",
            disk.sectors,
            if write { "written, flushed, " } else { "" },
            disk.clock.now().saturating_duration_since(t0).as_millis()
        ),
        Err(e) => platform_xen::println!("xen-smoke: {what} FAIL {e}"),
    }
}
