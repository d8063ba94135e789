//! Event channels without upcalls: bind, notify, and wait with `SCHEDOP_poll` on the bound
//! ports, reading and clearing pending bits in shared_info. Plus the PV clock.
#![forbid(unsafe_code)]

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::AtomicU64;

use platform_api::{
    Clock, DomId, Duration, Events, EvtchnPort, Instant, Notify, Ordering, PlatformError, Port,
    PortSet, SharedMem,
};

use crate::abi::{shared_info as si, VcpuTimeInfo, Wire};
use crate::boot;
use crate::hypercall::{self, XenErrno};
use crate::pending::{pending_in, word_bit, WORDS};
use crate::shared::RawPages;
use crate::time::WallClock;

/// Xen accepts at most this many ports in one `SCHEDOP_poll`.
pub const MAX_POLL_PORTS: usize = 128;

/// The latest time [`XenClock::now_ns`] returned.
static LAST_NS: AtomicU64 = AtomicU64::new(0);

/// Xen system time from vCPU 0's time record in shared_info.
#[derive(Debug, Clone, Copy)]
pub struct XenClock {
    shared: &'static RawPages,
}

impl XenClock {
    /// A clock over shared_info.
    pub fn new(shared: &'static RawPages) -> Self {
        Self { shared }
    }

    /// vCPU 0's time record, copied consistently (retried while Xen updates it).
    pub fn record(&self) -> VcpuTimeInfo {
        self.record_and_tsc().0
    }

    /// The record and a TSC read inside the same version window: if Xen moved the vCPU to
    /// another physical CPU (and rewrote the record) meanwhile, both are read again, so a TSC
    /// of one CPU is never scaled by another's record.
    fn record_and_tsc(&self) -> (VcpuTimeInfo, u64) {
        let base = si::VCPU_INFO + si::VCPU_TIME;
        loop {
            let v1 = self.shared.load_u32(base, Ordering::Acquire).unwrap_or(0);
            let mut raw = [0u8; VcpuTimeInfo::SIZE];
            let _ = self.shared.read(base, &mut raw);
            let tsc = boot::rdtsc();
            let v2 = self.shared.load_u32(base, Ordering::Acquire).unwrap_or(1);
            if v1 == v2 && v1 & 1 == 0 {
                return (VcpuTimeInfo::decode(&raw).unwrap_or_default(), tsc);
            }
        }
    }

    /// Nanoseconds of Xen system time, never less than a value returned before (one vCPU;
    /// TSCs of the lab's emulated CPUs disagree, and an `Instant` must not go back).
    pub fn now_ns(&self) -> u64 {
        let (r, tsc) = self.record_and_tsc();
        let t = r.system_time_at(tsc);
        LAST_NS.fetch_max(t, Ordering::Relaxed).max(t)
    }

    /// The wall clock at system time zero.
    pub fn wall_clock(&self) -> WallClock {
        let r = |o| self.shared.load_u32(o, Ordering::Acquire).unwrap_or(0);
        loop {
            let v = r(si::WC_VERSION);
            let w = WallClock::new(r(si::WC_SEC), r(si::WC_SEC_HI), r(si::WC_NSEC));
            if v & 1 == 0 && v == r(si::WC_VERSION) {
                return w;
            }
        }
    }
}

impl Clock for XenClock {
    fn now(&self) -> Instant {
        Instant(self.now_ns())
    }
}

/// A bound port; closed (and no longer waited on) when dropped, unless it was given to us
/// (console, xenstore).
#[derive(Debug)]
pub struct XenPort {
    port: EvtchnPort,
    owned: Option<Rc<RefCell<PortSet>>>,
}

impl XenPort {
    /// A port Xen or the toolstack bound for us; never closed by us.
    pub fn given(port: EvtchnPort) -> Self {
        Self { port, owned: None }
    }
}

impl Notify for XenPort {
    fn notify(&self) -> Result<(), PlatformError> {
        hypercall::evtchn_send(self.port.get()).map_err(|_| PlatformError::BadPort(self.port))
    }
}

impl Port for XenPort {
    fn port(&self) -> EvtchnPort {
        self.port
    }
}

impl Drop for XenPort {
    fn drop(&mut self) {
        if let Some(interest) = &self.owned {
            // Polling a closed port is -EINVAL: stop waiting on it first.
            interest.borrow_mut().remove(self.port);
            let _ = hypercall::evtchn_close(self.port.get());
        }
    }
}

fn port_err(e: XenErrno, what: &'static str) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.0 as i32,
    }
}

/// The ports one event loop waits on.
#[derive(Debug)]
pub struct XenEvents {
    shared: &'static RawPages,
    clock: XenClock,
    interest: Rc<RefCell<PortSet>>,
}

