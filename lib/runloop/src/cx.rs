//! What the app holds during a callback: the platform ([`Cx::env`]) and requests to the loop
//! (send, finish, call, QubesDB, log, stop), applied to the loop's state at once.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use platform_api::{Clock, Console, Env, Instant, Platform, PortSet};
use qubes::qrexec::{self, Agent};
use qubes::qubesdb::Agent as QubesDb;

use crate::calls::{Kind, Slot, State};
use crate::{AppError, CallError, CallId, Config, SendError};

/// Longest console line; longer ones are cut (a log line must not grow without bound).
pub(crate) const MAX_LOG_LINE: usize = 512;

/// The loop's state that the app's requests touch.
pub(crate) struct Core<P: Platform> {
    pub(crate) cfg: Config,
    pub(crate) qrexec: Agent,
    pub(crate) qdb: QubesDb,
    pub(crate) calls: Vec<Slot<P>>,
    next_id: u32,
    pub(crate) stop: bool,
    pub(crate) woken: PortSet,
    pub(crate) app_ports: PortSet,
}

impl<P: Platform> Core<P> {
    pub(crate) fn new(cfg: Config, qrexec: Agent, qdb: QubesDb) -> Self {
        Self {
            cfg,
            qrexec,
            qdb,
            calls: Vec::new(),
            next_id: 1,
            stop: false,
            woken: PortSet::new(),
            app_ports: PortSet::new(),
        }
    }

    pub(crate) fn fresh_id(&mut self) -> CallId {
        let id = CallId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    pub(crate) fn slot(&mut self, id: CallId) -> Option<&mut Slot<P>> {
        self.calls
            .iter_mut()
            .find(|s| s.id == id && s.dead.is_none())
    }
}

/// Writes one console line `<name>: <message>`, cut at [`MAX_LOG_LINE`].
pub(crate) fn log_line<P: Platform>(env: &mut Env<P>, args: fmt::Arguments<'_>) {
    let mut line = Line(String::new());
    let _ = write!(line, "{}: ", env.name);
    let _ = line.write_fmt(args);
    line.0.push('\n');
    env.console.write(line.0.as_bytes());
}

/// A string that stops growing at [`MAX_LOG_LINE`] bytes (on a char boundary).
struct Line(String);

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.len() + c.len_utf8() > MAX_LOG_LINE {
                break;
            }
            // A peer's text must not start a new console line.
            self.0.push(if c.is_control() { '?' } else { c });
        }
        Ok(())
    }
}

/// The app's handle on the loop during a callback.
pub struct Cx<'a, P: Platform> {
    /// The platform: store, grants, events, clock, console, devices' constructors.
    pub env: &'a mut Env<P>,
    core: &'a mut Core<P>,
}

impl<P: Platform> fmt::Debug for Cx<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx")
            .field("env", &self.env)
            .field("calls", &self.core.calls.len())
            .finish_non_exhaustive()
    }
}

impl<'a, P: Platform> Cx<'a, P> {
    pub(crate) fn new(env: &'a mut Env<P>, core: &'a mut Core<P>) -> Self {
        Self { env, core }
    }

    /// Now, by the platform's monotonic clock.
    pub fn now(&self) -> Instant {
        self.env.clock.now()
    }

    /// Queues `data` for the peer of call `id`, all of it or nothing: the service's stdout
    /// for a served call, our stdin for our own call (sent once it is connected).
    /// A `MSG_JUST_EXEC` call has no stdout; its data is dropped.
    pub fn send(&mut self, id: CallId, data: &[u8]) -> Result<(), SendError> {
        let slot = self.core.slot(id).ok_or(SendError::UnknownCall(id))?;
        if !slot.accepts_data() {
            return Err(SendError::Ended(id));
        }
        if let Kind::Served {
            just_exec: true, ..
        } = slot.kind
        {
            return Ok(());
        }
        slot.out
            .push(data)
            .map_err(|space| SendError::Full { space })
    }

    /// How many bytes [`Cx::send`] takes for call `id` now (0 for a call that takes none).
    pub fn send_space(&self, id: CallId) -> usize {
        self.core
            .calls
            .iter()
            .find(|s| s.id == id && s.dead.is_none() && s.accepts_data())
            .map_or(0, |s| s.out.space())
    }

