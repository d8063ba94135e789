//! A qube's windows as real X11 windows when `DISPLAY` is set: one X thread per GUI connection
//! (pure-Rust x11rb client) draws what the GUI daemon sends it and hands input back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use qubes::gui::wire::{Button, Keypress, Motion, WindowId};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask,
    ImageFormat, ImageOrder, PropMode, VisualClass, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Commands queued to the X thread; past this the X side is too slow and is given up.
pub const QUEUE: usize = 256;
/// Frames in flight to the X thread; a window damaged meanwhile is pushed again later.
pub const FRAMES_IN_FLIGHT: usize = 2;
/// Input events queued from the X thread; more are dropped.
pub const INPUT_QUEUE: usize = 256;
/// How long the X thread waits for a command before it looks at X events again.
const POLL: Duration = Duration::from_millis(5);

/// What the GUI daemon asks the X thread to do.
#[derive(Debug)]
pub enum ToX {
    /// Create and show the X window of `w` (MAP).
    Map {
        /// The qube's window.
        w: WindowId,
        /// Geometry (x, y, width, height).
        geom: (i32, i32, u32, u32),
        /// The title as shown: `[qube] title`.
        title: String,
        /// Not managed by a window manager (menus).
        override_redirect: bool,
    },
    /// Destroy the X window of `w` (UNMAP, DESTROY).
    Unmap(WindowId),
    /// Move or resize (CONFIGURE).
    Configure(WindowId, (i32, i32, u32, u32)),
    /// A new title (already prefixed).
    Title(WindowId, String),
    /// The whole framebuffer, `width * height` BGRX pixels.
    Image {
        /// The qube's window.
        w: WindowId,
        /// Framebuffer width.
        width: u32,
        /// Framebuffer height.
        height: u32,
        /// The pixels.
        bgrx: Vec<u8>,
    },
}

/// What happened in an X window, for the qube.
#[derive(Debug)]
pub enum FromX {
    /// KeyPress / KeyRelease.
    Key(WindowId, Keypress),
    /// ButtonPress / ButtonRelease.
    Button(WindowId, Button),
    /// Pointer motion.
    Motion(WindowId, Motion),
    /// WM_DELETE_WINDOW: the user closed the window.
    Close(WindowId),
    /// Part of the window needs its pixels again.
    Expose(WindowId),
}

/// The GUI daemon's end of its X thread.
#[derive(Debug)]
pub struct XDisplay {
    tx: SyncSender<ToX>,
    rx: Receiver<FromX>,
    frames: Arc<AtomicUsize>,
    vm: String,
}

/// Why a command did not reach the X thread; either way the X side is over.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    /// The X thread ended (it said why).
    Ended,
    /// The X thread stopped taking commands.
    TooSlow,
}

/// The log line's prefix for `vm`'s X windows.
pub fn log_prefix(vm: &str) -> String {
    format!("qubes-sim: X window of '{vm}'")
}

impl XDisplay {
    /// Starts an X thread for `vm` when `DISPLAY` is set and not empty; `None` otherwise.
    pub fn from_env(vm: &str) -> Option<XDisplay> {
        let display = std::env::var("DISPLAY").ok().filter(|d| !d.is_empty())?;
        let (tx, cmd_rx) = sync_channel(QUEUE);
        let (in_tx, rx) = sync_channel(INPUT_QUEUE);
        let frames = Arc::new(AtomicUsize::new(0));
        let f = frames.clone();
        let name = vm.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("x-{vm}"))
            .spawn(move || {
                if let Err(e) = serve(&display, &cmd_rx, &in_tx, &f) {
                    eprintln!(
                        "{}: display {display}: {e:#}; screenshots only",
                        log_prefix(&name)
                    );
                }
            });
        if let Err(e) = spawned {
            eprintln!("{}: no X thread: {e}; screenshots only", log_prefix(vm));
            return None;
        }
        Some(XDisplay {
            tx,
            rx,
            frames,
            vm: vm.to_string(),
        })
    }

    /// Whether another frame may be sent now.
    pub fn frame_room(&self) -> bool {
        self.frames.load(Ordering::Acquire) < FRAMES_IN_FLIGHT
    }

    /// Queues `m` without waiting. A full queue means the X side hangs: it is given up (one
    /// line logged) rather than queued behind.
    pub fn send(&self, m: ToX) -> Result<(), Gone> {
        let frame = matches!(m, ToX::Image { .. });
        if frame {
            self.frames.fetch_add(1, Ordering::AcqRel);
        }
        match self.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                eprintln!(
                    "{}: the X server does not keep up; screenshots only",
                    log_prefix(&self.vm)
                );
                Err(Gone::TooSlow)
            }
            Err(TrySendError::Disconnected(_)) => Err(Gone::Ended),
        }
    }

    /// The next input from X, if any.
    pub fn recv(&self) -> Result<Option<FromX>, Gone> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Gone::Ended),
        }
    }
}

