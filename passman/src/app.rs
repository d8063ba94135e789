//! The vault as a `runloop` app: opens the private volume at start, collects each call's stdin
//! (bounded per service), hands it to [`Passman`] and streams the reply back.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use platform_api::{Instant, Platform};
use runloop::{Admit, App, AppError, Call, CallId, Cx};
use vault_store::PlatformDevice;
use zeroize::Zeroizing;

use crate::engine::{Config, Passman, Reply};
use crate::request::{Service, SERVICE_NAMES};

/// The private volume (`xvdb`), where Qubes attaches a qube's private storage.
pub const PRIVATE_DEVID: u32 = 51728;

/// Why the kernel command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel command line: {}", self.0)
    }
}

/// Reads `passman.idle=SECS`, `passman.admin=QUBE` (repeatable) and `passman.audit_delay=MS`
/// from the kernel command line (`kernelopts`); other words are left to others.
pub fn parse_cmdline(cmdline: &str) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    for word in cmdline.split_ascii_whitespace() {
        let Some(opt) = word.strip_prefix("passman.") else {
            continue;
        };
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| ConfigError(alloc::format!("{word}: expected key=value")))?;
        let bad = || ConfigError(alloc::format!("{word}: bad value"));
        match k {
            "idle" => cfg.idle = Duration::from_secs(v.parse().map_err(|_| bad())?),
            "audit_delay" => cfg.audit_delay = Duration::from_millis(v.parse().map_err(|_| bad())?),
            "admin" => {
                if v.is_empty() || !v.bytes().all(crate::name::is_name_byte) {
                    return Err(bad());
                }
                cfg.admins.push(String::from(v));
            }
            _ => return Err(ConfigError(alloc::format!("{word}: unknown option"))),
        }
    }
    Ok(cfg)
}

/// The run loop's bounds: few calls at once, room for an import on stdin.
pub fn runloop_config() -> runloop::Config {
    runloop::Config {
        max_calls: 8,
        ..runloop::Config::default()
    }
}

struct Pending {
    service: Service,
    argument: String,
    source: String,
    input: Zeroizing<Vec<u8>>,
    /// Reply bytes still to send, how far sent, exit code.
    out: Option<(Zeroizing<Vec<u8>>, usize, i32)>,
}

/// The app.
pub struct PassmanApp<P: Platform> {
    cfg: Config,
    core: Option<Passman<PlatformDevice<P::Block>>>,
    calls: BTreeMap<CallId, Pending>,
}

impl<P: Platform> fmt::Debug for PassmanApp<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassmanApp")
            .field("core", &self.core)
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl<P: Platform> PassmanApp<P> {
    /// The app with this configuration (the device is opened at start).
    pub fn new(cfg: Config) -> Self {
        PassmanApp {
            cfg,
            core: None,
            calls: BTreeMap::new(),
        }
    }

    fn run_call(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let Some(p) = self.calls.get_mut(&id) else {
            return;
        };
        let reply: Reply = core.handle(
            cx.now(),
            &p.source,
            p.service.name(),
            &p.argument,
            &p.input,
            &mut cx.env.entropy,
        );
        p.input = Zeroizing::new(Vec::new());
        if reply.code != 0 {
            cx.log(format_args!(
                "{} from {}: {}",
                p.service.name(),
                p.source,
                reply.text().trim_end()
            ));
        }
        p.out = Some((reply.out, 0, reply.code));
        self.drain(cx);
    }

    /// Sends as much of every pending reply as the channels take; finishes complete ones.
    fn drain(&mut self, cx: &mut Cx<'_, P>) {
        let mut done = Vec::new();
        for (id, p) in self.calls.iter_mut() {
            let Some((out, sent, code)) = p.out.as_mut() else {
                continue;
            };
            while *sent < out.len() {
                let space = cx.send_space(*id);
                if space == 0 {
                    break;
                }
                let end = out.len().min(*sent + space);
                if cx.send(*id, &out[*sent..end]).is_err() {
                    break;
                }
                *sent = end;
            }
            if *sent >= out.len() {
                cx.finish(*id, *code);
                done.push(*id);
            }
        }
        for id in done {
            self.calls.remove(&id);
        }
    }
}

