//! vchan over the hosted backend for one thread: a domain's handles, either end behind one type
//! with a bounded-wait connect, and the bounded queue between a machine and its vchan.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use platform_api::{DomId, Events, Store, StoreError, Tx, XsErrno};
use platform_hosted::events::{HostedEvents, HostedPort};
use platform_hosted::grants::{GrantMem, HostedGrants};
use platform_hosted::store::{self, HostedStore};
use vchan::setup::{client_init, server_init, XsDir};
use vchan::{Interest, PeerState, SetupError};

/// One domain's backend handles. Each thread that waits on vchans owns its own: a wait
/// returns (and clears) the events of every port of one [`HostedEvents`].
#[derive(Debug)]
pub struct Hosted {
    /// The run directory.
    pub run: PathBuf,
    /// Our domain.
    pub me: DomId,
    /// Grant table.
    pub grants: HostedGrants,
    /// Event channels.
    pub events: HostedEvents,
    /// Store connection.
    pub store: HostedStore,
}

impl Hosted {
    /// Handles for domain `me` of the run in `run`.
    pub fn new(run: &Path, me: DomId) -> Result<Hosted> {
        Ok(Hosted {
            run: run.to_path_buf(),
            me,
            grants: HostedGrants::new(run, me),
            events: HostedEvents::new(run, me).context("event channels")?,
            store: store::connect(run, me).context("connect to xenstored")?,
        })
    }

    /// Handles for the domain named by `QUBES_HOSTED_DIR` / `QUBES_HOSTED_DOMID`.
    pub fn from_env() -> Result<Hosted> {
        let (run, me) = platform_hosted::events::env_domain().context("hosted environment")?;
        Self::new(&run, me)
    }

    /// Whether domain `d` still exists. A crashed process cannot clear its live byte, so
    /// long waits ask the "hypervisor" (the sim's per-domain marker file) instead, as a Xen
    /// peer would see the domain die.
    /// A lost store connection means dom0 itself is gone, and every peer with it.
    pub fn domain_alive(&mut self, d: DomId) -> bool {
        if let Err(StoreError::Disconnected) = self.store.read(Tx::NONE, "domid") {
            return false;
        }
        d == DomId::DOM0 || alive_marker(&self.run, d).exists()
    }
}

/// Serializes allocating and binding event channels in `dom`'s port directory. Binding claims
/// a port's entry by renaming it away for a moment (`platform-hosted` events), and an
/// allocation in that moment takes the "free" number too; one of the two vchans then fails
/// ("event channel port N is not bound"). Every vchan setup of the sim goes through here.
fn evtchn_lock(run: &Path, dom: DomId) -> Result<crate::registry::Lock> {
    let dir = run.join("evtchn");
    std::fs::create_dir_all(&dir).context("event channel directory")?;
    crate::registry::Lock::at(dir.join(format!("d{}.lock", dom.get())))
}

/// `<run>/dom/<domid>`: exists while the sim runs that domain.
pub fn alive_marker(run: &Path, d: DomId) -> PathBuf {
    run.join("dom").join(d.get().to_string())
}

type Srv = vchan::Server<GrantMem, HostedPort>;
type Cli = vchan::Client<GrantMem, HostedPort>;

/// Either end of a vchan; closed on drop (by `vchan` itself).
#[derive(Debug)]
enum End {
    /// We advertised it; the xenstore directory is removed once the client is there.
    Server(Srv, Option<XsDir>),
    /// We mapped a peer's.
    Client(Cli),
}

/// One vchan end, with its capture tap when the sim records traffic.
#[derive(Debug)]
pub struct Vchan {
    end: End,
    tap: Option<crate::capture::Tap>,
}

/// How long a connect retries while the server has not advertised its vchan.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Control-channel bytes a loop takes out of its machine ahead of the vchan.
pub const CONTROL_QUEUE: usize = 64 * 1024;
/// One wait slice: every blocking loop looks at its stop conditions this often.
pub const TICK: Duration = Duration::from_millis(20);

