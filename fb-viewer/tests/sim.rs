//! The viewer end to end in the sim: `qvm-open-in-vm @dispvm:viewer-unikernel-dvm FILE` from
//! `work` boots a disposable whose kernel is our hosted binary; the sim's GUI daemon writes
//! screenshots we compare with the `png` crate's decode; keys from `qvm-gui-input`.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sim_support::{wait_exit, wait_until, DEADLINE};

const VIEWER: &str = env!("CARGO_BIN_EXE_fb-viewer");
const DVM: &str = "viewer-unikernel-dvm";

/// The sim with `work` and the viewer's disposable template.
struct Sim(sim_support::Sim);

impl Deref for Sim {
    type Target = sim_support::Sim;
    fn deref(&self) -> &sim_support::Sim {
        &self.0
    }
}

impl Sim {
    fn boot(tag: &str) -> Sim {
        let mut sim = sim_support::Sim::new(VIEWER, &format!("fbv-{tag}"));
        sim.ok(&["qvm-create", "--label", "red", "work"]);
        sim.ok(&["qvm-create", "--label", "red", DVM]);
        sim.ok(&["qvm-prefs", DVM, "template_for_dispvms", "True"]);
        sim.ok(&["qvm-prefs", DVM, "kernel", VIEWER]);
        sim.ok(&["qvm-features", DVM, "gui", "1"]);
        sim.start_daemon();
        sim.ok(&["qvm-start", "work"]);
        Sim(sim)
    }

    /// `qvm-open-in-vm @dispvm:viewer-unikernel-dvm FILE` in `work`, in the background.
    fn open(&self, name: &str, data: &[u8]) -> (Child, PathBuf) {
        let work = self.vm_dir("work");
        std::fs::create_dir_all(&work).unwrap();
        let file = work.join(name);
        std::fs::write(&file, data).unwrap();
        let child = self
            .in_qube_cmd("work", &self.exe)
            .args(["qvm-open-in-vm", &format!("@dispvm:{DVM}")])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (child, file)
    }

    fn shot_path(&self) -> PathBuf {
        self.dir.join("run").join("screenshots").join("disp1-1.png")
    }

    fn console(&self) -> String {
        self.0.console("disp1")
    }

    /// Waits for a screenshot that satisfies `good`, returning it as (w, h, rgb).
    fn shot_where(&self, what: &str, good: impl Fn(&Shot) -> bool) -> Shot {
        let end = Instant::now() + DEADLINE;
        let mut last = None;
        while Instant::now() < end {
            if let Some(s) = read_shot(&self.shot_path()) {
                if good(&s) {
                    return s;
                }
                last = Some((s.w, s.h));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "no screenshot {what} (last {last:?})\nconsole:\n{}\nsim log:\n{}",
            self.console(),
            self.log()
        );
    }

    fn key(&self, name: &str) {
        self.ok(&["qvm-gui-input", "disp1", "key", name]);
    }

    /// The disposable's process id, from the sim's log.
    fn viewer_pid(&self) -> Option<u32> {
        let log = self.log();
        let line = log.lines().rfind(|l| l.contains("started qube 'disp1'"))?;
        let p = line.split("pid ").nth(1)?;
        p.trim_end_matches(')').parse().ok()
    }

    fn wait_gone(&self) {
        wait_until(
            "the disposable is gone",
            Duration::from_millis(25),
            || !self.ok(&["qvm-ls"]).contains("disp1"),
            || self.log(),
        );
    }
}

struct Shot {
    w: u32,
    h: u32,
    rgb: Vec<u8>,
}

impl Shot {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn read_shot(p: &Path) -> Option<Shot> {
    let data = std::fs::read(p).ok()?;
    let (w, h, rgba) = reference(&data).ok()?;
    let rgb = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Some(Shot { w, h, rgb })
}

/// The `png` crate's decode as 8-bit RGBA.
fn reference(data: &[u8]) -> Result<(u32, u32, Vec<u8>), png::DecodingError> {
    let mut d = png::Decoder::new(data);
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info()?;
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width, info.height);
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        _ => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
    };
    Ok((w, h, rgba))
}

fn encode_rgb(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(rgb).unwrap();
    out
}

fn pattern(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x ^ y) & 0xff) as u8,
            ]);
        }
    }
    v
}

fn src_at(rgb: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * w + x) * 3) as usize;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

fn finish(sim: &Sim, mut child: Child) {
    let status = wait_exit(&mut child, "qvm-open-in-vm");
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "qvm-open-in-vm: {status}: {}\nconsole:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sim.console(),
        sim.log()
    );
    sim.wait_gone();
}

#[test]
fn opened_png_is_shown_pixel_exact_zooms_pans_and_q_ends_the_disposable() {
    let sim = Sim::boot("exact");
    let (w, h) = (200u32, 150u32);
    let rgb = pattern(w, h);
    let file = encode_rgb(w, h, &rgb);
    let (child, path) = sim.open("my photo.png", &file);
    // 100%: the window is the image, every pixel as the reference decoder gives it.
    let (rw, rh, rgba) = reference(&file).unwrap();
    assert_eq!((rw, rh), (w, h));
    let shot = sim.shot_where("of the image", |s| (s.w, s.h) == (w, h));
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 4) as usize;
            assert_eq!(
                shot.at(x, y),
                [rgba[i], rgba[i + 1], rgba[i + 2]],
                "({x},{y})"
            );
        }
    }
    // `+` (keycode 21): 150%, centred on the same point: window (x, y) shows source
    // ((x + 50) * 2 / 3, (y + 37) * 2 / 3).
    sim.key("#21");
    let zoomed = |s: &Shot, pan_x: u32| {
        [(0, 0), (10, 20), (199, 149), (100, 75)]
            .iter()
            .all(|&(x, y)| s.at(x, y) == src_at(&rgb, w, (x + pan_x) * 2 / 3, (y + 37) * 2 / 3))
    };
    let s = sim.shot_where("at 150%", |s| zoomed(s, 50));
    assert_ne!(s.rgb, shot.rgb);
    // Right arrow: pans by an eighth of the window (25 px).
    sim.key("Right");
    sim.shot_where("panned right", |s| zoomed(s, 75));
    // `1`: back to 100%, exactly the original again.
    sim.key("1");
    sim.shot_where("back at 100%", |s| s.rgb == shot.rgb);
    // The title's name is sanitised as vm-file-editor does it.
    assert!(
        sim.console().contains("for my_photo.png"),
        "{}",
        sim.console()
    );
    let before = std::fs::read(&path).unwrap();
    sim.key("q");
    finish(&sim, child);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was changed"
    );
}

