//! The loop in-process against a scripted dom0 on vchan's in-memory hub (grants, event
//! channels, xenstore): the paths a real sim cannot provoke — QubesDB never appearing, dom0
//! breaking the control protocol — plus poweroff and a dom0 → VM call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use platform_api::{
    BlockDevice, Clock, Console, DomId, Duration, Entropy, Env, Events, EvtchnPort, Instant,
    NetDevice, Platform, PlatformError, Store, StoreError, Tx, WatchEvent, Watches,
};
use qubes::qrexec::data::{Event as DataEvent, Handshake, Limits as DataLimits, Role};
use qubes::qrexec::{self, DataChannel, Stream};
use qubes::qubesdb::{Daemon as QdbDaemon, DaemonLimits};
use runloop::{Admit, App, AppError, Call, CallId, Config, Cx, RunError};
use vchan::setup::{client_init, server_init};
use vchan::test_utils::{FakeEvents, FakeGrants, FakeStore, Hub};
use vchan::{Client, Server};

const VM: u16 = 5;
const DEADLINE: StdDuration = StdDuration::from_secs(20);

/// The fake store plus the watches the loop sets (polled: no port wakes the loop).
struct Xs {
    store: FakeStore,
    hub: Hub,
    watches: Vec<(String, String, Option<Vec<u8>>)>,
}

impl Store for Xs {
    fn read(&mut self, tx: Tx, p: &str) -> Result<Vec<u8>, StoreError> {
        self.store.read(tx, p)
    }
    fn write(&mut self, tx: Tx, p: &str, v: &[u8]) -> Result<(), StoreError> {
        self.store.write(tx, p, v)
    }
    fn mkdir(&mut self, tx: Tx, p: &str) -> Result<(), StoreError> {
        self.store.mkdir(tx, p)
    }
    fn rm(&mut self, tx: Tx, p: &str) -> Result<(), StoreError> {
        self.store.rm(tx, p)
    }
    fn directory(&mut self, tx: Tx, p: &str) -> Result<Vec<String>, StoreError> {
        self.store.directory(tx, p)
    }
    fn get_perms(&mut self, tx: Tx, p: &str) -> Result<Vec<platform_api::Perm>, StoreError> {
        self.store.get_perms(tx, p)
    }
    fn set_perms(&mut self, tx: Tx, p: &str, v: &[platform_api::Perm]) -> Result<(), StoreError> {
        self.store.set_perms(tx, p, v)
    }
    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        self.store.transaction_start()
    }
    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), StoreError> {
        self.store.transaction_end(tx, commit)
    }
}

fn abs(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/local/domain/{VM}/{p}")
    }
}

impl Watches for Xs {
    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        // `None` as the last value: fires once at once, like xenstored.
        self.watches.push((abs(path), token.to_string(), None));
        Ok(())
    }
    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.watches
            .retain(|(p, t, _)| !(p == &abs(path) && t == token));
        Ok(())
    }
    fn poll_watch(&mut self) -> Result<Option<WatchEvent>, StoreError> {
        for (path, token, last) in &mut self.watches {
            let now = Some(self.hub.node(path).unwrap_or_default());
            if *last != now {
                *last = now;
                return Ok(Some(WatchEvent {
                    path: path.clone(),
                    token: token.clone(),
                }));
            }
        }
        Ok(None)
    }
    fn port(&self) -> Option<EvtchnPort> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
struct Mono(std::time::Instant);
impl Clock for Mono {
    fn now(&self) -> Instant {
        Instant(self.0.elapsed().as_nanos() as u64)
    }
}

struct NoEntropy;
impl Entropy for NoEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        buf.fill(4);
    }
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);
impl Console for Log {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(bytes));
    }
}
impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

enum NoDevice {}
impl NetDevice for NoDevice {
    fn mac(&self) -> [u8; 6] {
        match *self {}
    }
    fn mtu(&self) -> usize {
        match *self {}
    }
    fn recv(&mut self, _: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        match *self {}
    }
    fn send(&mut self, _: &[u8]) -> Result<bool, PlatformError> {
        match *self {}
    }
    fn port(&self) -> EvtchnPort {
        match *self {}
    }
    fn is_up(&self) -> bool {
        match *self {}
    }
}
impl BlockDevice for NoDevice {
    fn sector_size(&self) -> usize {
        match *self {}
    }
    fn sectors(&self) -> u64 {
        match *self {}
    }
    fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), PlatformError> {
        match *self {}
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), PlatformError> {
        match *self {}
    }
    fn flush(&mut self) -> Result<(), PlatformError> {
        match *self {}
    }
}

