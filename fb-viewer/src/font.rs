//! A 3×5 pixel font (drawn at 2×) for the refusal message: enough to tell the user why a
//! file is not shown. Letters are drawn as capitals; unknown characters as `?`.

use alloc::vec::Vec;

/// Each glyph: five rows of three bits (bit 2 = left column), top row first.
const GLYPHS: &[(u8, [u8; 5])] = &[
    (b' ', [0, 0, 0, 0, 0]),
    (b'A', [2, 5, 7, 5, 5]),
    (b'B', [6, 5, 6, 5, 6]),
    (b'C', [3, 4, 4, 4, 3]),
    (b'D', [6, 5, 5, 5, 6]),
    (b'E', [7, 4, 6, 4, 7]),
    (b'F', [7, 4, 6, 4, 4]),
    (b'G', [3, 4, 5, 5, 3]),
    (b'H', [5, 5, 7, 5, 5]),
    (b'I', [7, 2, 2, 2, 7]),
    (b'J', [1, 1, 1, 5, 2]),
    (b'K', [5, 5, 6, 5, 5]),
    (b'L', [4, 4, 4, 4, 7]),
    (b'M', [5, 7, 7, 5, 5]),
    (b'N', [6, 5, 5, 5, 5]),
    (b'O', [2, 5, 5, 5, 2]),
    (b'P', [6, 5, 6, 4, 4]),
    (b'Q', [2, 5, 5, 6, 3]),
    (b'R', [6, 5, 6, 5, 5]),
    (b'S', [3, 4, 2, 1, 6]),
    (b'T', [7, 2, 2, 2, 2]),
    (b'U', [5, 5, 5, 5, 7]),
    (b'V', [5, 5, 5, 5, 2]),
    (b'W', [5, 5, 7, 7, 5]),
    (b'X', [5, 5, 2, 5, 5]),
    (b'Y', [5, 5, 2, 2, 2]),
    (b'Z', [7, 1, 2, 4, 7]),
    (b'0', [7, 5, 5, 5, 7]),
    (b'1', [2, 6, 2, 2, 7]),
    (b'2', [6, 1, 2, 4, 7]),
    (b'3', [6, 1, 2, 1, 6]),
    (b'4', [5, 5, 7, 1, 1]),
    (b'5', [7, 4, 6, 1, 6]),
    (b'6', [3, 4, 7, 5, 7]),
    (b'7', [7, 1, 2, 2, 2]),
    (b'8', [7, 5, 7, 5, 7]),
    (b'9', [7, 5, 7, 1, 6]),
    (b'.', [0, 0, 0, 0, 2]),
    (b',', [0, 0, 0, 2, 4]),
    (b':', [0, 2, 0, 2, 0]),
    (b';', [0, 2, 0, 2, 4]),
    (b'-', [0, 0, 7, 0, 0]),
    (b'_', [0, 0, 0, 0, 7]),
    (b'/', [1, 1, 2, 4, 4]),
    (b'\\', [4, 4, 2, 1, 1]),
    (b'(', [1, 2, 2, 2, 1]),
    (b')', [4, 2, 2, 2, 4]),
    (b'[', [3, 2, 2, 2, 3]),
    (b']', [6, 2, 2, 2, 6]),
    (b'!', [2, 2, 2, 0, 2]),
    (b'?', [6, 1, 2, 0, 2]),
    (b'\'', [2, 2, 0, 0, 0]),
    (b'"', [5, 5, 0, 0, 0]),
    (b'+', [0, 2, 7, 2, 0]),
    (b'=', [0, 7, 0, 7, 0]),
    (b'*', [5, 2, 5, 0, 0]),
    (b'%', [5, 1, 2, 4, 5]),
    (b'#', [5, 7, 5, 7, 5]),
    (b'@', [7, 5, 7, 4, 7]),
    (b'<', [1, 2, 4, 2, 1]),
    (b'>', [4, 2, 1, 2, 4]),
    (b'|', [2, 2, 2, 2, 2]),
];

