//! PngSuite: every valid file decodes to exactly the `png` crate's pixels (EXPAND, 16→8 by high
//! byte, to RGBA8); every `x*` file is refused with an error, never a panic.

use fb_viewer::{decode, Limits};

const SUITE: &str = "/work/shared/corpora/pngsuite";

/// Reference decode with the `png` crate, converted to BGRA8 the way fb-viewer converts.
fn reference(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), png::DecodingError> {
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (ct, bd) = (info.color_type, info.bit_depth);
    let bytes_per_sample = if bd == png::BitDepth::Sixteen { 2 } else { 1 };
    assert!(
        bd == png::BitDepth::Eight || bd == png::BitDepth::Sixteen,
        "EXPAND left {bd:?}"
    );
    let ch = ct.samples();
    let mut out = Vec::with_capacity((info.width * info.height * 4) as usize);
    for y in 0..info.height as usize {
        let row = &buf[y * info.line_size..][..info.line_size];
        for x in 0..info.width as usize {
            // High byte of each sample: the 16→8 conversion fb-viewer uses.
            let s = |k: usize| row[(x * ch + k) * bytes_per_sample];
            let [r, g, b, a] = match ct {
                png::ColorType::Grayscale => [s(0), s(0), s(0), 255],
                png::ColorType::GrayscaleAlpha => [s(0), s(0), s(0), s(1)],
                png::ColorType::Rgb => [s(0), s(1), s(2), 255],
                png::ColorType::Rgba => [s(0), s(1), s(2), s(3)],
                png::ColorType::Indexed => unreachable!("EXPAND removes indexed colour"),
            };
            out.extend_from_slice(&[b, g, r, a]);
        }
    }
    Ok((info.width, info.height, out))
}

#[test]
fn pngsuite_valid_files_match_reference_and_corrupt_files_are_refused() {
    let mut names: Vec<_> = std::fs::read_dir(SUITE)
        .expect("PngSuite corpus")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png") && n != "PngSuite.png")
        .collect();
    names.sort();
    let (mut valid, mut valid_ok, mut corrupt, mut corrupt_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for name in &names {
        let bytes = std::fs::read(format!("{SUITE}/{name}")).unwrap();
        let ours = decode(&bytes, &Limits::default(), 4096, 4096);
        if name.starts_with('x') {
            corrupt += 1;
            match ours {
                Err(e) => {
                    corrupt_ok += 1;
                    println!("refused {name}: {e}");
                }
                Ok(_) => failures.push(format!("{name}: corrupt file accepted")),
            }
            continue;
        }
        valid += 1;
        let want = reference(&bytes).unwrap_or_else(|e| panic!("reference failed on {name}: {e}"));
        match ours {
            Ok(c) if (c.width, c.height, &c.pixels) == (want.0, want.1, &want.2) => valid_ok += 1,
            Ok(c) => {
                let first = c.pixels.iter().zip(&want.2).position(|(a, b)| a != b);
                failures.push(format!(
                    "{name}: pixels differ (size {}x{}, first byte {first:?})",
                    c.width, c.height
                ));
            }
            Err(e) => failures.push(format!("{name}: refused valid file: {e}")),
        }
    }
    println!("PngSuite valid files exact: {valid_ok}/{valid}");
    println!("PngSuite corrupt files refused: {corrupt_ok}/{corrupt}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        valid > 150 && corrupt >= 14,
        "corpus incomplete: {valid} valid, {corrupt} corrupt"
    );
}