impl Vchan {
    /// A server for `peer` on `port` (Qubes path), left ring `read_min`, right `write_min`.
    pub fn serve(
        h: &mut Hosted,
        peer: DomId,
        port: u32,
        read_min: usize,
        write_min: usize,
    ) -> Result<Vchan> {
        let _lock = evtchn_lock(&h.run, h.me)?;
        let (s, dir) = server_init(
            &mut h.grants,
            &mut h.events,
            &mut h.store,
            peer,
            port,
            read_min,
            write_min,
        )
        .with_context(|| format!("vchan server for domain {peer} port {port}"))?;
        Ok(Vchan {
            end: End::Server(s, Some(dir)),
            tap: crate::capture::Tap::for_vchan(h.me, peer, port),
        })
    }

    /// A client of `server`'s vchan on `port`, retrying while it is not advertised yet, until
    /// `timeout` passes or `stop()` says so.
    pub fn connect(
        h: &mut Hosted,
        server: DomId,
        port: u32,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vchan> {
        let deadline = Instant::now() + timeout;
        loop {
            // Binding claims in the server's directory and allocates in ours; lower domid first.
            let (a, b) = (server.min(h.me), server.max(h.me));
            let first = evtchn_lock(&h.run, a)?;
            let second = if a == b {
                None
            } else {
                Some(evtchn_lock(&h.run, b)?)
            };
            let locks = (first, second);
            let r = client_init(&mut h.grants, &mut h.events, &mut h.store, server, port);
            drop(locks);
            match r {
                Ok(c) => {
                    return Ok(Vchan {
                        end: End::Client(c),
                        tap: crate::capture::Tap::for_vchan(h.me, server, port),
                    })
                }
                Err(SetupError::Store(StoreError::Xs(XsErrno::Enoent))) => {}
                Err(e) => bail!("vchan client of domain {server} port {port}: {e}"),
            }
            if stop() {
                bail!("vchan client of domain {server} port {port}: cancelled");
            }
            if Instant::now() >= deadline {
                bail!("vchan client of domain {server} port {port}: no server after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// See `vchan::Server::read`.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, vchan::Error> {
        let n = match &mut self.end {
            End::Server(s, _) => s.read(buf),
            End::Client(c) => c.read(buf),
        }?;
        if let Some(t) = &self.tap {
            t.record(crate::capture::Dir::ToDom0, buf.get(..n).unwrap_or(&[]));
        }
        Ok(n)
    }

    /// See `vchan::Server::write`.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, vchan::Error> {
        let n = match &mut self.end {
            End::Server(s, _) => s.write(data),
            End::Client(c) => c.write(data),
        }?;
        if let Some(t) = &self.tap {
            t.record(crate::capture::Dir::FromDom0, data.get(..n).unwrap_or(&[]));
        }
        Ok(n)
    }

    /// See `vchan::Server::prepare_wait`.
    pub fn prepare_wait(&mut self, interest: Interest) -> Result<bool, vchan::Error> {
        match &mut self.end {
            End::Server(s, _) => s.prepare_wait(interest),
            End::Client(c) => c.prepare_wait(interest),
        }
    }

    /// The peer's state.
    pub fn peer_state(&mut self) -> Result<PeerState, vchan::Error> {
        match &mut self.end {
            End::Server(s, _) => s.peer_state(),
            End::Client(c) => c.peer_state(),
        }
    }

    /// Removes a server's xenstore directory once its client has attached, so that a later
    /// client of the same port cannot find this one.
    pub fn tidy(&mut self, h: &mut Hosted) {
        if let End::Server(s, dir) = &mut self.end {
            if dir.is_some() && !matches!(s.peer_state(), Ok(PeerState::Waiting)) {
                if let Some(d) = dir.take() {
                    remove_dir(&mut h.store, &d);
                }
            }
        }
    }

    /// Closes and removes a server's directory if still there.
    pub fn shutdown(mut self, h: &mut Hosted) {
        if let End::Server(_, dir) = &mut self.end {
            if let Some(d) = dir.take() {
                remove_dir(&mut h.store, &d);
            }
        }
    }

    /// Waits for our events (any port of `h`) for at most `timeout`, after posting interest.
    pub fn wait(&mut self, h: &mut Hosted, interest: Interest, timeout: Duration) -> Result<()> {
        match self.prepare_wait(interest) {
            Ok(true) => {
                h.events.wait(Some(timeout)).context("event wait")?;
            }
            Ok(false) | Err(vchan::Error::PeerClosed) => {}
            Err(e) => bail!("vchan: {e}"),
        }
        Ok(())
    }
}

/// Removes a server's `data/vchan/<client>/<port>` and, if that left it empty, its
/// `data/vchan/<client>`, in one transaction. `XsDir::remove` checks and removes the parent in
/// separate steps, so another server for the same client that advertised in between lost its
/// keys and its client waited in vain (seen with eight concurrent calls).
fn remove_dir(store: &mut HostedStore, dir: &XsDir) {
    let path = dir.path();
    let parent = path.rsplit_once('/').map(|(p, _)| p);
    for _ in 0..vchan::setup::MAX_TX_RETRIES {
        let Ok(tx) = store.transaction_start() else {
            return;
        };
        let mut body = || -> Result<(), StoreError> {
            match store.rm(tx, path) {
                Ok(()) | Err(StoreError::Xs(XsErrno::Enoent)) => {}
                Err(e) => return Err(e),
            }
            if let Some(parent) = parent {
                if store.directory(tx, parent).is_ok_and(|c| c.is_empty()) {
                    store.rm(tx, parent)?;
                }
            }
            Ok(())
        };
        if body().is_err() {
            let _ = store.transaction_end(tx, false);
            return;
        }
        match store.transaction_end(tx, true) {
            Err(StoreError::Xs(XsErrno::Eagain)) => continue,
            _ => return,
        }
    }
}

/// Bytes on their way to a vchan, taken out of a sans-IO machine eagerly, up to a bound. A
/// machine whose own queue is full stops reading its input (it keeps room for a reply), so
/// two peers that both let their queues fill while their rings are full would deadlock.
#[derive(Debug)]
pub struct TxQueue {
    buf: Vec<u8>,
    off: usize,
    cap: usize,
    scratch: Vec<u8>,
}

impl TxQueue {
    /// A queue that takes from the machine while it holds less than `cap` bytes.
    pub fn new(cap: usize) -> TxQueue {
        TxQueue {
            buf: Vec::new(),
            off: 0,
            cap,
            scratch: vec![0u8; 8192],
        }
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.off
    }

    /// Takes what `poll` (a machine's `poll_transmit`) has, while under the bound.
    pub fn fill(&mut self, mut poll: impl FnMut(&mut [u8]) -> Option<usize>) {
        if self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
        } else if self.off >= self.cap {
            self.buf.drain(..self.off);
            self.off = 0;
        }
        while self.pending() < self.cap {
            match poll(&mut self.scratch) {
                Some(n) => self
                    .buf
                    .extend_from_slice(self.scratch.get(..n).unwrap_or(&[])),
                None => break,
            }
        }
    }

    /// Writes what the vchan takes now; whether anything was written.
    pub fn flush(&mut self, v: &mut Vchan) -> Result<bool, vchan::Error> {
        let mut wrote = false;
        while let Some(rest) = self.buf.get(self.off..).filter(|r| !r.is_empty()) {
            match v.write(rest)? {
                0 => break,
                n => {
                    self.off += n;
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::TxQueue;

    #[test]
    fn tx_queue_takes_eagerly_but_stops_at_its_bound() {
        let mut q = TxQueue::new(10_000);
        let mut left = 50_000usize;
        q.fill(|b| {
            let n = left.min(b.len());
            left -= n;
            (n > 0).then_some(n)
        });
        assert!(
            q.pending() >= 10_000 && q.pending() < 10_000 + 8192,
            "{}",
            q.pending()
        );
        assert!(left > 0, "the bound was ignored");
    }
}
