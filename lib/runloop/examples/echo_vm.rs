//! A test unikernel on the hosted backend: `test.Echo` (stdin back), `test.Upper` (uppercased),
//! `test.Sum` (length and FNV-1a of stdin), `test.Relay+TARGET` (relays through our own call
//! to `test.Echo` in TARGET, `dom0` included) and `test.Refuse` (always refused: 126).
//! The sim starts it as a qube's `kernel`; it runs until `qvm-shutdown`.

use std::collections::HashMap;
use std::process::ExitCode;

use runloop::{Admit, App, Call, CallId, Config, Cx, Platform, SendError};

/// What a served call does with its stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Echo,
    Upper,
    Sum { len: u64, hash: u64 },
    Relay { remote: Option<CallId> },
}

/// Bytes for one direction that did not fit yet; their source is paused meanwhile.
#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    /// The call whose incoming bytes these are (paused until they are sent).
    source: Option<CallId>,
}

#[derive(Debug)]
struct Served {
    mode: Mode,
    /// For our caller's stdout.
    to_caller: Held,
    /// For the remote service's stdin (relay).
    to_remote: Held,
    input_done: bool,
    /// Relay: the remote call ended with this code.
    remote_exit: Option<Option<i32>>,
    finished: bool,
}

#[derive(Debug, Default)]
struct EchoVm {
    served: HashMap<CallId, Served>,
    /// Our outgoing call → the served call it relays for.
    remote_of: HashMap<CallId, CallId>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Sends `data` to `dest` or holds it and pauses `source`.
fn forward<P: Platform>(
    cx: &mut Cx<'_, P>,
    held: &mut Held,
    dest: CallId,
    source: CallId,
    data: &[u8],
) {
    if held.bytes.is_empty() {
        match cx.send(dest, data) {
            Ok(()) => return,
            Err(SendError::Full { .. }) => {}
            Err(_) => return, // the destination is gone; its `closed` cleans up
        }
    }
    held.bytes.extend_from_slice(data);
    held.source = Some(source);
    cx.pause(source);
}

/// Retries held bytes; resumes their source once sent.
fn retry<P: Platform>(cx: &mut Cx<'_, P>, held: &mut Held, dest: CallId) {
    if held.bytes.is_empty() {
        return;
    }
    match cx.send(dest, &held.bytes) {
        Ok(()) => {}
        Err(SendError::Full { .. }) => return,
        Err(_) => {}
    }
    held.bytes.clear();
    if let Some(src) = held.source.take() {
        cx.resume(src);
    }
}

impl EchoVm {
    /// Moves held bytes and ends calls whose work is done.
    fn progress<P: Platform>(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        let Some(s) = self.served.get_mut(&id) else {
            return;
        };
        retry(cx, &mut s.to_caller, id);
        if let Mode::Relay {
            remote: Some(remote),
        } = s.mode
        {
            retry(cx, &mut s.to_remote, remote);
            if s.input_done && s.to_remote.bytes.is_empty() {
                cx.end_input(remote);
            }
        }
        if s.finished || !s.to_caller.bytes.is_empty() {
            return;
        }
        let code = match s.mode {
            Mode::Echo | Mode::Upper if s.input_done => Some(0),
            Mode::Relay { .. } => s.remote_exit.map(|e| e.unwrap_or(125)),
            _ => None,
        };
        if let Some(code) = code {
            s.finished = true;
            cx.finish(id, code);
        }
    }
}

impl<P: Platform> App<P> for EchoVm {
    fn services(&self) -> &[&str] {
        &[
            "test.Echo",
            "test.Upper",
            "test.Sum",
            "test.Relay",
            "test.Refuse",
        ]
    }

    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), runloop::AppError> {
        let (n, t) = (cx.qubesdb().len(), cx.config().connect_timeout);
        cx.log(format_args!(
            "started: {n} QubesDB entries, connect timeout {t:?}"
        ));
        Ok(())
    }

    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit {
        let mode = match call.service {
            "test.Echo" => Mode::Echo,
            "test.Upper" => Mode::Upper,
            "test.Sum" => Mode::Sum {
                len: 0,
                hash: FNV_OFFSET,
            },
            "test.Relay" => match cx.call(call.argument, "test.Echo+relayed") {
                Ok(remote) => {
                    self.remote_of.insert(remote, id);
                    Mode::Relay {
                        remote: Some(remote),
                    }
                }
                Err(e) => {
                    cx.log(format_args!("relay to {}: {e}", call.argument));
                    return Admit::Refuse;
                }
            },
            _ => return Admit::Refuse,
        };
        cx.log(format_args!(
            "{id}: {}+{} from {}",
            call.service, call.argument, call.source
        ));
        self.served.insert(
            id,
            Served {
                mode,
                to_caller: Held::default(),
                to_remote: Held::default(),
                input_done: false,
                remote_exit: None,
                finished: false,
            },
        );
        Admit::Accept
    }

