//! The viewer as a run-loop app: `qubes.OpenInVM` in (decoded as it streams), one window out over
//! the GUI protocol on our own vchan (port 6000), or `qubes.GetImageRGBA`; then the qube stops.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{
    DomId, Duration, GrantRef, Grants, Instant, Platform, Port, PortSet, SharedMem,
};
use qubes::gui::wire::{Version, WindowId};
use qubes::gui::{Agent, AgentLimits, Event};
use runloop::{Admit, App, AppError, Call, CallId, Cx};
use vchan::setup::{server_init, GrantedServer, XsDir};
use vchan::{Interest, PeerState};

use crate::decode::{fit, Canvas, Decoder, Limits};
use crate::font;
use crate::openinvm::{FileName, Request};
use crate::rgba::{RgbaAnswer, RgbaRequest};
use crate::view::{key_action, Action, ColMap, View};

/// The service we serve.
pub const SERVICE: &str = "qubes.OpenInVM";
/// The GUI protocol's vchan port.
pub const GUI_PORT: u32 = 6000;
/// Our window (ids ≥ 1 are the agent's).
const WIN: WindowId = WindowId(1);
/// Size of the window that shows a refusal.
const MESSAGE_WINDOW: (u32, u32) = (640, 120);
/// How long the qube waits for the call's exit code to be delivered before stopping anyway.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Smallest window for an image.
const MIN_WINDOW: (u32, u32) = (160, 120);

/// Budgets of one viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerConfig {
    /// Decoder budgets (pixels, rows, inflated bytes, chunk sizes, memory).
    pub limits: Limits,
    /// Canvas pixels kept: larger images are decoded downscaled to this.
    pub canvas_pixels: u64,
    /// Largest file accepted.
    pub max_file: u64,
    /// Longest time from the request's first byte to the last decoded row.
    pub time_budget: Duration,
    /// Largest framebuffer (window) in pixels; a larger window shows this much.
    pub max_window_pixels: u64,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        Self {
            limits: Limits {
                max_memory: 96 << 20,
                ..Limits::default()
            },
            canvas_pixels: 16 << 20,
            max_file: 1 << 30,
            time_budget: Duration::from_secs(60),
            max_window_pixels: 3840 * 2160,
        }
    }
}

enum Image {
    /// No request yet, or its name is still arriving.
    Waiting,
    Loading(Box<Decoder>),
    Ready {
        canvas: Canvas,
        src: (u32, u32),
    },
    Refused(String),
}

struct Fb<M> {
    mem: M,
    size: (u32, u32),
}

struct Window<M> {
    view: View,
    fb: Fb<M>,
    /// Dumps the daemon has not acknowledged yet (≥1.7 keeps their grants mapped).
    old: VecDeque<Fb<M>>,
    cols: ColMap,
    drag: Option<(i32, i32)>,
    title: String,
}

struct Gui<P: Platform> {
    dom: DomId,
    link: GrantedServer<P::Grants, P::Events>,
    dir: Option<XsDir>,
    agent: Agent,
    rx: Vec<u8>,
    rx_len: usize,
    tx: Vec<u8>,
    tx_off: usize,
    tx_len: usize,
    screen: Option<(u32, u32)>,
    win: Option<Window<<P::Grants as Grants>::Mem>>,
    dead: bool,
}

/// The viewer app.
pub struct Viewer<P: Platform> {
    cfg: ViewerConfig,
    call: Option<CallId>,
    req: Request,
    name: Option<FileName>,
    started: Option<Instant>,
    image: Image,
    gui: Option<Gui<P>>,
    /// The window was closed or `q` pressed: the call ends, then the qube.
    quitting: bool,
    /// The loop reported the call over.
    call_closed: bool,
    /// When to stop even if the call's end was not reported.
    stop_at: Option<Instant>,
    /// A `qubes.GetImageRGBA` call (instead of the OpenInVM one).
    rgba: Option<(CallId, Rgba)>,
    /// Reused buffer for RGBA pieces.
    piece: Vec<u8>,
}

