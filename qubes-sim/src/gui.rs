//! dom0's GUI daemon for one qube (a sim thread, vchan client of the qube's port 6000, over
//! `qubes::gui::Daemon`): dumps mapped read-only, saved as PNGs (and shown in X with `DISPLAY`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use platform_api::{DomId, Events, Grants, SharedMem, Store, Tx};
use platform_hosted::grants::GrantMem;
use qubes::gui::wire::{Button, Focus, Keypress, Message, Version, WindowId, XConf};
use qubes::gui::{Daemon, DaemonEvent, DaemonLimits};
use vchan::Interest;

use crate::chan::{Hosted, TxQueue, Vchan, TICK};
use crate::xwindow::{FromX, ToX, XDisplay};

/// The GUI protocol's vchan port.
pub const PORT: u32 = 6000;
/// The screen the sim's GUI daemon offers.
pub const SCREEN: (u32, u32) = (1920, 1080);
/// Least time between two screenshots of one window on damage (a dump always writes one).
pub const THROTTLE: Duration = Duration::from_millis(100);

/// Input for a qube's focused window; answers what was sent (or why not).
#[derive(Debug)]
pub struct GuiInput {
    /// `key NAME`, `click X Y` or `close`.
    pub words: Vec<String>,
    /// The outcome.
    pub reply: Sender<Result<String, String>>,
}

/// The screenshot of `vm`'s window `w`.
pub fn screenshot_path(run: &Path, vm: &str, w: u32) -> PathBuf {
    run.join("screenshots").join(format!("{vm}-{w}.png"))
}

#[derive(Default)]
struct Window {
    mapped: bool,
    title: String,
    dump: Option<(u32, u32, GrantMem)>,
    dirty: bool,
    last_shot: Option<Instant>,
    /// x, y, width, height as the agent last said.
    geom: (i32, i32, u32, u32),
    override_redirect: bool,
    /// The X window needs the framebuffer again.
    x_dirty: bool,
}

/// Hands `m` to the X thread; a gone or stuck one is dropped: screenshots only from then on.
fn tell_x(x: &mut Option<XDisplay>, m: ToX) {
    if let Some(d) = x {
        if d.send(m).is_err() {
            *x = None;
        }
    }
}

/// Sends the framebuffers of mapped windows whose X windows are stale, as room allows.
fn push_frames(x: &mut Option<XDisplay>, windows: &mut BTreeMap<WindowId, Window>) {
    for (w, win) in windows.iter_mut() {
        let Some(d) = x.as_ref() else { return };
        if !win.x_dirty || !win.mapped || !d.frame_room() {
            continue;
        }
        let Some((width, height, mem)) = &win.dump else {
            continue;
        };
        win.x_dirty = false;
        let mut bgrx = vec![0u8; (*width as usize) * (*height as usize) * 4];
        if mem.read(0, &mut bgrx).is_err() {
            continue;
        }
        let (width, height) = (*width, *height);
        tell_x(
            x,
            ToX::Image {
                w: *w,
                width,
                height,
                bgrx,
            },
        );
    }
}

/// Passes what the user did in an X window to the qube, as `qvm-gui-input` does.
fn x_input(
    x: &mut Option<XDisplay>,
    d: &mut Daemon,
    windows: &mut BTreeMap<WindowId, Window>,
) -> bool {
    let mut progress = false;
    // Bounded per round, so a flood of motion cannot starve the vchan.
    for _ in 0..64 {
        let Some(disp) = x.as_ref() else { break };
        let m = match disp.recv() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => {
                *x = None;
                break;
            }
        };
        progress = true;
        // A full outgoing queue or a window gone meanwhile loses the event, as X would.
        let _ = match m {
            FromX::Key(w, k) => d.send_input(w, &Message::Keypress(k)),
            FromX::Button(w, b) => d.send_input(w, &Message::Button(b)),
            FromX::Motion(w, m) => d.send_input(w, &Message::Motion(m)),
            FromX::Close(w) => d.close(w),
            FromX::Expose(w) => {
                if let Some(win) = windows.get_mut(&w) {
                    win.x_dirty = true;
                }
                Ok(())
            }
        };
    }
    progress
}

