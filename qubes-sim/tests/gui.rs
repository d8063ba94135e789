//! The GUI daemon end to end: a test GUI agent inside a qube shows a window with a known
//! pattern; dom0's daemon maps the dump and writes a PNG with exactly those pixels; input
//! from `qvm-gui-input` reaches the agent.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::sim::{lines, Guard, Sim, DEADLINE};
use common::State;

const W: u32 = 64;
const H: u32 = 48;

fn pattern(x: u32, y: u32, inverted: bool) -> [u8; 3] {
    let p = [
        ((x ^ y) & 0xff) as u8,
        ((y * 5) & 0xff) as u8,
        ((x * 3) & 0xff) as u8,
    ];
    if inverted {
        p.map(|c| 255 - c)
    } else {
        p
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Decodes an 8-bit RGB PNG with filter 0 and stored deflate blocks (what the sim writes),
/// checking every CRC; (width, height, rgb).
fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (mut p, mut w, mut h, mut z) = (8, 0, 0, Vec::new());
    loop {
        let len = u32::from_be_bytes(png[p..p + 4].try_into().unwrap()) as usize;
        let kind = &png[p + 4..p + 8];
        let data = &png[p + 8..p + 8 + len];
        let crc = u32::from_be_bytes(png[p + 8 + len..p + 12 + len].try_into().unwrap());
        assert_eq!(crc, crc32(&png[p + 4..p + 8 + len]), "bad CRC");
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(&data[8..13], &[8, 2, 0, 0, 0], "8-bit RGB");
            }
            b"IDAT" => z.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        p += 12 + len;
    }
    let mut raw = Vec::new();
    let mut q = 2;
    loop {
        let last = z[q] & 1;
        assert_eq!(z[q] & 6, 0, "stored block");
        let len = u16::from_le_bytes([z[q + 1], z[q + 2]]) as usize;
        raw.extend_from_slice(&z[q + 5..q + 5 + len]);
        q += 5 + len;
        if last == 1 {
            break;
        }
    }
    let row = w as usize * 3 + 1;
    assert_eq!(raw.len(), row * h as usize);
    let mut rgb = Vec::new();
    for r in raw.chunks(row) {
        assert_eq!(r[0], 0, "filter 0");
        rgb.extend_from_slice(&r[1..]);
    }
    (w, h, rgb)
}

