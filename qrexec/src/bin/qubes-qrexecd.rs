//! `qubes-qrexecd`: dom0's qrexec daemon (with QubesDB) for several domains, routing their
//! calls by policy; dom0's own calls come on a local socket.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use platform_api::{DomId, Env, Platform};
use qubes_qrexec::dom0::{DomainSpec, Router};

const USAGE: &str =
    "usage: qubes-qrexecd [--backend dom0|hosted] --domain NAME:DOMID:QUBESDB_FILE... \
--policy-dir DIR... [--socket PATH] [--duration SECONDS]";

struct Opts {
    hosted: bool,
    domains: Vec<(String, u32, PathBuf)>,
    policy: Vec<String>,
    socket: Option<PathBuf>,
    duration: Option<Duration>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts {
        hosted: false,
        domains: Vec::new(),
        policy: Vec::new(),
        socket: None,
        duration: None,
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--backend" => match val()?.as_str() {
                "dom0" => o.hosted = false,
                "hosted" => o.hosted = true,
                b => return Err(format!("unknown backend {b}")),
            },
            "--domain" => {
                let v = val()?;
                let mut p = v.splitn(3, ':');
                let (Some(n), Some(d), Some(f)) = (p.next(), p.next(), p.next()) else {
                    return Err(format!("--domain {v}: want NAME:DOMID:FILE"));
                };
                let d = d.parse().map_err(|_| format!("--domain {v}: bad domid"))?;
                o.domains.push((n.to_string(), d, PathBuf::from(f)));
            }
            "--policy-dir" => o.policy.push(val()?),
            "--socket" => o.socket = Some(PathBuf::from(val()?)),
            "--duration" => {
                let s: u64 = val()?
                    .parse()
                    .map_err(|_| "--duration: seconds".to_string())?;
                o.duration = Some(Duration::from_secs(s));
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.domains.is_empty() || o.policy.is_empty() {
        return Err("at least one --domain and one --policy-dir".into());
    }
    Ok(o)
}

fn specs(o: &Opts) -> Result<Vec<DomainSpec>, String> {
    let max = qubes_dom0d::entries::MAX_FILE as u64;
    o.domains
        .iter()
        .map(|(name, domid, file)| {
            let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
            if meta.len() > max {
                return Err(format!("{}: larger than {max} bytes", file.display()));
            }
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let entries = qubes_dom0d::entries::parse(&text)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let domid = DomId::new(*domid).map_err(|e| format!("domain {name}: {e}"))?;
            Ok(DomainSpec {
                name: name.clone(),
                domid,
                entries,
            })
        })
        .collect()
}

fn run<P: Platform>(env: Env<P>, o: &Opts) -> Result<(), String> {
    let listener = match &o.socket {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Some(UnixListener::bind(p).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let mut r = Router::new(env, specs(o)?, o.policy.clone(), listener)
        .map_err(|e| format!("local socket: {e}"))?;
    let start = Instant::now();
    let duration = o.duration;
    r.run(&|r| r.all_gone() || duration.is_some_and(|d| start.elapsed() >= d))
        .map_err(|e| format!("event wait: {e}"))?;
    eprintln!(
        "qubes-qrexecd: done after {}s: {} routed, {} refused, {} dom0 call(s)",
        start.elapsed().as_secs(),
        r.stats.routed,
        r.stats.refused,
        r.stats.dom0_calls
    );
    if let Some(p) = &o.socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("qubes-qrexecd: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = if o.hosted {
        match std::env::var_os(platform_hosted::events::ENV_DIR).filter(|d| !d.is_empty()) {
            Some(dir) => platform_hosted::env_for(
                std::path::Path::new(&dir),
                DomId::DOM0,
                Some("dom0".into()),
                String::new(),
            )
            .map_err(|e| format!("hosted backend: {e}"))
            .and_then(|env| run(env, &o)),
            None => Err("hosted backend: QUBES_HOSTED_DIR is not set".into()),
        }
    } else {
        platform_dom0::env_from_system()
            .map_err(|e| format!("dom0 backend: {e}"))
            .and_then(|env| run(env, &o))
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qubes-qrexecd: error: {e}");
            ExitCode::FAILURE
        }
    }
}