struct Fake;
impl Platform for Fake {
    type Grants = FakeGrants;
    type Events = FakeEvents;
    type Store = Xs;
    type Clock = Mono;
    type Entropy = NoEntropy;
    type Console = Log;
    type Net = NoDevice;
    type Block = NoDevice;
    fn netfront(_: &mut Env<Self>, _: u32) -> Result<NoDevice, PlatformError> {
        Err(PlatformError::Unsupported("net"))
    }
    fn netback(_: &mut Env<Self>, _: DomId, _: u32) -> Result<NoDevice, PlatformError> {
        Err(PlatformError::Unsupported("net"))
    }
    fn blkfront(_: &mut Env<Self>, _: u32) -> Result<NoDevice, PlatformError> {
        Err(PlatformError::Unsupported("block"))
    }
}

/// What the app saw.
#[derive(Debug, Default)]
struct Seen {
    started: bool,
    stopped: bool,
    closed: Vec<(CallId, Option<i32>)>,
    synced: usize,
}

/// Echoes stdin of `test.Echo`; refuses everything else it is offered.
struct EchoApp(Arc<Mutex<Seen>>);

impl App<Fake> for EchoApp {
    fn services(&self) -> &[&str] {
        &["test.Echo", "test.Refuse"]
    }
    fn start(&mut self, _: &mut Cx<'_, Fake>) -> Result<(), AppError> {
        self.0.lock().unwrap().started = true;
        Ok(())
    }
    fn call(&mut self, _: &mut Cx<'_, Fake>, _: CallId, call: &Call<'_>) -> Admit {
        match call.service {
            "test.Echo" => Admit::Accept,
            _ => Admit::Refuse,
        }
    }
    fn input(&mut self, cx: &mut Cx<'_, Fake>, id: CallId, data: &[u8]) {
        cx.send(id, data).unwrap();
    }
    fn input_end(&mut self, cx: &mut Cx<'_, Fake>, id: CallId) {
        cx.finish(id, 7);
    }
    fn closed(&mut self, _: &mut Cx<'_, Fake>, id: CallId, exit: Option<i32>) {
        self.0.lock().unwrap().closed.push((id, exit));
    }
    fn qubesdb(&mut self, _: &mut Cx<'_, Fake>, ev: &runloop::QubesDbEvent) {
        if let runloop::QubesDbEvent::Synced { .. } = ev {
            self.0.lock().unwrap().synced += 1;
        }
    }
    fn stop(&mut self, _: &mut Cx<'_, Fake>) {
        self.0.lock().unwrap().stopped = true;
    }
}

struct Run {
    hub: Hub,
    seen: Arc<Mutex<Seen>>,
    log: Log,
    /// Set when the loop's thread ends, returning or panicking.
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), RunError>>>,
}

