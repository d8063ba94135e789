//! Peak heap use of a decode, measured with a counting global allocator, stays within the plan's
//! bound and the configured `max_memory`, for a large photo-like image and for a zlib bomb.

mod common;

use std::sync::Mutex;

use common::{encode, file, ihdr, zlib_zeros};
use fb_viewer::{decode, Chunks, Header, Limits, Plan};
use platform_hosted::alloc_meter::AllocMeter;

/// Tests in this file run one at a time so their counts do not mix.
static SERIAL: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOC: AllocMeter = AllocMeter::new();

/// Peak bytes allocated above the level at the start of `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOC.peak_during(f)
}

fn plan_of(f: &[u8], limits: &Limits, w: u32, h: u32) -> Plan {
    let mut c = Chunks::new(f).unwrap();
    let ihdr = c.next_chunk(1 << 20).unwrap();
    Plan::new(Header::parse(ihdr.data).unwrap(), limits, w, h).unwrap()
}

#[test]
fn peak_memory_of_large_image_decode_stays_within_budget() {
    let _g = SERIAL.lock().unwrap();
    let (w, h) = (6000u32, 4000u32);
    let data: Vec<u8> = (0..w as usize * h as usize * 4)
        .map(|i| ((i / 4 % w as usize) ^ (i / 4 / w as usize) ^ (i * 31 % 97)) as u8)
        .collect();
    let f = encode(w, h, png::ColorType::Rgba, png::BitDepth::Eight, &data);
    drop(data);
    let limits = Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    };
    let plan = plan_of(&f, &limits, 1920, 1080);
    let (c, peak) = peak_during(|| decode(&f, &limits, 1920, 1080).unwrap());
    println!(
        "6000x4000 RGBA -> {}x{}: peak {peak} bytes, plan {}, limit {}",
        c.width, c.height, plan.memory, limits.max_memory
    );
    assert_eq!((c.width, c.height), (1620, 1080));
    assert!(
        peak as u64 <= plan.memory,
        "peak {peak} > plan {}",
        plan.memory
    );
    assert!(plan.memory <= limits.max_memory);
    // The full image would need 96 MB; the decode must not come near it.
    assert!(peak < 12 << 20);
}

#[test]
fn peak_memory_of_zlib_bomb_stays_within_budget() {
    let _g = SERIAL.lock().unwrap();
    let (w, h) = (8192u32, 8192u32);
    let f = file(&ihdr(w, h, 8, 0, 0), &[], &zlib_zeros(1 << 30));
    let limits = Limits {
        max_memory: 8 << 20,
        ..Limits::default()
    };
    let plan = plan_of(&f, &limits, 1024, 768);
    let (c, peak) = peak_during(|| decode(&f, &limits, 1024, 768).unwrap());
    println!(
        "8192x8192 zlib bomb -> {}x{}: peak {peak} bytes, plan {}",
        c.width, c.height, plan.memory
    );
    assert!(peak as u64 <= plan.memory && plan.memory <= limits.max_memory);
}

#[test]
fn window_too_large_for_memory_budget_is_refused_before_allocating() {
    let _g = SERIAL.lock().unwrap();
    let f = file(&ihdr(4000, 4000, 8, 6, 0), &[], &zlib_zeros(10));
    let limits = Limits {
        max_memory: 1 << 20,
        ..Limits::default()
    };
    let (r, peak) = peak_during(|| decode(&f, &limits, 4000, 4000));
    assert!(
        matches!(
            r,
            Err(fb_viewer::PngError::TooLarge {
                what: fb_viewer::Limit::Memory,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(peak < 64 << 10, "allocated {peak} before refusing");
}
