//! qubes-sim multi-call binary: `qubes-sim <command> …` or a link named after the command
//! (`qvm-create`, `qrexec-client-vm`, …).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use qubes_sim::cli::{self, Usage};

const HELP: &str = "usage: qubes-sim COMMAND [ARGS...]
dom0 commands: qvm-create qvm-prefs qvm-features qvm-volume qvm-ls qvm-tags qvm-remove
  qvm-start qvm-shutdown qvm-kill qvm-firewall qvm-gui-input
  qvm-run, qrexec-client -d VM USER:COMMAND
sim: daemon (run the sim in the foreground), shutdown
in a qube: qrexec-client-vm TARGET SERVICE[+ARG], vm-agent (the qube's process),
  qubesdb-read [-frqw] PATH..., qubesdb-multiread [-frq] PREFIX..., qubesdb-list [-f] PREFIX,
  qubesdb-write PATH VALUE..., qubesdb-rm PATH..., qubesdb-watch [-n COUNT] PATH..., qvm-open-in-vm TARGET FILE, qvm-open-in-dvm FILE,
  vm-file-editor (the built-in qubes.OpenInVM; opens with the qube's open-file)
state directory: $QUBES_SIM_DIR";

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let arg0 = argv.first().cloned().unwrap_or_default();
    let base = std::path::Path::new(&arg0)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let (prog, args) = if base == "qubes-sim" || base.is_empty() || base.starts_with("qubes_sim") {
        if argv.len() < 2 {
            eprintln!("{HELP}");
            return ExitCode::from(2);
        }
        let prog = argv.remove(1);
        (prog, argv.split_off(1))
    } else {
        (base, argv.split_off(1))
    };
    if prog == "help" || prog == "--help" || prog == "-h" {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let result = match prog.as_str() {
        "qvm-open-in-dvm" => qubes_sim::openinvm::open_in_vm("@dispvm", &args),
        "qvm-open-in-vm" => match args.split_first() {
            Some((first, rest)) => qubes_sim::openinvm::open_in_vm(first, rest),
            None => Err(Usage("usage: qvm-open-in-vm [--view-only] TARGET FILE".into()).into()),
        },
        "vm-file-editor" => qubes_sim::openinvm::vm_file_editor(),
        p if p.starts_with("qvm-") => cli::run(p, &args),
        "daemon" => qubes_sim::server::main(&cli::state_dir(), &args),
        "shutdown" => {
            qubes_sim::admin::call(&cli::state_dir(), &qubes_sim::admin::Request::Shutdown)
                .map(|_| 0)
        }
        "vm-agent" => qubes_sim::agent::run(),
        "qrexec-client" => qubes_sim::dom0call::qrexec_client(&cli::state_dir(), &args),
        "qrexec-client-vm" => qubes_sim::client_vm::run(&args),
        "qubesdb-read" => qubes_sim::qdb_vm::qubesdb_read(&args),
        "qubesdb-list" => qubes_sim::qdb_vm::qubesdb_list(&args),
        "qubesdb-write" => qubes_sim::qdb_vm::qubesdb_write(&args),
        "qubesdb-rm" => qubes_sim::qdb_vm::qubesdb_rm(&args),
        "qubesdb-multiread" => qubes_sim::qdb_vm::qubesdb_multiread(&args),
        "qubesdb-watch" => qubes_sim::qdb_vm::qubesdb_watch(&args),
        // A test GUI agent (one window with a known pattern); not in the help.
        "gui-test-agent" => qubes_sim::gui_vm::run(),
        "net-probe" => qubes_sim::netns::probe(&args),
        // Checks a `QUBES_SIM_CAPTURE` file; not in the help (a test and demo tool).
        "capture-decode" => qubes_sim::capture::decode_file(&args),
        _ => Err(Usage(format!("unknown command {prog:?}")).into()),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("{prog}: error: {e:#}");
            let code = if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            };
            ExitCode::from(code)
        }
    }
}