    fn input(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        let Some(s) = self.served.get_mut(&id) else {
            return;
        };
        match &mut s.mode {
            Mode::Echo => forward(cx, &mut s.to_caller, id, id, data),
            Mode::Upper => {
                let up = data.to_ascii_uppercase();
                forward(cx, &mut s.to_caller, id, id, &up);
            }
            Mode::Sum { len, hash } => {
                *len += data.len() as u64;
                for &b in data {
                    *hash = (*hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                }
            }
            Mode::Relay { remote } => {
                if let Some(r) = *remote {
                    forward(cx, &mut s.to_remote, r, id, data);
                }
            }
        }
    }

    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        let Some(s) = self.served.get_mut(&id) else {
            return;
        };
        s.input_done = true;
        if let Mode::Sum { len, hash } = s.mode {
            let line = format!("{len} {hash:016x}\n");
            forward(cx, &mut s.to_caller, id, id, line.as_bytes());
            s.finished = true;
            cx.finish(id, 0);
            return;
        }
        self.progress(cx, id);
    }

    fn output(&mut self, cx: &mut Cx<'_, P>, remote: CallId, data: &[u8]) {
        let Some(&id) = self.remote_of.get(&remote) else {
            return;
        };
        if let Some(s) = self.served.get_mut(&id) {
            forward(cx, &mut s.to_caller, id, remote, data);
        }
    }

    fn closed(&mut self, cx: &mut Cx<'_, P>, id: CallId, exit: Option<i32>) {
        if let Some(served) = self.remote_of.remove(&id) {
            cx.log(format_args!("{id} (relay for {served}) ended: {exit:?}"));
            if let Some(s) = self.served.get_mut(&served) {
                s.remote_exit = Some(exit);
                s.mode = Mode::Relay { remote: None };
            }
            self.progress(cx, served);
            return;
        }
        if let Some(s) = self.served.remove(&id) {
            cx.log(format_args!("{id} ended: {exit:?}"));
            if let Mode::Relay {
                remote: Some(remote),
            } = s.mode
            {
                self.remote_of.remove(&remote);
                cx.abort(remote);
            }
        }
    }

    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<runloop::Instant> {
        let ids: Vec<CallId> = self.served.keys().copied().collect();
        for id in ids {
            self.progress(cx, id);
        }
        None
    }

    fn stop(&mut self, cx: &mut Cx<'_, P>) {
        cx.log(format_args!(
            "stopping with {} calls open",
            self.served.len()
        ));
    }
}

fn main() -> ExitCode {
    let env = match platform_hosted::env_from_environment() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("echo_vm: hosted environment: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = Config {
        max_calls: 16,
        ..Config::default()
    };
    // `connect_timeout=SECS` in kernelopts shortens the wait for a silent peer (tests).
    for opt in env.cmdline.split_whitespace() {
        if let Some(secs) = opt
            .strip_prefix("connect_timeout=")
            .and_then(|v| v.parse().ok())
        {
            cfg.connect_timeout = std::time::Duration::from_secs(secs);
        }
    }
    match runloop::run(env, EchoVm::default(), cfg) {
        Ok(()) => {
            eprintln!("echo_vm: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_vm: {e}");
            ExitCode::FAILURE
        }
    }
}