    /// Ends a served call: after the queued bytes, stdout EOF and then `exit_code`. The app
    /// hears [`crate::App::closed`] once it is delivered. Ignored for other calls.
    pub fn finish(&mut self, id: CallId, exit_code: i32) {
        if let Some(slot) = self.core.slot(id) {
            if matches!(slot.kind, Kind::Served { answer: None, .. }) && slot.finish.is_none() {
                slot.finish = Some(exit_code);
            }
        }
    }

    /// Calls `service_and_arg` (`svc` or `svc+arg`) in `target` (a qube name, `dom0`,
    /// `@default`, `@dispvm[:X]`), through dom0's policy. Its stdout arrives through
    /// [`crate::App::output`], the end through [`crate::App::closed`] (126 if refused).
    pub fn call(&mut self, target: &str, service_and_arg: &str) -> Result<CallId, CallError> {
        if self.core.stop {
            return Err(CallError::Stopping);
        }
        if self.core.calls.len() >= self.core.cfg.max_calls {
            return Err(CallError::Full {
                what: "qrexec calls",
            });
        }
        let request = self
            .core
            .qrexec
            .trigger_service(target, service_and_arg)
            .map_err(|e| match e {
                qrexec::Error::Full { what } => CallError::Full { what },
                qrexec::Error::InvalidArgument(what) => CallError::InvalidName(what),
                _ => CallError::NotConnected,
            })?;
        let id = self.core.fresh_id();
        let now = self.env.clock.now();
        let out = self.core.cfg.out_bytes;
        self.core.calls.push(Slot::new(
            id,
            Kind::Outgoing,
            State::Pending(request),
            now,
            out,
        ));
        Ok(id)
    }

    /// Our own call: EOF on its stdin once the queued bytes are sent. Ignored otherwise.
    pub fn end_input(&mut self, id: CallId) {
        if let Some(slot) = self.core.slot(id) {
            if slot.kind == Kind::Outgoing {
                slot.end_input = true;
            }
        }
    }

    /// Stops delivering call `id`'s incoming bytes ([`crate::App::input`] or
    /// [`crate::App::output`]) until [`Cx::resume`]: its vchan fills up and the peer waits.
    /// This is the app's backpressure (e.g. while [`Cx::send`] to another call is full).
    pub fn pause(&mut self, id: CallId) {
        if let Some(slot) = self.core.slot(id) {
            slot.paused = true;
        }
    }

    /// Delivers call `id`'s incoming bytes again after [`Cx::pause`].
    pub fn resume(&mut self, id: CallId) {
        if let Some(slot) = self.core.slot(id) {
            slot.paused = false;
        }
    }

    /// Ends call `id` now, whatever its state: the data vchan is closed (a served call's
    /// caller sees it end without an exit code). The app hears [`crate::App::closed`] with
    /// `None` after this callback.
    pub fn abort(&mut self, id: CallId) {
        if let Some(slot) = self.core.slot(id) {
            slot.dead = Some(None);
        }
    }

    /// The local copy of QubesDB (read and list; complete once [`crate::App::start`] runs).
    pub fn qubesdb(&self) -> &QubesDb {
        &self.core.qdb
    }

    /// Reports changes under `prefix` through [`crate::App::qubesdb`] from now on.
    pub fn qubesdb_watch(&mut self, prefix: &str) -> Result<(), AppError> {
        self.core.qdb.watch(prefix)?;
        Ok(())
    }

    /// Writes `path` = `value` to QubesDB (the VM may write its own entries, e.g.
    /// `/qubes-service/…` answers); dom0's answer arrives through [`crate::App::qubesdb`].
    pub fn qubesdb_write(&mut self, path: &str, value: &[u8]) -> Result<(), AppError> {
        self.core.qdb.write(path, value)?;
        Ok(())
    }

    /// Writes one console line, prefixed with our name; control characters become `?` and
    /// the line is cut at 512 bytes.
    pub fn log(&mut self, args: fmt::Arguments<'_>) {
        log_line(self.env, args);
    }

    /// Stops the loop after this callback as if poweroff had been requested.
    pub fn request_stop(&mut self) {
        self.core.stop = true;
    }

    /// The event ports that fired in the last wait (all of them, the loop's own included).
    pub fn woken(&self) -> &PortSet {
        &self.core.woken
    }

    /// Whether one of the ports the app gave in [`crate::App::wait_ports`] fired in the last
    /// wait (to skip draining devices after wake-ups that were not theirs).
    pub fn woken_app(&self) -> bool {
        self.core
            .app_ports
            .iter()
            .any(|p| self.core.woken.contains(p))
    }

    /// The bounds the loop runs with.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }
}