const SCALE: u32 = 2;
/// Horizontal advance and line height in pixels.
const ADVANCE: u32 = 4 * SCALE;
const LINE: u32 = 7 * SCALE;
const MARGIN: u32 = 12;
/// BGRX colours.
const BG: [u8; 4] = [0x30, 0x30, 0x70, 0xff];
const FG: [u8; 4] = [0xff, 0xff, 0xff, 0xff];

fn glyph(c: u8) -> [u8; 5] {
    let c = c.to_ascii_uppercase();
    GLYPHS
        .iter()
        .find(|(k, _)| *k == c)
        .or_else(|| GLYPHS.iter().find(|(k, _)| *k == b'?'))
        .map_or([0; 5], |(_, g)| *g)
}

/// A message laid out in lines for a window `width` pixels wide.
#[derive(Debug)]
pub struct Text {
    lines: Vec<Vec<u8>>,
}

impl Text {
    /// Lays out "Cannot show this file:" and `msg`, wrapped at word boundaries.
    pub fn new(msg: &str, width: u32) -> Self {
        let cols = (width.saturating_sub(2 * MARGIN) / ADVANCE).max(1) as usize;
        let mut lines: Vec<Vec<u8>> = Vec::new();
        lines.push(b"Cannot show this file:".to_vec());
        let mut line: Vec<u8> = Vec::new();
        for word in msg.split(' ').filter(|w| !w.is_empty()) {
            for piece in word.as_bytes().chunks(cols) {
                if !line.is_empty() && line.len() + 1 + piece.len() > cols {
                    lines.push(core::mem::take(&mut line));
                }
                if !line.is_empty() {
                    line.push(b' ');
                }
                line.extend_from_slice(piece);
            }
        }
        if !line.is_empty() {
            lines.push(line);
        }
        Self { lines }
    }

    /// Renders window row `y` (BGRX) into `out`.
    pub fn render_row(&self, y: u32, out: &mut [u8]) {
        for px in out.chunks_exact_mut(4) {
            px.copy_from_slice(&BG);
        }
        let Some(ty) = y.checked_sub(MARGIN) else {
            return;
        };
        let Some(line) = self.lines.get((ty / LINE) as usize) else {
            return;
        };
        let gy = (ty % LINE) / SCALE;
        if gy >= 5 {
            return;
        }
        for (i, &c) in line.iter().enumerate() {
            let bits = glyph(c)[gy as usize];
            for gx in 0..3u32 {
                if bits & (4 >> gx) == 0 {
                    continue;
                }
                for s in 0..SCALE {
                    let x = MARGIN + i as u32 * ADVANCE + gx * SCALE + s;
                    let at = x as usize * 4;
                    if let Some(px) = out.get_mut(at..at + 4) {
                        px.copy_from_slice(&FG);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn message_wraps_within_the_window() {
        let t = Text::new(
            "image too large: Pixels needs 10000000000, limit 4294967296",
            200,
        );
        let cols = ((200 - 2 * MARGIN) / ADVANCE) as usize;
        assert!(t.lines.len() > 2);
        assert!(t.lines.iter().all(|l| l.len() <= cols));
    }

    #[test]
    fn glyph_pixels_land_where_the_font_says() {
        let t = Text::new("", 100);
        let mut row = vec![0u8; 100 * 4];
        // Top row of 'C' (first glyph of the heading) is .## at 2x: pixels 14..18 lit.
        t.render_row(MARGIN, &mut row);
        let lit: Vec<usize> = (0..100).filter(|&x| row[x * 4..x * 4 + 4] == FG).collect();
        assert_eq!(&lit[..4], &[14, 15, 16, 17]);
        t.render_row(0, &mut row);
        assert!(row.chunks(4).all(|p| p == BG));
    }

    #[test]
    fn every_printable_character_has_a_glyph_or_question_mark() {
        for c in 32u8..127 {
            let g = glyph(c);
            assert!(c == b' ' || g != [0; 5], "{}", c as char);
        }
    }
}
