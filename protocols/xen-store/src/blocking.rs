//! A blocking `platform_api::Store` over the client machine and any byte [`Transport`], plus
//! the transaction retry loop. One thin adapter over the one sans-IO core.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{Duration, Perm, Store, StoreError, Tx, XsErrno};

use crate::client::{Client, Limits, ReqId, WatchEvent};
use crate::wire::{Reply, Request, XsPath};

/// A byte stream to xenstored (a Unix socket, the shared ring, an in-memory pipe).
pub trait Transport {
    /// Writes some of `data`, blocking until at least one byte is taken; returns the count.
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError>;
    /// Reads into `buf`, waiting at most `timeout` (`None`: forever) for the first byte;
    /// `Ok(0)` means the time ran out. A closed stream is `Err(Disconnected)`.
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError>;
    /// The event channel (or hosted pseudo-port) that signals incoming bytes, if any.
    fn port(&self) -> Option<platform_api::EvtchnPort> {
        None
    }
}

/// A blocking xenstore client: sends one request at a time and waits for its reply, queueing
/// watch events that arrive meanwhile.
#[derive(Debug)]
pub struct BlockingStore<T> {
    client: Client,
    transport: T,
    buf: Vec<u8>,
}

fn node(path: &str) -> Result<XsPath, StoreError> {
    XsPath::node(path).map_err(|_| StoreError::Xs(XsErrno::Einval))
}

fn bad(_: Reply) -> StoreError {
    StoreError::BadReply("reply of the wrong shape")
}

impl<T: Transport> BlockingStore<T> {
    /// A store over `transport` with default limits.
    pub fn new(transport: T) -> Self {
        Self::with_limits(transport, Limits::DEFAULT)
    }

    /// A store with explicit client limits.
    pub fn with_limits(transport: T, limits: Limits) -> Self {
        Self {
            client: Client::new(limits),
            transport,
            buf: vec![0; 4096],
        }
    }

    /// The client machine.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The transport (e.g. for its file descriptor).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutable.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        while let Some(n) = self.client.poll_transmit(&mut self.buf) {
            let mut at = 0;
            while at < n {
                at += self.transport.send(&self.buf[at..n])?;
            }
        }
        Ok(())
    }

    /// Receives once (waiting at most `timeout`); returns whether bytes arrived.
    fn pump(&mut self, timeout: Option<Duration>) -> Result<bool, StoreError> {
        let n = self.transport.recv(&mut self.buf, timeout)?;
        if n == 0 {
            return Ok(false);
        }
        self.client.handle_input(&self.buf[..n])?;
        Ok(true)
    }

    /// Sends any request and waits for its reply.
    pub fn request(&mut self, tx: Tx, request: Request) -> Result<Reply, StoreError> {
        let id: ReqId = self.client.send(tx, request)?;
        self.flush()?;
        loop {
            if let Some(r) = self.client.take_reply(id) {
                return r;
            }
            self.pump(None)?;
        }
    }

    fn ok(&mut self, tx: Tx, request: Request) -> Result<(), StoreError> {
        match self.request(tx, request)? {
            Reply::Ok(_) => Ok(()),
            r => Err(bad(r)),
        }
    }

    /// Registers a watch; it fires once at once.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let path = XsPath::new(path).map_err(|_| StoreError::Xs(XsErrno::Einval))?;
        self.ok(
            Tx::NONE,
            Request::Watch {
                path,
                token: token.into(),
                depth: None,
            },
        )
    }

    /// Removes a watch.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let path = XsPath::new(path).map_err(|_| StoreError::Xs(XsErrno::Einval))?;
        self.ok(
            Tx::NONE,
            Request::Unwatch {
                path,
                token: token.into(),
            },
        )
    }

    /// Drops all our watches and transactions.
    pub fn reset_watches(&mut self) -> Result<(), StoreError> {
        self.ok(Tx::NONE, Request::ResetWatches)
    }

    /// The next watch event, waiting at most `timeout` (`None`: forever) between arrivals.
    pub fn wait_watch(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<WatchEvent>, StoreError> {
        loop {
            if let Some(e) = self.client.poll_event() {
                return Ok(Some(e));
            }
            if !self.pump(timeout)? {
                return Ok(None);
            }
        }
    }

    /// A queued watch event, without waiting.
    pub fn poll_watch(&mut self) -> Option<WatchEvent> {
        self.client.poll_event()
    }

    /// `/local/domain/<domid>` as xenstored says it.
    pub fn get_domain_path(&mut self, domid: platform_api::DomId) -> Result<String, StoreError> {
        match self.request(Tx::NONE, Request::GetDomainPath(domid))? {
            Reply::DomainPath(p) => Ok(p),
            r => Err(bad(r)),
        }
    }

    /// Introduces a domain (dom0 only).
    pub fn introduce(
        &mut self,
        domid: platform_api::DomId,
        gfn: i64,
        evtchn: u32,
    ) -> Result<(), StoreError> {
        self.ok(Tx::NONE, Request::Introduce { domid, gfn, evtchn })
    }

    /// Releases a domain (dom0 only).
    pub fn release(&mut self, domid: platform_api::DomId) -> Result<(), StoreError> {
        self.ok(Tx::NONE, Request::Release(domid))
    }

    /// Whether a domain is introduced.
    pub fn is_domain_introduced(&mut self, domid: platform_api::DomId) -> Result<bool, StoreError> {
        match self.request(Tx::NONE, Request::IsDomainIntroduced(domid))? {
            Reply::IsIntroduced(b) => Ok(b),
            r => Err(bad(r)),
        }
    }
}

