//! [`Hosted`]: the hosted backend as one `platform_api::Platform`, and the environment a
//! simulated domain's process is started with (`QUBES_HOSTED_*`), plus its clock, entropy and console.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use platform_api::{
    Clock, Console, DomId, Entropy, Env, Instant, Platform, PlatformError, Store, StoreError, Tx,
};

use crate::block::HostedBlock;
use crate::events::{env_domain, HostedEvents};
use crate::grants::HostedGrants;
use crate::net::HostedNet;
use crate::store::{connect_with_events, HostedStore};
use crate::sys;

/// Environment variable holding the domain's name (else xenstore `name` is read).
pub const ENV_NAME: &str = "QUBES_HOSTED_NAME";
/// Environment variable holding the kernel command line (Qubes' `kernelopts`).
pub const ENV_CMDLINE: &str = "QUBES_HOSTED_CMDLINE";

/// The hosted backend: a Linux process per domain, talking to the sim over files and sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hosted;

impl Platform for Hosted {
    type Grants = HostedGrants;
    type Events = HostedEvents;
    type Store = HostedStore;
    type Clock = HostedClock;
    type Entropy = HostedEntropy;
    type Console = HostedConsole;
    type Net = HostedNet;
    type Block = HostedBlock;

    fn netfront(env: &mut Env<Self>, devid: u32) -> Result<HostedNet, PlatformError> {
        HostedNet::netfront(&mut env.store, &env.events, env.domid, devid)
    }

    fn netback(
        env: &mut Env<Self>,
        frontend: DomId,
        devid: u32,
    ) -> Result<HostedNet, PlatformError> {
        HostedNet::netback(&mut env.store, &env.events, frontend, devid)
    }

    fn blkfront(env: &mut Env<Self>, devid: u32) -> Result<HostedBlock, PlatformError> {
        HostedBlock::from_store(&mut env.store, devid)
    }
}

/// The environment of a hosted domain from `QUBES_HOSTED_DIR`, `QUBES_HOSTED_DOMID`,
/// `QUBES_HOSTED_NAME` (else xenstore `name`) and `QUBES_HOSTED_CMDLINE` (else empty).
/// Refuses to start when getrandom(2) does not work.
pub fn env_from_environment() -> Result<Env<Hosted>, PlatformError> {
    let (dir, domid) = env_domain()?;
    let name = std::env::var(ENV_NAME).ok().filter(|n| !n.is_empty());
    let cmdline = std::env::var(ENV_CMDLINE).unwrap_or_default();
    env_for(&dir, domid, name, cmdline)
}

/// [`env_from_environment`] with explicit values (for the sim and tests).
pub fn env_for(
    run_dir: &std::path::Path,
    domid: DomId,
    name: Option<String>,
    cmdline: String,
) -> Result<Env<Hosted>, PlatformError> {
    let entropy = HostedEntropy::new()?;
    let events = HostedEvents::new(run_dir, domid)?;
    let mut store = connect_with_events(run_dir, &events)?;
    let name = match name {
        Some(n) => n,
        None => {
            let v = store.read(Tx::NONE, "name")?;
            String::from_utf8(v).map_err(|_| StoreError::BadReply("name is not UTF-8"))?
        }
    };
    Ok(Env {
        domid,
        name,
        cmdline,
        grants: HostedGrants::new(run_dir, domid),
        events,
        store,
        clock: HostedClock,
        entropy,
        console: HostedConsole::default(),
    })
}

/// The run directory a hosted process was given (`QUBES_HOSTED_DIR`).
pub fn run_dir_from_environment() -> Result<PathBuf, PlatformError> {
    env_domain().map(|(d, _)| d)
}

/// CLOCK_MONOTONIC (shared by every process of the machine, so logs line up).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostedClock;

impl Clock for HostedClock {
    fn now(&self) -> Instant {
        Instant(sys::monotonic_nanos())
    }
}

/// getrandom(2). Made only by [`HostedEntropy::new`], which checks that it works.
#[derive(Debug)]
pub struct HostedEntropy(());