enum Rgba {
    Reading(RgbaRequest),
    Sending(RgbaAnswer),
    Done,
}

impl<P: Platform> core::fmt::Debug for Viewer<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Viewer")
            .field("call", &self.call)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Viewer<P> {
    /// A viewer with these budgets.
    pub fn new(cfg: ViewerConfig) -> Self {
        Self {
            cfg,
            call: None,
            req: Request::new(cfg.max_file),
            name: None,
            started: None,
            image: Image::Waiting,
            gui: None,
            quitting: false,
            call_closed: false,
            stop_at: None,
            rgba: None,
            piece: Vec::new(),
        }
    }

    fn refuse(&mut self, cx: &mut Cx<'_, P>, msg: String) {
        cx.log(format_args!("fb-viewer: {msg}"));
        self.image = Image::Refused(msg);
        // At once: a caller that never ends its input still gets its answer on screen.
        self.show(cx);
    }

    fn file_name(&self) -> &str {
        match &self.name {
            Some(n) if !n.as_str().is_empty() => n.as_str(),
            _ => "image",
        }
    }

    fn title(&self, view: Option<&View>) -> String {
        match (&self.image, view) {
            (Image::Ready { src, .. }, Some(v)) => format!(
                "{} - {}x{} - {}%",
                self.file_name(),
                src.0,
                src.1,
                v.percent()
            ),
            (Image::Refused(m), _) => format!("{} - not shown: {m}", self.file_name()),
            _ => String::from(self.file_name()),
        }
    }

    /// Ends the call (nothing is ever sent back: the file is view-only) and the qube.
    fn quit(&mut self, cx: &mut Cx<'_, P>) {
        if self.quitting {
            return;
        }
        self.quitting = true;
        if let Some(g) = self.gui.as_mut() {
            if g.win.is_some() {
                let _ = g.agent.destroy(WIN);
            }
            let _ = g.pump_out();
        }
        match self.call {
            // The qube stops once the loop has delivered the exit code (`closed`), or after
            // a grace period if the caller stopped reading.
            Some(id) if !self.call_closed => {
                cx.finish(id, 0);
                self.stop_at = Some(cx.now().saturating_add(STOP_GRACE));
            }
            _ => cx.request_stop(),
        }
    }

    fn check_time(&mut self, cx: &mut Cx<'_, P>) {
        if let (Image::Loading(_), Some(t0)) = (&self.image, self.started) {
            let spent = cx.now().saturating_duration_since(t0);
            if spent > self.cfg.time_budget {
                let s = self.cfg.time_budget.as_secs();
                self.refuse(cx, format!("decoding took longer than {s} s"));
            }
        }
    }

    /// Opens the window once both the image (or its refusal) and the GUI are there.
    fn show(&mut self, cx: &mut Cx<'_, P>) {
        let Some(g) = self.gui.as_ref() else { return };
        let Some(screen) = g.screen else { return };
        if g.win.is_some() || g.dead || self.quitting {
            return;
        }
        let (size, view_src) = match &self.image {
            Image::Ready { src, .. } => {
                let (w, h) = fit(
                    src.0,
                    src.1,
                    screen.0.saturating_sub(40).max(1),
                    screen.1.saturating_sub(80).max(1),
                );
                ((w.max(MIN_WINDOW.0), h.max(MIN_WINDOW.1)), *src)
            }
            Image::Refused(_) => (MESSAGE_WINDOW, (1, 1)),
            _ => return,
        };
        let size = clamp_window(size, self.cfg.max_window_pixels);
        let mut view = View::new(view_src, size);
        if let Image::Ready { src, .. } = &self.image {
            // The window was sized to the fitted image, so fitting is exact; keep 100% exact.
            if u64::from(src.0) <= u64::from(size.0) && u64::from(src.1) <= u64::from(size.1) {
                view.apply(Action::Actual);
            }
        }
        let title = self.title(Some(&view));
        let r = self.open_window(cx, screen, size, view, title);
        if let Err(e) = r {
            cx.log(format_args!("fb-viewer: cannot open the window: {e}"));
            self.quit(cx);
        }
    }

    fn open_window(
        &mut self,
        cx: &mut Cx<'_, P>,
        screen: (u32, u32),
        size: (u32, u32),
        view: View,
        title: String,
    ) -> Result<(), String> {
        let Some(g) = self.gui.as_mut() else {
            return Ok(());
        };
        let fb = new_fb::<P>(&mut cx.env.grants, g.dom, size)?;
        let x = (screen.0.saturating_sub(size.0) / 2) as i32;
        let y = (screen.1.saturating_sub(size.1) / 2) as i32;
        let e = |e: qubes::gui::LocalError| format!("{e}");
        g.agent
            .create_window(WIN, x, y, size.0, size.1)
            .map_err(e)?;
        g.agent.set_title(WIN, &title).map_err(e)?;
        g.agent
            .set_class(WIN, "fb-viewer", "fb-viewer")
            .map_err(e)?;
        g.agent.configure(WIN, x, y, size.0, size.1).map_err(e)?;
        g.win = Some(Window {
            view,
            fb: Fb { mem: fb.0, size },
            old: VecDeque::new(),
            cols: ColMap::default(),
            drag: None,
            title,
        });
        draw(&self.image, g.win.as_mut())?;
        g.agent.window_dump(WIN, size.0, size.1, &fb.1).map_err(e)?;
        g.agent.map(WIN).map_err(e)?;
        g.agent.shm_image(WIN, 0, 0, size.0, size.1).map_err(e)?;
        cx.log(format_args!(
            "fb-viewer: window {}x{} for {}",
            size.0,
            size.1,
            self.file_name()
        ));
        Ok(())
    }

    /// Redraws after a view change and updates the title.
    fn redraw(&mut self) -> Result<(), String> {
        let title = {
            let Some(w) = self.gui.as_ref().and_then(|g| g.win.as_ref()) else {
                return Ok(());
            };
            self.title(Some(&w.view))
        };
        let Some(g) = self.gui.as_mut() else {
            return Ok(());
        };
        draw(&self.image, g.win.as_mut())?;
        let Some(w) = g.win.as_mut() else {
            return Ok(());
        };
        let e = |e: qubes::gui::LocalError| format!("{e}");
        let (fw, fh) = w.fb.size;
        g.agent.shm_image(WIN, 0, 0, fw, fh).map_err(e)?;
        if w.title != title {
            g.agent.set_title(WIN, &title).map_err(e)?;
            w.title = title;
        }
        Ok(())
    }

    /// A new window size: a new framebuffer, dumped; the old one lives until acknowledged.
    fn resized(&mut self, cx: &mut Cx<'_, P>, size: (u32, u32)) -> Result<(), String> {
        let size = clamp_window(size, self.cfg.max_window_pixels);
        let Some(g) = self.gui.as_mut() else {
            return Ok(());
        };
        let Some(w) = g.win.as_mut() else {
            return Ok(());
        };
        if w.fb.size == size {
            return Ok(());
        }
        let (mem, refs) = new_fb::<P>(&mut cx.env.grants, g.dom, size)?;
        let old = core::mem::replace(&mut w.fb, Fb { mem, size });
        if g.agent.version() >= Version::V1_7 {
            w.old.push_back(old);
        }
        w.view.resize(size);
        g.agent
            .window_dump(WIN, size.0, size.1, &refs)
            .map_err(|e| format!("{e}"))?;
        self.redraw()
    }

    fn action(&mut self, cx: &mut Cx<'_, P>, a: Action) {
        if a == Action::Quit {
            self.quit(cx);
            return;
        }
        let changed = self
            .gui
            .as_mut()
            .and_then(|g| g.win.as_mut())
            .is_some_and(|w| w.view.apply(a));
        if changed {
            if let Err(e) = self.redraw() {
                cx.log(format_args!("fb-viewer: redraw: {e}"));
            }
        }
    }

    fn gui_event(&mut self, cx: &mut Cx<'_, P>, ev: Event) {
        match ev {
            Event::Connected { version, xconf } => {
                cx.log(format_args!(
                    "fb-viewer: GUI connected at {version}, screen {}x{}",
                    xconf.w, xconf.h
                ));
                if let Some(g) = self.gui.as_mut() {
                    g.screen = Some((xconf.w.max(1), xconf.h.max(1)));
                }
                self.show(cx);
            }
            Event::Key(_, k) if k.ty == 2 => {
                let size = self.window_size();
                if let Some(a) = key_action(k.keycode, size) {
                    self.action(cx, a);
                }
            }
            Event::Button(_, b) => match (b.ty, b.button) {
                (4, 1) => self.set_drag(Some((b.x, b.y))),
                (5, 1) => self.set_drag(None),
                (4, 4) => self.action(cx, Action::ZoomIn),
                (4, 5) => self.action(cx, Action::ZoomOut),
                _ => {}
            },
            Event::Motion(_, m) => {
                let drag = self.gui.as_ref().and_then(|g| g.win.as_ref()?.drag);
                // Button1Mask: the drag continues only while button 1 is held.
                if let Some((x0, y0)) = drag.filter(|_| m.state & 0x100 != 0) {
                    self.set_drag(Some((m.x, m.y)));
                    let (dx, dy) = (
                        i64::from(x0) - i64::from(m.x),
                        i64::from(y0) - i64::from(m.y),
                    );
                    self.action(cx, Action::Pan(dx, dy));
                }
            }
            Event::Close(_) => self.quit(cx),
            Event::Configure(_, c) => {
                if let Err(e) = self.resized(cx, (c.width, c.height)) {
                    cx.log(format_args!("fb-viewer: resize: {e}"));
                }
            }
            Event::DumpAcked(_) => {
                if let Some(w) = self.gui.as_mut().and_then(|g| g.win.as_mut()) {
                    w.old.pop_front();
                }
            }
            Event::Destroyed(_) => {
                if let Some(g) = self.gui.as_mut() {
                    g.win = None;
                }
                self.quit(cx);
            }
            _ => {}
        }
    }

    fn window_size(&self) -> (u32, u32) {
        self.gui
            .as_ref()
            .and_then(|g| g.win.as_ref())
            .map_or((1, 1), |w| w.fb.size)
    }

    fn set_drag(&mut self, d: Option<(i32, i32)>) {
        if let Some(w) = self.gui.as_mut().and_then(|g| g.win.as_mut()) {
            w.drag = d;
        }
    }

    /// Moves bytes both ways and handles what the daemon said; whether it is safe to sleep.
    fn pump_gui(&mut self, cx: &mut Cx<'_, P>) -> bool {
        for _ in 0..64 {
            let Some(g) = self.gui.as_mut() else {
                return true;
            };
            if g.dead {
                return true;
            }
            match g.pump(&mut cx.env.store) {
                Ok(progress) => {
                    let mut events = Vec::new();
                    while let Some(ev) = g.agent.poll_event() {
                        events.push(ev);
                    }
                    let any = !events.is_empty();
                    for ev in events {
                        self.gui_event(cx, ev);
                    }
                    if !progress && !any {
                        let Some(g) = self.gui.as_mut() else {
                            return true;
                        };
                        match g.may_sleep() {
                            Ok(true) => return true,
                            Ok(false) => {}
                            Err(e) => self.gui_failed(cx, &e),
                        }
                    }
                }
                Err(e) => self.gui_failed(cx, &e),
            }
        }
        false
    }

    /// Sends what fits of a GetImageRGBA answer; whether more remains.
    fn pump_rgba(&mut self, cx: &mut Cx<'_, P>) -> bool {
        let Some((id, Rgba::Sending(a))) = self.rgba.as_mut() else {
            return false;
        };
        let id = *id;
        loop {
            if a.is_empty() {
                cx.finish(id, 0);
                self.rgba = Some((id, Rgba::Done));
                self.quitting = true;
                self.stop_at = Some(cx.now().saturating_add(STOP_GRACE));
                return false;
            }
            let space = cx.send_space(id);
            if space < 4 {
                return true;
            }
            a.next_piece(space.min(64 * 1024), &mut self.piece);
            if cx.send(id, &self.piece).is_err() {
                // The call is gone; `closed` stops the qube.
                self.rgba = Some((id, Rgba::Done));
                return false;
            }
        }
    }

    /// Ends a GetImageRGBA call with exit code 1, as the agent script's `set -e` would.
    fn rgba_fail(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        self.rgba = Some((id, Rgba::Done));
        cx.finish(id, 1);
        self.quitting = true;
        self.stop_at = Some(cx.now().saturating_add(STOP_GRACE));
    }

    fn gui_failed(&mut self, cx: &mut Cx<'_, P>, e: &str) {
        cx.log(format_args!("fb-viewer: GUI connection ended: {e}"));
        if let Some(g) = self.gui.as_mut() {
            g.dead = true;
        }
        // No window can be shown any more: the disposable has nothing left to do.
        self.quit(cx);
    }
}

