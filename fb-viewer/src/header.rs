//! IHDR: the image header, validated into a typed Repr before anything is sized from it.
//! Derived sizes are computed in u64 so no declared dimension can overflow them.

use crate::error::PngError;

/// PNG colour types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorType {
    Gray,
    Rgb,
    Indexed,
    GrayAlpha,
    Rgba,
}

impl ColorType {
    /// Samples per pixel.
    pub fn channels(self) -> u64 {
        match self {
            Self::Gray | Self::Indexed => 1,
            Self::GrayAlpha => 2,
            Self::Rgb => 3,
            Self::Rgba => 4,
        }
    }
}

/// The fields of IHDR, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    pub color: ColorType,
    pub interlaced: bool,
}

/// Maximum width/height the PNG specification allows.
pub const MAX_DIMENSION: u32 = 0x7fff_ffff;

impl Header {
    /// Parses the 13 data bytes of IHDR.
    pub fn parse(data: &[u8]) -> Result<Self, PngError> {
        let d: &[u8; 13] = data.try_into().map_err(|_| PngError::BadHeader {
            what: "length is not 13",
        })?;
        let width = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let height = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(PngError::BadHeader { what: "dimension" });
        }
        let color = match d[9] {
            0 => ColorType::Gray,
            2 => ColorType::Rgb,
            3 => ColorType::Indexed,
            4 => ColorType::GrayAlpha,
            6 => ColorType::Rgba,
            _ => {
                return Err(PngError::BadHeader {
                    what: "colour type",
                })
            }
        };
        let bit_depth = d[8];
        let ok = match color {
            ColorType::Gray => matches!(bit_depth, 1 | 2 | 4 | 8 | 16),
            ColorType::Indexed => matches!(bit_depth, 1 | 2 | 4 | 8),
            _ => matches!(bit_depth, 8 | 16),
        };
        if !ok {
            return Err(PngError::BadHeader { what: "bit depth" });
        }
        if d[10] != 0 {
            return Err(PngError::BadHeader {
                what: "compression method",
            });
        }
        if d[11] != 0 {
            return Err(PngError::BadHeader {
                what: "filter method",
            });
        }
        let interlaced = match d[12] {
            0 => false,
            1 => true,
            _ => {
                return Err(PngError::BadHeader {
                    what: "interlace method",
                })
            }
        };
        Ok(Self {
            width,
            height,
            bit_depth,
            color,
            interlaced,
        })
    }

    /// Bits per pixel.
    pub fn bits_per_pixel(&self) -> u64 {
        self.color.channels() * u64::from(self.bit_depth)
    }

    /// Bytes of one scanline of `width` pixels, without the filter byte.
    pub fn row_bytes(&self, width: u64) -> u64 {
        (width * self.bits_per_pixel()).div_ceil(8)
    }

    /// Filter stride: bytes per complete pixel, at least 1.
    pub fn filter_bpp(&self) -> usize {
        (self.bits_per_pixel() / 8).max(1) as usize
    }

    /// Total bytes the zlib stream inflates to, filter bytes included.
    pub fn raw_size(&self) -> u64 {
        if !self.interlaced {
            return u64::from(self.height) * (self.row_bytes(u64::from(self.width)) + 1);
        }
        ADAM7
            .iter()
            .map(|p| {
                let (w, h) = p.size(self.width, self.height);
                if w == 0 || h == 0 {
                    0
                } else {
                    h * (self.row_bytes(w) + 1)
                }
            })
            .sum()
    }
}

/// One Adam7 pass: origin and step in each direction.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub x0: u64,
    pub y0: u64,
    pub dx: u64,
    pub dy: u64,
}

impl Pass {
    /// Width and height of this pass's reduced image.
    pub fn size(&self, width: u32, height: u32) -> (u64, u64) {
        let n = |len: u32, o: u64, d: u64| (u64::from(len) + d - 1).saturating_sub(o) / d;
        (n(width, self.x0, self.dx), n(height, self.y0, self.dy))
    }
}

/// The seven Adam7 passes.
pub const ADAM7: [Pass; 7] = [
    Pass {
        x0: 0,
        y0: 0,
        dx: 8,
        dy: 8,
    },
    Pass {
        x0: 4,
        y0: 0,
        dx: 8,
        dy: 8,
    },
    Pass {
        x0: 0,
        y0: 4,
        dx: 4,
        dy: 8,
    },
    Pass {
        x0: 2,
        y0: 0,
        dx: 4,
        dy: 4,
    },
    Pass {
        x0: 0,
        y0: 2,
        dx: 2,
        dy: 4,
    },
    Pass {
        x0: 1,
        y0: 0,
        dx: 2,
        dy: 2,
    },
    Pass {
        x0: 0,
        y0: 1,
        dx: 1,
        dy: 2,
    },
];

/// The whole image as a single pass.
pub const FULL: Pass = Pass {
    x0: 0,
    y0: 0,
    dx: 1,
    dy: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam7_pass_sizes_cover_every_pixel_once() {
        for (w, h) in [(1, 1), (3, 5), (8, 8), (9, 17), (33, 2)] {
            let total: u64 = ADAM7
                .iter()
                .map(|p| {
                    let (a, b) = p.size(w, h);
                    a * b
                })
                .sum();
            assert_eq!(total, u64::from(w) * u64::from(h), "{w}x{h}");
        }
    }

    #[test]
    fn zero_dimension_is_refused() {
        let mut d = [0u8; 13];
        d[3] = 1;
        d[8] = 8;
        assert_eq!(
            Header::parse(&d),
            Err(PngError::BadHeader { what: "dimension" })
        );
    }
}
