//! What the window shows of the decoded canvas: fit, zoom steps, pan, and the keys that change
//! them; rendering samples the canvas into window rows (nearest neighbour, exact at 100%).

/// Scale unit: screen pixels per source pixel in 16.16 fixed point.
pub const ONE: u64 = 1 << 16;

/// Zoom steps as (numerator, denominator); +/- move between them.
const STEPS: [(u64, u64); 18] = [
    (1, 32),
    (1, 16),
    (1, 8),
    (1, 4),
    (1, 3),
    (1, 2),
    (2, 3),
    (1, 1),
    (3, 2),
    (2, 1),
    (3, 1),
    (4, 1),
    (6, 1),
    (8, 1),
    (12, 1),
    (16, 1),
    (24, 1),
    (32, 1),
];

/// The BGRX colour around the image when it is smaller than the window.
pub const BACKGROUND: [u8; 4] = [0x30, 0x30, 0x30, 0xff];

/// A user request, from a key or the pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ZoomIn,
    ZoomOut,
    /// Fit the image to the window (never enlarged).
    Fit,
    /// 100%: one source pixel per screen pixel.
    Actual,
    /// Move the view by this many screen pixels.
    Pan(i64, i64),
    /// End the viewer (and the disposable).
    Quit,
}

/// The action of an X11 key press (keycode = evdev + 8, as the GUI daemon sends it).
/// `q`/Escape quit; `+`/`=`/keypad + zoom in; `-`/keypad - zoom out; `0`/`f` fit; `1` 100%;
/// arrows pan by an eighth of the window.
pub fn key_action(keycode: u32, win: (u32, u32)) -> Option<Action> {
    let step_x = i64::from((win.0 / 8).max(8));
    let step_y = i64::from((win.1 / 8).max(8));
    Some(match keycode {
        9 | 24 => Action::Quit,
        21 | 86 => Action::ZoomIn,
        20 | 82 => Action::ZoomOut,
        19 | 90 | 41 => Action::Fit,
        10 | 87 => Action::Actual,
        111 => Action::Pan(0, -step_y),
        116 => Action::Pan(0, step_y),
        113 => Action::Pan(-step_x, 0),
        114 => Action::Pan(step_x, 0),
        _ => return None,
    })
}

/// Integer square root (floor).
fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// The box to decode a `w`×`h` image into so the canvas holds at most `max_pixels`: the
/// image itself if it fits, else the largest box of the same aspect within the budget.
pub fn canvas_box(w: u32, h: u32, max_pixels: u64) -> (u32, u32) {
    let (w64, h64) = (u64::from(w.max(1)), u64::from(h.max(1)));
    if w64 * h64 <= max_pixels {
        return (w, h);
    }
    let m = u128::from(max_pixels);
    let bw = isqrt(m * u128::from(w64) / u128::from(h64)).max(1);
    let bh = isqrt(m * u128::from(h64) / u128::from(w64)).max(1);
    (
        u32::try_from(bw).unwrap_or(u32::MAX),
        u32::try_from(bh).unwrap_or(u32::MAX),
    )
}

/// The view of a `src` image (its full size) through a `win` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    src: (u32, u32),
    win: (u32, u32),
    scale: u64,
    /// Window's top-left in zoomed-image pixels (negative: the image is centred).
    pan: (i64, i64),
    fit: bool,
}

impl View {
    /// Fits a `src` image into a `win` window.
    pub fn new(src: (u32, u32), win: (u32, u32)) -> Self {
        let mut v = Self {
            src: (src.0.max(1), src.1.max(1)),
            win: (win.0.max(1), win.1.max(1)),
            scale: ONE,
            pan: (0, 0),
            fit: true,
        };
        v.scale = v.fit_scale();
        v.clamp();
        v
    }

    /// Window size.
    pub fn window(&self) -> (u32, u32) {
        self.win
    }

    /// Current scale (16.16).
    pub fn scale(&self) -> u64 {
        self.scale
    }

    /// Current zoom in whole percent.
    pub fn percent(&self) -> u64 {
        (self.scale * 100 + ONE / 2) / ONE
    }

    /// Whether the view follows the window size.
    pub fn is_fit(&self) -> bool {
        self.fit
    }

    fn fit_scale(&self) -> u64 {
        let sx = u64::from(self.win.0) * ONE / u64::from(self.src.0);
        let sy = u64::from(self.win.1) * ONE / u64::from(self.src.1);
        sx.min(sy).clamp(1, ONE)
    }

    /// The image's size on screen at the current scale.
    pub fn zoomed(&self) -> (u64, u64) {
        (
            (u64::from(self.src.0) * self.scale / ONE).max(1),
            (u64::from(self.src.1) * self.scale / ONE).max(1),
        )
    }

