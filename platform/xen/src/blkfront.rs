//! Blkfront on `device/vbd/<devid>`: the frontend half of the xenbus handshake with blkback and
//! a blocking [`BlockDevice`] over xen-rings' [`Blkfront`], through a fixed set of granted pages.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::vec::Vec;

use platform_api::{
    BlockDevice, Clock, DomId, Duration, Env, Events, GrantRef, Grants, Notify, PlatformError,
    Port, SharedMem, Store, StoreError,
};
use xen_rings::blkif::front::{BlkOp, BlkStatus, Blkfront};
use xen_rings::blkif::wire::Segment;

use crate::events::{XenClock, XenEvents};
use crate::grants::GrantMem;
use crate::platform::XenPlatform;
use crate::xenbus::{self, CONNECTED, INITIALISED, INIT_WAIT};
use crate::XenPort;

/// Pages per request (blkif's direct maximum is 11).
pub const SEGS: usize = 8;
/// How long one request may take before the backend counts as gone.
const PATIENCE: Duration = Duration::from_secs(60);

/// A connected blkfront.
pub struct XenBlkfront {
    front: Blkfront<GrantMem>,
    port: XenPort,
    events: XenEvents,
    clock: XenClock,
    pages: GrantMem,
    refs: Vec<GrantRef>,
    backend: DomId,
    sectors: u64,
    sector_size: usize,
    flush: bool,
}

impl core::fmt::Debug for XenBlkfront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenBlkfront")
            .field("backend", &self.backend)
            .field("sectors", &self.sectors)
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

fn bad_key(what: &'static str) -> PlatformError {
    PlatformError::Store(StoreError::BadReply(what))
}

/// Connects `device/vbd/<devid>`.
pub fn connect(env: &mut Env<XenPlatform>, devid: u32) -> Result<XenBlkfront, PlatformError> {
    let dev = format!("device/vbd/{devid}");
    let backend = xenbus::read_text(&mut env.store, &format!("{dev}/backend"))?;
    let backend_id = DomId::parse(&xenbus::read_text(
        &mut env.store,
        &format!("{dev}/backend-id"),
    )?)
    .map_err(|_| bad_key("backend-id"))?;
    // A blocking device waits on its own port only: never on the loop's.
    let mut events = env.events.sibling();
    xenbus::wait_state(
        &mut env.store,
        &mut events,
        &env.clock,
        backend_id,
        &format!("{backend}/state"),
        &[INIT_WAIT, INITIALISED, CONNECTED],
        xenbus::PATIENCE,
    )?;
    let (ring, ring_refs) = env.grants.share(backend_id, 1, true)?;
    let front =
        Blkfront::new(ring, 0).map_err(|_| PlatformError::Unsupported("blkif ring setup"))?;
    let port = events.alloc_unbound(backend_id)?;
    let keys = [
        ("ring-ref", format!("{}", ring_refs[0])),
        ("event-channel", format!("{}", port.port())),
        ("protocol", "x86_64-abi".into()),
        ("state", format!("{INITIALISED}")),
    ];
    xenbus::write_keys(&mut env.store, &dev, &keys)?;
    xenbus::wait_state(
        &mut env.store,
        &mut events,
        &env.clock,
        backend_id,
        &format!("{backend}/state"),
        &[CONNECTED],
        xenbus::PATIENCE,
    )?;
    let sectors: u64 = xenbus::read_num(&mut env.store, &format!("{backend}/sectors"))?;
    let sector_size: usize =
        xenbus::read_num(&mut env.store, &format!("{backend}/sector-size")).unwrap_or(512);
    if !(sector_size == 512 || sector_size == 4096) {
        return Err(bad_key("sector-size is neither 512 nor 4096"));
    }
    let flush =
        xenbus::read_num::<_, u32>(&mut env.store, &format!("{backend}/feature-flush-cache"))
            .unwrap_or(0)
            == 1;
    env.store
        .write(
            platform_api::Tx::NONE,
            &format!("{dev}/state"),
            format!("{CONNECTED}").as_bytes(),
        )
        .map_err(PlatformError::Store)?;
    let (pages, refs) = env.grants.share(backend_id, SEGS, true)?;
    Ok(XenBlkfront {
        front,
        port,
        events,
        clock: env.clock,
        pages,
        refs,
        backend: backend_id,
        sectors,
        sector_size,
        flush,
    })
}

