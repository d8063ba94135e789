//! Why a PNG was refused: one variant per failed check, each printable as one line.
//! No strings are built: the variants carry only the numbers the message needs.

use core::fmt;

/// Which budget a file went beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Width or height declared in IHDR.
    Dimension,
    /// Width × height of the source image.
    Pixels,
    /// Bytes of one decoded scanline (the row buffers).
    RowBytes,
    /// Total bytes the zlib stream must inflate to (the time budget).
    DecodedBytes,
    /// One non-IDAT chunk's declared length.
    ChunkLength,
    /// All ancillary chunks together.
    AncillaryBytes,
    /// Canvas + row buffers + inflate window.
    Memory,
}

/// A PNG file refused by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngError {
    /// The 8-byte PNG signature is missing or damaged.
    BadSignature,
    /// The file ends inside a chunk or before IEND.
    Truncated,
    /// A chunk length above 2^31-1.
    BadChunkLength { kind: [u8; 4] },
    /// A chunk whose CRC does not match its type and data.
    BadCrc { kind: [u8; 4] },
    /// IHDR has a zero dimension, an unknown colour type, bit depth, compression, filter or interlace method.
    BadHeader { what: &'static str },
    /// A chunk where the PNG chunk order does not allow it.
    ChunkOrder { kind: [u8; 4] },
    /// A critical chunk this decoder does not know.
    UnknownCritical { kind: [u8; 4] },
    /// PLTE or tRNS has a length the colour type does not allow.
    BadPalette,
    /// An indexed-colour image without PLTE.
    MissingPalette,
    /// No IDAT chunk before IEND.
    NoImageData,
    /// The zlib stream is corrupt.
    Inflate,
    /// The zlib stream ended before every scanline was decoded.
    ImageDataShort,
    /// A scanline filter type above 4.
    BadFilter { filter: u8 },
    /// A budget was exceeded; checked before allocating or decoding.
    TooLarge { what: Limit, needed: u64, max: u64 },
    /// The allocator refused a buffer the budgets allowed.
    OutOfMemory { needed: u64 },
}

fn kind_str(kind: &[u8; 4]) -> &str {
    core::str::from_utf8(kind).unwrap_or("????")
}

impl fmt::Display for PngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSignature => write!(f, "not a PNG file (bad signature)"),
            Self::Truncated => write!(f, "PNG file is truncated"),
            Self::BadChunkLength { kind } => {
                write!(f, "chunk {} has an invalid length", kind_str(kind))
            }
            Self::BadCrc { kind } => write!(f, "chunk {} has a wrong CRC", kind_str(kind)),
            Self::BadHeader { what } => write!(f, "invalid IHDR: {what}"),
            Self::ChunkOrder { kind } => write!(f, "chunk {} is out of order", kind_str(kind)),
            Self::UnknownCritical { kind } => {
                write!(f, "unknown critical chunk {}", kind_str(kind))
            }
            Self::BadPalette => write!(f, "invalid PLTE or tRNS chunk"),
            Self::MissingPalette => write!(f, "indexed-colour image without PLTE"),
            Self::NoImageData => write!(f, "no IDAT chunk"),
            Self::Inflate => write!(f, "corrupt compressed image data"),
            Self::ImageDataShort => write!(f, "compressed image data ends early"),
            Self::BadFilter { filter } => write!(f, "invalid scanline filter {filter}"),
            Self::TooLarge { what, needed, max } => {
                write!(f, "image too large: {what:?} needs {needed}, limit {max}")
            }
            Self::OutOfMemory { needed } => write!(f, "out of memory allocating {needed} bytes"),
        }
    }
}