/// Services whose stdin is not read: answered as soon as the call arrives, so a caller that
/// keeps its stdin open does not wait.
fn needs_input(s: Service) -> bool {
    matches!(
        s,
        Service::GetField
            | Service::Put
            | Service::Generate
            | Service::Unlock
            | Service::Init
            | Service::Passwd
            | Service::Export
            | Service::Import
    )
}

impl<P: Platform> App<P> for PassmanApp<P> {
    fn services(&self) -> &[&str] {
        &SERVICE_NAMES
    }

    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        let dev = P::blkfront(cx.env, PRIVATE_DEVID)
            .map_err(|_| AppError::Failed("no private volume (vbd 51728)"))?;
        let core = Passman::new(PlatformDevice(dev), self.cfg.clone(), cx.now());
        cx.log(format_args!("passman ready, vault locked"));
        self.core = Some(core);
        Ok(())
    }

    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit {
        let (Some(core), Some(service)) = (self.core.as_mut(), Service::from_name(call.service))
        else {
            return Admit::Refuse;
        };
        if service.is_management() && !core.is_admin(call.source) {
            // Policy should not have let it through: refuse as policy would, and log it.
            core.refused(cx.now(), call.source, service, call.argument);
            cx.log(format_args!(
                "refused {} from {}: not an admin qube",
                call.service, call.source
            ));
            return Admit::Refuse;
        }
        self.calls.insert(
            id,
            Pending {
                service,
                argument: String::from(call.argument),
                source: String::from(call.source),
                input: Zeroizing::new(Vec::new()),
                out: None,
            },
        );
        if !needs_input(service) {
            self.run_call(cx, id);
        }
        Admit::Accept
    }

    fn input(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        let Some(p) = self.calls.get_mut(&id) else {
            return;
        };
        if p.out.is_some() || !needs_input(p.service) {
            return;
        }
        let max = p.service.max_input();
        if p.input.len() + data.len() > max {
            // Answer at once; Request::decode reports the bound.
            let room = (max + 1).saturating_sub(p.input.len()).min(data.len());
            p.input.extend_from_slice(&data[..room]);
            self.run_call(cx, id);
            return;
        }
        p.input.extend_from_slice(data);
    }

    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        if self.calls.get(&id).is_some_and(|p| p.out.is_none()) {
            self.run_call(cx, id);
        }
    }

    fn closed(&mut self, _cx: &mut Cx<'_, P>, id: CallId, _exit: Option<i32>) {
        self.calls.remove(&id);
    }

    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<Instant> {
        self.drain(cx);
        let core = self.core.as_mut()?;
        if let Some(line) = core.poll(cx.now(), &mut cx.env.entropy) {
            cx.log(format_args!("{line}"));
        }
        core.next_deadline()
    }

    fn stop(&mut self, cx: &mut Cx<'_, P>) {
        if let Some(core) = self.core.as_mut() {
            if core.is_unlocked() {
                if let Err(e) = core.lock(&mut cx.env.entropy) {
                    cx.log(format_args!("passman: saving the audit log at stop: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_options() {
        let c = parse_cmdline("console=hvc0 passman.idle=60 passman.admin=vault-admin").unwrap();
        assert_eq!(c.idle, Duration::from_secs(60));
        assert_eq!(c.admins, ["vault-admin"]);
        assert!(parse_cmdline("passman.idle=x").is_err());
        assert!(parse_cmdline("passman.admin=a/b").is_err());
        assert!(parse_cmdline("passman.bogus=1").is_err());
        assert!(parse_cmdline("passman.idle").is_err());
    }
}