fn clamp_window(size: (u32, u32), max_pixels: u64) -> (u32, u32) {
    let (w, h) = (size.0.max(1), size.1.max(1));
    if u64::from(w) * u64::from(h) <= max_pixels {
        return (w, h);
    }
    crate::view::canvas_box(w, h, max_pixels)
}

fn new_fb<P: Platform>(
    grants: &mut P::Grants,
    dom: DomId,
    size: (u32, u32),
) -> Result<(<P::Grants as Grants>::Mem, Vec<GrantRef>), String> {
    let pages = Agent::pages_for(size.0, size.1);
    grants
        .share(dom, pages, false)
        .map_err(|e| format!("share {pages} framebuffer pages: {e}"))
}

/// Renders the window's content into its framebuffer.
fn draw<M: SharedMem>(image: &Image, win: Option<&mut Window<M>>) -> Result<(), String> {
    let Some(w) = win else { return Ok(()) };
    let (fw, fh) = w.fb.size;
    let mut row = vec![0u8; fw as usize * 4];
    let oob = |_| String::from("framebuffer smaller than the window");
    match image {
        Image::Ready { canvas, .. } => {
            let c = (canvas.width, canvas.height, canvas.pixels.as_slice());
            for y in 0..fh {
                w.view.render_row(c, y, &mut w.cols, &mut row);
                w.fb.mem.write(y as usize * row.len(), &row).map_err(oob)?;
            }
        }
        Image::Refused(msg) => {
            let text = font::Text::new(msg, fw);
            for y in 0..fh {
                text.render_row(y, &mut row);
                w.fb.mem.write(y as usize * row.len(), &row).map_err(oob)?;
            }
        }
        _ => {}
    }
    Ok(())
}

