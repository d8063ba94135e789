//! The two ends of a vchan, [`Server`] and [`Client`], over one non-blocking core that follows
//! libxenvchan's `io.c` \[X\]: stream reads/writes, the notify-bit protocol, liveness, close.

use alloc::vec::Vec;

use platform_api::Ordering::{Acquire, Relaxed, Release, SeqCst};
use platform_api::{GrantRef, Notify, SharedMem, PAGE_SIZE};
use xen_rings::{ByteRing, RingError, Role};

use crate::error::{Error, LayoutError, PeerError};
use crate::joined::Joined;
use crate::layout::{
    field, Geometry, Offer, Placement, Ring, LIVE_CLOSED, LIVE_CONNECTED, LIVE_WAITING,
    NOTIFY_READ, NOTIFY_WRITE,
};

/// Which end this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    /// The ring we read.
    fn rx(self) -> Ring {
        match self {
            Side::Server => Ring::Left,
            Side::Client => Ring::Right,
        }
    }
    /// The ring we write.
    fn tx(self) -> Ring {
        match self {
            Side::Server => Ring::Right,
            Side::Client => Ring::Left,
        }
    }
    fn own_live(self) -> usize {
        match self {
            Side::Server => field::SRV_LIVE,
            Side::Client => field::CLI_LIVE,
        }
    }
    fn peer_live(self) -> usize {
        match self {
            Side::Server => field::CLI_LIVE,
            Side::Client => field::SRV_LIVE,
        }
    }
    /// The byte whose bits the peer sets and we clear when we act.
    fn own_notify(self) -> usize {
        match self {
            Side::Server => field::SRV_NOTIFY,
            Side::Client => field::CLI_NOTIFY,
        }
    }
    /// The byte we post our requests into.
    fn peer_notify(self) -> usize {
        match self {
            Side::Server => field::CLI_NOTIFY,
            Side::Client => field::SRV_NOTIFY,
        }
    }
}

/// The peer's live byte, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Server only: no client has connected yet (`cli_live == 2`). Counts as open.
    Waiting,
    /// Connected.
    Connected,
    /// The peer closed (or died and its driver cleared the byte).
    Closed,
}

/// What the caller is waiting for, for [`Server::prepare_wait`] / [`Client::prepare_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Wake when data arrives.
    pub read: bool,
    /// Wake when ring space frees up.
    pub write: bool,
}

#[derive(Debug)]
pub(crate) struct Core<M, N> {
    side: Side,
    ctrl: M,
    left: Option<M>,
    right: Option<M>,
    notify: N,
    geometry: Geometry,
    rx: ByteRing,
    tx: ByteRing,
    /// Sticky failure, or `Closed` after our own close.
    failed: Option<Error>,
    /// [`Core::close`], taken where `M: SharedMem, N: Notify` hold: `Drop` cannot add bounds
    /// the struct does not have, and bounds on the public endpoint types would break users.
    close_on_drop: fn(&mut Core<M, N>),
}

/// A dropped endpoint closes like [`Server::close`]/[`Client::close`] (nothing more after an
/// explicit close), so a peer never waits for a close that cannot come.
impl<M, N> Drop for Core<M, N> {
    fn drop(&mut self) {
        (self.close_on_drop)(self);
    }
}

/// Checks that a ring got separate memory exactly when its order calls for it.
fn check_ring_mem<M: SharedMem>(
    g: &Geometry,
    ring: Ring,
    mem: Option<&M>,
) -> Result<(), LayoutError> {
    let needed = match g.placement(ring) {
        Placement::InPage { .. } => 0,
        Placement::Pages { .. } => g.size(ring) as usize,
    };
    let given = mem.map_or(0, |m| m.size());
    let ok = match mem {
        None => needed == 0,
        Some(m) => needed != 0 && m.size() >= needed,
    };
    if ok {
        Ok(())
    } else {
        Err(LayoutError::RingMem {
            ring,
            needed,
            given,
        })
    }
}

fn ring_pages<'a, M>(left: &'a Option<M>, right: &'a Option<M>, ring: Ring) -> Option<&'a M> {
    match ring {
        Ring::Left => left.as_ref(),
        Ring::Right => right.as_ref(),
    }
}

