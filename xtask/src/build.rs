//! `cargo xtask build` and `boot-test`: freestanding Xen images and their QEMU PVH boot test.
//! (Owned by the Xen platform work; images are not built yet.)

use std::path::Path;

use anyhow::Result;

/// Builds every unikernel image into `target/unikernels/<name>/vmlinuz`.
pub fn build_images(_root: &Path) -> Result<()> {
    anyhow::bail!("no unikernel images exist yet (the Xen platform is not built)")
}

/// Boots each image under QEMU's PVH loader; nothing to boot yet.
pub fn boot_test(_root: &Path) -> Result<()> {
    Ok(())
}
