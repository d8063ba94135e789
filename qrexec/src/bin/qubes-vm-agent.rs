//! `qubes-vm-agent`: the Linux VM's qrexec agent (`agent`), `qrexec-client-vm` (also by that
//! name as argv[0]) and the split-SSH forwarder (`forward`), over dom0 or hosted backends.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use platform_api::{Env, Platform};
use qubes_qrexec::{forward, vm};

const USAGE: &str = "usage: qubes-vm-agent agent [--backend dom0|hosted] [--socket PATH]\n\
       qubes-vm-agent client-vm TARGET SERVICE[+ARG]   (or as qrexec-client-vm)\n\
       qubes-vm-agent forward --listen SOCKET --target VM --service SERVICE[+ARG] [--agent PATH]\n\
The agent socket is --socket/--agent, else $QUBES_QREXEC_AGENT_SOCK, else /run/qubes-qrexec-agent.sock.";

fn agent<P: Platform>(env: Env<P>, socket: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(socket);
    let l = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    eprintln!(
        "qubes-vm-agent: domain {} ({}) agent on {}",
        env.domid,
        env.name,
        socket.display()
    );
    let mut a = vm::VmAgent::new(env, l).map_err(|e| e.to_string())?;
    a.run(&|| false).map_err(|e| format!("event wait: {e}"))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let me = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let mut args: Vec<String> = argv.into_iter().skip(1).collect();
    if me == "qrexec-client-vm" {
        args.insert(0, "client-vm".into());
    }
    let usage = |e: &str| {
        eprintln!("qubes-vm-agent: {e}\n{USAGE}");
        ExitCode::from(2)
    };
    let mut socket = vm::socket_path();
    let (mut hosted, mut listen, mut target, mut service) = (false, None, None, None);
    let mut pos = Vec::new();
    let mut it = args.into_iter();
    let Some(cmd) = it.next() else {
        return usage("no command");
    };
    while let Some(a) = it.next() {
        let flag = matches!(
            a.as_str(),
            "--backend" | "--socket" | "--agent" | "--listen" | "--target" | "--service"
        );
        if !flag || cmd == "client-vm" {
            pos.push(a);
            continue;
        }
        let Some(v) = it.next() else {
            return usage(&format!("{a} needs a value"));
        };
        match a.as_str() {
            "--backend" => hosted = v == "hosted",
            "--socket" | "--agent" => socket = PathBuf::from(v),
            "--listen" => listen = Some(PathBuf::from(v)),
            "--target" => target = Some(v),
            _ => service = Some(v),
        }
    }
    let r = match cmd.as_str() {
        "agent" => {
            if hosted {
                platform_hosted::env_from_environment()
                    .map_err(|e| format!("hosted backend: {e}"))
                    .and_then(|env| agent(env, &socket))
            } else {
                platform_dom0::env_from_system()
                    .map_err(|e| format!("dom0 backend: {e}"))
                    .and_then(|env| agent(env, &socket))
            }
        }
        "client-vm" => {
            // qrexec-client-vm's own options (--no-filter-escape-chars…) are accepted and ignored.
            let p: Vec<&String> = pos.iter().filter(|a| !a.starts_with("--")).collect();
            let [t, s] = p.as_slice() else {
                return usage("client-vm TARGET SERVICE[+ARG]");
            };
            return match forward::client_vm(&socket, t, s) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
                Err(e) => {
                    eprintln!("qrexec-client-vm: {e}");
                    ExitCode::from(125)
                }
            };
        }
        "forward" => match (listen, target, service) {
            (Some(l), Some(t), Some(s)) => {
                forward::ssh_forward(&l, &socket, &t, &s).map_err(|e| e.to_string())
            }
            _ => return usage("forward needs --listen, --target and --service"),
        },
        c => return usage(&format!("unknown command {c}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qubes-vm-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}