/// Sets its flag when dropped, also while unwinding from a panic.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Run {
    /// Starts the loop as domain 5 on a fresh hub.
    fn start(cfg: Config) -> Run {
        Run::start_after(cfg, |_| ()).0
    }

    /// Starts the loop with dom0's QubesDB daemon already serving, as in Qubes (qubesdb-daemon
    /// runs before the domain is unpaused). The fake store applies a transaction's writes one
    /// by one: a loop started first could read `ring-ref` before its permissions are set,
    /// get EACCES and fail where real xenstored's transaction would never show that state.
    fn start_with_dom0(cfg: Config) -> (Run, Dom0) {
        Run::start_after(cfg, Dom0::new)
    }

    /// Runs `first` on the fresh hub, then starts the loop's thread.
    fn start_after<T>(cfg: Config, first: impl FnOnce(&Run) -> T) -> (Run, T) {
        let hub = Hub::new();
        let d = hub.domain(VM);
        hub.set_node(&format!("/local/domain/{VM}/control/shutdown"), b"");
        let log = Log::default();
        let env = Env::<Fake> {
            domid: DomId::new(u32::from(VM)).unwrap(),
            name: "vm".into(),
            cmdline: String::new(),
            grants: d.grants,
            events: d.events,
            store: Xs {
                store: d.store,
                hub: hub.clone(),
                watches: Vec::new(),
            },
            clock: Mono(std::time::Instant::now()),
            entropy: NoEntropy,
            console: log.clone(),
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = EchoApp(seen.clone());
        let done = Arc::new(AtomicBool::new(false));
        let mut run = Run {
            hub,
            seen,
            log,
            done,
            thread: None,
        };
        let before = first(&run);
        let flag = SetOnDrop(run.done.clone());
        let mut console = run.log.clone();
        run.thread = Some(std::thread::spawn(move || {
            let _flag = flag;
            let r = runloop::run(env, app, cfg);
            // For the failure message of a test that did not expect the loop to end.
            console.write(format!("(test) run returned {r:?}\n").as_bytes());
            r
        }));
        (run, before)
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn join(&mut self) -> Result<(), RunError> {
        let end = StdInstant::now() + DEADLINE;
        while !self.finished() {
            assert!(
                StdInstant::now() < end,
                "run did not return\n{}",
                self.log.text()
            );
            std::thread::sleep(StdDuration::from_millis(5));
        }
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Run {
    /// Powers the loop off so that its thread does not outlive the test case.
    fn drop(&mut self) {
        self.hub
            .set_node(&format!("/local/domain/{VM}/control/shutdown"), b"poweroff");
        let end = StdInstant::now() + StdDuration::from_secs(2);
        while !self.finished() && StdInstant::now() < end {
            std::thread::sleep(StdDuration::from_millis(2));
        }
    }
}

/// Generous for dom0 to sync even on a loaded machine (a test thread pumps dom0 by hand).
fn cfg() -> Config {
    Config {
        qubesdb_timeout: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(2),
        store_poll: Duration::from_millis(5),
        ..Config::default()
    }
}

type FakeServer = Server<vchan::test_utils::FakeMem, vchan::test_utils::FakePort>;
type FakeClient = Client<vchan::test_utils::FakeMem, vchan::test_utils::FakePort>;

/// dom0's side: QubesDB server and the qrexec daemon's control client, pumped by hand.
struct Dom0 {
    /// The loop's thread ended: waiting for it is in vain.
    loop_done: Arc<AtomicBool>,
    /// The loop's console, for failure messages.
    log: Log,
    d: vchan::test_utils::FakeDomain,
    qdb: FakeServer,
    db: QdbDaemon,
    ctrl: Option<FakeClient>,
    daemon: qrexec::Daemon,
}

fn vm() -> DomId {
    DomId::new(u32::from(VM)).unwrap()
}

impl Dom0 {
    fn new(run: &Run) -> Dom0 {
        let mut d = run.hub.domain(0);
        let (qdb, _dir) = server_init(
            &mut d.grants,
            &mut d.events,
            &mut d.store,
            vm(),
            111,
            4096,
            4096,
        )
        .unwrap();
        let mut db = QdbDaemon::new(DaemonLimits::DEFAULT);
        db.write("/name", b"vm").unwrap();
        db.write("/qubes-vm-type", b"AppVM").unwrap();
        db.connect();
        Dom0 {
            loop_done: run.done.clone(),
            log: run.log.clone(),
            d,
            qdb,
            db,
            ctrl: None,
            daemon: qrexec::Daemon::new(qrexec::daemon::Limits::DEFAULT),
        }
    }

    /// Moves QubesDB and (once connected) control bytes both ways.
    fn pump(&mut self) {
        let mut buf = [0u8; 8192];
        if let Ok(n) = self.qdb.read(&mut buf) {
            let used = self.db.handle_input(&buf[..n]).unwrap();
            assert_eq!(used, n);
        }
        while let Some(n) = self.db.poll_transmit(&mut buf) {
            write_all(&mut |b| self.qdb.write(b), &buf[..n]);
        }
        if self.ctrl.is_none() {
            self.ctrl = client_init(
                &mut self.d.grants,
                &mut self.d.events,
                &mut self.d.store,
                vm(),
                512,
            )
            .ok();
        }
        if let Some(c) = self.ctrl.as_mut() {
            if let Ok(n) = c.read(&mut buf) {
                let used = self.daemon.handle_input(&buf[..n]).unwrap();
                assert_eq!(used, n);
            }
            while let Some(n) = self.daemon.poll_transmit(&mut buf) {
                write_all(&mut |b| c.write(b), &buf[..n]);
            }
        }
        let _ = self.d.events.wait(Some(Duration::from_millis(2)));
    }

    fn pump_until(&mut self, what: &str, mut done: impl FnMut(&mut Dom0) -> bool) {
        let end = StdInstant::now() + DEADLINE;
        while !done(self) {
            assert!(StdInstant::now() < end, "dom0 waited in vain for {what}");
            let ended = self.loop_done.load(Ordering::SeqCst);
            assert!(
                !ended,
                "the loop ended while dom0 waited for {what}\n{}",
                self.log.text()
            );
            self.pump();
        }
    }
}

impl Dom0 {
    /// Runs one dom0 → VM call of `cmd` with `input`; its stdout and exit code.
    fn call(&mut self, run: &Run, cmd: &[u8], input: &[u8]) -> (Vec<u8>, i32) {
        let port = self.daemon.exec(DomId::DOM0, cmd, false).unwrap();
        let (mut srv, dir) = server_init(
            &mut self.d.grants,
            &mut self.d.events,
            &mut self.d.store,
            vm(),
            port,
            65536,
            65536,
        )
        .unwrap();
        let mut chan = DataChannel::new(Role::Caller, Handshake::SendFirst, 3, DataLimits::DEFAULT);
        let (mut out, mut code, mut sent, mut vm_gone) = (Vec::new(), None, false, false);
        let mut buf = vec![0u8; 65536];
        let end = StdInstant::now() + DEADLINE;
        let what = String::from_utf8_lossy(cmd).into_owned();
        while code.is_none() {
            let ended = self.loop_done.load(Ordering::SeqCst);
            assert!(!ended, "the loop ended during {what}\n{}", run.log.text());
            assert!(
                StdInstant::now() < end,
                "no exit code for {what}\n{}",
                run.log.text()
            );
            self.pump();
            if let Ok(n) = srv.read(&mut buf) {
                assert_eq!(chan.handle_input(&buf[..n]).unwrap(), n);
            }
            // A refused or unknown service may answer HELLO and EXIT in one read: then there is
            // no stdin left to send.
            if chan.version().is_some() && !sent && chan.exit_code().is_none() {
                chan.send(Stream::Stdin, input).unwrap();
                chan.send_eof(Stream::Stdin).unwrap();
                sent = true;
            }
            while let Some(ev) = chan.poll_event() {
                match ev {
                    DataEvent::Data { data, .. } => out.extend(data),
                    DataEvent::Exit(c) => code = Some(c),
                    _ => {}
                }
            }
            while let Some(n) = chan.poll_transmit(&mut buf) {
                let data = buf[..n].to_vec();
                // A refused or unknown service closes its end right after EXIT, which may
                // still be in the ring unread when dom0 sends its stdin: what dom0 had left
                // to say is moot then, its answer is read below.
                if !vm_gone && write_all_or_closed(&mut |b| srv.write(b), &data).is_err() {
                    vm_gone = true;
                }
            }
        }
        srv.close().unwrap();
        dir.remove(&mut self.d.store).unwrap();
        // The agent releases the port with CONNECTION_TERMINATED.
        self.pump_until("CONNECTION_TERMINATED", |d| {
            matches!(
                d.daemon.poll_event(),
                Some(qrexec::daemon::Event::ConnectionTerminated { port: p, released: true, .. }) if p == port
            )
        });
        (out, code.unwrap())
    }
}

fn write_all(w: &mut dyn FnMut(&[u8]) -> Result<usize, vchan::Error>, data: &[u8]) {
    write_all_or_closed(w, data).unwrap();
}

/// Writes all of `data`; `Err(PeerClosed)` if the peer closed first (other errors panic).
fn write_all_or_closed(
    w: &mut dyn FnMut(&[u8]) -> Result<usize, vchan::Error>,
    mut data: &[u8],
) -> Result<(), vchan::Error> {
    let end = StdInstant::now() + DEADLINE;
    while !data.is_empty() {
        let n = match w(data) {
            Err(vchan::Error::PeerClosed) => return Err(vchan::Error::PeerClosed),
            r => r.unwrap(),
        };
        data = &data[n..];
        assert!(StdInstant::now() < end, "vchan write stuck");
        if n == 0 {
            std::thread::sleep(StdDuration::from_millis(1));
        }
    }
    Ok(())
}

#[test]
fn qubesdb_that_never_appears_ends_run_with_timeout_and_unadvertises_control() {
    let mut run = Run::start(Config {
        qubesdb_timeout: Duration::from_millis(300),
        ..cfg()
    });
    let t0 = StdInstant::now();
    let r = run.join();
    assert_eq!(r, Err(RunError::QubesDbTimeout));
    assert!(
        t0.elapsed() >= StdDuration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert!(!run.seen.lock().unwrap().started);
    let dir = format!("/local/domain/{VM}/data/vchan/0/512");
    assert_eq!(
        run.hub.node(&format!("{dir}/ring-ref")),
        None,
        "control still advertised"
    );
}

#[test]
fn dom0_breaking_the_control_protocol_ends_run() {
    let (mut run, mut dom0) = Run::start_with_dom0(cfg());
    dom0.pump_until("sync", |d| d.db.is_ready() && d.daemon.version().is_some());
    let seen = run.seen.clone();
    dom0.pump_until("app start", |_| seen.lock().unwrap().started);
    // A well-framed message of a type no daemon sends.
    let mut bad = 0x999u32.to_le_bytes().to_vec();
    bad.extend_from_slice(&0u32.to_le_bytes());
    write_all(&mut |b| dom0.ctrl.as_mut().unwrap().write(b), &bad);
    let r = run.join();
    assert!(
        matches!(r, Err(RunError::Qrexec(e)) if e.is_fatal()),
        "{r:?}"
    );
    assert!(
        !run.seen.lock().unwrap().stopped,
        "stop() is for poweroff only"
    );
}

#[test]
fn dom0_call_is_served_then_poweroff_returns_ok() {
    let (mut run, mut dom0) = Run::start_with_dom0(cfg());
    dom0.pump_until("sync", |d| d.db.is_ready() && d.daemon.version().is_some());
    let seen = run.seen.clone();
    dom0.pump_until("app start", |_| seen.lock().unwrap().started);

    // dom0 → VM, as qvm-run --service does: dom0 is the data vchan server.
    for (cmd, want_out, want_code) in [
        (&b"user:QUBESRPC test.Echo dom0"[..], &b"ping"[..], 7),
        (
            b"user:QUBESRPC test.Refuse+x dom0",
            b"",
            qrexec::EXIT_REFUSED,
        ),
        (
            b"user:QUBESRPC test.Other dom0",
            b"",
            qrexec::EXIT_NOT_FOUND,
        ),
        (b"user:echo hi", b"", qrexec::EXIT_NOT_FOUND),
    ] {
        let (out, code) = dom0.call(&run, cmd, b"ping");
        let what = String::from_utf8_lossy(cmd);
        assert_eq!((out.as_slice(), code), (want_out, want_code), "{what}");
    }
    assert_eq!(
        run.seen.lock().unwrap().closed.len(),
        1,
        "only the echo call is the app's"
    );

    run.hub
        .set_node(&format!("/local/domain/{VM}/control/shutdown"), b"poweroff");
    let end = StdInstant::now() + DEADLINE;
    while !run.finished() {
        assert!(StdInstant::now() < end, "no stop\n{}", run.log.text());
        dom0.pump();
    }
    assert_eq!(run.join(), Ok(()));
    assert!(run.seen.lock().unwrap().stopped);
    assert!(
        run.log.text().contains("vm: poweroff requested"),
        "{}",
        run.log.text()
    );
    assert_eq!(
        run.hub
            .node(&format!("/local/domain/{VM}/control/shutdown")),
        Some(Vec::new()),
        "the request is acknowledged"
    );
}

/// dom0's QubesDB and qrexec daemons restarting (their vchans closed): the loop connects
/// QubesDB again and resyncs, serves the control channel afresh, and calls work again.
#[test]
fn restarted_dom0_daemons_are_reconnected() {
    let (mut run, mut dom0) = Run::start_with_dom0(cfg());
    dom0.pump_until("sync", |d| d.db.is_ready() && d.daemon.version().is_some());
    let seen = run.seen.clone();
    dom0.pump_until("app start", |_| seen.lock().unwrap().started);
    assert_eq!(
        dom0.call(&run, b"u:QUBESRPC test.Echo dom0", b"one"),
        (b"one".to_vec(), 7)
    );

    // qubesdb-daemon restarts: a new server on port 111, a new sync.
    dom0.qdb.close().unwrap();
    let (qdb, _dir) = server_init(
        &mut dom0.d.grants,
        &mut dom0.d.events,
        &mut dom0.d.store,
        vm(),
        111,
        4096,
        4096,
    )
    .unwrap();
    dom0.qdb = qdb;
    dom0.db = QdbDaemon::new(DaemonLimits::DEFAULT);
    dom0.db.write("/name", b"vm").unwrap();
    dom0.db.connect();
    dom0.pump_until("resync", |d| d.db.is_ready());
    dom0.pump_until("Synced to the app", |_| seen.lock().unwrap().synced >= 2);

    // qrexec-daemon restarts: it closes the control vchan and connects to a fresh one.
    dom0.ctrl.take().unwrap().close().unwrap();
    dom0.daemon = qrexec::Daemon::new(qrexec::daemon::Limits::DEFAULT);
    dom0.pump_until("new HELLO", |d| d.daemon.version().is_some());
    assert_eq!(
        dom0.call(&run, b"u:QUBESRPC test.Echo dom0", b"two"),
        (b"two".to_vec(), 7)
    );
    let log = run.log.text();
    assert!(
        log.contains("qubesdb:") && log.contains("reconnecting"),
        "{log}"
    );
    assert!(log.contains("serving it again"), "{log}");
    assert!(!run.finished(), "the loop ended: {:?}", run.join());
}

impl Dom0 {
    /// A dom0 → VM call of `test.Echo` whose caller side writes `bytes` raw, then closes;
    /// returns once the VM released the port (CONNECTION_TERMINATED).
    fn raw_call(&mut self, bytes: &[u8]) {
        let port = self
            .daemon
            .exec(DomId::DOM0, b"u:QUBESRPC test.Echo dom0", false)
            .unwrap();
        let (mut srv, dir) = server_init(
            &mut self.d.grants,
            &mut self.d.events,
            &mut self.d.store,
            vm(),
            port,
            65536,
            65536,
        )
        .unwrap();
        self.pump_until("the VM to attach", |_| srv.is_connected().unwrap_or(false));
        dir.remove(&mut self.d.store).unwrap();
        write_all(&mut |b| srv.write(b), bytes);
        srv.close().unwrap();
        self.pump_until("CONNECTION_TERMINATED", |d| {
            matches!(
                d.daemon.poll_event(),
                Some(qrexec::daemon::Event::ConnectionTerminated { port: p, .. }) if p == port
            )
        });
    }
}

fn hello() -> Vec<u8> {
    let mut v = 0x300u32.to_le_bytes().to_vec();
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&3u32.to_le_bytes());
    v
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever a caller writes on its data channel (after a valid HELLO or not), the loop
    /// ends that call, releases its port, and goes on serving: no panic, no stop.
    #[test]
    fn arbitrary_data_channel_bytes_end_only_that_call(
        with_hello in proptest::bool::ANY,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
    ) {
        let (run, mut dom0) = Run::start_with_dom0(cfg());
        dom0.pump_until("sync", |d| d.db.is_ready() && d.daemon.version().is_some());
        let seen = run.seen.clone();
        dom0.pump_until("app start", |_| seen.lock().unwrap().started);
        let mut bytes = if with_hello { hello() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        dom0.raw_call(&bytes);
        let (out, code) = dom0.call(&run, b"u:QUBESRPC test.Echo dom0", b"after");
        proptest::prop_assert_eq!((out, code), (b"after".to_vec(), 7));
        proptest::prop_assert!(!run.finished(), "the loop ended");
    }
}

#[test]
fn main_with_says_in_one_line_which_unikernel_could_not_start_and_why() {
    let r = runloop::main_with::<Fake, EchoApp, &str>(
        "firewall",
        Err(platform_api::PlatformError::Unsupported("evtchn")),
        |_| Err("not reached"),
    );
    assert_eq!(
        r,
        Err("firewall: platform: evtchn is not supported by this backend".into())
    );
}