fn ring_error(ring: Ring, e: RingError) -> Error {
    match e {
        RingError::BadIndex { in_flight, size } => Error::Peer(PeerError::BadIndex {
            ring,
            in_flight,
            size,
        }),
        RingError::Mem(m) => Error::Mem(m),
        // Unreachable: layouts come from a validated geometry (power-of-two sizes).
        RingError::BadSize(size) => Error::Layout(LayoutError::BadOrder {
            ring,
            order: size.trailing_zeros() as u16,
        }),
    }
}

impl<M: SharedMem, N: Notify> Core<M, N> {
    fn new(
        side: Side,
        ctrl: M,
        geometry: Geometry,
        left: Option<M>,
        right: Option<M>,
        notify: N,
    ) -> Result<Self, LayoutError> {
        if ctrl.size() < PAGE_SIZE {
            return Err(LayoutError::ControlPageTooSmall { size: ctrl.size() });
        }
        check_ring_mem(&geometry, Ring::Left, left.as_ref())?;
        check_ring_mem(&geometry, Ring::Right, right.as_ref())?;
        let attach = |ring: Ring, role: Role, pages: Option<&M>| {
            let mem = Joined { ctrl: &ctrl, pages };
            ByteRing::attach(&mem, geometry.ring_layout(ring), role).map_err(|e| match e {
                RingError::Mem(m) => LayoutError::Mem(m),
                _ => LayoutError::BadOrder {
                    ring,
                    order: geometry.order(ring),
                },
            })
        };
        let pages = |ring| match ring {
            Ring::Left => left.as_ref(),
            Ring::Right => right.as_ref(),
        };
        let rx = attach(side.rx(), Role::Consumer, pages(side.rx()))?;
        let tx = attach(side.tx(), Role::Producer, pages(side.tx()))?;
        Ok(Self {
            side,
            ctrl,
            left,
            right,
            notify,
            geometry,
            rx,
            tx,
            failed: None,
            close_on_drop: |core| {
                // Nobody is left to hear an error: the page or port may already be gone.
                let _ = core.close();
            },
        })
    }

    fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records a failure that ends the endpoint, and returns it.
    fn fail(&mut self, e: Error) -> Error {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        e
    }

