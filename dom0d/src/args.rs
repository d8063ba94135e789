//! The command line: `--domid N [--name NAME] --qubesdb FILE [--backend hosted|dom0]
//! [--timeout SECONDS] COMMAND`, parsed into [`Options`] with a one-line usage error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The usage text printed on a usage error.
pub const USAGE: &str = "usage: qubes-dom0d --domid N [--name NAME] --qubesdb FILE \
[--backend hosted|dom0] [--timeout SECONDS] \
(call SERVICE[+ARG] | serve SECONDS | gui-handshake [--screenshot FILE] [--open FILE])";

/// Which platform backend talks to Xen (or to the hosted stand-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `platform-hosted`: `QUBES_HOSTED_DIR` names the run directory; we are domain 0.
    Hosted,
    /// `platform-dom0`: the Linux Xen device nodes of a real dom0.
    Dom0,
}

/// What to do once QubesDB is served and the control channel is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A dom0 → VM service call; stdin to the VM, its stdout to ours.
    Call {
        /// `SERVICE` or `SERVICE+ARG`.
        service: String,
    },
    /// Serve QubesDB (and refuse the VM's calls) this long or until the domain goes.
    Serve {
        /// How long.
        duration: Duration,
    },
    /// Act as the GUI daemon until the first window is mapped with its framebuffer.
    GuiHandshake {
        /// Where to write the window's PNG.
        screenshot: Option<PathBuf>,
        /// A file to send with `qubes.OpenInVM` meanwhile.
        open: Option<PathBuf>,
    },
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The VM's domain id.
    pub domid: u32,
    /// The VM's name (for messages; QubesDB `/name` comes from the file).
    pub name: Option<String>,
    /// The QubesDB entries file.
    pub qubesdb: PathBuf,
    /// The backend.
    pub backend: Backend,
    /// Bound of every wait (connects, handshakes, the call).
    pub timeout: Duration,
    /// The command.
    pub command: Command,
}

/// A bad command line; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(what: impl Into<String>) -> UsageError {
    UsageError(what.into())
}

/// Default bound of every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait or serve time accepted (a day): larger numbers are typos.
const MAX_SECONDS: u64 = 86_400;

fn seconds(flag: &str, v: &str) -> Result<Duration, UsageError> {
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(usage(format!(
            "{flag} wants whole seconds from 1 to {MAX_SECONDS}, not {v:?}"
        ))),
    }
}