fn check_pixels(path: &Path, inverted: bool) -> Result<(), String> {
    let png = std::fs::read(path).map_err(|e| e.to_string())?;
    let (w, h, rgb) = decode(&png);
    if (w, h) != (W, H) {
        return Err(format!("size {w}x{h}"));
    }
    for y in 0..H {
        for x in 0..W {
            let i = ((y * W + x) * 3) as usize;
            let want = pattern(x, y, inverted);
            if rgb[i..i + 3] != want {
                return Err(format!(
                    "pixel ({x},{y}) is {:?}, not {want:?}",
                    &rgb[i..i + 3]
                ));
            }
        }
    }
    Ok(())
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

#[test]
fn window_dump_becomes_an_exact_screenshot_and_input_reaches_the_agent() {
    let state = State::new("gui");
    state.ok("qvm-create", &["--label", "green", "work"]);
    state.ok("qvm-features", &["work", "gui", "1"]);
    state.ok("qvm-create", &["--label", "green", "nogui"]);
    let sim = Sim::boot(state);
    sim.ok("qvm-start", &["work"]);
    let (_, xid, _) = sim.run_in(
        "work",
        "qubesdb-read",
        &["/qubes-gui-enabled", "/qubes-gui-domain-xid"],
    );
    assert_eq!(xid, "True\n0\n");

    let mut agent = sim.in_vm("work", "gui-test-agent");
    agent.stdout(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut guard = Guard(child);
    expect(&rx, "ready");
    let shot = sim.run_dir().join("screenshots").join("work-1.png");
    check_pixels(&shot, false).unwrap();

    // The daemon focused the mapped window; input goes there.
    sim.ok("qvm-gui-input", &["work", "key", "a"]);
    expect(&rx, "key 38 press state 0");
    expect(&rx, "key 38 release state 0");
    // The agent repaints inverted on a key press; the SHMIMAGE updates the screenshot.
    let end = Instant::now() + DEADLINE;
    while let Err(e) = check_pixels(&shot, true) {
        assert!(Instant::now() < end, "screenshot not updated: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sim.ok("qvm-gui-input", &["work", "key", "Q"]);
    expect(&rx, "key 24 press state 1");
    sim.ok("qvm-gui-input", &["work", "click", "12", "34"]);
    expect(&rx, "button 1 press 12 34");
    expect(&rx, "button 1 release 12 34");
    let (code, _, err) = sim
        .state
        .run("qvm-gui-input", &["work", "key", "NoSuchKey"]);
    assert!(code == 1 && err.contains("unknown key"), "{err}");
    // An agent killed without closing is replaced: dom0 notices the new server and moves on.
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    std::fs::remove_file(&shot).unwrap();
    let mut agent = sim.in_vm("work", "gui-test-agent");
    agent.stdout(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut guard = Guard(child);
    expect(&rx, "ready");
    check_pixels(&shot, false).unwrap();
    assert!(sim.log().contains("agent restarted"), "{}", sim.log());
    sim.ok("qvm-gui-input", &["work", "close"]);
    expect(&rx, "close");
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            assert!(st.success(), "agent failed: {st}");
            break;
        }
        assert!(Instant::now() < end, "agent did not exit after close");
        std::thread::sleep(Duration::from_millis(20));
    }
    // No window left to take input; a qube without the feature has no GUI daemon.
    let (code, _, _) = sim.state.run("qvm-gui-input", &["work", "key", "a"]);
    assert_eq!(code, 1);
    sim.ok("qvm-start", &["nogui"]);
    let (code, _, err) = sim.state.run("qvm-gui-input", &["nogui", "close"]);
    assert!(code == 1 && err.contains("GUI"), "{err}");
    let (code, out, _) = sim.run_in(
        "nogui",
        "qubesdb-read",
        &["-q", "/qubes-gui-enabled", "/qubes-gui-domain-xid"],
    );
    assert_eq!((code, out.as_str()), (1, "False\n"));
    assert!(!sim.log().contains("panicked"), "{}", sim.log());
}

/// Serves port 6000 to dom0 as `vm` from this process and sends `bytes` once dom0 attached.
fn hostile_agent(sim: &Sim, vm: &str, bytes: &[u8]) {
    use platform_api::DomId;
    use qubes_sim::chan::{Hosted, Vchan};
    let domid: u32 = sim.domid(vm).parse().unwrap();
    let mut h = Hosted::new(&sim.run_dir(), DomId::new(domid).unwrap()).unwrap();
    let mut v = Vchan::serve(&mut h, DomId::DOM0, 6000, 4096, 4096).unwrap();
    let end = Instant::now() + DEADLINE;
    while v.peer_state().unwrap() == vchan::PeerState::Waiting {
        assert!(Instant::now() < end, "dom0's GUI daemon never attached");
        std::thread::sleep(Duration::from_millis(10));
    }
    v.tidy(&mut h);
    let mut off = 0;
    while off < bytes.len() {
        off += v.write(&bytes[off..]).unwrap();
        assert!(Instant::now() < end, "dom0 does not read");
    }
    // dom0 gives up on us: its end closes.
    while v.peer_state().unwrap() != vchan::PeerState::Closed {
        assert!(Instant::now() < end, "dom0 kept a broken GUI connection");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn gui_msg(ty: u32, window: u32, body: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&window.to_le_bytes());
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_gui_agents_end_only_their_connection() {
    let state = State::new("gui-hostile");
    state.ok("qvm-create", &["--label", "green", "work"]);
    state.ok("qvm-features", &["work", "gui", "1"]);
    let sim = Sim::boot(state);
    sim.ok("qvm-start", &["work"]);
    let v18 = 0x0001_0008u32.to_le_bytes();
    let create = |w: u32| {
        let mut b = Vec::new();
        for x in [0u32, 0, 4, 4, 0, 0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        gui_msg(130, w, &b)
    };
    // A dump of grants that were never made.
    let mut dump = Vec::new();
    for x in [0u32, 4, 4, 32, 12345] {
        dump.extend_from_slice(&x.to_le_bytes());
    }
    for bytes in [
        // Protocol major 2.
        0x0002_0000u32.to_le_bytes().to_vec(),
        // A message for a window never created.
        [v18.to_vec(), gui_msg(133, 7, &[])].concat(),
        // Window 0 is the daemon's.
        [v18.to_vec(), create(0)].concat(),
        // A dump of grants that were never made.
        [v18.to_vec(), create(1), gui_msg(147, 1, &dump)].concat(),
    ] {
        hostile_agent(&sim, "work", &bytes);
    }
    assert_eq!(
        sim.log().matches("gui daemon of 'work'").count(),
        4,
        "{}",
        sim.log()
    );
    // A proper agent is served afterwards.
    let mut agent = sim.in_vm("work", "gui-test-agent");
    agent.stdout(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let _guard = Guard(child);
    expect(&rx, "ready");
    check_pixels(&sim.run_dir().join("screenshots").join("work-1.png"), false).unwrap();
}
