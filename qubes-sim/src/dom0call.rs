//! dom0 → qube calls (`qvm-run`, `qrexec-client`): dom0 is the data-vchan server and the
//! caller end of the data channel.

use std::path::Path;

use anyhow::{bail, Result};

/// `qvm-run [-p] [-u USER] [--service] [--no-autostart] VMNAME COMMAND`.
pub fn qvm_run(_state: &Path, _args: &[String]) -> Result<i32> {
    bail!("not yet")
}
