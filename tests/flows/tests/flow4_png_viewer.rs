//! Flow 4: a PNG in `work` opened the way the installed MIME routing says (and with
//! `qvm-open-in-dvm`) shows in a viewer-unikernel disposable: the GUI daemon's screenshot
//! equals the `png` crate's decode pixel for pixel at 100%.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flows::{unikernel_bin, wait_for, Installed, DEADLINE};

const DVM: &str = "viewer-unikernel-dvm";

/// A picture with distinct values in every channel (gradients and a XOR texture).
fn picture(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[
                (x * 255 / (w - 1)) as u8,
                (y * 255 / (h - 1)) as u8,
                (((x ^ y) * seed) & 0xff) as u8,
            ]);
        }
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(&rgb).unwrap();
    out
}

/// The `png` crate's decode: (width, height, RGB bytes); `None` if it does not decode.
fn decode_rgb(data: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let mut d = png::Decoder::new(data);
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().ok()?;
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        _ => return None,
    };
    Some((info.width, info.height, rgb))
}

/// The installed routing for image/png: the default .desktop as a Qubes AppVM session
/// (XDG_CURRENT_DESKTOP=X-QUBES) looks it up by the XDG mime-apps spec (config dirs before
/// data dirs, the desktop-specific list before the plain one), and its Exec line with the file
/// put in for `%f`; the program as the qube's PATH has it (Qubes' agent tools are the sim's in
/// `run/bin`).
fn png_command(template_root: &Path, file: &str) -> String {
    assert!(
        !template_root.join("etc/xdg/mimeapps.list").exists(),
        "the template package must not own the system-wide /etc/xdg/mimeapps.list"
    );
    let lists = [
        "etc/xdg/x-qubes-mimeapps.list",
        "etc/xdg/mimeapps.list",
        "usr/share/applications/x-qubes-mimeapps.list",
        "usr/share/applications/mimeapps.list",
    ];
    let desktop = lists
        .iter()
        .filter_map(|l| std::fs::read_to_string(template_root.join(l)).ok())
        .find_map(|mime| {
            let mut section = "";
            mime.lines().find_map(|l| {
                if l.starts_with('[') {
                    section = l;
                    return None;
                }
                (section == "[Default Applications]")
                    .then(|| l.strip_prefix("image/png="))
                    .flatten()
                    .and_then(|ids| ids.split(';').map(str::trim).find(|id| !id.is_empty()))
                    .map(str::to_string)
            })
        })
        .expect("a default application for image/png in an installed mimeapps.list");
    let entry =
        std::fs::read_to_string(template_root.join("usr/share/applications").join(&desktop))
            .unwrap_or_else(|e| panic!("{desktop} is not installed: {e}"));
    let exec = entry
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line")
        .trim();
    let (prog, args) = exec.split_once(' ').expect("Exec has arguments");
    let prog = Path::new(prog).file_name().unwrap().to_string_lossy();
    format!("{prog} {}", args.replace("%f", file))
}

/// The viewer disposable's screenshot that equals `want` (waited for); its qube's name.
fn shown(q: &Installed, w: u32, h: u32, want: &[u8]) -> String {
    let dir = q.state().join("run/screenshots");
    let last = std::cell::RefCell::new(String::from("no screenshot of a disposable"));
    let mut found = None;
    wait_for(
        "the viewer's window equals the reference decode",
        DEADLINE,
        || {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                return false;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(vm) = name.strip_suffix("-1.png") else {
                    continue;
                };
                if !vm.starts_with("disp") {
                    continue;
                }
                let Some((sw, sh, rgb)) = std::fs::read(e.path()).ok().and_then(|d| decode_rgb(&d))
                else {
                    continue;
                };
                if (sw, sh) != (w, h) {
                    *last.borrow_mut() = format!("{name}: {sw}x{sh}, not {w}x{h}");
                    continue;
                }
                let differ = rgb
                    .chunks(3)
                    .zip(want.chunks(3))
                    .filter(|(a, b)| a != b)
                    .count();
                if differ == 0 {
                    found = Some(vm.to_string());
                    return true;
                }
                *last.borrow_mut() = format!("{name}: {differ} of {} pixels differ", w * h);
            }
            false
        },
        || format!("last: {}\n{}", last.borrow(), q.diag()),
    );
    found.unwrap()
}