#[test]
fn large_png_is_fitted_to_the_screen() {
    let sim = Sim::boot("fit");
    let (w, h) = (3000u32, 2000u32);
    let rgb = pattern(w, h);
    let (child, _) = sim.open("big.png", &encode_rgb(w, h, &rgb));
    // The sim's screen is 1920x1080; the window fits 1880x1000 keeping 3:2.
    let s = sim.shot_where("fitted", |s| (s.w, s.h) == (1500, 1000));
    // Nearest-neighbour at 50%: window (x, y) is source (2x, 2y), give or take a pixel.
    for &(x, y) in &[(0u32, 0u32), (750, 500), (1499, 999), (300, 800)] {
        let got = s.at(x, y);
        let want = src_at(&rgb, w, 2 * x, 2 * y);
        for c in 0..2 {
            assert!(
                got[c].abs_diff(want[c]) <= 2,
                "({x},{y}): {got:?} vs {want:?}"
            );
        }
    }
    sim.ok(&["qvm-gui-input", "disp1", "close"]);
    finish(&sim, child);
}

/// Peak resident memory of the viewer process (VmHWM), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn bomb_100k() -> Vec<u8> {
    // 100,000 x 100,000 greyscale, every row filter 0 and zeros: ~10 GB inflated.
    let (w, h) = (100_000u32, 100_000u32);
    let row = vec![0u8; w as usize + 1];
    let mut z = flate2_free_zlib(&row, h as usize);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &std::mem::take(&mut z));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A zlib stream of `row` repeated `n` times, compressed by the png crate's encoder path
/// (deflate of a 1-row image repeated is not available, so compress a small prefix: the
/// decoder refuses on the header before reading much of it anyway).
fn flate2_free_zlib(row: &[u8], n: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..n.min(64) {
        raw.extend_from_slice(row);
    }
    miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut c = fb_viewer::crc32_update(fb_viewer::CRC_INIT, kind);
    c = fb_viewer::crc32_update(c, data);
    out.extend_from_slice(&(c ^ 0xffff_ffff).to_be_bytes());
}

#[test]
fn hostile_files_get_a_message_window_within_memory_budget() {
    let sim = Sim::boot("bomb");
    let good = encode_rgb(64, 64, &pattern(64, 64));
    let mut truncated = good.clone();
    truncated.truncate(truncated.len() / 2);
    let mut bad_crc = good.clone();
    // The last byte of IDAT's data (IEND's 12 bytes and IDAT's CRC follow it).
    let at = bad_crc.len() - 12 - 4 - 1;
    bad_crc[at] ^= 0x55;
    for (name, data, says) in [
        ("bomb.png", bomb_100k(), "too large"),
        ("cut.png", truncated, "truncated"),
        ("crc.png", bad_crc, "wrong CRC"),
    ] {
        let (child, _) = sim.open(name, &data);
        let s = sim.shot_where("of the message", |s| (s.w, s.h) == (640, 120));
        // Background with white text.
        assert_eq!(s.at(0, 0), [0x70, 0x30, 0x30]);
        assert!(s.rgb.chunks(3).any(|p| p == [255, 255, 255]));
        let console = sim.console();
        assert!(console.contains(says), "{console}");
        let pid = sim.viewer_pid().expect("viewer pid in the sim log");
        let kib = peak_kib(pid).expect("VmHWM of the viewer");
        eprintln!("{name}: viewer peak RSS {kib} KiB");
        assert!(kib < 64 * 1024, "{name}: peak RSS {kib} KiB");
        sim.key("Escape");
        finish(&sim, child);
        // The next open gets disp1 again.
        let _ = std::fs::remove_file(sim.shot_path());
    }
}

#[test]
fn get_image_rgba_returns_size_and_straight_rgba() {
    let sim = Sim::boot("rgba");
    let (w, h) = (37u32, 23u32);
    let mut rgba = Vec::new();
    for y in 0..h {
        for x in 0..w {
            rgba.extend_from_slice(&[(x * 7) as u8, (y * 11) as u8, (x ^ y) as u8, (x * y) as u8]);
        }
    }
    let mut file = Vec::new();
    {
        let mut e = png::Encoder::new(&mut file, w, h);
        e.set_color(png::ColorType::Rgba);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(&rgba).unwrap();
    }
    let mut child = sim
        .in_qube_cmd("work", &sim.exe)
        .args([
            "qrexec-client-vm",
            &format!("@dispvm:{DVM}"),
            "qubes.GetImageRGBA",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(b"-\n").unwrap();
        stdin.write_all(&file).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "{}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sim.log()
    );
    let head = format!("{w} {h}\n");
    assert_eq!(&out.stdout[..head.len()], head.as_bytes());
    assert_eq!(&out.stdout[head.len()..], &rgba[..]);
    sim.wait_gone();
}
