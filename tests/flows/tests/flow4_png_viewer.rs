//! Flow 4: a PNG in `work` opened the way the installed MIME routing says (and with
//! `qvm-open-in-dvm`) shows in a viewer-unikernel disposable: the GUI daemon's screenshot
//! equals the `png` crate's decode pixel for pixel at 100%.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flows::{unikernel_bin, wait_for, Installed, DEADLINE};

const DVM: &str = "viewer-unikernel-dvm";

/// A picture with distinct values in every channel (gradients and a XOR texture).
fn picture(w: u32, h: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[
                (x * 255 / (w - 1)) as u8,
                (y * 255 / (h - 1)) as u8,
                (((x ^ y) * 7) & 0xff) as u8,
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

/// The installed routing for image/png: mimeapps.list's default .desktop and its Exec line
/// with the file put in for `%f`; the program as the qube's PATH has it (Qubes' agent
/// tools are the sim's in `run/bin`).
fn png_command(template_root: &Path, file: &str) -> String {
    let mime = std::fs::read_to_string(template_root.join("etc/xdg/mimeapps.list"))
        .expect("mimeapps.list is installed");
    let mut section = "";
    let desktop = mime
        .lines()
        .find_map(|l| {
            if l.starts_with('[') {
                section = l;
                return None;
            }
            (section == "[Default Applications]")
                .then(|| l.strip_prefix("image/png="))
                .flatten()
        })
        .expect("a default application for image/png")
        .trim()
        .to_string();
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
fn shown(q: &Installed, w: u32, h: u32, want: &[u8], skip: &[String]) -> String {
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
                if !vm.starts_with("disp") || skip.iter().any(|s| s == vm) {
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

    // Larger than the viewer's smallest window (160x120), odd sizes.
    let (w, h) = (241u32, 163u32);
    let png_bytes = picture(w, h);
    let (rw, rh, want) = decode_rgb(&png_bytes).unwrap();
    assert_eq!((rw, rh), (w, h));
    let file: PathBuf = q.vm_dir("work").join("picture.png");
    std::fs::write(&file, &png_bytes).unwrap();

    // 1. As the file manager opens it: the installed mimeapps.list and .desktop entry.
    let cmd = png_command(&q.template_root, "\"$QUBES_SIM_VM_DIR/picture.png\"");
    assert!(
        cmd.starts_with(&format!("qvm-open-in-vm --view-only @dispvm:{DVM} ")),
        "{cmd}"
    );
    let t = Instant::now();
    let call = q.spawn_in("work", &cmd);
    let first = shown(&q, w, h, &want, &[]);
    let first_after = t.elapsed();
    close(&mut q, &first, call);

    // 2. `qvm-open-in-dvm picture.png`, work's default disposable template being the viewer's.
    q.ok("qvm-prefs", &["work", "default_dispvm", DVM]);
    let call = q.spawn_in(
        "work",
        "cd \"$QUBES_SIM_VM_DIR\" && qvm-open-in-dvm picture.png",
    );
    let second = shown(&q, w, h, &want, &[]);
    close(&mut q, &second, call);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        png_bytes,
        "the picture in work was changed"
    );

    flows::report(&format!(
        "flow 4: picture.png ({w}x{h}) from work opened through the installed image/png routing (`{}` -> {first}, shown {} ms after the call) and with `qvm-open-in-dvm picture.png` ({second}); both GUI-daemon screenshots equal the png crate's decode pixel for pixel at 100%; q closed each viewer and its disposable went; the file is unchanged",
        cmd.replace("\"$QUBES_SIM_VM_DIR/picture.png\"", "picture.png"),
        first_after.as_millis()
    ));
}
