//! Blocking vchan setup over the platform traits (`libxenvchan_server_init`/`client_init` \[X\],
//! Qubes' path convention \[QV\]) and blocking read/write helpers for single-channel users.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{
    Access, Duration, Events, GrantRef, Grants, Notify, Perm, Port, SharedMem, Store, StoreError,
    Tx, XsErrno,
};
use platform_api::{DomId, EvtchnPort};

use crate::endpoint::{Client, Interest, PeerState, Server};
use crate::error::{Error, SetupError};
use crate::layout::{Geometry, Offer, Ring};

/// A server over the pages of `G` and a port of `E`.
pub type GrantedServer<G, E> = Server<<G as Grants>::Mem, <E as Events>::Port>;
/// A client over the mappings of `G` and a port of `E`.
pub type MappedClient<G, E> = Client<<G as Grants>::Mem, <E as Events>::Port>;

/// Transaction retries on `EAGAIN` before giving up (libxenvchan retries forever).
pub const MAX_TX_RETRIES: usize = 64;

/// The Qubes vchan directory, relative to the server's domain: `data/vchan/<client>/<port>`.
pub fn qubes_path(client: DomId, port: u32) -> String {
    format!("data/vchan/{client}/{port}")
}

/// The xenstore directory a server advertised, for removal once the client has connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsDir {
    path: String,
    /// Qubes only: the `<client_domid>` directory, removed too when it becomes empty.
    parent: Option<String>,
}

