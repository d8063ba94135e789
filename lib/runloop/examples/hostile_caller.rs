//! A hostile qrexec caller for the runloop's tests: a qube whose agent calls `test.Echo` in
//! `echo-vm` and then breaks the data channel in the way its kernel command line names:
//! `oversize` (a stdin chunk declaring 2 GiB), `garbage` (an unknown message type) or `nohello`
//! (attaches and says nothing). It reports on its console whether echo-vm closed the channel,
//! then idles until poweroff.

use std::process::ExitCode;

use platform_api::{Clock, DomId, Duration, Events, Store, Tx};
use qubes::qrexec::agent::{Event, Limits};
use qubes::qrexec::{Agent, CONTROL_PORT};
use vchan::setup::{server_init, GrantedServer, XsDir};

type Srv =
    GrantedServer<platform_hosted::grants::HostedGrants, platform_hosted::events::HostedEvents>;

/// A qrexec message header: type, then body length, both u32 little-endian.
fn header(ty: u32, len: u32) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn hostile_bytes(mode: &str) -> Vec<u8> {
    let mut v = header(0x300, 4);
    v.extend_from_slice(&3u32.to_le_bytes());
    match mode {
        "oversize" => v.extend(header(0x190, 0x7fff_ffff)),
        "garbage" => {
            v.extend(header(0x999, 4));
            v.extend_from_slice(b"evil");
        }
        _ => v.clear(),
    }
    v
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut env = platform_hosted::env_from_environment().map_err(|e| e.to_string())?;
    let mode = env.cmdline.trim().to_string();
    let (mut ctrl, dir) = server_init(
        &mut env.grants,
        &mut env.events,
        &mut env.store,
        DomId::DOM0,
        CONTROL_PORT,
        4096,
        4096,
    )
    .map_err(|e| format!("control vchan: {e}"))?;
    let mut ctrl_dir = Some(dir);
    let mut agent = Agent::new(Limits::DEFAULT);
    let mut data: Option<(Srv, Option<XsDir>, DomId, u32)> = None;
    let (mut inbuf, mut tx) = (vec![0u8; 8192], Vec::<u8>::new());
    let mut evil = hostile_bytes(&mode);
    let mut reported = false;
    let started = env.clock.now();
    loop {
        // Control channel: our messages out, the daemon's in.
        let mut scratch = [0u8; 4096];
        while let Some(n) = agent.poll_transmit(&mut scratch) {
            tx.extend_from_slice(&scratch[..n]);
        }
        while !tx.is_empty() {
            match ctrl.write(&tx) {
                Ok(0) => break,
                Ok(n) => drop(tx.drain(..n)),
                Err(e) => return Err(format!("control write: {e}")),
            }
        }
        if ctrl_dir.is_some() && ctrl.is_connected().unwrap_or(false) {
            let _ = ctrl_dir.take().map(|d| d.remove(&mut env.store));
        }
        match ctrl.read(&mut inbuf) {
            Ok(n) if n > 0 => {
                let used = agent.handle_input(&inbuf[..n]).map_err(|e| e.to_string())?;
                if used < n {
                    return Err("control input not consumed".into());
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("control read: {e}")),
        }
        while let Some(ev) = agent.poll_event() {
            match ev {
                Event::Ready { .. } => {
                    agent
                        .trigger_service("echo-vm", "test.Echo")
                        .map_err(|e| e.to_string())?;
                }
                Event::ServiceConnect { peer, port, .. } => {
                    let (s, d) = server_init(
                        &mut env.grants,
                        &mut env.events,
                        &mut env.store,
                        peer,
                        port,
                        65536,
                        65536,
                    )
                    .map_err(|e| format!("data vchan: {e}"))?;
                    data = Some((s, Some(d), peer, port));
                }
                Event::Refused { .. } => eprintln!("hostile: {mode}: call refused"),
                _ => {}
            }
        }
        // Data channel: once attached, the hostile bytes; then wait for echo-vm to close it.
        if let Some((s, dir, peer, port)) = data.as_mut() {
            if s.is_connected().unwrap_or(false) {
                let _ = dir.take().map(|d| d.remove(&mut env.store));
                while !evil.is_empty() {
                    match s.write(&evil) {
                        Ok(0) => break,
                        Ok(n) => drop(evil.drain(..n)),
                        Err(_) => break,
                    }
                }
                let mut sink = [0u8; 4096];
                let closed = loop {
                    match s.read(&mut sink) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(_) => break true,
                    }
                };
                if closed && !reported {
                    reported = true;
                    let secs = env.clock.now().saturating_duration_since(started).as_secs();
                    eprintln!("hostile: {mode}: echo-vm closed the data vchan ({secs}s)");
                    let _ = s.close();
                    let _ = agent.connection_terminated(*peer, *port);
                }
            }
        }
        if let Ok(v) = env.store.read(Tx::NONE, "control/shutdown") {
            if v.starts_with(b"poweroff") || v.starts_with(b"halt") || v.starts_with(b"reboot") {
                let _ = ctrl.close();
                return Ok(());
            }
        }
        env.events
            .wait(Some(Duration::from_millis(10)))
            .map_err(|e| e.to_string())?;
    }
}