impl HostedEntropy {
    /// Checks that getrandom(2) works (a backend without entropy refuses to start).
    pub fn new() -> Result<Self, PlatformError> {
        let mut probe = [0u8; 16];
        sys::getrandom(&mut probe).map_err(|e| PlatformError::Os {
            what: "getrandom",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        Ok(Self(()))
    }
}

impl Entropy for HostedEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if let Err(e) = sys::getrandom(buf) {
            // It worked at start; handing out non-random bytes now would be worse than dying.
            let _ = writeln!(std::io::stderr(), "getrandom failed after start: {e}");
            std::process::abort();
        }
    }
}

/// Longest line kept before it is written out anyway.
const MAX_LINE: usize = 4096;

/// Standard error, whole lines at a time (so lines of concurrent writers do not interleave);
/// a trailing partial line is written when the console is dropped.
#[derive(Debug, Default)]
pub struct HostedConsole {
    pending: Vec<u8>,
}

impl HostedConsole {
    fn emit(bytes: &[u8]) {
        // A console that cannot be written has nowhere to report that.
        let _ = std::io::stderr().lock().write_all(bytes);
    }
}

impl Console for HostedConsole {
    fn write(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') {
            let rest = self.pending.split_off(last_nl + 1);
            Self::emit(&self.pending);
            self.pending = rest;
        }
        if self.pending.len() >= MAX_LINE {
            self.pending.push(b'\n');
            Self::emit(&self.pending);
            self.pending.clear();
        }
    }
}

impl Drop for HostedConsole {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            Self::emit(&self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::test_dir::TestDir;
    use crate::store::Daemon;
    use platform_api::{Events, Watches};

    #[test]
    fn env_reads_name_from_the_store_and_its_watches_wake_wait() {
        let t = TestDir::new();
        let dom = DomId::new(7).unwrap();
        let dom0 = DomId::new(0).unwrap();
        let xs = Daemon::spawn(t.path(), &[dom0, dom]).unwrap();
        let mut d0 = crate::store::connect(t.path(), dom0).unwrap();
        d0.write(Tx::NONE, "/local/domain/7/name", b"work").unwrap();
        let mut env = env_for(t.path(), dom, None, "x=1".into()).unwrap();
        assert_eq!((env.name.as_str(), env.cmdline.as_str()), ("work", "x=1"));
        let port = Watches::port(&env.store).expect("the store has a pseudo-port");
        assert!(port.get() >= crate::events::FIRST_PSEUDO_PORT);
        env.store.watch("control", "tok").unwrap();
        // The initial firing may have been queued while awaiting the WATCH reply: drain
        // first, and wait (for the store's port) only if it was not.
        let mut seen = Vec::new();
        while let Some(ev) = Watches::poll_watch(&mut env.store).unwrap() {
            seen.push(ev.path);
        }
        if seen.is_empty() {
            let set = env
                .events
                .wait(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            assert!(set.contains(port), "wait woke without the store port");
            while let Some(ev) = Watches::poll_watch(&mut env.store).unwrap() {
                seen.push(ev.path);
            }
        }
        assert_eq!(seen, ["control"]);
        assert!(
            env.events
                .wait(Some(std::time::Duration::from_millis(50)))
                .unwrap()
                .is_empty(),
            "a drained socket no longer wakes wait"
        );
        d0.write(Tx::NONE, "/local/domain/7/control/shutdown", b"poweroff")
            .unwrap();
        let set = env
            .events
            .wait(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert!(set.contains(port));
        let ev = Watches::poll_watch(&mut env.store).unwrap().unwrap();
        assert_eq!(ev.path, "control/shutdown", "relative watch, relative path");
        drop(xs);
    }

    #[test]
    fn clock_is_monotonic_and_entropy_fills() {
        let c = HostedClock;
        let a = c.now();
        assert!(c.now() >= a);
        let mut e = HostedEntropy::new().unwrap();
        let mut buf = [0u8; 32];
        e.fill(&mut buf);
        assert_ne!(buf, [0u8; 32]);
    }

    #[test]
    fn console_keeps_partial_lines_until_the_newline() {
        let mut c = HostedConsole::default();
        c.write(b"part");
        assert_eq!(c.pending, b"part");
        c.write(b"ial\nnext");
        assert_eq!(c.pending, b"next");
        c.write(&[b'x'; MAX_LINE]);
        assert!(c.pending.is_empty(), "an overlong line is written out");
    }
}