impl<T: Transport> Store for BlockingStore<T> {
    fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>, StoreError> {
        match self.request(tx, Request::Read(node(path)?))? {
            Reply::Read(v) => Ok(v),
            r => Err(bad(r)),
        }
    }

    fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.ok(
            tx,
            Request::Write {
                path: node(path)?,
                value: value.to_vec(),
            },
        )
    }

    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        self.ok(tx, Request::Mkdir(node(path)?))
    }

    fn rm(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        self.ok(tx, Request::Rm(node(path)?))
    }

    fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>, StoreError> {
        match self.request(tx, Request::Directory(node(path)?))? {
            Reply::Directory(v) => Ok(v),
            r => Err(bad(r)),
        }
    }

    fn get_perms(&mut self, tx: Tx, path: &str) -> Result<Vec<Perm>, StoreError> {
        let path = XsPath::new(path).map_err(|_| StoreError::Xs(XsErrno::Einval))?;
        match self.request(tx, Request::GetPerms(path))? {
            Reply::Perms(v) => Ok(v),
            r => Err(bad(r)),
        }
    }

    fn set_perms(&mut self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        let path = XsPath::new(path).map_err(|_| StoreError::Xs(XsErrno::Einval))?;
        if perms.is_empty() {
            return Err(StoreError::Xs(XsErrno::Einval));
        }
        self.ok(
            tx,
            Request::SetPerms {
                path,
                perms: perms.to_vec(),
            },
        )
    }

    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        match self.request(Tx::NONE, Request::TransactionStart)? {
            Reply::TransactionStarted(id) => Ok(Tx(id)),
            r => Err(bad(r)),
        }
    }

    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), StoreError> {
        self.ok(tx, Request::TransactionEnd { commit })
    }
}

/// Runs `body` in a transaction and commits it, retrying the whole transaction while
/// xenstored answers `EAGAIN` (at most `attempts` times). Any other error aborts it.
pub fn with_transaction<S, R>(
    store: &mut S,
    attempts: u32,
    mut body: impl FnMut(&mut S, Tx) -> Result<R, StoreError>,
) -> Result<R, StoreError>
where
    S: Store + ?Sized,
{
    let eagain = StoreError::Xs(XsErrno::Eagain);
    let mut last = eagain.clone();
    for _ in 0..attempts {
        let tx = store.transaction_start()?;
        match body(store, tx) {
            Ok(r) => match store.transaction_end(tx, true) {
                Ok(()) => return Ok(r),
                Err(e) if e == eagain => last = e,
                Err(e) => return Err(e),
            },
            Err(e) => {
                // The abort's own result cannot improve on the body's error.
                let _ = store.transaction_end(tx, false);
                if e != eagain {
                    return Err(e);
                }
                last = e;
            }
        }
    }
    Err(last)
}

impl<T: Transport> platform_api::Watches for BlockingStore<T> {
    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        BlockingStore::watch(self, path, token)
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        BlockingStore::unwatch(self, path, token)
    }

    fn poll_watch(&mut self) -> Result<Option<platform_api::WatchEvent>, StoreError> {
        let e = self.wait_watch(Some(Duration::ZERO))?;
        Ok(e.map(|e| platform_api::WatchEvent {
            path: e.path,
            token: e.token,
        }))
    }

    fn port(&self) -> Option<platform_api::EvtchnPort> {
        self.transport.port()
    }
}
