//! dom0 → qube calls (`qvm-run`): the sim's daemon sends EXEC_CMDLINE with dom0 as the peer,
//! and this process is the data-vchan server and the caller end of the data channel.

use std::path::Path;

use anyhow::{anyhow, Result};
use platform_api::DomId;

use crate::admin::{self, Request};
use crate::chan::Hosted;
use crate::chan::Vchan;
use crate::cli::Usage;
use crate::pump::{self, Input, Outcome, StdSink, INPUT_DEPTH};
use qubes::qrexec::{DataChannel, Stream, AGENT_VERSION, EXIT_PROBLEM};

/// `qvm-run [-p|--pass-io] [-u USER] [--service] [--no-autostart] [-q] VMNAME COMMAND...`;
/// returns the remote exit status.
pub fn qvm_run(state: &Path, args: &[String]) -> Result<i32> {
    let (mut pass_io, mut service, mut autostart, mut user) = (false, false, true, None);
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !pos.is_empty() {
            pos.push(a.clone());
            continue;
        }
        match a.as_str() {
            "-p" | "--pass-io" => pass_io = true,
            "--service" => service = true,
            "--no-autostart" => autostart = false,
            "--autostart" => autostart = true,
            "-q" | "--quiet" | "--no-gui" | "--nogui" => {}
            "-u" | "--user" => {
                user = Some(
                    it.next()
                        .ok_or_else(|| Usage("-u needs a USER".into()))?
                        .clone(),
                )
            }
            o if o.starts_with("--user=") => user = o.strip_prefix("--user=").map(String::from),
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(Usage(format!("unrecognized arguments: {o}")).into())
            }
            _ => pos.push(a.clone()),
        }
    }
    let Some((vm, command)) = pos.split_first().filter(|(_, c)| !c.is_empty()) else {
        return Err(Usage("the following arguments are required: VMNAME, COMMAND".into()).into());
    };
    let command = command.join(" ");
    let user = user.unwrap_or_else(|| "DEFAULT".into());
    let cmdline = if service {
        format!("{user}:QUBESRPC {command} dom0")
    } else {
        format!("{user}:{command}")
    };
    exec_and_pump(state, vm.clone(), cmdline, autostart, pass_io)
}

/// `qrexec-client -d VMNAME USER:COMMAND`: the command line as given, with our stdin/stdout.
pub fn qrexec_client(state: &Path, args: &[String]) -> Result<i32> {
    let (mut vm, mut cmdline) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-d" => vm = it.next().cloned(),
            "-t" | "-T" | "-W" => {}
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(Usage(format!("unsupported option: {o}")).into())
            }
            _ if cmdline.is_none() => cmdline = Some(a.clone()),
            _ => return Err(Usage(format!("unrecognized arguments: {a}")).into()),
        }
    }
    let (Some(vm), Some(cmdline)) = (vm, cmdline) else {
        return Err(Usage("usage: qrexec-client -d VMNAME USER:COMMAND".into()).into());
    };
    if !cmdline.contains(':') {
        return Err(Usage("the command line must be USER:COMMAND".into()).into());
    }
    exec_and_pump(state, vm, cmdline, true, true)
}

fn exec_and_pump(
    state: &Path,
    vm: String,
    cmdline: String,
    autostart: bool,
    pass_io: bool,
) -> Result<i32> {
    let reply = admin::call(
        state,
        &Request::Exec {
            vm,
            cmdline,
            autostart,
        },
    )?;
    let (Some(domid), Some(port)) = (reply.domid, reply.port) else {
        return Err(anyhow!("the sim did not name a data port"));
    };
    let peer = DomId::new(domid).map_err(|e| anyhow!("bad domid: {e}"))?;
    let mut h = Hosted::new(&admin::run_dir(state), DomId::DOM0)?;
    caller_pump(&mut h, peer, port, pass_io, !pass_io)
}

/// Data vchan ring sizes (both ways), as the C agent asks.
pub const DATA_RING: usize = 65536;

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
    let (tx, rx) = std::sync::mpsc::sync_channel::<Input>(INPUT_DEPTH);
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
