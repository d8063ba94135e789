//! The block device a vault lives on, and an in-memory one for tests and fuzzing.
//! Sans-IO friendly: the vault only ever calls these five methods.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Why a device operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// The request reaches past the last sector or is not a whole number of sectors.
    OutOfRange,
    /// The device reported an I/O failure (or lost power).
    Io,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::OutOfRange => f.write_str("block request out of range"),
            DeviceError::Io => f.write_str("block device I/O error"),
        }
    }
}

/// A block device addressed in sectors; `buf` lengths are whole multiples of `sector_size`.
pub trait BlockDevice {
    /// Bytes per sector.
    fn sector_size(&self) -> usize;
    /// Number of sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len() / sector_size` sectors starting at `lba`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Writes `buf.len() / sector_size` sectors starting at `lba`; durable only after `flush`.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), DeviceError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn sector_size(&self) -> usize {
        (**self).sector_size()
    }
    fn sectors(&self) -> u64 {
        (**self).sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        (**self).read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        (**self).write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }
}

/// A [`platform_api::BlockDevice`] (blkfront on Xen, a file in hosted mode) used as a vault
/// device: every platform failure becomes [`DeviceError::Io`], an out-of-bounds access
/// [`DeviceError::OutOfRange`].
#[derive(Debug)]
pub struct PlatformDevice<B>(pub B);

fn from_platform(e: platform_api::PlatformError) -> DeviceError {
    match e {
        platform_api::PlatformError::OutOfBounds(_) => DeviceError::OutOfRange,
        _ => DeviceError::Io,
    }
}

impl<B: platform_api::BlockDevice> BlockDevice for PlatformDevice<B> {
    fn sector_size(&self) -> usize {
        self.0.sector_size()
    }
    fn sectors(&self) -> u64 {
        self.0.sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.0.read(lba, buf).map_err(from_platform)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.0.write(lba, buf).map_err(from_platform)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.0.flush().map_err(from_platform)
    }
}

/// A device held in memory: writes are durable at once.
pub struct MemDevice {
    sector_size: usize,
    data: Vec<u8>,
}

impl fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDevice")
            .field("sector_size", &self.sector_size)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl MemDevice {
    /// A zeroed device of `sectors` sectors of `sector_size` bytes.
    pub fn new(sector_size: usize, sectors: usize) -> Self {
        Self {
            sector_size,
            data: vec![0; sector_size.saturating_mul(sectors)],
        }
    }

    /// A device over `data`, padded with zeros to whole sectors.
    pub fn from_bytes(sector_size: usize, mut data: Vec<u8>) -> Self {
        if sector_size > 0 {
            let rem = data.len() % sector_size;
            if rem != 0 {
                data.resize(data.len() + (sector_size - rem), 0);
            }
        }
        Self { sector_size, data }
    }

    /// The whole device contents.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The whole device contents, writable (to simulate damage).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn range(&self, lba: u64, len: usize) -> Result<core::ops::Range<usize>, DeviceError> {
        if self.sector_size == 0 || !len.is_multiple_of(self.sector_size) {
            return Err(DeviceError::OutOfRange);
        }
        let start = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(self.sector_size))
            .ok_or(DeviceError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(DeviceError::OutOfRange)?;
        if end > self.data.len() {
            return Err(DeviceError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl BlockDevice for MemDevice {
    fn sector_size(&self) -> usize {
        self.sector_size
    }
    fn sectors(&self) -> u64 {
        match self.sector_size {
            0 => 0,
            ss => (self.data.len() / ss) as u64,
        }
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let r = self.range(lba, buf.len())?;
        buf.copy_from_slice(self.data.get(r).ok_or(DeviceError::OutOfRange)?);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let r = self.range(lba, buf.len())?;
        self.data
            .get_mut(r)
            .ok_or(DeviceError::OutOfRange)?
            .copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

impl MemDevice {
    fn platform_error(&self, lba: u64, len: usize, e: DeviceError) -> platform_api::PlatformError {
        match e {
            DeviceError::OutOfRange => {
                platform_api::PlatformError::OutOfBounds(platform_api::OutOfBounds {
                    offset: usize::try_from(lba)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(self.sector_size),
                    len,
                    size: self.data.len(),
                })
            }
            DeviceError::Io => platform_api::PlatformError::Os {
                what: "memory device",
                errno: 5,
            },
        }
    }
}

/// So code written against the platform trait (apps, their tests) can run on memory too.
impl platform_api::BlockDevice for MemDevice {
    fn sector_size(&self) -> usize {
        self.sector_size
    }
    fn sectors(&self) -> u64 {
        BlockDevice::sectors(self)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), platform_api::PlatformError> {
        BlockDevice::read(self, lba, buf).map_err(|e| self.platform_error(lba, buf.len(), e))
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), platform_api::PlatformError> {
        BlockDevice::write(self, lba, data).map_err(|e| self.platform_error(lba, data.len(), e))
    }
    fn flush(&mut self) -> Result<(), platform_api::PlatformError> {
        Ok(())
    }
}
