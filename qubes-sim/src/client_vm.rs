//! `qrexec-client-vm TARGET SERVICE[+ARG]` inside a qube: asks the local agent to call, then
//! serves the data vchan itself with our stdin/stdout; exits with the service's status.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use platform_api::DomId;
use qubes::qrexec::{DataChannel, Stream, AGENT_VERSION, EXIT_PROBLEM, EXIT_REFUSED};

use crate::agent::{agent_socket, ENV_AGENT_SOCK, ENV_VM_DIR};
use crate::chan::{Hosted, Vchan};
use crate::pump::{self, Input, Outcome, StdSink, INPUT_DEPTH};

/// How long we wait for the policy decision.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Data vchan ring sizes (both ways), as the C agent asks.
pub const DATA_RING: usize = 65536;

fn socket() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_AGENT_SOCK) {
        return Ok(PathBuf::from(p));
    }
    let dir = std::env::var_os(ENV_VM_DIR)
        .ok_or_else(|| anyhow!("not inside a qube ({ENV_VM_DIR} is not set)"))?;
    Ok(agent_socket(&PathBuf::from(dir)))
}

/// Runs the command; returns the exit status.
pub fn run(args: &[String]) -> Result<i32> {
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [target, service] = pos.as_slice() else {
        return Err(
            crate::cli::Usage("usage: qrexec-client-vm TARGET SERVICE[+ARG]".into()).into(),
        );
    };
    let path = socket()?;
    let mut conn = UnixStream::connect(&path)
        .with_context(|| format!("cannot connect to the qrexec agent at {}", path.display()))?;
    // Bounded: an `ask` waits for its answer, and the agent answers every call.
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    writeln!(conn, "CALL {target} {service}")?;
    let line = crate::admin::read_line(&conn)?;
    let mut parts = line.split_whitespace();
    let (peer, port) = match (parts.next(), parts.next(), parts.next()) {
        (Some("CONNECT"), Some(d), Some(p)) => (
            DomId::parse(d).map_err(|_| anyhow!("agent sent a bad domid"))?,
            p.parse::<u32>()
                .map_err(|_| anyhow!("agent sent a bad port"))?,
        ),
        (Some("REFUSED"), ..) => {
            eprintln!("Request refused");
            return Ok(EXIT_REFUSED);
        }
        (Some("ERROR"), ..) => bail!("{}", line.trim_end().trim_start_matches("ERROR ")),
        _ => bail!("unexpected answer from the agent: {:?}", line.trim_end()),
    };
    let code = call(peer, port)?;
    drop(conn);
    Ok(code)
}

/// Serves the data vchan for `peer` on `port` as the caller, with our stdin/stdout/stderr.
pub fn call(peer: DomId, port: u32) -> Result<i32> {
    let mut h = Hosted::from_env()?;
    caller_pump(&mut h, peer, port, true, false)
}

/// The caller side of a call: serve the vchan, stream our stdin (or none), print output (or
/// drop it), return the remote status.
pub fn caller_pump(
    h: &mut Hosted,
    peer: DomId,
    port: u32,
    with_stdin: bool,
    discard: bool,
) -> Result<i32> {
    let mut v = Vchan::serve(h, peer, port, DATA_RING, DATA_RING)?;
    let mut chan = DataChannel::caller(AGENT_VERSION);
    let (tx, rx) = mpsc::sync_channel::<Input>(INPUT_DEPTH);
    if with_stdin {
        pump::spawn_reader(std::io::stdin(), Stream::Stdin, tx);
    } else {
        let _ = tx.send(Input::Eof(Stream::Stdin));
    }
    let mut sink = StdSink { discard };
    let res = pump::pump(h, &mut v, peer, &mut chan, &rx, &mut sink, &|| false);
    v.shutdown(h);
    match res {
        Ok(Outcome::Exit(c)) => Ok(c),
        Ok(Outcome::CallerGone) => Ok(EXIT_PROBLEM),
        Err(e) => {
            eprintln!("qrexec: {e:#}");
            Ok(EXIT_PROBLEM)
        }
    }
}