    fn sticky<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| self.fail(e))
    }

    fn pages(&self, ring: Ring) -> Option<&M> {
        ring_pages(&self.left, &self.right, ring)
    }

    fn peer_state(&mut self) -> Result<PeerState, Error> {
        self.check()?;
        let r = self
            .ctrl
            .load_u8(self.side.peer_live(), Acquire)
            .map_err(Error::from)
            .and_then(|v| match v {
                LIVE_CLOSED => Ok(PeerState::Closed),
                LIVE_CONNECTED => Ok(PeerState::Connected),
                // A server never sets srv_live to 2; accepting it as "open" costs nothing.
                LIVE_WAITING => Ok(PeerState::Waiting),
                value => Err(Error::Peer(PeerError::BadLive { value })),
            });
        self.sticky(r)
    }

    fn raw_ready(&mut self) -> Result<usize, Error> {
        let ring = self.side.rx();
        let mem = Joined {
            ctrl: &self.ctrl,
            pages: self.pages(ring),
        };
        let r = self.rx.available(&mem).map_err(|e| ring_error(ring, e));
        self.sticky(r)
    }

    fn raw_space(&mut self) -> Result<usize, Error> {
        let ring = self.side.tx();
        let mem = Joined {
            ctrl: &self.ctrl,
            pages: self.pages(ring),
        };
        let r = self.tx.available(&mem).map_err(|e| ring_error(ring, e));
        self.sticky(r)
    }

    /// `request_notify`: post the bit into the peer's byte, then a full fence so that the
    /// caller's re-read of the indexes cannot move before the request.
    fn request_notify(&mut self, bit: u8) -> Result<(), Error> {
        let r = self
            .ctrl
            .fetch_or_u8(self.side.peer_notify(), bit, SeqCst)
            .map_err(Error::from);
        self.sticky(r)?;
        self.ctrl.fence(SeqCst);
        Ok(())
    }

    /// `send_notify`: clear the bit in our own byte; signal only if the peer had asked.
    fn send_notify(&mut self, bit: u8) -> Result<(), Error> {
        // Orders our index update before the look at the request bit; the peer posts its
        // request, fences and re-reads our index, so one of us sees the other's write.
        self.ctrl.fence(SeqCst);
        // A plain load first: the locked clear (which takes the control page's cache line
        // from the peer) is only needed when the bit is set, i.e. when the peer waits.
        let r = self
            .ctrl
            .load_u8(self.side.own_notify(), Relaxed)
            .map_err(Error::from);
        if self.sticky(r)? & bit == 0 {
            return Ok(());
        }
        let r = self
            .ctrl
            .fetch_and_u8(self.side.own_notify(), !bit, SeqCst)
            .map_err(Error::from);
        let prev = self.sticky(r)?;
        if prev & bit != 0 {
            let r = self.notify.notify().map_err(Error::Notify);
            self.sticky(r)?;
        }
        Ok(())
    }

    /// Copies out what is ready (the producer index is loaded and validated once).
    fn rx_read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let ring = self.side.rx();
        let mem = Joined {
            ctrl: &self.ctrl,
            pages: ring_pages(&self.left, &self.right, ring),
        };
        let r = self.rx.read(&mem, buf).map_err(|e| ring_error(ring, e));
        self.sticky(r)
    }

    /// Copies in what fits (the consumer index is loaded and validated once).
    fn tx_write(&mut self, data: &[u8]) -> Result<usize, Error> {
        let ring = self.side.tx();
        let mem = Joined {
            ctrl: &self.ctrl,
            pages: ring_pages(&self.left, &self.right, ring),
        };
        let r = self.tx.write(&mem, data).map_err(|e| ring_error(ring, e));
        self.sticky(r)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        if buf.is_empty() {
            self.peer_state()?;
            return Ok(0);
        }
        // Copy what is ready (one index load). Only when nothing is, request a WRITE
        // notification and re-check: libxenvchan also requests after a short read, which
        // costs a locked operation on the shared line and a peer signal per chunk while
        // streaming; callers sleep only after `Ok(0)` or `prepare_wait`, which both request.
        let mut n = self.rx_read(buf)?;
        if n == 0 {
            self.request_notify(NOTIFY_WRITE)?;
            n += self.rx_read(&mut buf[n..])?;
        }
        if n == 0 {
            // A peer writes its last bytes before clearing its live byte: once we see it
            // closed, one more look finds every byte it sent.
            if self.peer_state()? != PeerState::Closed {
                return Ok(0);
            }
            n = self.rx_read(buf)?;
            if n == 0 {
                return Err(Error::PeerClosed);
            }
        }
        self.send_notify(NOTIFY_READ)?;
        Ok(n)
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.peer_state()? == PeerState::Closed {
            return Err(Error::PeerClosed);
        }
        if data.is_empty() {
            return Ok(0);
        }
        // As in `read`: request a READ notification and re-check only when nothing fits.
        let mut n = self.tx_write(data)?;
        if n == 0 {
            self.request_notify(NOTIFY_READ)?;
            n += self.tx_write(&data[n..])?;
        }
        if n == 0 {
            return Ok(0);
        }
        self.send_notify(NOTIFY_WRITE)?;
        Ok(n)
    }

    fn data_ready(&mut self) -> Result<usize, Error> {
        self.check()?;
        self.request_notify(NOTIFY_WRITE)?;
        self.raw_ready()
    }

    fn buffer_space(&mut self) -> Result<usize, Error> {
        self.check()?;
        self.request_notify(NOTIFY_READ)?;
        self.raw_space()
    }

    fn is_open(&mut self) -> bool {
        matches!(
            self.peer_state(),
            Ok(PeerState::Waiting | PeerState::Connected)
        )
    }

    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
        if interest.read {
            self.request_notify(NOTIFY_WRITE)?;
        }
        if interest.write {
            self.request_notify(NOTIFY_READ)?;
        }
        // Re-check after the requests are posted, or a wakeup between check and sleep is lost.
        if self.peer_state()? == PeerState::Closed {
            return Ok(false);
        }
        if interest.read && self.raw_ready()? > 0 {
            return Ok(false);
        }
        if interest.write && self.raw_space()? > 0 {
            return Ok(false);
        }
        Ok(true)
    }

    /// Test hook: moves all four indexes of an empty, fresh channel to `start` (both ends
    /// must call it before any transfer), to exercise u32 wrap-around without 4 GiB of data.
    #[cfg(test)]
    pub(crate) fn restart_at(&mut self, start: u32) {
        for off in [0, 4, 8, 12] {
            self.ctrl.store_u32(off, start, Release).unwrap();
        }
        for (ring, role) in [
            (self.side.rx(), Role::Consumer),
            (self.side.tx(), Role::Producer),
        ] {
            let mem = Joined {
                ctrl: &self.ctrl,
                pages: self.pages(ring),
            };
            let r = ByteRing::attach(&mem, self.geometry.ring_layout(ring), role).unwrap();
            match role {
                Role::Consumer => self.rx = r,
                Role::Producer => self.tx = r,
            }
        }
    }

    fn close(&mut self) -> Result<(), Error> {
        if self.failed == Some(Error::Closed) {
            return Ok(());
        }
        self.failed = Some(Error::Closed);
        self.ctrl
            .store_u8(self.side.own_live(), LIVE_CLOSED, Release)?;
        self.ctrl.fence(SeqCst);
        self.notify.notify().map_err(Error::Notify)
    }
}