struct Atoms {
    wm_protocols: u32,
    wm_delete: u32,
    net_wm_name: u32,
    utf8: u32,
}

struct XWin {
    id: u32,
}

fn atom(c: &RustConnection, name: &str) -> Result<u32> {
    Ok(c.intern_atom(false, name.as_bytes())?.reply()?.atom)
}

/// Clamps to what X accepts: 1..=32767 for sizes, i16 for positions.
fn clamp_geom((x, y, w, h): (i32, i32, u32, u32)) -> (i16, i16, u16, u16) {
    let pos = |v: i32| v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    let size = |v: u32| v.clamp(1, 32767) as u16;
    (pos(x), pos(y), size(w), size(h))
}

/// The X thread: connects, checks the screen takes BGRX as it is, then serves until the GUI
/// daemon drops its end.
fn serve(
    display: &str,
    cmds: &Receiver<ToX>,
    input: &SyncSender<FromX>,
    frames: &AtomicUsize,
) -> Result<()> {
    let (c, screen_num) = x11rb::connect(Some(display)).context("connect")?;
    let setup = c.setup();
    let screen = setup
        .roots
        .get(screen_num)
        .ok_or_else(|| anyhow!("no screen {screen_num}"))?;
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .ok_or_else(|| anyhow!("no root visual"))?;
    let bpp = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == screen.root_depth)
        .map(|f| f.bits_per_pixel);
    // The framebuffer goes to PutImage unconverted, so the screen must take BGRX bytes.
    if screen.root_depth != 24
        || visual.class != VisualClass::TRUE_COLOR
        || (visual.red_mask, visual.green_mask, visual.blue_mask) != (0xff0000, 0xff00, 0xff)
        || setup.image_byte_order != ImageOrder::LSB_FIRST
        || bpp != Some(32)
    {
        bail!("the screen is not 24-bit TrueColor with 32-bit little-endian pixels");
    }
    let root = screen.root;
    let atoms = Atoms {
        wm_protocols: atom(&c, "WM_PROTOCOLS")?,
        wm_delete: atom(&c, "WM_DELETE_WINDOW")?,
        net_wm_name: atom(&c, "_NET_WM_NAME")?,
        utf8: atom(&c, "UTF8_STRING")?,
    };
    let gc = c.generate_id()?;
    c.create_gc(gc, root, &CreateGCAux::new())?;
    let mut wins: BTreeMap<WindowId, XWin> = BTreeMap::new();
    let mut ids: BTreeMap<u32, WindowId> = BTreeMap::new();
    loop {
        match cmds.recv_timeout(POLL) {
            Ok(m) => {
                let frame = matches!(m, ToX::Image { .. });
                let r = command(&c, root, gc, &atoms, &mut wins, &mut ids, m);
                if frame {
                    frames.fetch_sub(1, Ordering::AcqRel);
                }
                r?;
                // Drain what else is queued before looking at X again.
                while let Ok(m) = cmds.try_recv() {
                    let frame = matches!(m, ToX::Image { .. });
                    let r = command(&c, root, gc, &atoms, &mut wins, &mut ids, m);
                    if frame {
                        frames.fetch_sub(1, Ordering::AcqRel);
                    }
                    r?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        c.flush()?;
        while let Some(ev) = c.poll_for_event()? {
            if let Some(m) = event(&atoms, &ids, ev)? {
                // A qube that does not keep up loses input rather than queue it.
                match input.try_send(m) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
        }
    }
}

fn command(
    c: &RustConnection,
    root: u32,
    gc: u32,
    atoms: &Atoms,
    wins: &mut BTreeMap<WindowId, XWin>,
    ids: &mut BTreeMap<u32, WindowId>,
    m: ToX,
) -> Result<()> {
    match m {
        ToX::Map {
            w,
            geom,
            title,
            override_redirect,
        } => {
            if wins.contains_key(&w) {
                return Ok(());
            }
            let (x, y, width, height) = clamp_geom(geom);
            let id = c.generate_id()?;
            let mask = EventMask::KEY_PRESS
                | EventMask::KEY_RELEASE
                | EventMask::BUTTON_PRESS
                | EventMask::BUTTON_RELEASE
                | EventMask::POINTER_MOTION
                | EventMask::EXPOSURE;
            let aux = CreateWindowAux::new()
                .background_pixel(0)
                .event_mask(mask)
                .override_redirect(u32::from(override_redirect));
            c.create_window(
                0,
                id,
                root,
                x,
                y,
                width,
                height,
                0,
                WindowClass::INPUT_OUTPUT,
                0,
                &aux,
            )?;
            set_title(c, atoms, id, &title)?;
            c.change_property32(
                PropMode::REPLACE,
                id,
                atoms.wm_protocols,
                AtomEnum::ATOM,
                &[atoms.wm_delete],
            )?;
            c.map_window(id)?;
            wins.insert(w, XWin { id });
            ids.insert(id, w);
        }
        ToX::Unmap(w) => {
            if let Some(x) = wins.remove(&w) {
                ids.remove(&x.id);
                c.destroy_window(x.id)?;
            }
        }
        ToX::Configure(w, geom) => {
            if let Some(x) = wins.get(&w) {
                let (x0, y0, width, height) = clamp_geom(geom);
                let aux = ConfigureWindowAux::new()
                    .x(i32::from(x0))
                    .y(i32::from(y0))
                    .width(u32::from(width))
                    .height(u32::from(height));
                c.configure_window(x.id, &aux)?;
            }
        }
        ToX::Title(w, title) => {
            if let Some(x) = wins.get(&w) {
                set_title(c, atoms, x.id, &title)?;
            }
        }
        ToX::Image {
            w,
            width,
            height,
            bgrx,
        } => {
            if let Some(x) = wins.get(&w) {
                put(c, x.id, gc, width, height, &bgrx)?;
            }
        }
    }
    Ok(())
}

fn set_title(c: &RustConnection, atoms: &Atoms, id: u32, title: &str) -> Result<()> {
    c.change_property8(
        PropMode::REPLACE,
        id,
        atoms.net_wm_name,
        atoms.utf8,
        title.as_bytes(),
    )?;
    c.change_property8(
        PropMode::REPLACE,
        id,
        AtomEnum::WM_NAME,
        atoms.utf8,
        title.as_bytes(),
    )?;
    Ok(())
}

/// PutImage of the framebuffer in bands of rows that fit one request.
fn put(c: &RustConnection, id: u32, gc: u32, width: u32, height: u32, bgrx: &[u8]) -> Result<()> {
    // X takes u16 widths and i16 row offsets; a larger dump is not drawn.
    if width == 0 || width > 32767 || height > 32767 {
        return Ok(());
    }
    let (row, height) = (width as usize * 4, height as usize);
    if bgrx.len() < row * height {
        return Ok(());
    }
    // 24 bytes of PutImage header (+4 with BIG-REQUESTS).
    let rows = (c.maximum_request_bytes().saturating_sub(28) / row).min(height);
    if rows == 0 {
        return Ok(());
    }
    let mut y = 0;
    while y < height {
        let n = rows.min(height - y);
        let band = bgrx.get(y * row..(y + n) * row).unwrap_or_default();
        c.put_image(
            ImageFormat::Z_PIXMAP,
            id,
            gc,
            width as u16,
            n as u16,
            0,
            y as i16,
            0,
            24,
            band,
        )?;
        y += n;
    }
    Ok(())
}

fn event(atoms: &Atoms, ids: &BTreeMap<u32, WindowId>, ev: Event) -> Result<Option<FromX>> {
    let m = match ev {
        Event::Error(e) => bail!("X error {:?} (request {})", e.error_kind, e.major_opcode),
        Event::KeyPress(k) | Event::KeyRelease(k) => {
            let Some(w) = ids.get(&k.event) else {
                return Ok(None);
            };
            FromX::Key(
                *w,
                Keypress {
                    ty: u32::from(k.response_type & 0x7f),
                    x: i32::from(k.event_x),
                    y: i32::from(k.event_y),
                    state: u32::from(u16::from(k.state)),
                    keycode: u32::from(k.detail),
                },
            )
        }
        Event::ButtonPress(b) | Event::ButtonRelease(b) => {
            let Some(w) = ids.get(&b.event) else {
                return Ok(None);
            };
            FromX::Button(
                *w,
                Button {
                    ty: u32::from(b.response_type & 0x7f),
                    x: i32::from(b.event_x),
                    y: i32::from(b.event_y),
                    state: u32::from(u16::from(b.state)),
                    button: u32::from(b.detail),
                },
            )
        }
        Event::MotionNotify(m) => {
            let Some(w) = ids.get(&m.event) else {
                return Ok(None);
            };
            FromX::Motion(
                *w,
                Motion {
                    x: i32::from(m.event_x),
                    y: i32::from(m.event_y),
                    state: u32::from(u16::from(m.state)),
                    is_hint: u32::from(u8::from(m.detail)),
                },
            )
        }
        Event::Expose(e) => match ids.get(&e.window) {
            Some(w) if e.count == 0 => FromX::Expose(*w),
            _ => return Ok(None),
        },
        Event::ClientMessage(cm) => {
            let Some(w) = ids.get(&cm.window) else {
                return Ok(None);
            };
            if cm.type_ != atoms.wm_protocols
                || cm.format != 32
                || cm.data.as_data32()[0] != atoms.wm_delete
            {
                return Ok(None);
            }
            FromX::Close(*w)
        }
        _ => return Ok(None),
    };
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x11rb::protocol::xproto::{ClientMessageEvent, KeyButMask, KeyPressEvent};

    const ATOMS: Atoms = Atoms {
        wm_protocols: 100,
        wm_delete: 101,
        net_wm_name: 102,
        utf8: 103,
    };

    fn ids() -> BTreeMap<u32, WindowId> {
        BTreeMap::from([(0x40_0001, WindowId(7))])
    }

    fn key(response_type: u8, window: u32) -> Event {
        let k = KeyPressEvent {
            response_type,
            detail: 38,
            sequence: 0,
            time: 0,
            root: 1,
            event: window,
            child: 0,
            root_x: 0,
            root_y: 0,
            event_x: 12,
            event_y: 34,
            state: KeyButMask::SHIFT,
            same_screen: true,
        };
        if response_type & 0x7f == 2 {
            Event::KeyPress(k)
        } else {
            Event::KeyRelease(k)
        }
    }

    #[test]
    fn geometry_is_clamped_to_what_x_accepts() {
        assert_eq!(clamp_geom((10, 20, 64, 48)), (10, 20, 64, 48));
        assert_eq!(
            clamp_geom((-40000, 40000, 0, 99999)),
            (-32768, 32767, 1, 32767)
        );
    }

    #[test]
    fn x_keys_become_keypress_messages_for_their_qube_window() {
        let Ok(Some(FromX::Key(w, k))) = event(&ATOMS, &ids(), key(2, 0x40_0001)) else {
            panic!("no key");
        };
        assert_eq!(w, WindowId(7));
        assert_eq!((k.ty, k.x, k.y, k.state, k.keycode), (2, 12, 34, 1, 38));
        // A SendEvent (synthetic bit) release is still a release.
        let Ok(Some(FromX::Key(_, k))) = event(&ATOMS, &ids(), key(0x83, 0x40_0001)) else {
            panic!("no key");
        };
        assert_eq!(k.ty, 3);
    }

    #[test]
    fn events_of_other_windows_and_other_client_messages_are_ignored() {
        assert!(matches!(event(&ATOMS, &ids(), key(2, 0x40_0002)), Ok(None)));
        let other = ClientMessageEvent::new(32, 0x40_0001, 100u32, [55u32, 0, 0, 0, 0]);
        let r = event(&ATOMS, &ids(), Event::ClientMessage(other));
        assert!(matches!(r, Ok(None)));
        let delete = ClientMessageEvent::new(32, 0x40_0001, 100u32, [101u32, 0, 0, 0, 0]);
        let r = event(&ATOMS, &ids(), Event::ClientMessage(delete));
        assert!(matches!(r, Ok(Some(FromX::Close(WindowId(7))))));
    }

    #[test]
    fn a_stuck_x_thread_is_given_up_not_queued_behind() {
        let (tx, _cmds) = sync_channel(QUEUE);
        let (_input, rx) = sync_channel(INPUT_QUEUE);
        let d = XDisplay {
            tx,
            rx,
            frames: Arc::new(AtomicUsize::new(0)),
            vm: "work".into(),
        };
        for _ in 0..FRAMES_IN_FLIGHT {
            assert!(d.frame_room());
            let img = ToX::Image {
                w: WindowId(1),
                width: 1,
                height: 1,
                bgrx: vec![0; 4],
            };
            assert_eq!(d.send(img), Ok(()));
        }
        assert!(!d.frame_room());
        for _ in FRAMES_IN_FLIGHT..QUEUE {
            assert_eq!(d.send(ToX::Unmap(WindowId(1))), Ok(()));
        }
        assert_eq!(d.send(ToX::Unmap(WindowId(1))), Err(Gone::TooSlow));
        assert!(matches!(d.recv(), Ok(None)));
    }

    #[test]
    fn an_ended_x_thread_is_noticed() {
        let (tx, cmds) = sync_channel(QUEUE);
        let (input, rx) = sync_channel(INPUT_QUEUE);
        let d = XDisplay {
            tx,
            rx,
            frames: Arc::new(AtomicUsize::new(0)),
            vm: "work".into(),
        };
        drop((cmds, input));
        assert_eq!(d.send(ToX::Unmap(WindowId(1))), Err(Gone::Ended));
        assert!(matches!(d.recv(), Err(Gone::Ended)));
    }
}