impl XenBlkfront {
    /// Whether the backend has a write cache to flush (`feature-flush-cache`).
    pub fn has_flush(&self) -> bool {
        self.flush
    }

    /// Submits one request and waits for its completion.
    fn run(&mut self, op: BlkOp<'_>) -> Result<(), PlatformError> {
        let gone = PlatformError::NoSuchDomain(self.backend);
        let id = self.front.submit(op).map_err(|_| gone.clone())?;
        if self.front.take_notify() {
            self.port.notify()?;
        }
        let t0 = self.clock.now();
        loop {
            if let Some(c) = self.front.poll().map_err(|_| gone.clone())? {
                if c.id != id {
                    return Err(gone);
                }
                return match c.status {
                    BlkStatus::Okay => Ok(()),
                    BlkStatus::NotSupported => Err(PlatformError::Unsupported("blkif operation")),
                    _ => Err(PlatformError::Os {
                        what: "blkif request",
                        errno: 5,
                    }),
                };
            }
            if self.clock.now().saturating_duration_since(t0) > PATIENCE {
                return Err(gone);
            }
            self.events.wait(Some(Duration::from_millis(100)))?;
        }
    }

    /// Sectors of 512 bytes per device sector.
    fn scale(&self) -> u64 {
        (self.sector_size / 512) as u64
    }

    /// Checks `lba .. lba + len/sector_size` lies on the disk and `len` is whole sectors.
    fn check(&self, lba: u64, len: usize) -> Result<(), PlatformError> {
        let bad = PlatformError::OutOfBounds(platform_api::OutOfBounds {
            offset: lba as usize,
            len,
            size: self.sectors as usize,
        });
        if !len.is_multiple_of(self.sector_size) {
            return Err(bad);
        }
        let n = (len / self.sector_size) as u64;
        match lba.checked_add(n) {
            Some(end) if end <= self.sectors => Ok(()),
            _ => Err(bad),
        }
    }

    /// One request over the first `len` bytes of our pages at 512-byte sector `sector`.
    fn transfer(&mut self, sector: u64, len: usize, write: bool) -> Result<(), PlatformError> {
        let sects = len / 512;
        let segments: Vec<Segment> = self
            .refs
            .iter()
            .enumerate()
            .take(len.div_ceil(4096))
            .map(|(i, &gref)| Segment {
                gref,
                first_sect: 0,
                last_sect: (sects - i * 8).min(8) as u8 - 1,
            })
            .collect();
        if write {
            self.run(BlkOp::Write {
                sector,
                segments: &segments,
            })
        } else {
            self.run(BlkOp::Read {
                sector,
                segments: &segments,
            })
        }
    }
}

impl BlockDevice for XenBlkfront {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), PlatformError> {
        self.check(lba, buf.len())?;
        let mut sector = lba * self.scale();
        for chunk in buf.chunks_mut(SEGS * 4096) {
            self.transfer(sector, chunk.len(), false)?;
            self.pages.read(0, chunk)?;
            sector += (chunk.len() / 512) as u64;
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), PlatformError> {
        self.check(lba, data.len())?;
        let mut sector = lba * self.scale();
        for chunk in data.chunks(SEGS * 4096) {
            self.pages.write(0, chunk)?;
            self.transfer(sector, chunk.len(), true)?;
            sector += (chunk.len() / 512) as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PlatformError> {
        // Without a write cache blkback completes a write only once it is on the disk.
        if !self.flush {
            return Ok(());
        }
        self.run(BlkOp::Flush)
    }
}