macro_rules! endpoint_api {
    () => {
        /// Copies up to `buf.len()` bytes out of the ring. `Ok(0)`: nothing ready now (a WRITE
        /// notification has been requested; a read that returns data requests nothing, so
        /// sleep only after `Ok(0)` or [`prepare_wait`](Self::prepare_wait)).
        /// `Err(PeerClosed)`: the peer closed and everything it sent has been read.
        pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
            self.core.read(buf)
        }

        /// Copies as much of `data` as fits (a stream: partial writes happen). `Ok(0)`: the
        /// ring is full (a READ notification has been requested; as for `read`, only then).
        pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
            self.core.write(data)
        }

        /// Bytes ready to read; like `libxenvchan_data_ready` it also requests a WRITE
        /// notification, since the caller will act on the value later.
        pub fn data_ready(&mut self) -> Result<usize, Error> {
            self.core.data_ready()
        }

        /// Free bytes in the write ring; also requests a READ notification.
        pub fn buffer_space(&mut self) -> Result<usize, Error> {
            self.core.buffer_space()
        }

        /// Whether the peer is there (a server counts a not-yet-connected client as open).
        /// False once we closed, the endpoint broke, or the peer's live byte is garbage.
        pub fn is_open(&mut self) -> bool {
            self.core.is_open()
        }

        /// The peer's live byte, decoded; garbage breaks the endpoint.
        pub fn peer_state(&mut self) -> Result<PeerState, Error> {
            self.core.peer_state()
        }

        /// Call before sleeping on the event channel: posts notification requests for
        /// `interest`, fences, and re-checks. `Ok(true)`: safe to sleep; `Ok(false)`: there
        /// is something to do now (data, space, or the peer closed).
        pub fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
            self.core.prepare_wait(interest)
        }

        /// Sets our live byte to 0 and notifies the peer. Later calls fail with `Closed`.
        /// Dropping the endpoint does the same (once: after `close` it does nothing more).
        pub fn close(&mut self) -> Result<(), Error> {
            self.core.close()
        }

        /// The sticky error, if the endpoint is broken or closed.
        pub fn error(&self) -> Option<&Error> {
            self.core.failed.as_ref()
        }

        /// The ring orders.
        pub fn geometry(&self) -> Geometry {
            self.core.geometry
        }

        /// The notifier (e.g. to learn the event channel port).
        pub fn notifier(&self) -> &N {
            &self.core.notify
        }

        /// The control page.
        pub fn control_page(&self) -> &M {
            &self.core.ctrl
        }

        /// The separate pages of one ring (`None` for an in-page ring).
        pub fn ring_pages(&self, ring: Ring) -> Option<&M> {
            self.core.pages(ring)
        }
    };
}