impl XenEvents {
    /// No ports yet.
    pub fn new(shared: &'static RawPages, clock: XenClock) -> Self {
        Self {
            shared,
            clock,
            interest: Rc::new(RefCell::new(PortSet::new())),
        }
    }

    /// A new, empty set over the same shared_info: a blocking driver waits on its own port
    /// there without taking the pending bits of the loop's ports.
    pub fn sibling(&self) -> Self {
        Self::new(self.shared, self.clock)
    }

    /// The clock `wait` measures timeouts with.
    pub fn clock(&self) -> XenClock {
        self.clock
    }

    /// Adds a port bound elsewhere (console, xenstore, a VIRQ) to what `wait` watches.
    pub fn watch(&mut self, port: EvtchnPort) {
        self.interest.borrow_mut().insert(port);
    }

    /// Stops watching a port.
    pub fn unwatch(&mut self, port: EvtchnPort) {
        self.interest.borrow_mut().remove(port);
    }

    /// Binds `VIRQ_TIMER` and watches it.
    pub fn bind_timer(&mut self) -> Result<XenPort, PlatformError> {
        let p = hypercall::evtchn_bind_virq(crate::abi::VIRQ_TIMER)
            .map_err(|e| port_err(e, "bind VIRQ_TIMER"))?;
        let port = EvtchnPort::new(p).map_err(|_| PlatformError::Full {
            what: "event channel ports",
        })?;
        self.interest.borrow_mut().insert(port);
        Ok(XenPort {
            port,
            owned: Some(self.interest.clone()),
        })
    }

    /// Arms the one-shot timer (VIRQ_TIMER, see [`XenEvents::bind_timer`]) at `at`.
    pub fn set_timer(&mut self, at: Instant) -> Result<(), PlatformError> {
        hypercall::set_timer(at.as_nanos().max(1)).map_err(|e| port_err(e, "set_timer_op"))
    }

    /// The watched ports that are pending now, with their pending bits cleared.
    fn take_pending(&self) -> PortSet {
        let interest = self.interest.borrow().clone();
        let mut words = [0u64; WORDS];
        for p in interest.iter() {
            let (w, _) = word_bit(p);
            words[w] = self
                .shared
                .load_u64(si::EVTCHN_PENDING + w * 8, Ordering::Acquire)
                .unwrap_or(0);
        }
        let got = pending_in(&interest, &words);
        for p in got.iter() {
            let (w, bit) = word_bit(p);
            let _ = self
                .shared
                .fetch_and_u64(si::EVTCHN_PENDING + w * 8, !bit, Ordering::SeqCst);
        }
        got
    }

    fn bound(
        &mut self,
        p: Result<u32, XenErrno>,
        what: &'static str,
    ) -> Result<XenPort, PlatformError> {
        let p = p.map_err(|e| port_err(e, what))?;
        match EvtchnPort::new(p) {
            Ok(port) => {
                self.interest.borrow_mut().insert(port);
                Ok(XenPort {
                    port,
                    owned: Some(self.interest.clone()),
                })
            }
            Err(_) => {
                let _ = hypercall::evtchn_close(p);
                Err(PlatformError::Full {
                    what: "event channel ports",
                })
            }
        }
    }
}

impl Events for XenEvents {
    type Port = XenPort;

    fn alloc_unbound(&mut self, remote: DomId) -> Result<XenPort, PlatformError> {
        let r = hypercall::evtchn_alloc_unbound(remote.get());
        self.bound(r, "EVTCHNOP_alloc_unbound")
    }

    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<XenPort, PlatformError> {
        let r = hypercall::evtchn_bind_interdomain(remote.get(), remote_port.get());
        self.bound(r, "EVTCHNOP_bind_interdomain")
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<PortSet, PlatformError> {
        let deadline = timeout.map(|d| {
            self.clock
                .now_ns()
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        let ports: Vec<u32> = self.interest.borrow().iter().map(|p| p.get()).collect();
        if ports.len() > MAX_POLL_PORTS {
            return Err(PlatformError::Full {
                what: "ports in one SCHEDOP_poll",
            });
        }
        loop {
            let got = self.take_pending();
            if !got.is_empty() || timeout == Some(Duration::ZERO) {
                return Ok(got);
            }
            if let Some(d) = deadline {
                if self.clock.now_ns() >= d {
                    return Ok(got);
                }
            }
            // Xen returns at once if a port is pending, else when one becomes pending or the
            // (absolute) deadline passes; 0 means none.
            hypercall::poll(&ports, deadline.unwrap_or(0))
                .map_err(|e| port_err(e, "SCHEDOP_poll"))?;
        }
    }
}
