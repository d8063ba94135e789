//! dom0 → qube calls (`qvm-run`, `qrexec-client`): the sim sends EXEC_CMDLINE with dom0 as
//! the peer, serves the data vchan, and relays the call's I/O to this process.

use std::path::Path;

use anyhow::Result;

use crate::admin::{self, Request};
use crate::cli::Usage;

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
    let req = Request::Exec {
        vm,
        cmdline,
        autostart,
    };
    let (_, conn) = admin::call_open(state, &req)?;
    crate::local::run_client(conn, pass_io, !pass_io)
}