    fn clamp(&mut self) {
        let (zw, zh) = self.zoomed();
        let axis = |pan: i64, z: u64, win: u32| -> i64 {
            let (z, win) = (z as i64, i64::from(win));
            if z <= win {
                -((win - z) / 2)
            } else {
                pan.clamp(0, z - win)
            }
        };
        self.pan = (
            axis(self.pan.0, zw, self.win.0),
            axis(self.pan.1, zh, self.win.1),
        );
    }

    fn set_scale(&mut self, scale: u64) {
        let scale = scale.clamp(1, 32 * ONE);
        // Keep the source point under the window's centre where it is.
        let cx = (self.pan.0 + i64::from(self.win.0 / 2)) as i128;
        let cy = (self.pan.1 + i64::from(self.win.1 / 2)) as i128;
        let (old, new) = (i128::from(self.scale), i128::from(scale));
        self.pan = (
            (cx * new / old) as i64 - i64::from(self.win.0 / 2),
            (cy * new / old) as i64 - i64::from(self.win.1 / 2),
        );
        self.scale = scale;
        self.clamp();
    }

    /// Applies an action; returns whether what the window shows changed.
    pub fn apply(&mut self, a: Action) -> bool {
        let before = *self;
        match a {
            Action::ZoomIn => {
                let next = STEPS
                    .iter()
                    .map(|&(n, d)| n * ONE / d)
                    .find(|&s| s > self.scale);
                if let Some(s) = next {
                    self.fit = false;
                    self.set_scale(s);
                }
            }
            Action::ZoomOut => {
                let next = STEPS
                    .iter()
                    .rev()
                    .map(|&(n, d)| n * ONE / d)
                    .find(|&s| s < self.scale);
                if let Some(s) = next {
                    self.fit = false;
                    self.set_scale(s);
                }
            }
            Action::Fit => {
                self.fit = true;
                self.set_scale(self.fit_scale());
            }
            Action::Actual => {
                self.fit = false;
                self.set_scale(ONE);
            }
            Action::Pan(dx, dy) => {
                self.pan = (self.pan.0.saturating_add(dx), self.pan.1.saturating_add(dy));
                self.clamp();
            }
            Action::Quit => return false,
        }
        *self != before
    }

    /// The window was resized: a fitted view refits, a zoomed one keeps its scale.
    pub fn resize(&mut self, win: (u32, u32)) {
        self.win = (win.0.max(1), win.1.max(1));
        if self.fit {
            self.scale = self.fit_scale();
        }
        self.clamp();
    }

    /// Renders window row `y` of a canvas (the source decoded at `cw`×`ch`, BGRX, opaque)
    /// into `out` (`4 * window width` bytes). `cols` caches the column map between rows.
    pub fn render_row(&self, canvas: (u32, u32, &[u8]), y: u32, cols: &mut ColMap, out: &mut [u8]) {
        let (cw, ch, px) = canvas;
        let (zw, zh) = self.zoomed();
        cols.update(self, cw, zw);
        let iy = i64::from(y) + self.pan.1;
        let row = if iy >= 0 && (iy as u64) < zh {
            let cy = (iy as u64 * u64::from(ch) / zh) as usize;
            let stride = cw as usize * 4;
            px.get(cy * stride..cy * stride + stride)
        } else {
            None
        };
        for (o, &c) in out.chunks_exact_mut(4).zip(&cols.map) {
            let s = match row {
                Some(r) if c != u32::MAX => {
                    let i = c as usize * 4;
                    r.get(i..i + 4).unwrap_or(&BACKGROUND)
                }
                _ => &BACKGROUND,
            };
            o.copy_from_slice(s);
        }
    }
}

/// The canvas column of every window column (`u32::MAX` outside the image).
#[derive(Debug, Default)]
pub struct ColMap {
    key: Option<(View, u32)>,
    map: alloc::vec::Vec<u32>,
}