impl<P: Platform> Gui<P> {
    /// Reads, feeds the agent, writes; whether anything moved.
    fn pump(&mut self, store: &mut P::Store) -> Result<bool, String> {
        let mut progress = false;
        if let Some(d) = self.dir.as_ref() {
            if !matches!(self.link.peer_state(), Ok(PeerState::Waiting)) {
                let _ = d.remove(store);
                self.dir = None;
            }
        }
        if let Some(free) = self.rx.get_mut(self.rx_len..).filter(|f| !f.is_empty()) {
            match self.link.read(free) {
                Ok(n) => {
                    self.rx_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => return Err(String::from("the daemon closed")),
                Err(e) => return Err(format!("vchan: {e}")),
            }
        }
        if self.rx_len > 0 {
            let n = self
                .agent
                .handle_input(self.rx.get(..self.rx_len).unwrap_or(&[]))
                .map_err(|e| format!("daemon broke the protocol: {e}"))?;
            self.rx.copy_within(n..self.rx_len, 0);
            self.rx_len -= n;
            progress |= n > 0;
        }
        progress |= self.pump_out()?;
        Ok(progress)
    }

    fn pump_out(&mut self) -> Result<bool, String> {
        let mut moved = false;
        loop {
            if self.tx_off == self.tx_len {
                match self.agent.poll_transmit(&mut self.tx) {
                    Some(n) => {
                        self.tx_off = 0;
                        self.tx_len = n.min(self.tx.len());
                        moved = true;
                    }
                    None => return Ok(moved),
                }
            }
            let pending = self.tx.get(self.tx_off..self.tx_len).unwrap_or(&[]);
            match self.link.write(pending) {
                Ok(0) => return Ok(moved),
                Ok(n) => {
                    self.tx_off += n;
                    moved = true;
                }
                Err(vchan::Error::PeerClosed) => return Err(String::from("the daemon closed")),
                Err(e) => return Err(format!("vchan: {e}")),
            }
        }
    }

    fn may_sleep(&mut self) -> Result<bool, String> {
        let interest = Interest {
            read: self.rx_len < self.rx.len(),
            write: self.tx_off < self.tx_len,
        };
        self.link
            .prepare_wait(interest)
            .map_err(|e| format!("vchan: {e}"))
    }
}

impl<P: Platform> App<P> for Viewer<P> {
    fn services(&self) -> &[&str] {
        &[SERVICE, crate::rgba::SERVICE]
    }

    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        let xid = cx
            .qubesdb()
            .read("/qubes-gui-domain-xid")
            .and_then(|v| core::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u32>().ok())
            .and_then(|n| DomId::new(n).ok());
        let Some(dom) = xid else {
            cx.log(format_args!(
                "fb-viewer: no /qubes-gui-domain-xid: no window can be shown"
            ));
            return Ok(());
        };
        let env = &mut *cx.env;
        let (link, dir) = server_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            dom,
            GUI_PORT,
            4096,
            4096,
        )
        .map_err(|_| AppError::Failed("GUI vchan server"))?;
        self.gui = Some(Gui {
            dom,
            link,
            dir: Some(dir),
            agent: Agent::new(AgentLimits::DEFAULT),
            rx: vec![0; 16384],
            rx_len: 0,
            tx: vec![0; 65536],
            tx_off: 0,
            tx_len: 0,
            screen: None,
            win: None,
            dead: false,
        });
        cx.log(format_args!(
            "fb-viewer: GUI vchan for domain {dom} on port {GUI_PORT}"
        ));
        Ok(())
    }

    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit {
        if self.call.is_some() || self.rgba.is_some() || self.quitting {
            // One file per disposable.
            return Admit::Refuse;
        }
        if call.service == crate::rgba::SERVICE {
            cx.log(format_args!(
                "fb-viewer: {} from {}",
                call.service, call.source
            ));
            let req = RgbaRequest::new(self.cfg.limits, self.cfg.canvas_pixels);
            self.rgba = Some((id, Rgba::Reading(req)));
            self.started = Some(cx.now());
            return Admit::Accept;
        }
        if call.service != SERVICE {
            return Admit::Refuse;
        }
        cx.log(format_args!("fb-viewer: {SERVICE} from {}", call.source));
        self.call = Some(id);
        self.started = Some(cx.now());
        Admit::Accept
    }

    fn input(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        if let Some((rid, Rgba::Reading(req))) = self.rgba.as_mut() {
            if *rid == id {
                let late = self
                    .started
                    .is_some_and(|t| cx.now().saturating_duration_since(t) > self.cfg.time_budget);
                if let Err(e) = req.push(data) {
                    cx.log(format_args!("fb-viewer: {e}"));
                    self.rgba_fail(cx, id);
                } else if late {
                    cx.log(format_args!(
                        "fb-viewer: GetImageRGBA: over the time budget"
                    ));
                    self.rgba_fail(cx, id);
                }
            }
            return;
        }
        if self.call != Some(id) || matches!(self.image, Image::Refused(_) | Image::Ready { .. }) {
            return;
        }
        let (name, file) = match self.req.push(data) {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("{e}");
                self.refuse(cx, msg);
                return;
            }
        };
        if let Some(n) = name {
            self.name = Some(n);
            self.image = Image::Loading(Box::new(Decoder::with_canvas_pixels(
                self.cfg.limits,
                self.cfg.canvas_pixels,
            )));
        }
        if let Image::Loading(d) = &mut self.image {
            if let Err(e) = d.push(file) {
                let msg = format!("{e}");
                self.refuse(cx, msg);
            }
        }
        self.check_time(cx);
    }

    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        if let Some((rid, state)) = self.rgba.as_mut() {
            if *rid == id {
                if let Rgba::Reading(_) = state {
                    let Rgba::Reading(req) = core::mem::replace(state, Rgba::Done) else {
                        return;
                    };
                    match req.finish() {
                        Ok(a) => {
                            cx.log(format_args!("fb-viewer: GetImageRGBA: {} bytes", a.len()));
                            *state = Rgba::Sending(a);
                            self.pump_rgba(cx);
                        }
                        Err(e) => {
                            cx.log(format_args!("fb-viewer: {e}"));
                            self.rgba_fail(cx, id);
                        }
                    }
                }
                return;
            }
        }
        if self.call != Some(id) {
            return;
        }
        if let Err(e) = self.req.end() {
            // vm-file-editor exits 1 when the name cannot be read.
            cx.log(format_args!("fb-viewer: {e}"));
            cx.finish(id, 1);
            self.quitting = true;
            self.stop_at = Some(cx.now().saturating_add(STOP_GRACE));
            return;
        }
        let img = core::mem::replace(&mut self.image, Image::Waiting);
        self.image = match img {
            Image::Loading(d) => {
                let src = d.header().map(|h| (h.width, h.height));
                match (d.finish(), src) {
                    (Ok(mut canvas), Some(src)) => {
                        canvas.composite_checkerboard();
                        let ms = self
                            .started
                            .map(|t| cx.now().saturating_duration_since(t).as_nanos() / 1_000_000);
                        cx.log(format_args!(
                            "fb-viewer: decoded {}x{} into {}x{} in {} ms",
                            src.0,
                            src.1,
                            canvas.width,
                            canvas.height,
                            ms.unwrap_or(0)
                        ));
                        Image::Ready { canvas, src }
                    }
                    (Err(e), _) => {
                        cx.log(format_args!("fb-viewer: {e}"));
                        Image::Refused(format!("{e}"))
                    }
                    (Ok(_), None) => Image::Refused(String::from("no image header")),
                }
            }
            other => other,
        };
        if self.gui.is_none() {
            // Nothing to show it on: answer like vm-file-editor after its viewer exits.
            self.quit(cx);
            return;
        }
        self.show(cx);
    }

    fn closed(&mut self, cx: &mut Cx<'_, P>, id: CallId, exit: Option<i32>) {
        if self.rgba.as_ref().is_some_and(|(rid, _)| *rid == id) {
            self.rgba = Some((id, Rgba::Done));
            cx.request_stop();
            return;
        }
        if self.call != Some(id) {
            return;
        }
        self.call_closed = true;
        if self.quitting {
            cx.request_stop();
        } else if exit.is_none() {
            cx.log(format_args!("fb-viewer: the caller went away"));
            self.quit(cx);
        }
    }

    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<Instant> {
        self.check_time(cx);
        if self.pump_rgba(cx) {
            // Ring space frees as the caller reads; look again soon even without a wake-up.
            return Some(cx.now().saturating_add(Duration::from_millis(10)));
        }
        if let Some(t) = self.stop_at {
            if cx.now() >= t {
                cx.request_stop();
                return None;
            }
        }
        let idle = self.pump_gui(cx);
        match (idle, self.stop_at) {
            (false, _) => Some(cx.now()),
            (true, t) => t,
        }
    }

    fn wait_ports(&self, ports: &mut PortSet) {
        if let Some(g) = self.gui.as_ref() {
            ports.insert(g.link.notifier().port());
        }
    }

    fn stop(&mut self, cx: &mut Cx<'_, P>) {
        if let Some(mut g) = self.gui.take() {
            let _ = g.pump_out();
            let _ = g.link.close();
            if let Some(d) = g.dir.take() {
                let _ = d.remove(&mut cx.env.store);
            }
        }
    }
}
