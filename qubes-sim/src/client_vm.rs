//! `qrexec-client-vm TARGET SERVICE[+ARG]` inside a qube: asks the local agent to call and
//! relays our stdin/stdout/stderr through it (see [`crate::local`]); exits with the status.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use qubes::qrexec::EXIT_REFUSED;

use crate::agent::{agent_socket, ENV_AGENT_SOCK, ENV_VM_DIR};
use crate::local;

/// How long we wait for the policy decision (an `ask` waits for its answer).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

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
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    writeln!(conn, "CALL {target} {service}")?;
    let line = local::read_line(&mut conn)?;
    match line
        .split_once(' ')
        .map_or((line.as_str(), ""), |(a, b)| (a, b))
    {
        ("CONNECTED", _) => {}
        ("REFUSED", _) => {
            eprintln!("Request refused");
            return Ok(EXIT_REFUSED);
        }
        ("ERROR", why) => bail!("{why}"),
        _ => bail!("unexpected answer from the agent: {line:?}"),
    }
    local::run_client(conn, true, false)
}