impl ColMap {
    fn update(&mut self, v: &View, cw: u32, zw: u64) {
        if self.key == Some((*v, cw)) {
            return;
        }
        self.key = Some((*v, cw));
        self.map.clear();
        self.map.extend((0..v.win.0).map(|x| {
            let ix = i64::from(x) + v.pan.0;
            if ix >= 0 && (ix as u64) < zw {
                (ix as u64 * u64::from(cw) / zw) as u32
            } else {
                u32::MAX
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn render(v: &View, cw: u32, ch: u32, px: &[u8]) -> Vec<u8> {
        let (w, h) = v.window();
        let mut out = vec![0u8; (w * h * 4) as usize];
        let mut cols = ColMap::default();
        for (y, row) in out.chunks_exact_mut((w * 4) as usize).enumerate() {
            v.render_row((cw, ch, px), y as u32, &mut cols, row);
        }
        out
    }

    fn ramp(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| [(i % w) as u8, (i / w) as u8, (i % 251) as u8, 0xff])
            .collect()
    }

    #[test]
    fn small_image_fits_at_100_percent_and_renders_exactly() {
        let px = ramp(40, 30);
        let v = View::new((40, 30), (40, 30));
        assert_eq!(v.percent(), 100);
        assert_eq!(render(&v, 40, 30, &px), px);
    }

    #[test]
    fn image_smaller_than_window_is_centred_on_background() {
        let px = ramp(4, 2);
        let v = View::new((4, 2), (8, 4));
        let out = render(&v, 4, 2, &px);
        assert_eq!(&out[..4], &BACKGROUND);
        // Row 1, column 2 is source (0, 0).
        assert_eq!(&out[(8 + 2) * 4..(8 + 3) * 4], &px[..4]);
    }

    #[test]
    fn large_image_fits_inside_window_keeping_aspect() {
        let v = View::new((4000, 3000), (800, 800));
        assert_eq!(v.percent(), 20);
        let (zw, zh) = v.zoomed();
        assert!(zw <= 800 && zh <= 800 && zw >= 799, "{zw}x{zh}");
    }

    #[test]
    fn zoom_steps_and_actual_and_fit() {
        let mut v = View::new((4000, 3000), (800, 600));
        assert!(v.apply(Action::ZoomIn));
        assert_eq!(v.percent(), 25);
        assert!(v.apply(Action::Actual));
        assert_eq!(v.scale(), ONE);
        assert!(v.apply(Action::ZoomIn));
        assert_eq!(v.percent(), 150);
        assert!(v.apply(Action::ZoomOut));
        assert!(v.apply(Action::ZoomOut));
        assert_eq!(v.percent(), 67);
        assert!(v.apply(Action::Fit));
        assert_eq!(v.percent(), 20);
        assert!(v.is_fit());
        assert!(!v.apply(Action::Quit));
    }

    #[test]
    fn zoom_keeps_the_centre_point() {
        let mut v = View::new((1000, 1000), (100, 100));
        v.apply(Action::Actual);
        // Centred at 100%: window shows source 450..550.
        assert_eq!(v.pan, (450, 450));
        v.apply(Action::ZoomIn);
        assert_eq!(v.pan, (700, 700));
    }

    #[test]
    fn pan_moves_and_clamps_at_edges() {
        let px = ramp(200, 100);
        let mut v = View::new((200, 100), (50, 50));
        v.apply(Action::Actual);
        let before = render(&v, 200, 100, &px);
        assert!(v.apply(Action::Pan(10, 0)));
        let after = render(&v, 200, 100, &px);
        assert_ne!(before, after);
        // Shifted by exactly 10 columns.
        assert_eq!(&after[..4], &before[40..44]);
        assert!(v.apply(Action::Pan(-1000, -1000)));
        assert_eq!(v.pan, (0, 0));
        assert!(!v.apply(Action::Pan(-1, -1)));
        v.apply(Action::Pan(10_000, 10_000));
        assert_eq!(v.pan, (150, 50));
    }

    #[test]
    fn resize_refits_a_fitted_view_only() {
        let mut v = View::new((1000, 500), (500, 500));
        assert_eq!(v.percent(), 50);
        v.resize((250, 250));
        assert_eq!(v.percent(), 25);
        v.apply(Action::Actual);
        v.resize((100, 100));
        assert_eq!(v.percent(), 100);
    }

    #[test]
    fn downscaled_canvas_is_drawn_at_source_scale() {
        // Source 400x200 decoded into a 100x50 canvas, shown at fit in a 200x100 window.
        let px = ramp(100, 50);
        let v = View::new((400, 200), (200, 100));
        let out = render(&v, 100, 50, &px);
        // Window column 2 shows source column 4 = canvas column 1.
        assert_eq!(&out[8..12], &px[4..8]);
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(key_action(24, (80, 80)), Some(Action::Quit));
        assert_eq!(key_action(9, (80, 80)), Some(Action::Quit));
        assert_eq!(key_action(21, (80, 80)), Some(Action::ZoomIn));
        assert_eq!(key_action(20, (80, 80)), Some(Action::ZoomOut));
        assert_eq!(key_action(19, (80, 80)), Some(Action::Fit));
        assert_eq!(key_action(10, (80, 80)), Some(Action::Actual));
        assert_eq!(key_action(114, (800, 80)), Some(Action::Pan(100, 0)));
        assert_eq!(key_action(38, (80, 80)), None);
    }

    #[test]
    fn canvas_box_bounds_pixels_and_keeps_aspect() {
        assert_eq!(canvas_box(100, 50, 10_000), (100, 50));
        let (w, h) = canvas_box(100_000, 100_000, 16 << 20);
        assert_eq!((w, h), (4096, 4096));
        let (w, h) = canvas_box(100_000, 10, 1000);
        assert!(u64::from(w) * u64::from(h.min(10)) <= 1000 * 10);
        assert_eq!(isqrt(99), 9);
        assert_eq!(isqrt(100), 10);
    }
}