impl XsDir {
    /// The advertised directory (holds `ring-ref` and `event-channel`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes the directory, and for a Qubes path the `<client_domid>` directory if it is now
    /// empty (`libvchan_wait` \[QV\]). Call it on the first wait after the client connected,
    /// and on close if that never happened (`close_xs_srv` \[X\]). Removing twice is fine.
    /// One transaction (retried on `EAGAIN`), so a server advertising another port under the
    /// same parent between the emptiness check and the removal keeps its keys.
    pub fn remove<S: Store>(&self, store: &mut S) -> Result<(), StoreError> {
        in_transaction(store, |store, tx| {
            match store.rm(tx, &self.path) {
                Ok(()) | Err(StoreError::Xs(XsErrno::Enoent)) => {}
                Err(e) => return Err(e),
            }
            let Some(parent) = &self.parent else {
                return Ok(());
            };
            match store.directory(tx, parent) {
                Ok(children) if children.is_empty() => match store.rm(tx, parent) {
                    Ok(()) | Err(StoreError::Xs(XsErrno::Enoent)) => Ok(()),
                    Err(e) => Err(e),
                },
                Ok(_) | Err(StoreError::Xs(XsErrno::Enoent)) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// Runs `body` in a transaction and commits it, starting over on `EAGAIN` (another connection
/// changed what the transaction read) at most [`MAX_TX_RETRIES`] times; aborts on an error.
fn in_transaction<S: Store, T>(
    store: &mut S,
    mut body: impl FnMut(&mut S, Tx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    for _ in 0..MAX_TX_RETRIES {
        let tx = store.transaction_start()?;
        let value = match body(store, tx) {
            Ok(v) => v,
            Err(e) => {
                let _ = store.transaction_end(tx, false);
                return Err(e);
            }
        };
        match store.transaction_end(tx, true) {
            Ok(()) => return Ok(value),
            Err(StoreError::Xs(XsErrno::Eagain)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Xs(XsErrno::Eagain))
}

fn parse_value<T>(
    raw: &[u8],
    key: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, SetupError> {
    // xenstored values carry no terminator, but tolerate one NUL from C writers.
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    core::str::from_utf8(raw)
        .ok()
        .and_then(parse)
        .ok_or(SetupError::BadValue { key })
}

/// A key the server advertises: missing is `Store(Xs(Enoent))` and empty is `NotReady`, both
/// retryable ([`SetupError::is_not_ready`]); a malformed value is left to `parse_value`.
fn read_advertised<S: Store>(
    store: &mut S,
    xs_path: &str,
    key: &'static str,
) -> Result<Vec<u8>, SetupError> {
    let raw = store.read(Tx::NONE, &format!("{xs_path}/{key}"))?;
    if raw.strip_suffix(&[0]).unwrap_or(&raw).is_empty() {
        return Err(SetupError::NotReady { key });
    }
    Ok(raw)
}

/// Our domid, from the relative key `domid` as libxenvchan reads it.
pub fn own_domid<S: Store>(store: &mut S) -> Result<DomId, SetupError> {
    let raw = store.read(Tx::NONE, "domid")?;
    parse_value(&raw, "domid", |s| DomId::parse(s).ok())
}

/// A Qubes server for `peer` on `port` (`libvchan_server_init(peer, port, read_min,
/// write_min)` \[QV\]): `read_min` sizes the left ring (what we read), `write_min` the right.
pub fn server_init<G: Grants, E: Events, S: Store>(
    grants: &mut G,
    events: &mut E,
    store: &mut S,
    peer: DomId,
    port: u32,
    read_min: usize,
    write_min: usize,
) -> Result<(GrantedServer<G, E>, XsDir), SetupError> {
    let (server, mut dir) = server_init_at(
        grants,
        events,
        store,
        peer,
        &qubes_path(peer, port),
        read_min,
        write_min,
    )?;
    dir.parent = Some(format!("data/vchan/{peer}"));
    Ok((server, dir))
}

/// A server advertised at `xs_path` (`libxenvchan_server_init(domain, xs_path, left_min,
/// right_min)` \[X\]): allocates an unbound port for `peer`, shares the control page and ring
/// pages writable, initializes the page, then writes `ring-ref` and `event-channel` in one
/// transaction with permissions `n<own>`, `r<peer>`.
pub fn server_init_at<G: Grants, E: Events, S: Store>(
    grants: &mut G,
    events: &mut E,
    store: &mut S,
    peer: DomId,
    xs_path: &str,
    left_min: usize,
    right_min: usize,
) -> Result<(GrantedServer<G, E>, XsDir), SetupError> {
    let geometry = Geometry::for_minimums(left_min, right_min)?;
    let own = own_domid(store)?;
    let port = events.alloc_unbound(peer)?;
    let (ctrl, ctrl_refs) = grants.share(peer, 1, true)?;
    let ring_ref = *ctrl_refs
        .first()
        .ok_or(SetupError::BadValue { key: "ring-ref" })?;
    let mut refs = Vec::with_capacity(geometry.grant_count());
    let mut share = |ring: Ring| -> Result<Option<G::Mem>, SetupError> {
        match geometry.pages(ring) {
            0 => Ok(None),
            n => {
                let (mem, r) = grants.share(peer, n, true)?;
                refs.extend_from_slice(&r);
                Ok(Some(mem))
            }
        }
    };
    let left = share(Ring::Left)?;
    let right = share(Ring::Right)?;
    let port_no = port.port();
    let server = Server::new(ctrl, geometry, left, right, &refs, port)?;
    write_keys(store, xs_path, own, peer, ring_ref, port_no)?;
    Ok((
        server,
        XsDir {
            path: String::from(xs_path),
            parent: None,
        },
    ))
}

fn write_keys<S: Store>(
    store: &mut S,
    xs_path: &str,
    own: DomId,
    peer: DomId,
    ring_ref: GrantRef,
    port: EvtchnPort,
) -> Result<(), SetupError> {
    let perms = [
        Perm {
            domid: own,
            access: Access::None,
        },
        Perm {
            domid: peer,
            access: Access::Read,
        },
    ];
    let ring_key = format!("{xs_path}/ring-ref");
    let port_key = format!("{xs_path}/event-channel");
    let ring_val = format!("{ring_ref}");
    let port_val = format!("{port}");
    in_transaction(store, |store, tx| {
        store.write(tx, &ring_key, ring_val.as_bytes())?;
        store.set_perms(tx, &ring_key, &perms)?;
        store.write(tx, &port_key, port_val.as_bytes())?;
        store.set_perms(tx, &port_key, &perms)
    })?;
    Ok(())
}

/// A Qubes client of `server`'s vchan on `port`: reads
/// `/local/domain/<server>/data/vchan/<own domid>/<port>/{ring-ref,event-channel}`.
/// A missing key is `Store(Xs(Enoent))` and an empty one `NotReady`: the server is not ready
/// yet ([`SetupError::is_not_ready`]), retry later.
pub fn client_init<G: Grants, E: Events, S: Store>(
    grants: &mut G,
    events: &mut E,
    store: &mut S,
    server: DomId,
    port: u32,
) -> Result<MappedClient<G, E>, SetupError> {
    let own = own_domid(store)?;
    if own == server {
        return Err(SetupError::Loopback);
    }
    let path = format!("/local/domain/{server}/{}", qubes_path(own, port));
    client_init_at(grants, events, store, server, &path)
}

/// A client of the server advertised at `xs_path` (`libxenvchan_client_init` \[X\]): reads
/// `ring-ref` and `event-channel` (0 is refused; missing or empty is
/// [`is_not_ready`](SetupError::is_not_ready): retry), binds the port, maps the control page
/// writable, validates the orders, maps the left ring writable and the right ring read-only,
/// then attaches (sets `cli_live = 1`, `srv_notify = WRITE`, notifies).
pub fn client_init_at<G: Grants, E: Events, S: Store>(
    grants: &mut G,
    events: &mut E,
    store: &mut S,
    server: DomId,
    xs_path: &str,
) -> Result<MappedClient<G, E>, SetupError> {
    let raw = read_advertised(store, xs_path, "ring-ref")?;
    let ring_ref = parse_value(&raw, "ring-ref", |s| {
        GrantRef::parse(s).ok().filter(|g| g.0 != 0)
    })?;
    let raw = read_advertised(store, xs_path, "event-channel")?;
    let remote_port = parse_value(&raw, "event-channel", |s| EvtchnPort::parse(s).ok())?;
    let port = events.bind_interdomain(server, remote_port)?;
    let ctrl = grants.map(server, &[ring_ref], true)?;
    let offer = Offer::read(&ctrl)?;
    let left = match offer.left_grants.is_empty() {
        true => None,
        false => Some(grants.map(server, &offer.left_grants, true)?),
    };
    let right = match offer.right_grants.is_empty() {
        true => None,
        false => Some(grants.map(server, &offer.right_grants, false)?),
    };
    Ok(Client::attach(ctrl, &offer, left, right, port)?)
}

/// The operations the blocking helpers need; implemented by [`Server`] and [`Client`].
pub trait Stream {
    /// See [`Server::read`].
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
    /// See [`Server::write`].
    fn write(&mut self, data: &[u8]) -> Result<usize, Error>;
    /// See [`Server::prepare_wait`].
    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error>;
}

macro_rules! impl_stream {
    ($t:ident) => {
        impl<M: SharedMem, N: Notify> Stream for $t<M, N> {
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
                $t::read(self, buf)
            }
            fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
                $t::write(self, data)
            }
            fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
                $t::prepare_wait(self, interest)
            }
        }
    };
}
impl_stream!(Server);
impl_stream!(Client);

/// One wait; a wait that ends with no event at all is a timeout.
///
/// [`Events::wait`] returns (and clears) the pending events of *every* port of that `Events`,
/// not just this channel's, so the blocking helpers swallow other channels' wakeups. An owner
/// of several channels runs its own loop with `prepare_wait` and dispatches the returned ports;
/// these helpers are for tests, benches and single-channel tools.
fn wait_once<E: Events>(events: &mut E, timeout: Option<Duration>) -> Result<(), Error> {
    let ports = events.wait(timeout).map_err(Error::Wait)?;
    if ports.is_empty() {
        return Err(Error::Timeout);
    }
    Ok(())
}

/// Reads at least one byte, waiting as needed (single-channel users only, see `wait_once`). `Ok(0)`: end of stream (the peer closed and
/// everything was read). `timeout` bounds each wait: `Err(Timeout)` when a wait sees no event.
pub fn read_blocking<V: Stream, E: Events>(
    v: &mut V,
    events: &mut E,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> Result<usize, Error> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        match v.read(buf) {
            Ok(0) => {}
            Ok(n) => return Ok(n),
            Err(Error::PeerClosed) => return Ok(0),
            Err(e) => return Err(e),
        }
        if v.prepare_wait(Interest {
            read: true,
            write: false,
        })? {
            wait_once(events, timeout)?;
        }
    }
}

/// Writes all of `data`, waiting for ring space as needed. `timeout` bounds each wait.
pub fn write_all_blocking<V: Stream, E: Events>(
    v: &mut V,
    events: &mut E,
    mut data: &[u8],
    timeout: Option<Duration>,
) -> Result<(), Error> {
    while !data.is_empty() {
        let n = v.write(data)?;
        data = &data[n..];
        if n == 0
            && v.prepare_wait(Interest {
                read: false,
                write: true,
            })?
        {
            wait_once(events, timeout)?;
        }
    }
    Ok(())
}

/// Waits until a client attaches to `server` (`cli_live` leaves 2). `timeout` bounds each wait.
pub fn wait_connected<M: SharedMem, N: Notify, E: Events>(
    server: &mut Server<M, N>,
    events: &mut E,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    loop {
        if server.peer_state()? != PeerState::Waiting {
            return Ok(());
        }
        wait_once(events, timeout)?;
    }
}