/// The thread's body: connects to the qube's GUI agent whenever one serves port 6000, until
/// `stop`. A failed or closed connection is followed by a new attempt, as qubes-guid restarts.
pub fn run(run: &Path, vm: &str, domid: DomId, stop: &AtomicBool, input: &Receiver<GuiInput>) {
    let quit = || stop.load(Ordering::Relaxed);
    while !quit() {
        let r = serve(run, vm, domid, &quit, input);
        if let Err(e) = r {
            if !quit() {
                eprintln!("qubes-sim: gui daemon of '{vm}': {e:#}");
            }
        }
        std::thread::sleep(TICK);
    }
}

fn refuse_pending(input: &Receiver<GuiInput>) {
    while let Ok(i) = input.try_recv() {
        let _ = i.reply.send(Err("no GUI agent connected".into()));
    }
}

fn serve(
    run: &Path,
    vm: &str,
    domid: DomId,
    quit: &dyn Fn() -> bool,
    input: &Receiver<GuiInput>,
) -> Result<()> {
    let mut h = Hosted::new(run, DomId::DOM0)?;
    let advertised = format!("/local/domain/{domid}/data/vchan/0/{PORT}/ring-ref");
    let (mut v, ring_ref) = loop {
        if quit() {
            return Ok(());
        }
        refuse_pending(input);
        // Look before connecting: an idle qube is polled with one store read a tick, not with
        // a locked setup attempt every few milliseconds.
        let Ok(ring_ref) = h.store.read(Tx::NONE, &advertised) else {
            std::thread::sleep(TICK);
            continue;
        };
        match Vchan::connect(&mut h, domid, PORT, Duration::from_secs(1), quit) {
            Ok(v) => break (v, ring_ref),
            Err(_) => std::thread::sleep(TICK),
        }
    };
    std::fs::create_dir_all(run.join("screenshots")).context("screenshot directory")?;
    let mut last_look = Instant::now();
    let mut d = Daemon::new(DaemonLimits::DEFAULT, XConf::for_screen(SCREEN.0, SCREEN.1));
    let mut windows: BTreeMap<WindowId, Window> = BTreeMap::new();
    let mut focus: Option<WindowId> = None;
    let mut out = TxQueue::new(64 * 1024);
    let mut inbuf = vec![0u8; 16384];
    let mut in_len = 0;
    let mut x = XDisplay::from_env(vm);
    while !quit() {
        let mut progress = false;
        if in_len < inbuf.len() {
            match v.read(&mut inbuf[in_len..]) {
                Ok(n) => {
                    in_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => return Ok(()),
                Err(e) => bail!("vchan: {e}"),
            }
        }
        if in_len > 0 {
            let n = d
                .handle_input(&inbuf[..in_len])
                .map_err(|e| anyhow!("agent broke the protocol: {e}"))?;
            inbuf.copy_within(n..in_len, 0);
            in_len -= n;
            progress |= n > 0;
        }
        while let Some(ev) = d.poll_event() {
            progress = true;
            event(
                &mut h,
                &mut d,
                domid,
                ev,
                &mut windows,
                &mut focus,
                &mut x,
                run,
                vm,
            )?;
        }
        push_frames(&mut x, &mut windows);
        progress |= x_input(&mut x, &mut d, &mut windows);
        for (w, win) in windows.iter_mut() {
            if win.dirty && win.last_shot.is_none_or(|t| t.elapsed() >= THROTTLE) {
                shoot(run, vm, *w, win);
            }
        }
        while let Ok(i) = input.try_recv() {
            progress = true;
            let r = send_input(&mut d, focus, &i.words).map_err(|e| format!("{e:#}"));
            let _ = i.reply.send(r);
        }
        out.fill(|b| d.poll_transmit(b));
        progress |= out.flush(&mut v).map_err(|e| anyhow!("vchan: {e}"))?;
        if !progress {
            let interest = Interest {
                read: true,
                write: out.pending() > 0,
            };
            let x_due = x.is_some()
                && windows
                    .values()
                    .any(|w| w.x_dirty && w.mapped && w.dump.is_some());
            let wait = if x_due || windows.values().any(|w| w.dirty) {
                Duration::from_millis(5)
            } else {
                TICK
            };
            if v.prepare_wait(interest)
                .map_err(|e| anyhow!("vchan: {e}"))?
            {
                h.events.wait(Some(wait)).context("event wait")?;
            }
            if !h.domain_alive(domid) {
                return Ok(());
            }
            // A GUI agent serves one daemon; another server advertised means ours died
            // without closing (hosted has no unmap notification): its successor gets us.
            if last_look.elapsed() >= Duration::from_millis(500) {
                last_look = Instant::now();
                if h.store
                    .read(Tx::NONE, &advertised)
                    .is_ok_and(|r| r != ring_ref)
                {
                    eprintln!("qubes-sim: gui daemon of '{vm}': agent restarted; reconnecting");
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn event(
    h: &mut Hosted,
    d: &mut Daemon,
    domid: DomId,
    ev: DaemonEvent,
    windows: &mut BTreeMap<WindowId, Window>,
    focus: &mut Option<WindowId>,
    x: &mut Option<XDisplay>,
    run: &Path,
    vm: &str,
) -> Result<()> {
    match ev {
        DaemonEvent::Created(w, c) => {
            let win = Window {
                geom: (c.x, c.y, c.width, c.height),
                override_redirect: c.override_redirect != 0,
                ..Window::default()
            };
            windows.insert(w, win);
        }
        DaemonEvent::Destroyed(w) => {
            if windows.remove(&w).is_some_and(|win| win.mapped) {
                tell_x(x, ToX::Unmap(w));
            }
            if *focus == Some(w) {
                *focus = windows.iter().find(|(_, x)| x.mapped).map(|(w, _)| *w);
            }
        }
        DaemonEvent::Mapped(w, info) => {
            if let Some(win) = windows.get_mut(&w) {
                if !win.mapped {
                    // As Qubes shows it: the qube's name in brackets before the title.
                    let m = ToX::Map {
                        w,
                        geom: win.geom,
                        title: format!("[{vm}] {}", win.title),
                        override_redirect: win.override_redirect || info.override_redirect != 0,
                    };
                    tell_x(x, m);
                }
                win.mapped = true;
                win.dirty = true;
                win.x_dirty = true;
            }
            if *focus != Some(w) {
                *focus = Some(w);
                // The new window gets the keyboard, as a window manager would give it.
                let f = Focus {
                    ty: 9,
                    mode: 0,
                    detail: 0,
                };
                let _ = d.send_input(w, &Message::Focus(f));
            }
        }
        DaemonEvent::Unmapped(w) => {
            if let Some(win) = windows.get_mut(&w) {
                if win.mapped {
                    tell_x(x, ToX::Unmap(w));
                }
                win.mapped = false;
            }
            if *focus == Some(w) {
                *focus = windows.iter().find(|(_, x)| x.mapped).map(|(w, _)| *w);
            }
        }
        DaemonEvent::Title(w, t) => {
            if let Some(win) = windows.get_mut(&w) {
                win.title = t.as_str().to_string();
                if win.mapped {
                    tell_x(x, ToX::Title(w, format!("[{vm}] {}", win.title)));
                }
            }
        }
        DaemonEvent::Configured(w, c) => {
            if let Some(win) = windows.get_mut(&w) {
                win.geom = (c.x, c.y, c.width, c.height);
                if win.mapped {
                    tell_x(x, ToX::Configure(w, win.geom));
                }
            }
        }
        DaemonEvent::Damage(w, _) => {
            if let Some(win) = windows.get_mut(&w) {
                win.dirty = true;
                win.x_dirty = true;
            }
        }
        DaemonEvent::Dump(w, hdr, refs) => {
            // Read-only, as shmoverride maps them; the old mapping goes with the new dump.
            let mem = h
                .grants
                .map(domid, &refs, false)
                .map_err(|e| anyhow!("map window {} dump: {e}", w.0))?;
            let need = u64::from(hdr.width) * u64::from(hdr.height) * 4;
            if (mem.size() as u64) < need {
                bail!(
                    "window {} dump is smaller than {}x{}",
                    w.0,
                    hdr.width,
                    hdr.height
                );
            }
            if let Some(win) = windows.get_mut(&w) {
                win.dump = Some((hdr.width, hdr.height, mem));
                win.x_dirty = true;
                shoot(run, vm, w, win);
            }
            if d.version() >= Version::V1_7 {
                d.ack_dump(w).map_err(|e| anyhow!("ack dump: {e}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Writes the window's screenshot (atomically: a reader never sees half a file).
fn shoot(run: &Path, vm: &str, w: WindowId, win: &mut Window) {
    win.dirty = false;
    win.last_shot = Some(Instant::now());
    let Some((width, height, mem)) = &win.dump else {
        return;
    };
    let mut bgrx = vec![0u8; (*width as usize) * (*height as usize) * 4];
    if mem.read(0, &mut bgrx).is_err() {
        return;
    }
    let Some(png) = crate::png::bgrx_to_rgb(*width, *height, &bgrx)
        .and_then(|rgb| crate::png::encode_rgb(*width, *height, &rgb))
    else {
        return;
    };
    let path = screenshot_path(run, vm, w.0);
    let tmp = path.with_extension("png.tmp");
    if std::fs::write(&tmp, png).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// The X11 keycode (evdev + 8) and shift state for a key name or character.
pub fn keycode(name: &str) -> Option<(u32, u32)> {
    const ROWS: [(&str, u32); 4] = [
        ("1234567890", 2),
        ("qwertyuiop", 16),
        ("asdfghjkl", 30),
        ("zxcvbnm", 44),
    ];
    let named = match name {
        "Escape" => Some(1),
        "BackSpace" => Some(14),
        "Tab" => Some(15),
        "Return" | "Enter" => Some(28),
        "space" => Some(57),
        "Up" => Some(103),
        "Left" => Some(105),
        "Right" => Some(106),
        "Down" => Some(108),
        "minus" => Some(12),
        "period" => Some(52),
        _ => None,
    };
    if let Some(e) = named {
        return Some((e + 8, 0));
    }
    if let Some(raw) = name.strip_prefix('#') {
        return raw
            .parse()
            .ok()
            .filter(|k| (8..256).contains(k))
            .map(|k| (k, 0));
    }
    let mut chars = name.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    let shift = u32::from(c.is_ascii_uppercase());
    let lc = c.to_ascii_lowercase();
    ROWS.iter()
        .find_map(|(row, base)| row.find(lc).map(|i| (base + i as u32 + 8, shift)))
}

fn send_input(d: &mut Daemon, focus: Option<WindowId>, words: &[String]) -> Result<String> {
    let w = focus.ok_or_else(|| anyhow!("no window has the focus"))?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let sent = match words.as_slice() {
        ["key", name] => {
            let (keycode, state) = keycode(name).ok_or_else(|| anyhow!("unknown key {name:?}"))?;
            for ty in [2, 3] {
                let k = Keypress {
                    ty,
                    x: 0,
                    y: 0,
                    state,
                    keycode,
                };
                d.send_input(w, &Message::Keypress(k))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            format!("key {keycode} to window {}", w.0)
        }
        ["click", x, y] => {
            let (x, y): (i32, i32) = (
                x.parse().map_err(|_| anyhow!("bad x {x:?}"))?,
                y.parse().map_err(|_| anyhow!("bad y {y:?}"))?,
            );
            for (ty, state) in [(4, 0), (5, 0x100)] {
                let b = Button {
                    ty,
                    x,
                    y,
                    state,
                    button: 1,
                };
                d.send_input(w, &Message::Button(b))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            format!("click {x} {y} to window {}", w.0)
        }
        ["close"] => {
            d.close(w).map_err(|e| anyhow!("{e}"))?;
            format!("close to window {}", w.0)
        }
        _ => bail!("input is `key NAME`, `click X Y` or `close`"),
    };
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::keycode;

    #[test]
    fn keys_map_to_x11_keycodes() {
        assert_eq!(keycode("a"), Some((38, 0)));
        assert_eq!(keycode("A"), Some((38, 1)));
        assert_eq!(keycode("q"), Some((24, 0)));
        assert_eq!(keycode("1"), Some((10, 0)));
        assert_eq!(keycode("Return"), Some((36, 0)));
        assert_eq!(keycode("#50"), Some((50, 0)));
        assert_eq!(keycode("#5"), None);
        assert_eq!(keycode("F13"), None);
        assert_eq!(keycode("é"), None);
    }
}
