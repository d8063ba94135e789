//! `cargo xtask bench <what>`: benchmarks that print a table with ratios against a baseline
//! measured in the same run. (Owned by the hosted-backend work; not built yet.)

use std::path::Path;

use anyhow::Result;

/// Runs a benchmark by name.
pub fn run(_root: &Path, args: &[String]) -> Result<()> {
    anyhow::bail!("no benchmark {:?} exists yet", args.first())
}