/// Whether `s` is a qrexec service name with an optional `+ARG` as Qubes accepts them:
/// service `[A-Za-z0-9._-]`, argument `[A-Za-z0-9._+@-]`, at most 255 bytes in all.
pub fn valid_service(s: &str) -> bool {
    let (svc, arg) = s.split_once('+').unwrap_or((s, ""));
    let svc_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let arg_ok = |c: char| c.is_ascii_alphanumeric() || "._+@-".contains(c);
    !svc.is_empty() && s.len() <= 255 && svc.chars().all(svc_ok) && arg.chars().all(arg_ok)
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, UsageError> {
    let mut it = args.into_iter();
    let (mut domid, mut name, mut qubesdb, mut backend, mut timeout) =
        (None, None, None, Backend::Hosted, DEFAULT_TIMEOUT);
    let value = |it: &mut I::IntoIter, flag: &str| {
        it.next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))
    };
    let command = loop {
        let Some(a) = it.next() else {
            return Err(usage("no COMMAND given"));
        };
        match a.as_str() {
            "--domid" => {
                let v = value(&mut it, "--domid")?;
                let d = v
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..0x7ff0).contains(d))
                    .ok_or_else(|| usage(format!("--domid wants a domU id, not {v:?}")))?;
                domid = Some(d);
            }
            "--name" => name = Some(value(&mut it, "--name")?),
            "--qubesdb" => qubesdb = Some(PathBuf::from(value(&mut it, "--qubesdb")?)),
            "--backend" => {
                backend = match value(&mut it, "--backend")?.as_str() {
                    "hosted" => Backend::Hosted,
                    "dom0" => Backend::Dom0,
                    o => return Err(usage(format!("--backend is hosted or dom0, not {o:?}"))),
                }
            }
            "--timeout" => timeout = seconds("--timeout", &value(&mut it, "--timeout")?)?,
            "call" => {
                let service = value(&mut it, "call")?;
                if !valid_service(&service) {
                    return Err(usage(format!("not a qrexec service name: {service:?}")));
                }
                break Command::Call { service };
            }
            "serve" => {
                let duration = seconds("serve", &value(&mut it, "serve")?)?;
                break Command::Serve { duration };
            }
            "gui-handshake" => {
                let (mut screenshot, mut open) = (None, None);
                while let Some(a) = it.next() {
                    match a.as_str() {
                        "--screenshot" => {
                            screenshot = Some(PathBuf::from(value(&mut it, "--screenshot")?))
                        }
                        "--open" => open = Some(PathBuf::from(value(&mut it, "--open")?)),
                        o => return Err(usage(format!("gui-handshake: unknown argument {o:?}"))),
                    }
                }
                break Command::GuiHandshake { screenshot, open };
            }
            o => return Err(usage(format!("unknown argument {o:?}"))),
        }
    };
    if let Some(extra) = it.next() {
        return Err(usage(format!("unexpected argument {extra:?}")));
    }
    Ok(Options {
        domid: domid.ok_or_else(|| usage("--domid is required"))?,
        name,
        qubesdb: qubesdb.ok_or_else(|| usage("--qubesdb is required"))?,
        backend,
        timeout,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Options, UsageError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn full_command_lines_parse_to_their_fields() {
        let o =
            p("--domid 5 --name v --qubesdb db --backend dom0 --timeout 9 call a.B+c@d").unwrap();
        assert_eq!(o.domid, 5);
        assert_eq!(o.name.as_deref(), Some("v"));
        assert_eq!(o.qubesdb, PathBuf::from("db"));
        assert_eq!(o.backend, Backend::Dom0);
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(
            o.command,
            Command::Call {
                service: "a.B+c@d".into()
            }
        );
        let o = p("--domid 5 --qubesdb db serve 30").unwrap();
        assert_eq!(o.backend, Backend::Hosted);
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            o.command,
            Command::Serve {
                duration: Duration::from_secs(30)
            }
        );
        let o = p("--domid 5 --qubesdb db gui-handshake --open x.png --screenshot s.png").unwrap();
        assert_eq!(
            o.command,
            Command::GuiHandshake {
                screenshot: Some("s.png".into()),
                open: Some("x.png".into())
            }
        );
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_reason() {
        for (line, why) in [
            ("--qubesdb db serve 3", "--domid is required"),
            ("--domid 5 serve 3", "--qubesdb is required"),
            ("--domid 0 --qubesdb db serve 3", "domU id"),
            ("--domid x --qubesdb db serve 3", "domU id"),
            ("--domid 5 --qubesdb db serve 0", "whole seconds"),
            ("--domid 5 --qubesdb db serve 99999999", "whole seconds"),
            ("--domid 5 --qubesdb db call a/b", "not a qrexec service"),
            ("--domid 5 --qubesdb db call +x", "not a qrexec service"),
            ("--domid 5 --qubesdb db call a+b c", "unexpected argument"),
            (
                "--domid 5 --qubesdb db --backend xen serve 3",
                "hosted or dom0",
            ),
            ("--domid 5 --qubesdb db", "no COMMAND"),
            (
                "--domid 5 --qubesdb db gui-handshake --bogus",
                "unknown argument",
            ),
            ("--domid", "needs a value"),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.0.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn service_names_follow_qubes_charsets() {
        assert!(valid_service("qubes.SshAgent+work"));
        assert!(valid_service("passman.Put+github.com"));
        assert!(valid_service("test.Echo"));
        assert!(!valid_service(""));
        assert!(!valid_service("a b"));
        assert!(!valid_service("a+b/c"));
        assert!(!valid_service(&"a".repeat(256)));
    }
}
