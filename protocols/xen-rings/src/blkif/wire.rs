//! blkif.h ring entries: requests (direct, discard, indirect), segments and responses.
//! Parsing takes a fixed-size copy; only an impossible segment count is refused here.

use core::fmt;

use platform_api::GrantRef;

/// `BLKIF_OP_READ`.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`.
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`.
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_DISCARD`.
pub const OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`.
pub const OP_INDIRECT: u8 = 6;
/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// `BLKIF_DISCARD_SECURE`.
pub const DISCARD_SECURE: u8 = 1;
/// `BLKIF_RSP_EOPNOTSUPP`.
pub const RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// Sectors per page: segments address sectors `0..=7` of one 4096-byte page.
pub const SECTORS_PER_PAGE: u8 = 8;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A blkif entry that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// `nr_segments` above what the request form holds.
    TooManySegments {
        /// Count given.
        nr: u16,
        /// Maximum for the form.
        max: u16,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManySegments { nr, max } => {
                write!(f, "nr_segments {nr} exceeds the maximum {max}")
            }
        }
    }
}

impl core::error::Error for WireError {}

/// `struct blkif_request_segment` (8 bytes; also an indirect page's element), blkif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Grant of the data page.
    pub gref: GrantRef,
    /// First sector of the page used (0..=7).
    pub first_sect: u8,
    /// Last sector of the page used (`first_sect..=7`).
    pub last_sect: u8,
}

impl Segment {
    /// Bytes on the wire.
    pub const SIZE: usize = 8;
    /// An all-zero (unused) segment.
    pub const EMPTY: Self = Self {
        gref: GrantRef(0),
        first_sect: 0,
        last_sect: 0,
    };

    /// Decodes 8 bytes.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            gref: GrantRef(u32_at(b, 0)),
            first_sect: b[4],
            last_sect: b[5],
        }
    }

    /// Encodes into 8 bytes.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.gref.0.to_le_bytes());
        b[4] = self.first_sect;
        b[5] = self.last_sect;
        b
    }

    /// Whether the sectors lie within one page in order.
    pub fn is_valid(&self) -> bool {
        self.first_sect <= self.last_sect && self.last_sect < SECTORS_PER_PAGE
    }

    /// Sectors covered (0 when invalid).
    pub fn sectors(&self) -> u32 {
        if self.is_valid() {
            u32::from(self.last_sect - self.first_sect) + 1
        } else {
            0
        }
    }
}

/// `struct blkif_request` for READ, WRITE, WRITE_BARRIER and FLUSH_DISKCACHE (112 bytes),
/// blkif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectRequest {
    /// `BLKIF_OP_*` (any value but DISCARD and INDIRECT).
    pub operation: u8,
    /// Segments used (`<= MAX_SEGMENTS`).
    pub nr_segments: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector.
    pub sector_number: u64,
    /// All 11 segment slots; those past `nr_segments` are zero when emitted.
    pub seg: [Segment; MAX_SEGMENTS],
}

impl DirectRequest {
    /// The used segments.
    pub fn segments(&self) -> &[Segment] {
        &self.seg[..usize::from(self.nr_segments).min(MAX_SEGMENTS)]
    }
}

/// `struct blkif_request_discard` (32 bytes), blkif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardRequest {
    /// `BLKIF_DISCARD_*`.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect` (64 bytes), blkif.h \[X\]; `handle` follows `sector_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectRequest {
    /// The real operation (READ or WRITE).
    pub indirect_op: u8,
    /// Segments described by the indirect pages.
    pub nr_segments: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Grants of the pages holding the segment arrays.
    pub indirect_grefs: [GrantRef; MAX_INDIRECT_PAGES],
}

/// One blkif ring request, by form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// READ/WRITE/WRITE_BARRIER/FLUSH_DISKCACHE (and unknown operations).
    Direct(DirectRequest),
    /// DISCARD.
    Discard(DiscardRequest),
    /// INDIRECT.
    Indirect(IndirectRequest),
}

impl Request {
    /// Size of a ring entry (`union blkif_sring_entry`).
    pub const ENTRY_SIZE: usize = 112;

    /// The id echoed by the response.
    pub fn id(&self) -> u64 {
        match self {
            Self::Direct(r) => r.id,
            Self::Discard(r) => r.id,
            Self::Indirect(r) => r.id,
        }
    }

    /// The `operation` byte.
    pub fn operation(&self) -> u8 {
        match self {
            Self::Direct(r) => r.operation,
            Self::Discard(_) => OP_DISCARD,
            Self::Indirect(_) => OP_INDIRECT,
        }
    }

    /// Bytes of this form (112, 32 or 64).
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::Direct(_) => 112,
            Self::Discard(_) => 32,
            Self::Indirect(_) => 64,
        }
    }

    /// Decodes a copied ring entry; refuses a segment count beyond the form's maximum.
    pub fn parse(b: &[u8; Self::ENTRY_SIZE]) -> Result<Self, WireError> {
        Ok(match b[0] {
            OP_DISCARD => Self::Discard(DiscardRequest {
                flag: b[1],
                handle: u16_at(b, 2),
                id: u64_at(b, 8),
                sector_number: u64_at(b, 16),
                nr_sectors: u64_at(b, 24),
            }),
            OP_INDIRECT => {
                let nr = u16_at(b, 2);
                let max = (MAX_INDIRECT_PAGES * 4096 / Segment::SIZE) as u16;
                if nr > max {
                    return Err(WireError::TooManySegments { nr, max });
                }
                let mut indirect_grefs = [GrantRef(0); MAX_INDIRECT_PAGES];
                for (i, g) in indirect_grefs.iter_mut().enumerate() {
                    *g = GrantRef(u32_at(b, 28 + 4 * i));
                }
                Self::Indirect(IndirectRequest {
                    indirect_op: b[1],
                    nr_segments: nr,
                    id: u64_at(b, 8),
                    sector_number: u64_at(b, 16),
                    handle: u16_at(b, 24),
                    indirect_grefs,
                })
            }
            operation => {
                let nr = b[1];
                if usize::from(nr) > MAX_SEGMENTS {
                    return Err(WireError::TooManySegments {
                        nr: nr.into(),
                        max: MAX_SEGMENTS as u16,
                    });
                }
                let mut seg = [Segment::EMPTY; MAX_SEGMENTS];
                // Unused segment slots are not part of the request (peers need not zero them).
                for (i, s) in seg.iter_mut().enumerate().take(usize::from(nr)) {
                    let mut e = [0u8; Segment::SIZE];
                    let at = 24 + Segment::SIZE * i;
                    e.copy_from_slice(&b[at..at + Segment::SIZE]);
                    *s = Segment::parse(&e);
                }
                Self::Direct(DirectRequest {
                    operation,
                    nr_segments: nr,
                    handle: u16_at(b, 2),
                    id: u64_at(b, 8),
                    sector_number: u64_at(b, 16),
                    seg,
                })
            }
        })
    }

    /// Encodes a whole 112-byte ring entry; bytes past the form and unused segments are zero.
    pub fn emit(&self) -> [u8; Self::ENTRY_SIZE] {
        let mut b = [0u8; Self::ENTRY_SIZE];
        b[0] = self.operation();
        b[8..16].copy_from_slice(&self.id().to_le_bytes());
        match self {
            Self::Direct(r) => {
                b[1] = r.nr_segments;
                b[2..4].copy_from_slice(&r.handle.to_le_bytes());
                b[16..24].copy_from_slice(&r.sector_number.to_le_bytes());
                for (i, s) in r.segments().iter().enumerate() {
                    let at = 24 + Segment::SIZE * i;
                    b[at..at + Segment::SIZE].copy_from_slice(&s.emit());
                }
            }
            Self::Discard(r) => {
                b[1] = r.flag;
                b[2..4].copy_from_slice(&r.handle.to_le_bytes());
                b[16..24].copy_from_slice(&r.sector_number.to_le_bytes());
                b[24..32].copy_from_slice(&r.nr_sectors.to_le_bytes());
            }
            Self::Indirect(r) => {
                b[1] = r.indirect_op;
                b[2..4].copy_from_slice(&r.nr_segments.to_le_bytes());
                b[16..24].copy_from_slice(&r.sector_number.to_le_bytes());
                b[24..26].copy_from_slice(&r.handle.to_le_bytes());
                for (i, g) in r.indirect_grefs.iter().enumerate() {
                    b[28 + 4 * i..32 + 4 * i].copy_from_slice(&g.0.to_le_bytes());
                }
            }
        }
        b
    }
}

/// `struct blkif_response` (16 bytes), blkif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

impl Response {
    /// Bytes on the wire.
    pub const SIZE: usize = 16;

    /// Decodes 16 bytes (padding ignored).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            id: u64_at(b, 0),
            operation: b[8],
            status: u16_at(b, 10) as i16,
        }
    }

    /// Encodes into 16 bytes with zero padding.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8] = self.operation;
        b[10..12].copy_from_slice(&self.status.to_le_bytes());
        b
    }
}
