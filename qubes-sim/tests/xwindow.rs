//! The GUI daemon under a real X server (Xvfb): with `DISPLAY` set, a qube's window appears as
//! an X window titled `[qube] title` with its exact pixels; X input and the close button reach
//! the agent; a dead X server leaves the qube and the screenshots running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::sim::{lines, Guard, Sim, DEADLINE};
use common::State;
use qubes_sim::gui_vm::{pattern, SIZE};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, ImageFormat, InputFocus,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    /// SIGTERM first, so that Xvfb removes its lock file and socket; SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_xvfb() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("Xvfb"))
        .find(|p| p.is_file())
}

/// Xvfb on a free display `:90+pid%100` (or the next free), accepting connections; `None`
/// (skip) when Xvfb is missing outside CI.
fn start_xvfb() -> Option<Xvfb> {
    let Some(exe) = find_xvfb() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Xvfb is not installed (Debian package xvfb)"
        );
        println!("skipped: Xvfb is not installed (apt-get install xvfb)");
        return None;
    };
    let base = 90 + std::process::id() % 100;
    for n in base..base + 30 {
        let taken = Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists();
        if taken {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new(&exe)
            .args([
                &display,
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut x = Xvfb { child, display };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if x11rb::connect(Some(&x.display)).is_ok() {
                return Some(x);
            }
            if x.child.try_wait().unwrap().is_some() || Instant::now() > end {
                // Lost a race for this display number: try the next.
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free X display for Xvfb");
}

fn expect(rx: &Receiver<String>, want: &str) {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l == want => return,
            Ok(l) => seen.push(l),
            Err(_) => {}
        }
    }
    panic!("agent never said {want:?}; it said {seen:?}");
}

fn atom(c: &RustConnection, name: &str) -> u32 {
    c.intern_atom(false, name.as_bytes())
        .unwrap()
        .reply()
        .unwrap()
        .atom
}

fn property(c: &RustConnection, w: u32, prop: u32) -> Vec<u8> {
    c.get_property(false, w, prop, AtomEnum::ANY, 0, 1024)
        .unwrap()
        .reply()
        .map(|r| r.value)
        .unwrap_or_default()
}

/// The top-level windows whose `_NET_WM_NAME` is `title`.
fn windows_titled(c: &RustConnection, title: &str) -> Vec<u32> {
    let root = c.setup().roots[0].root;
    let net_wm_name = atom(c, "_NET_WM_NAME");
    let tree = c.query_tree(root).unwrap().reply().unwrap();
    tree.children
        .into_iter()
        .filter(|w| property(c, *w, net_wm_name) == title.as_bytes())
        .collect()
}

fn wait_window(c: &RustConnection, title: &str) -> u32 {
    let end = Instant::now() + DEADLINE;
    loop {
        match windows_titled(c, title).as_slice() {
            [w] => return *w,
            [] => assert!(Instant::now() < end, "no X window titled {title:?}"),
            many => panic!("{} X windows titled {title:?}", many.len()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the X window's pixels (GetImage) are the test pattern.
fn check_pixels(c: &RustConnection, w: u32, inverted: bool) -> Result<(), String> {
    let (width, height) = SIZE;
    let img = c
        .get_image(
            ImageFormat::Z_PIXMAP,
            w,
            0,
            0,
            width as u16,
            height as u16,
            !0,
        )
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    if img.data.len() != (width * height * 4) as usize {
        return Err(format!("{} bytes of image", img.data.len()));
    }
    for y in 0..height {
        for x in 0..width {
            let i = ((y * width + x) * 4) as usize;
            let [r, g, b] = pattern(x, y, inverted);
            if img.data[i..i + 3] != [b, g, r] {
                return Err(format!(
                    "pixel ({x},{y}) is BGR {:?}, not {:?}",
                    &img.data[i..i + 3],
                    [b, g, r]
                ));
            }
        }
    }
    Ok(())
}

fn wait_pixels(c: &RustConnection, w: u32, inverted: bool) {
    let end = Instant::now() + DEADLINE;
    while let Err(e) = check_pixels(c, w, inverted) {
        assert!(Instant::now() < end, "X window pixels: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_agent(sim: &Sim) -> (Guard, Receiver<String>) {
    let mut agent = sim.in_vm("work", "gui-test-agent");
    agent.stdout(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    (Guard(child), rx)
}

fn wait_exit(guard: &mut Guard) {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            assert!(st.success(), "agent failed: {st}");
            return;
        }
        assert!(Instant::now() < end, "agent did not exit after close");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn qube_window_is_a_real_x_window_with_its_pixels_and_input() {
    let Some(xvfb) = start_xvfb() else { return };
    let (c, screen) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = c.setup().roots[screen].root;
    let state = State::new("xwindow");
    state.ok("qvm-create", &["--label", "green", "work"]);
    state.ok("qvm-features", &["work", "gui", "1"]);
    let sim = Sim::boot_with(state, &[("DISPLAY", &xvfb.display)]);
    sim.ok("qvm-start", &["work"]);

    let (mut guard, rx) = start_agent(&sim);
    expect(&rx, "ready");
    let win = wait_window(&c, "[work] sim test");
    assert_eq!(
        property(&c, win, AtomEnum::WM_NAME.into()),
        b"[work] sim test"
    );
    let geom = c.get_geometry(win).unwrap().reply().unwrap();
    assert_eq!(
        (
            geom.x,
            geom.y,
            u32::from(geom.width),
            u32::from(geom.height)
        ),
        (10, 20, SIZE.0, SIZE.1)
    );
    wait_pixels(&c, win, false);

    // A key typed into the X window (XTEST, as a keyboard would) reaches the agent, and its
    // repaint reaches the X window.
    c.set_input_focus(InputFocus::POINTER_ROOT, win, 0u32)
        .unwrap();
    c.sync().unwrap();
    c.xtest_fake_input(2, 38, 0, root, 0, 0, 0).unwrap();
    c.xtest_fake_input(3, 38, 0, root, 0, 0, 0).unwrap();
    c.flush().unwrap();
    expect(&rx, "key 38 press state 0");
    expect(&rx, "key 38 release state 0");
    wait_pixels(&c, win, true);

    // A click at window point (12, 34): the pointer moved there, button 1 pressed and released.
    let at = c
        .translate_coordinates(win, root, 12, 34)
        .unwrap()
        .reply()
        .unwrap();
    c.xtest_fake_input(6, 0, 0, root, at.dst_x, at.dst_y, 0)
        .unwrap();
    c.xtest_fake_input(4, 1, 0, root, 0, 0, 0).unwrap();
    c.xtest_fake_input(5, 1, 0, root, 0, 0, 0).unwrap();
    c.flush().unwrap();
    expect(&rx, "button 1 press 12 34");
    expect(&rx, "button 1 release 12 34");

    // The window manager's close button: WM_DELETE_WINDOW becomes the protocol's CLOSE, and the
    // agent's DESTROY takes the X window away.
    let wm_protocols = atom(&c, "WM_PROTOCOLS");
    let wm_delete = atom(&c, "WM_DELETE_WINDOW");
    assert_eq!(
        property(&c, win, wm_protocols),
        wm_delete.to_le_bytes().to_vec()
    );
    let ev = ClientMessageEvent::new(32, win, wm_protocols, [wm_delete, 0, 0, 0, 0]);
    c.send_event(false, win, EventMask::NO_EVENT, ev).unwrap();
    c.flush().unwrap();
    expect(&rx, "close");
    wait_exit(&mut guard);
    let end = Instant::now() + DEADLINE;
    while !windows_titled(&c, "[work] sim test").is_empty() {
        assert!(Instant::now() < end, "X window stayed after DESTROY");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The X server dies under a shown window: one line logged, the qube keeps its GUI through
    // screenshots and qvm-gui-input.
    let (mut guard, rx) = start_agent(&sim);
    expect(&rx, "ready");
    wait_window(&c, "[work] sim test");
    drop(c);
    drop(xvfb);
    let shot = sim.run_dir().join("screenshots").join("work-1.png");
    std::fs::remove_file(&shot).unwrap();
    sim.ok("qvm-gui-input", &["work", "key", "a"]);
    expect(&rx, "key 38 press state 0");
    let end = Instant::now() + DEADLINE;
    while !shot.exists() {
        assert!(
            Instant::now() < end,
            "no screenshot after the X server died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = Instant::now() + DEADLINE;
    while !sim.log().contains("X window of 'work'") {
        assert!(Instant::now() < end, "X death not logged: {}", sim.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sim.log().matches("X window of 'work'").count(),
        1,
        "{}",
        sim.log()
    );
    sim.ok("qvm-gui-input", &["work", "close"]);
    expect(&rx, "close");
    wait_exit(&mut guard);
    assert!(!sim.log().contains("panicked"), "{}", sim.log());
}