/// The server end: grants the pages, reads the left ring, writes the right ring.
#[derive(Debug)]
pub struct Server<M, N> {
    pub(crate) core: Core<M, N>,
}

impl<M: SharedMem, N: Notify> Server<M, N> {
    /// Initializes a freshly granted control page like `init_gnt_srv` \[X\]: zeroes it, sets the
    /// orders, `cli_live = 2`, `srv_live = 1`, `cli_notify = WRITE`, and `grants[]` (left
    /// ring's pages first). `left`/`right` are the ring pages for orders ≥ 12, else `None`.
    pub fn new(
        ctrl: M,
        geometry: Geometry,
        left: Option<M>,
        right: Option<M>,
        grants: &[GrantRef],
        notify: N,
    ) -> Result<Self, LayoutError> {
        let needed = geometry.grant_count();
        if grants.len() != needed {
            return Err(LayoutError::GrantCount {
                given: grants.len(),
                needed,
            });
        }
        if ctrl.size() < PAGE_SIZE {
            return Err(LayoutError::ControlPageTooSmall { size: ctrl.size() });
        }
        ctrl.write(0, &[0u8; PAGE_SIZE])?;
        ctrl.store_u16(field::LEFT_ORDER.start, geometry.left_order(), Release)?;
        ctrl.store_u16(field::RIGHT_ORDER.start, geometry.right_order(), Release)?;
        ctrl.store_u8(field::CLI_LIVE, LIVE_WAITING, Release)?;
        ctrl.store_u8(field::SRV_LIVE, LIVE_CONNECTED, Release)?;
        ctrl.store_u8(field::CLI_NOTIFY, NOTIFY_WRITE, Release)?;
        for (i, g) in grants.iter().enumerate() {
            ctrl.store_u32(field::GRANTS + 4 * i, g.0, Release)?;
        }
        let core = Core::new(Side::Server, ctrl, geometry, left, right, notify)?;
        Ok(Self { core })
    }

    /// Whether a client has attached (`cli_live` left 2). Garbage breaks the endpoint.
    pub fn is_connected(&mut self) -> Result<bool, Error> {
        Ok(self.core.peer_state()? != PeerState::Waiting)
    }

    endpoint_api!();
}

/// The client end: maps the server's pages, writes the left ring, reads the right ring.
#[derive(Debug)]
pub struct Client<M, N> {
    pub(crate) core: Core<M, N>,
}

impl<M: SharedMem, N: Notify> Client<M, N> {
    /// Attaches to a server's control page whose [`Offer`] the caller read (and whose ring
    /// pages it mapped: `left` writable, `right` read-only, for orders ≥ 12). Sets
    /// `cli_live = 1` and `srv_notify = WRITE`, then notifies, like `libxenvchan_client_init`.
    /// The orders are taken from `offer` and never re-read.
    pub fn attach(
        ctrl: M,
        offer: &Offer,
        left: Option<M>,
        right: Option<M>,
        notify: N,
    ) -> Result<Self, Error> {
        let core = Core::new(Side::Client, ctrl, offer.geometry, left, right, notify)?;
        let mut c = Self { core };
        let ctrl = &c.core.ctrl;
        ctrl.store_u8(field::CLI_LIVE, LIVE_CONNECTED, Release)?;
        ctrl.store_u8(field::SRV_NOTIFY, NOTIFY_WRITE, Release)?;
        ctrl.fence(SeqCst);
        let r = c.core.notify.notify().map_err(Error::Notify);
        c.core.sticky(r)?;
        Ok(c)
    }

    endpoint_api!();
}

/// Grant refs a server writes, as one list (left ring first), for [`Server::new`].
pub fn grant_list(left: &[GrantRef], right: &[GrantRef]) -> Vec<GrantRef> {
    let mut v = Vec::with_capacity(left.len() + right.len());
    v.extend_from_slice(left);
    v.extend_from_slice(right);
    v
}
