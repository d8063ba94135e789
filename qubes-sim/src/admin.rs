//! dom0-internal admin socket (`<run>/sim.sock`): the qvm-* tools ask the running sim to start
//! or kill qubes and to open qrexec calls. One JSON request line, one JSON reply line.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;
/// How long a tool waits for the sim to answer (a start waits up to `qrexec_timeout`, a
/// shutdown up to its `--timeout`, both capped by the sim).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3700);

/// The run directory (`QUBES_HOSTED_DIR` of every domain) inside a state directory.
pub fn run_dir(state: &Path) -> PathBuf {
    state.join("run")
}

/// The admin socket of a running sim.
pub fn socket_path(state: &Path) -> PathBuf {
    run_dir(state).join("sim.sock")
}

/// What a tool asks of the sim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The power state of every qube.
    Status,
    /// Start a qube and wait for its qrexec agent.
    Start {
        /// The qube.
        vm: String,
    },
    /// Kill a qube's process.
    Kill {
        /// The qube.
        vm: String,
    },
    /// Send `cmdline` (`user:command`) to a qube's agent with dom0 as the data-vchan server;
    /// the reply names the qube's domid and the data port.
    Exec {
        /// The qube.
        vm: String,
        /// `user:command` as EXEC_CMDLINE carries it.
        cmdline: String,
        /// Start the qube if it is halted.
        autostart: bool,
    },
    /// Ask a qube to power off (`control/shutdown`), kill it after `timeout` seconds.
    ShutdownVm {
        /// The qube.
        vm: String,
        /// Seconds to wait.
        timeout: u64,
    },
    /// Stop every qube and exit.
    Shutdown,
    /// The qube's firewall rules changed: reload them in its netvm's QubesDB if it runs.
    ReloadFirewall {
        /// The client qube.
        vm: String,
    },
    /// The registry changed (prefs, features): bring running qubes' QubesDB up to date.
    RefreshQdb,
    /// Input for a qube's focused window (`qvm-gui-input`).
    GuiInput {
        /// The qube.
        vm: String,
        /// `key NAME`, `click X Y` or `close`, split.
        input: Vec<String>,
    },
}

/// The sim's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Why the request failed, if it did.
    pub error: Option<String>,
    /// The qube's domid (Exec, Start).
    pub domid: Option<u32>,
    /// The data port (Exec).
    pub port: Option<u32>,
    /// Power state by qube name (Status).
    pub states: BTreeMap<String, String>,
}

impl Reply {
    /// A failure.
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            error: Some(msg.into()),
            ..Reply::default()
        }
    }
}

/// Sends `req` to the sim of `state`; `Ok(None)` when no sim runs there. The connection is
/// returned too: after an Exec it carries the call (see [`crate::local`]).
pub fn open(state: &Path, req: &Request) -> Result<Option<(Reply, UnixStream)>> {
    let Ok(mut s) = UnixStream::connect(socket_path(state)) else {
        return Ok(None);
    };
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .context("write to admin socket")?;
    // Unbuffered: what follows an Exec reply belongs to the call.
    let line = crate::local::read_line_max(&mut s, MAX_LINE)?;
    let reply: Reply = serde_json::from_str(&line).context("bad reply from the sim")?;
    Ok(Some((reply, s)))
}

/// Sends `req` to the sim of `state`; `Ok(None)` when no sim runs there.
pub fn try_call(state: &Path, req: &Request) -> Result<Option<Reply>> {
    Ok(open(state, req)?.map(|(r, _)| r))
}

/// Sends `req` to the sim and fails when none runs or it refuses.
pub fn call(state: &Path, req: &Request) -> Result<Reply> {
    call_open(state, req).map(|(r, _)| r)
}

/// [`call`], keeping the connection.
pub fn call_open(state: &Path, req: &Request) -> Result<(Reply, UnixStream)> {
    let (reply, s) = open(state, req)?
        .ok_or_else(|| anyhow!("the sim is not running (start it with `qubes-sim daemon`)"))?;
    match &reply.error {
        Some(e) => Err(anyhow!("{e}")),
        None => Ok((reply, s)),
    }
}
