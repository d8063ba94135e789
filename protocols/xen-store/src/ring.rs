//! Transport over the shared `xenstore_domain_interface` page (xs_wire.h, xenstore-ring.txt
//! \[X\]): req/rsp byte rings, streaming of messages larger than a ring, features, reconnection.

use core::fmt;

use platform_api::{Duration, Notify, Ordering, SharedMem, StoreError};
use xen_rings::{ByteRing, Layout, RingError, Role};

use crate::blocking::Transport;
use crate::client::{Client, ClientError};

/// `XENSTORE_RING_SIZE`.
pub const RING_SIZE: u32 = 1024;
/// `req[]`: guest to xenstored, indices `req_cons`/`req_prod` at 2048/2052.
pub const REQ: Layout = Layout {
    data: 0,
    size: RING_SIZE,
    cons: 2048,
    prod: 2052,
};
/// `rsp[]`: xenstored to guest, indices `rsp_cons`/`rsp_prod` at 2056/2060.
pub const RSP: Layout = Layout {
    data: 1024,
    size: RING_SIZE,
    cons: 2056,
    prod: 2060,
};
/// Offset of `server_features`.
pub const SERVER_FEATURES: usize = 2064;
/// Offset of `connection`.
pub const CONNECTION: usize = 2068;
/// Offset of `error`.
pub const ERROR: usize = 2072;
/// Offset of `evtchn_port`.
pub const EVTCHN_PORT: usize = 2076;
/// `sizeof(struct xenstore_domain_interface)`.
pub const INTERFACE_SIZE: usize = 2080;
/// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
pub const FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`.
pub const FEATURE_ERROR: u32 = 2;
/// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`.
pub const FEATURE_WATCHDEPTH: u32 = 4;
/// `XENSTORE_SERVER_FEATURE_DOMID_ANY`.
pub const FEATURE_DOMID_ANY: u32 = 8;
/// `XENSTORE_CONNECTED`.
pub const CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`.
pub const RECONNECT: u32 = 1;

/// Which end of the page this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The domain: writes `req[]`, reads `rsp[]`.
    Guest,
    /// xenstored: reads `req[]`, writes `rsp[]`.
    Daemon,
}

/// Why the ring transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRingError {
    /// The peer broke a ring (impossible index) or the page is too small. Sticky.
    Ring(RingError),
    /// Reconnection asked for but `server_features` lacks `RECONNECTION`.
    NoReconnect {
        /// The features xenstored offers.
        features: u32,
    },
    /// The client machine refused the stream.
    Client(ClientError),
}

impl fmt::Display for StoreRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ring(e) => write!(f, "xenstore ring: {e}"),
            Self::NoReconnect { features } => {
                write!(
                    f,
                    "xenstored offers no reconnection (features {features:#x})"
                )
            }
            Self::Client(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for StoreRingError {}

impl From<RingError> for StoreRingError {
    fn from(e: RingError) -> Self {
        Self::Ring(e)
    }
}

/// What one [`StoreRing::pump`] did; notify the event channel when [`Self::notify`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Pump {
    /// Bytes written to our outgoing ring.
    pub sent: usize,
    /// Bytes consumed from our incoming ring.
    pub received: usize,
}

impl Pump {
    /// Any index moved: the peer must be notified (xenstore-ring.txt: after every update).
    pub fn notify(&self) -> bool {
        self.sent > 0 || self.received > 0
    }
}

/// One end of the xenstore page. Indices may start anywhere; each call loads the peer's
/// index once and refuses an impossible one, after which the ring stays broken.
#[derive(Debug, Clone)]
pub struct StoreRing {
    side: Side,
    out: ByteRing,
    inp: ByteRing,
    broken: Option<RingError>,
}

impl StoreRing {
    /// Attaches to the page as `side`, taking our own indices from it.
    pub fn attach<M: SharedMem + ?Sized>(mem: &M, side: Side) -> Result<Self, StoreRingError> {
        platform_api::check_range(0, INTERFACE_SIZE, mem.size()).map_err(RingError::from)?;
        let (out, inp) = match side {
            Side::Guest => (
                ByteRing::attach(mem, REQ, Role::Producer)?,
                ByteRing::attach(mem, RSP, Role::Consumer)?,
            ),
            Side::Daemon => (
                ByteRing::attach(mem, RSP, Role::Producer)?,
                ByteRing::attach(mem, REQ, Role::Consumer)?,
            ),
        };
        Ok(Self {
            side,
            out,
            inp,
            broken: None,
        })
    }

    /// Which end.
    pub fn side(&self) -> Side {
        self.side
    }

    fn guard<T>(&mut self, r: Result<T, RingError>) -> Result<T, StoreRingError> {
        if let Some(e) = self.broken {
            return Err(StoreRingError::Ring(e));
        }
        r.map_err(|e| {
            self.broken = Some(e);
            StoreRingError::Ring(e)
        })
    }

    /// Writes what fits of `data`; a non-zero count means notify.
    pub fn write<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        data: &[u8],
    ) -> Result<usize, StoreRingError> {
        self.guard(Ok(()))?;
        let r = self.out.write(mem, data);
        self.guard(r)
    }

    /// Reads what is ready into `buf`; a non-zero count means notify.
    pub fn read<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        buf: &mut [u8],
    ) -> Result<usize, StoreRingError> {
        self.guard(Ok(()))?;
        let r = self.inp.read(mem, buf);
        self.guard(r)
    }

    /// Free space in our outgoing ring.
    pub fn writable<M: SharedMem + ?Sized>(&mut self, mem: &M) -> Result<usize, StoreRingError> {
        self.guard(Ok(()))?;
        let r = self.out.available(mem);
        self.guard(r)
    }

    /// Bytes ready in our incoming ring.
    pub fn readable<M: SharedMem + ?Sized>(&mut self, mem: &M) -> Result<usize, StoreRingError> {
        self.guard(Ok(()))?;
        let r = self.inp.available(mem);
        self.guard(r)
    }

    /// Guest: moves queued requests into `req[]` and replies from `rsp[]` into the client, as
    /// much as the rings allow (a message bigger than the ring goes over several calls).
    pub fn pump<M: SharedMem + ?Sized>(
        &mut self,
        mem: &M,
        client: &mut Client,
    ) -> Result<Pump, StoreRingError> {
        let mut buf = [0u8; RING_SIZE as usize];
        let mut p = Pump::default();
        loop {
            let room = self.writable(mem)?.min(buf.len());
            if room == 0 || client.transmit_len() == 0 {
                break;
            }
            let Some(n) = client.poll_transmit(&mut buf[..room]) else {
                break;
            };
            // Only our side fills the ring, so the space seen above is still there.
            let w = self.write(mem, &buf[..n])?;
            debug_assert_eq!(w, n);
            p.sent += w;
        }
        loop {
            let n = self.read(mem, &mut buf)?;
            if n == 0 {
                break;
            }
            p.received += n;
            client
                .handle_input(&buf[..n])
                .map_err(StoreRingError::Client)?;
        }
        Ok(p)
    }

    /// `server_features`.
    pub fn server_features<M: SharedMem + ?Sized>(mem: &M) -> Result<u32, StoreRingError> {
        Ok(mem
            .load_u32(SERVER_FEATURES, Ordering::Acquire)
            .map_err(RingError::from)?)
    }

    /// Guest: asks xenstored to reset the connection (`connection = RECONNECT`); notify after.
    /// Refused unless `server_features` has `RECONNECTION`. All watches and transactions go.
    pub fn start_reconnect<M: SharedMem + ?Sized>(mem: &M) -> Result<(), StoreRingError> {
        let features = Self::server_features(mem)?;
        if features & FEATURE_RECONNECTION == 0 {
            return Err(StoreRingError::NoReconnect { features });
        }
        mem.store_u32(CONNECTION, RECONNECT, Ordering::Release)
            .map_err(RingError::from)?;
        Ok(())
    }

    /// Guest: whether xenstored finished the reset; then attach a new [`StoreRing`] and
    /// [`Client::reset`] the client.
    pub fn reconnect_done<M: SharedMem + ?Sized>(mem: &M) -> Result<bool, StoreRingError> {
        Ok(mem
            .load_u32(CONNECTION, Ordering::Acquire)
            .map_err(RingError::from)?
            == CONNECTED)
    }

    /// Daemon: whether the guest asked for a reset.
    pub fn reconnect_requested<M: SharedMem + ?Sized>(mem: &M) -> Result<bool, StoreRingError> {
        Ok(mem
            .load_u32(CONNECTION, Ordering::Acquire)
            .map_err(RingError::from)?
            == RECONNECT)
    }

    /// Daemon: discards both rings, zeroes the indices, marks the page connected and
    /// returns the fresh end; notify after.
    pub fn complete_reconnect<M: SharedMem + ?Sized>(mem: &M) -> Result<Self, StoreRingError> {
        for off in [REQ.cons, REQ.prod, RSP.cons, RSP.prod] {
            mem.store_u32(off, 0, Ordering::Relaxed)
                .map_err(RingError::from)?;
        }
        mem.store_u32(CONNECTION, CONNECTED, Ordering::Release)
            .map_err(RingError::from)?;
        Self::attach(mem, Side::Daemon)
    }
}

/// A blocking [`Transport`] over the page: `notify` signals the store event channel, `wait`
/// blocks until it fires (or the timeout passes).
pub struct RingTransport<M, N, W> {
    mem: M,
    ring: StoreRing,
    notify: N,
    wait: W,
}

impl<M, N, W> fmt::Debug for RingTransport<M, N, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingTransport")
            .field("ring", &self.ring)
            .finish()
    }
}

impl<M, N, W> RingTransport<M, N, W>
where
    M: SharedMem,
    N: Notify,
    W: FnMut(Option<Duration>) -> Result<(), StoreError>,
{
    /// Attaches as the guest.
    pub fn new(mem: M, notify: N, wait: W) -> Result<Self, StoreRingError> {
        let ring = StoreRing::attach(&mem, Side::Guest)?;
        Ok(Self {
            mem,
            ring,
            notify,
            wait,
        })
    }

    /// The shared page.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    fn kick(&self) -> Result<(), StoreError> {
        self.notify.notify().map_err(|_| StoreError::Disconnected)
    }
}

fn lost(_: StoreRingError) -> StoreError {
    StoreError::Disconnected
}

impl<M, N, W> Transport for RingTransport<M, N, W>
where
    M: SharedMem,
    N: Notify,
    W: FnMut(Option<Duration>) -> Result<(), StoreError>,
{
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        loop {
            let n = self.ring.write(&self.mem, data).map_err(lost)?;
            if n > 0 || data.is_empty() {
                self.kick()?;
                return Ok(n);
            }
            (self.wait)(None)?;
        }
    }

    /// Waits once for the event channel; `Ok(0)` on timeout or a wake-up with nothing ready.
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, StoreError> {
        let mut n = self.ring.read(&self.mem, buf).map_err(lost)?;
        if n == 0 {
            (self.wait)(timeout)?;
            n = self.ring.read(&self.mem, buf).map_err(lost)?;
        }
        if n > 0 {
            self.kick()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
