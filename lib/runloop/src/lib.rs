//! The one event loop of every unikernel: qrexec agent, QubesDB client, shutdown watch, app calls.
//! Single-threaded, woken by event channels, generic over [`platform_api::Platform`].
//!
//! An app implements [`App`] and hands itself to [`run`], which connects QubesDB (vchan client of
//! dom0 port 111) and syncs, serves the qrexec control vchan (port 512) for dom0, watches
//! `control/shutdown`, and then loops: earliest deadline, one [`platform_api::Events::wait`], pump
//! every vchan, deliver what arrived to the app, [`App::poll`]. The app acts through [`Cx`];
//! its backpressure is [`Cx::pause`] (a paused call's vchan fills and its peer waits).
//!
//! Trust: dom0's daemons and every qrexec peer are hostile. A data-channel peer that breaks the
//! protocol, stalls or dies ends its own call only (one log line, [`App::closed`] with `None`);
//! only dom0 breaking the control or QubesDB channel ends [`run`]. Every queue is bounded by
//! [`Config`]. Unsafe: none.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod calls;
mod cx;
pub mod deadline;
mod engine;
mod entry;
mod error;
pub mod names;

use core::fmt;

pub use cx::Cx;
pub use engine::run;
pub use entry::main_with;
pub use error::{AppError, CallError, RunError, SendError};
pub use platform_api::{Duration, Env, Instant, Platform, PortSet, WatchEvent};
/// The VM's QubesDB copy ([`Cx::qubesdb`]) and what it reports ([`App::qubesdb`]).
pub use qubes::qubesdb::{Agent as QubesDb, Event as QubesDbEvent, WatchId};

/// One call, ours or served, for as long as it lives. Ids are never reused within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u32);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.0)
    }
}

/// An incoming qrexec call for one of our services, as the daemon described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    /// The service name, e.g. `qubes.SshAgent`; one of [`App::services`].
    pub service: &'a str,
    /// What followed `+`, `""` if nothing (both forms mean the same to policy). Already
    /// checked against qrexec's charset `A-Za-z0-9+-._`.
    pub argument: &'a str,
    /// The calling qube's name as the daemon sent it (`dom0` for dom0).
    pub source: &'a str,
}

/// The app's answer to an incoming [`Call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it: stdin arrives through [`App::input`], answer with [`Cx::send`] and
    /// [`Cx::finish`].
    Accept,
    /// Refuse it: the caller gets exit code 126 and the app hears nothing more of it.
    Refuse,
}

/// A unikernel's logic, driven by [`run`]. Every method runs on the loop's one thread and must
/// not block; long work is split across [`App::poll`] calls with a deadline.
pub trait App<P: Platform> {
    /// The exact service names served (without `+argument`); other calls get exit code 127.
    fn services(&self) -> &[&str];

    /// QubesDB is synced: open devices, set QubesDB watches. An error ends [`run`].
    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        let _ = cx;
        Ok(())
    }

    /// A call for one of [`App::services`] arrived; `id` names it from now on.
    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit;

    /// Bytes of the caller's stdin (served calls); never empty. An app that cannot take
    /// more now (its [`Cx::send`] is full) calls [`Cx::pause`] and later [`Cx::resume`].
    fn input(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]);

    /// The caller closed its stdin (served calls). A `MSG_JUST_EXEC` call has no stdin and
    /// gets this right after [`App::call`].
    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        let _ = (cx, id);
    }

    /// Bytes of the remote service's stdout (our calls, [`Cx::call`]); never empty. Its
    /// stderr is dropped.
    fn output(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        let _ = (cx, id, data);
    }

    /// The call is over and `id` is dead. Our calls: the remote exit code (126 when policy
    /// refused it). Served calls: the code given to [`Cx::finish`]. `None`: the channel died
    /// (peer gone or broke the protocol, connect timeout, shutdown).
    fn closed(&mut self, cx: &mut Cx<'_, P>, id: CallId, exit: Option<i32>) {
        let _ = (cx, id, exit);
    }

    /// A QubesDB event (sync done, a watched prefix changed, firewall commit, write answers).
    fn qubesdb(&mut self, cx: &mut Cx<'_, P>, ev: &QubesDbEvent) {
        let _ = (cx, ev);
    }

    /// Called after every wake-up (and once after [`App::start`]): drain devices, run timers.
    /// Returns the next time the app wants to be polled even if nothing happens.
    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<Instant> {
        let _ = cx;
        None
    }

    /// Adds the event ports of the app's own devices (network, GUI vchan). The loop asks
    /// before every wait and [`Cx::woken_app`] says which of them fired; a wait wakes for
    /// every bound port of `env.events` anyway, so a port left out is still not missed.
    fn wait_ports(&self, ports: &mut PortSet) {
        let _ = ports;
    }

    /// A xenstore watch the app set on `cx.env.store` fired (the loop takes every fired
    /// watch from the one store connection, so the app's arrive here, not through
    /// [`platform_api::Watches::poll_watch`]).
    fn watch(&mut self, cx: &mut Cx<'_, P>, ev: &WatchEvent) {
        let _ = (cx, ev);
    }

    /// Poweroff was requested (or [`Cx::request_stop`]): flush and release. Calls still open
    /// are closed by the loop afterwards (the app hears [`App::closed`] with `None`).
    fn stop(&mut self, cx: &mut Cx<'_, P>) {
        let _ = cx;
    }
}

/// Bounds and timeouts of [`run`]. Build with struct update from [`Config::default`].
///
/// Memory per open call is about `in_bytes` twice, `out_bytes`, 16 KiB of transmit buffer and
/// the data channel's own queue (at most two 64 KiB chunks): ~340 KiB with the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// qrexec calls open at once, served and ours together; more incoming calls are dropped by
    /// the agent (the caller sees the channel close) and [`Cx::call`] fails with `Full`.
    pub max_calls: usize,
    /// Bytes [`Cx::send`] may queue per call ahead of the data channel.
    pub out_bytes: usize,
    /// Bytes of peer input held per call before it is delivered (read buffer and decoded
    /// chunks); a larger chunk is taken in pieces.
    pub in_bytes: usize,
    /// How long a data channel may take to connect (either role) before its call is dropped.
    pub connect_timeout: Duration,
    /// How long to wait for dom0's QubesDB daemon and its first full sync.
    pub qubesdb_timeout: Duration,
    /// Longest sleep while the store cannot wake the loop (no [`platform_api::Watches::port`]).
    pub store_poll: Duration,
    /// Ring size of each data vchan, both directions (the C agent uses 64 KiB).
    pub data_ring: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_calls: 8,
            out_bytes: 64 * 1024,
            in_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            qubesdb_timeout: Duration::from_secs(30),
            store_poll: Duration::from_millis(100),
            data_ring: 65536,
        }
    }
}
