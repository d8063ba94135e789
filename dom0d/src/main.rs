//! `qubes-dom0d`: parses the command line, opens the chosen backend and runs one command; one
//! result line, exit 0 on success (a call exits with the remote exit code), 1 with one error line.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use platform_api::{DomId, Env, Platform};
use qubes_dom0d::args::{self, Backend, Command, Options};
use qubes_dom0d::session::{Error, Session, MAX_STDIN};

fn main() -> ExitCode {
    let opts = match args::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("qubes-dom0d: {e}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let r = match opts.backend {
        Backend::Hosted => hosted_env().and_then(|env| run(env, &opts)),
        Backend::Dom0 => platform_dom0::env_from_system()
            .map_err(|e| format!("dom0 backend: {e}"))
            .and_then(|env| run(env, &opts)),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("qubes-dom0d: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Domain 0 of the hosted run in `QUBES_HOSTED_DIR`.
fn hosted_env() -> Result<Env<platform_hosted::Hosted>, String> {
    let env_dir = platform_hosted::events::ENV_DIR;
    let dir = std::env::var_os(env_dir)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .ok_or_else(|| format!("hosted backend: {env_dir} is not set"))?;
    platform_hosted::env_for(&dir, DomId::DOM0, Some("dom0".into()), String::new())
        .map_err(|e| format!("hosted backend: {e}"))
}

fn read_file(p: &Path, max: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut v = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut v)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if v.len() as u64 > max {
        return Err(format!("{}: larger than {max} bytes", p.display()));
    }
    Ok(v)
}

fn run<P: Platform>(env: Env<P>, o: &Options) -> Result<u8, String> {
    let text = read_file(&o.qubesdb, qubes_dom0d::entries::MAX_FILE as u64)?;
    let text =
        String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", o.qubesdb.display()))?;
    let entries =
        qubes_dom0d::entries::parse(&text).map_err(|e| format!("{}: {e}", o.qubesdb.display()))?;
    let vm = DomId::new(o.domid).map_err(|e| format!("--domid: {e}"))?;
    let name = o
        .name
        .clone()
        .or_else(|| entries.get("/name").cloned())
        .unwrap_or_else(|| format!("domain {vm}"));
    // Read stdin before any vchan exists: a failure here leaves nothing behind.
    let input = match &o.command {
        Command::Call { .. } => {
            let mut v = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_STDIN + 1)
                .read_to_end(&mut v)
                .map_err(|e| format!("stdin: {e}"))?;
            if v.len() as u64 > MAX_STDIN {
                return Err(format!("stdin larger than {MAX_STDIN} bytes"));
            }
            v
        }
        _ => Vec::new(),
    };
    let open = match &o.command {
        Command::GuiHandshake {
            open: Some(path), ..
        } => {
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("{}: no UTF-8 file name", path.display()))?
                .to_string();
            Some((base, read_file(path, MAX_STDIN)?))
        }
        _ => None,
    };
    let mut s = Session::new(env, vm, name.clone(), entries);
    if matches!(o.command, Command::Serve { .. }) {
        s.follow_file(o.qubesdb.clone(), text);
    }
    let r = command(&mut s, o, input, open, &name);
    s.shutdown();
    r.map_err(|e| e.to_string())
}

fn command<P: Platform>(
    s: &mut Session<P>,
    o: &Options,
    input: Vec<u8>,
    open: Option<(String, Vec<u8>)>,
    name: &str,
) -> Result<u8, Error> {
    match &o.command {
        Command::Call { service } => {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let code = s.call(service, input, o.timeout, &mut out, &mut err)?;
            eprintln!("qubes-dom0d: {service} in {name}: exit code {code}");
            Ok(u8::try_from(code).unwrap_or(u8::MAX))
        }
        Command::Serve { duration } => {
            let line = s.serve(*duration)?;
            println!("{line}");
            Ok(0)
        }
        Command::GuiHandshake { screenshot, .. } => {
            let shot = s.gui_handshake(open, o.timeout)?;
            let mut line = format!(
                "window {} of {name}: {}x{} mapped, framebuffer {}x{} mapped",
                shot.window, shot.window_size.0, shot.window_size.1, shot.width, shot.height
            );
            if let Some(p) = screenshot {
                let png = qubes_dom0d::png::encode_bgrx(shot.width, shot.height, &shot.bgrx)
                    .ok_or_else(|| Error::Refused("the framebuffer cannot be a PNG".into()))?;
                std::fs::write(p, png)
                    .map_err(|e| Error::Io(format!("writing {}", p.display()), e))?;
                line.push_str(&format!(", screenshot {}", p.display()));
            }
            println!("{line}");
            Ok(0)
        }
    }
}
