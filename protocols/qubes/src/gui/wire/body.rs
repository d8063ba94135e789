//! Fixed-size GUI message bodies (`struct msg_*`, qubes-gui-protocol.h \[QG\]): all little-endian
//! u32/i32 words, so one macro declares each with its exact size.

use super::WireError;

/// A little-endian 32-bit word type.
pub(crate) trait Word: Sized {
    fn from_le(b: [u8; 4]) -> Self;
    fn to_le(&self) -> [u8; 4];
}
impl Word for u32 {
    fn from_le(b: [u8; 4]) -> Self {
        u32::from_le_bytes(b)
    }
    fn to_le(&self) -> [u8; 4] {
        self.to_le_bytes()
    }
}
impl Word for i32 {
    fn from_le(b: [u8; 4]) -> Self {
        i32::from_le_bytes(b)
    }
    fn to_le(&self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

/// Reads the `i`th little-endian word of `b` (zero past the end; callers check the length first).
pub(crate) fn word(b: &[u8], i: usize) -> [u8; 4] {
    match b.get(i * 4..i * 4 + 4) {
        Some(w) => [w[0], w[1], w[2], w[3]],
        None => [0; 4],
    }
}

macro_rules! body {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)+ }

        impl $name {
            /// Size on the wire (`sizeof`).
            pub const LEN: usize = [$(stringify!($f)),+].len() * 4;

            /// Decodes exactly [`Self::LEN`] bytes.
            pub fn parse(b: &[u8]) -> Result<Self, WireError> {
                if b.len() != Self::LEN {
                    return Err(WireError::BodyLength { expected: Self::LEN as u32, got: b.len() as u32 });
                }
                let mut _i = 0;
                Ok(Self { $($f: { let v = <$t as Word>::from_le(word(b, _i)); _i += 1; v },)+ })
            }

            /// Encodes into the first [`Self::LEN`] bytes of `out` (the caller sized it).
            pub fn emit(&self, out: &mut [u8]) {
                for (dst, w) in out.chunks_exact_mut(4).zip([$(Word::to_le(&self.$f)),+]) {
                    dst.copy_from_slice(&w);
                }
            }
        }
    };
}

body!(
    /// `msg_xconf`: the screen the daemon offers (sent raw after the version word).
    XConf {
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// Depth (24).
        depth: u32,
        /// `w*h*4/1024 + 1`.
        mem: u32,
    }
);

impl XConf {
    /// The xconf a daemon sends for a `w`×`h` screen at depth 24.
    pub fn for_screen(w: u32, h: u32) -> Self {
        let mem = (u64::from(w) * u64::from(h) * 4 / 1024 + 1).min(u64::from(u32::MAX)) as u32;
        XConf {
            w,
            h,
            depth: 24,
            mem,
        }
    }
}

body!(
    /// `msg_keypress`.
    Keypress {
        /// KeyPress 2 / KeyRelease 3.
        ty: u32,
        /// Window-relative x.
        x: i32,
        /// Window-relative y.
        y: i32,
        /// X modifier mask.
        state: u32,
        /// X11 keycode (evdev + 8).
        keycode: u32,
    }
);

body!(
    /// `msg_button`.
    Button {
        /// ButtonPress 4 / ButtonRelease 5.
        ty: u32,
        /// Window-relative x.
        x: i32,
        /// Window-relative y.
        y: i32,
        /// X modifier and button mask.
        state: u32,
        /// 1-3, 4/5 for the wheel.
        button: u32,
    }
);

body!(
    /// `msg_motion`.
    Motion {
        /// Window-relative x.
        x: i32,
        /// Window-relative y.
        y: i32,
        /// X modifier and button mask.
        state: u32,
        /// Motion hint flag.
        is_hint: u32,
    }
);

body!(
    /// `msg_crossing`.
    Crossing {
        /// EnterNotify 7 / LeaveNotify 8.
        ty: u32,
        /// Window-relative x.
        x: i32,
        /// Window-relative y.
        y: i32,
        /// X modifier mask.
        state: u32,
        /// X crossing mode.
        mode: u32,
        /// X crossing detail.
        detail: u32,
        /// Whether the window has focus.
        focus: u32,
    }
);

body!(
    /// `msg_focus`.
    Focus {
        /// FocusIn 9 / FocusOut 10.
        ty: u32,
        /// X focus mode.
        mode: u32,
        /// X focus detail.
        detail: u32,
    }
);

body!(
    /// `msg_resize` (obsolete).
    Resize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    }
);

body!(
    /// `msg_create`: x, y, width, height, parent, override_redirect (in that order, unlike mirage).
    Create {
        /// x.
        x: i32,
        /// y.
        y: i32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Ignored by the daemon.
        parent: u32,
        /// Override-redirect flag.
        override_redirect: u32,
    }
);

body!(
    /// `msg_map_info`: transient_for first.
    MapInfo {
        /// Window this one is transient for (0 = none).
        transient_for: u32,
        /// Override-redirect flag.
        override_redirect: u32,
    }
);

body!(
    /// `msg_configure`.
    Configure {
        /// x.
        x: i32,
        /// y.
        y: i32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Override-redirect flag.
        override_redirect: u32,
    }
);

body!(
    /// `msg_shmimage`: a region to repaint.
    ShmImage {
        /// x.
        x: i32,
        /// y.
        y: i32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    }
);

body!(
    /// `msg_window_hints`. Flags: PMinSize 16, PMaxSize 32.
    WindowHints {
        /// X size-hint flags.
        flags: u32,
        /// Minimum width.
        min_width: u32,
        /// Minimum height.
        min_height: u32,
        /// Maximum width.
        max_width: u32,
        /// Maximum height.
        max_height: u32,
        /// Width increment.
        width_inc: u32,
        /// Height increment.
        height_inc: u32,
        /// Base width.
        base_width: u32,
        /// Base height.
        base_height: u32,
    }
);

body!(
    /// `msg_window_flags`: FULLSCREEN 1, DEMANDS_ATTENTION 2, MINIMIZE 4.
    WindowFlags {
        /// Flags to set.
        flags_set: u32,
        /// Flags to clear.
        flags_unset: u32,
    }
);

body!(
    /// `msg_cursor`: 0 default, 0x100 + XC_* for an X font cursor.
    Cursor {
        /// The cursor.
        cursor: u32,
    }
);

body!(
    /// `shm_cmd` (MFNDUMP, deprecated), followed by `num_mfn` frame numbers.
    ShmCmd {
        /// shm id.
        shmid: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Bits per pixel.
        bpp: u32,
        /// Offset of the image in the first frame.
        off: u32,
        /// Number of frames that follow.
        num_mfn: u32,
        /// Domain id.
        domid: u32,
    }
);

body!(
    /// `msg_window_dump_hdr`, followed by the grant refs.
    WindowDumpHdr {
        /// `WINDOW_DUMP_TYPE_GRANT_REFS` (0).
        ty: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Bits per pixel (32; ignored by the daemon).
        bpp: u32,
    }
);
