//! Blocking commands on the local socket: `qrexec-client-vm TARGET SERVICE[+ARG]` and the
//! split-SSH forwarder (each connection to a listening socket is one call, as socat does).

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::local;

/// `qrexec-client-vm`: our stdin to the call, its stdout to ours; the remote exit code.
pub fn client_vm(agent: &Path, target: &str, service: &str) -> io::Result<i32> {
    let s = UnixStream::connect(agent).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("qrexec agent at {}: {e}", agent.display()),
        )
    })?;
    match local::start_call(s, target, service)? {
        Ok(s) => local::run_call(s, io::stdin(), io::stdout()),
        Err(code) => Ok(code),
    }
}

/// One forwarded connection: the call's stdin is what the local client sends, its stdout goes
/// back; the connection closes when the call ends.
fn forward_one(agent: &Path, target: &str, service: &str, conn: UnixStream) -> io::Result<i32> {
    let s = UnixStream::connect(agent)?;
    match local::start_call(s, target, service)? {
        Ok(s) => {
            let input = conn.try_clone()?;
            let code = local::run_call(s, input, &conn)?;
            let _ = conn.shutdown(std::net::Shutdown::Both);
            Ok(code)
        }
        Err(code) => Ok(code),
    }
}

/// Listens on `socket` (replacing a stale one) and forwards every connection, each on its own
/// thread, as `qrexec-client-vm TARGET SERVICE`. Runs until the listener fails.
pub fn ssh_forward(socket: &Path, agent: &Path, target: &str, service: &str) -> io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let l = UnixListener::bind(socket)?;
    eprintln!(
        "qrexec-forward: {} -> {service} in {target}",
        socket.display()
    );
    for conn in l.incoming() {
        let conn = conn?;
        let (agent, target, service) =
            (agent.to_path_buf(), target.to_string(), service.to_string());
        std::thread::spawn(move || match forward_one(&agent, &target, &service, conn) {
            Ok(0) => {}
            Ok(code) => eprintln!("qrexec-forward: {service} in {target}: exit code {code}"),
            Err(e) => eprintln!("qrexec-forward: {service} in {target}: {e}"),
        });
    }
    Ok(())
}
