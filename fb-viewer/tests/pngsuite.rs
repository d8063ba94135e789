//! PngSuite: every valid file decodes to exactly the `png` crate's pixels (EXPAND, 16→8 by high
//! byte, to RGBA8); every `x*` file is refused with an error, never a panic.

mod common;

use common::{reference, sample_ref};
use fb_viewer::{decode, Limits};

const SUITE: &str = "/work/shared/corpora/pngsuite";

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
    let scaled = valid_files_downscaled_match_sampled_reference(&names);
    println!("PngSuite valid files downscaled to 7x5 window exact: {scaled}/{valid}");
    println!("PngSuite valid files exact: {valid_ok}/{valid}");
    println!("PngSuite corrupt files refused: {corrupt_ok}/{corrupt}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        valid > 150 && corrupt >= 14,
        "corpus incomplete: {valid} valid, {corrupt} corrupt"
    );
}

/// Every valid file decoded into a 7×5 window equals nearest-neighbour samples of the reference.
fn valid_files_downscaled_match_sampled_reference(names: &[String]) -> usize {
    let mut ok = 0;
    for name in names.iter().filter(|n| !n.starts_with('x')) {
        let bytes = std::fs::read(format!("{SUITE}/{name}")).unwrap();
        let want = reference(&bytes).unwrap();
        let c = decode(&bytes, &Limits::default(), 7, 5).unwrap();
        assert_eq!(
            c.pixels,
            sample_ref(&want, c.width, c.height),
            "{name} downscaled"
        );
        ok += 1;
    }
    ok
}
