//! Early speed figure: fb-viewer vs the `png` crate on generated 4000×3000 RGBA images.
//! Run with `cargo run --release -p fb-viewer --example decode_speed` (one run each).

use std::time::Instant;

fn encode(w: u32, h: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgba);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(data).unwrap();
    out
}

fn main() {
    let (w, h) = (4000u32, 3000u32);
    let mut seed = 0x1234_5678u32;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut photo = Vec::with_capacity((w * h * 4) as usize);
    let mut shot = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let n = noise() % 9;
            photo.extend_from_slice(&[
                ((x / 16 + n) % 256) as u8,
                ((y / 12 + n) % 256) as u8,
                ((x + y) / 28 % 256) as u8,
                255,
            ]);
            let c: u8 = if (x / 200 + y / 150) % 3 == 0 {
                0xf0
            } else if (x % 37 < 2) && (y % 19 < 12) {
                0x20
            } else {
                0xd8
            };
            shot.extend_from_slice(&[c, c, c.wrapping_add(8), 255]);
        }
    }
    let mb = f64::from(w) * f64::from(h) * 4.0 / 1e6;
    for (name, data) in [("photo-like", &photo), ("screenshot-like", &shot)] {
        let f = encode(w, h, data);
        let t = Instant::now();
        let mut d = png::Decoder::new(f.as_slice());
        d.set_transformations(png::Transformations::EXPAND);
        let mut r = d.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        r.next_frame(&mut buf).unwrap();
        let png_s = t.elapsed().as_secs_f64();
        let limits = fb_viewer::Limits {
            max_memory: 256 << 20,
            ..Default::default()
        };
        let t = Instant::now();
        let c = fb_viewer::decode(&f, &limits, w, h).unwrap();
        let ours_s = t.elapsed().as_secs_f64();
        assert_eq!(c.width, w);
        let t = Instant::now();
        let s = fb_viewer::decode(&f, &limits, 1920, 1080).unwrap();
        let scaled_s = t.elapsed().as_secs_f64();
        println!(
            "{name} {w}x{h} RGBA ({} KB file): png {:.0} MB/s, fb-viewer full size {:.0} MB/s, fb-viewer into {}x{} {:.0} MB/s",
            f.len() / 1024,
            mb / png_s,
            mb / ours_s,
            s.width,
            s.height,
            mb / scaled_s
        );
    }
}