/// `q` in the viewer's window ends the call (exit 0) and the disposable goes.
fn close(q: &mut Installed, disp: &str, call: usize) {
    q.ok("qvm-gui-input", &[disp, "key", "q"]);
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = q.proc(call).try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the open call did not return after q\n{}",
            q.diag()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the open call failed: {status}\n{}",
        q.diag()
    );
    wait_for(
        &format!("{disp} is removed"),
        DEADLINE,
        || {
            !q.ok("qvm-ls", &[])
                .lines()
                .any(|l| l.split_whitespace().next() == Some(disp))
        },
        || q.diag(),
    );
    let _ = std::fs::remove_file(q.state().join(format!("run/screenshots/{disp}-1.png")));
}

#[test]
fn flow4_png_opens_in_a_viewer_disposable_pixel_exact() {
    let viewer = unikernel_bin("fb-viewer");
    let mut q = Installed::new("flow4");
    q.setup(&[("fb-viewer", &viewer, "")]);
    // The sim runs a GUI daemon only for qubes with feature `gui` (Qubes gives every qube with
    // a GUI qube one); disposables take it from their template.
    q.ok("qvm-features", &[DVM, "gui", "1"]);
    q.start(false);
    q.ok("qvm-start", &["work"]);

    // Two different pictures (larger than the viewer's smallest window, 160x120; odd sizes), so
    // a screenshot of the first can never pass for the second.
    let put = |name: &str, w: u32, h: u32, seed: u32| {
        let bytes = picture(w, h, seed);
        let (rw, rh, want) = decode_rgb(&bytes).unwrap();
        assert_eq!((rw, rh), (w, h));
        let file: PathBuf = q.vm_dir("work").join(name);
        std::fs::write(&file, &bytes).unwrap();
        (file, bytes, want)
    };
    let (dw, dh) = (241u32, 163u32);
    let (drawing, drawing_bytes, drawing_rgb) = put("drawing.png", dw, dh, 7);
    let (pw, ph) = (199u32, 177u32);
    let (pic, pic_bytes, pic_rgb) = put("picture.png", pw, ph, 13);

    // 1. As the file manager opens a PNG: the installed x-qubes-mimeapps.list and .desktop entry.
    let cmd = png_command(&q.template_root, "drawing.png");
    assert!(
        cmd.starts_with(&format!("qvm-open-in-vm --view-only @dispvm:{DVM} ")),
        "{cmd}"
    );
    let t = Instant::now();
    let call = q.spawn_in("work", &format!("cd \"$QUBES_SIM_VM_DIR\" && {cmd}"));
    let first = shown(&q, dw, dh, &drawing_rgb);
    let first_after = t.elapsed();
    close(&mut q, &first, call);

    // 2. `qvm-open-in-dvm picture.png`, work's default disposable template being the viewer's.
    q.ok("qvm-prefs", &["work", "default_dispvm", DVM]);
    let call = q.spawn_in(
        "work",
        "cd \"$QUBES_SIM_VM_DIR\" && qvm-open-in-dvm picture.png",
    );
    let second = shown(&q, pw, ph, &pic_rgb);
    close(&mut q, &second, call);
    for (file, bytes) in [(&drawing, &drawing_bytes), (&pic, &pic_bytes)] {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            bytes,
            "{} in work was changed",
            file.display()
        );
    }

    flows::report(&format!(
        "flow 4: in work, `{cmd}` (the installed image/png routing) showed drawing.png ({dw}x{dh}) in {first} {} ms after the call, and `qvm-open-in-dvm picture.png` showed picture.png ({pw}x{ph}) in {second}; each GUI-daemon screenshot equals the png crate's decode pixel for pixel at 100%; q closed each viewer and its disposable went; the files are unchanged",
        first_after.as_millis()
    ));
}
