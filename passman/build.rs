//! Declares the `xen_image` cfg, which only `cargo xtask build` sets (with the freestanding flags).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(xen_image)");
}
