//! The firewall netvm as a `runloop::App`: uplink netfront, one netback per client vif as they come
//! and go in xenstore, frames through the [`Router`], QubesDB rule commits, the ruleset/drop RPCs.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use platform_api::{DomId, Entropy, NetDevice, Platform, PortSet, Store, Tx, Watches};
use runloop::{
    Admit, App, AppError, Call, CallError, CallId, Cx, Instant, QubesDbEvent, WatchEvent,
};

use crate::classify::{ClientAddrs, ClientId, Firewall, Limits};
use crate::config::{client_rules, commit_ip, NetConfig};
use crate::router::{parse_mac, Link, Router, RouterLimits, CLIENT_MAC, MAX_FRAME};
use crate::ruleset::{Ruleset, MAX_TEXT};

/// Sets the ruleset (stdin: ruleset text); dom0 only.
pub const SERVICE_RULESET: &str = "qubes.UnikernelFirewallRuleset";
/// Returns the drop log; dom0 only.
pub const SERVICE_DROPS: &str = "qubes.UnikernelFirewallDrops";
/// Called in dom0 at start: its stdout is the ruleset dom0 keeps for us.
pub const SERVICE_RULESET_GET: &str = "qubes.UnikernelFirewallRulesetGet";

const VIF_WATCH: &str = "backend/vif";
const VIF_TOKEN: &str = "fw-vif";
/// Frames taken from one device per poll before the others get a turn.
const BUDGET: usize = 256;
/// Longest xenstore `backend/vif` listing followed (domains, and vifs per domain).
const MAX_VIFS: usize = 256;
/// Wait before trying a device setup again.
const RETRY_NANOS: u64 = 1_000_000_000;
/// Retry of a held frame when no event comes first.
const HELD_RETRY_NANOS: u64 = 2_000_000;
/// A held frame the uplink still has no room for after this is dropped.
const HELD_MAX_NANOS: u64 = 200_000_000;
/// Tries (one per [`RETRY_NANOS`]) to reach dom0 for the kept ruleset.
const FETCH_TRIES: u32 = 60;

struct ClientLink<N> {
    id: ClientId,
    dev: N,
}

enum CallKind {
    /// Ruleset text being received.
    Ruleset(Vec<u8>),
    /// Output being sent, then finished with the code.
    Sending { data: Vec<u8>, at: usize, code: i32 },
    /// Our call to dom0 for the kept ruleset: its stdout.
    Fetch(Vec<u8>),
}

/// The app. Tables are bounded by [`Limits`] and [`RouterLimits`].
pub struct FirewallApp<P: Platform> {
    limits: Limits,
    router: Option<Router>,
    uplink: Option<P::Net>,
    clients: BTreeMap<(DomId, u32), ClientLink<P::Net>>,
    next_id: u32,
    buf: Vec<u8>,
    calls: BTreeMap<CallId, CallKind>,
    /// More frames were waiting when the budget ran out: poll again at once.
    busy: bool,
    /// A forwarded frame the uplink had no room for, and since when. It goes first at the next
    /// poll, and until then no link is drained: frames wait in the senders' rings
    /// (back-pressure) instead of being dropped by the dozen. Only the uplink holds frames
    /// (a client that never takes its frames must not stall the others), and only for
    /// [`HELD_MAX_NANOS`].
    held: Option<(Instant, Vec<u8>)>,
    /// The uplink or the vif watch could not be set up yet: try again at this time.
    retry_at: Option<Instant>,
    vif_watch: bool,
    /// Tries left to ask dom0 for the kept ruleset.
    fetch_tries: u32,
    /// Listed vifs that could not be opened yet (retried each second, logged once).
    failed: BTreeSet<(DomId, u32)>,
}

impl<P: Platform> core::fmt::Debug for FirewallApp<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FirewallApp")
            .field("clients", &self.clients.len())
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> FirewallApp<P> {
    pub fn new(limits: Limits) -> Self {
        FirewallApp {
            limits,
            router: None,
            uplink: None,
            clients: BTreeMap::new(),
            next_id: 1,
            buf: alloc::vec![0u8; MAX_FRAME + 64],
            calls: BTreeMap::new(),
            busy: false,
            held: None,
            retry_at: None,
            vif_watch: false,
            fetch_tries: 0,
            failed: BTreeSet::new(),
        }
    }

    /// Opens what is not open yet (the toolstack may still be writing our devices).
    fn setup_devices(&mut self, cx: &mut Cx<'_, P>) {
        let mut again = false;
        if self.uplink.is_none() {
            if let Err(e) = self.open_uplink(cx) {
                cx.log(format_args!("uplink netfront not ready ({e}): retrying"));
                again = true;
            }
        }
        if !self.vif_watch {
            match cx.env.store.watch(VIF_WATCH, VIF_TOKEN) {
                Ok(()) => self.vif_watch = true,
                Err(e) => {
                    cx.log(format_args!("cannot watch {VIF_WATCH} ({e}): retrying"));
                    again = true;
                }
            }
        }
        self.retry_at = again.then(|| Instant(cx.now().0 + RETRY_NANOS));
    }

    fn reload(&mut self, cx: &mut Cx<'_, P>, ip: IpAddr) {
        let (set, err) = client_rules(cx.qubesdb(), ip);
        if let Some(e) = err {
            cx.log(format_args!(
                "firewall rules for {ip} refused ({e}): denying all its traffic"
            ));
        }
        let n = set.rules.len();
        let now = cx.now();
        if let Some(r) = self.router.as_mut() {
            let ended = r.firewall_mut().reload(now, ip, set);
            cx.log(format_args!(
                "firewall rules for {ip}: {n} rule(s), {ended} flow(s) ended"
            ));
        }
    }

    /// Lists `backend/vif/<domid>/<devid>` and opens/closes netbacks to match.
    fn rescan(&mut self, cx: &mut Cx<'_, P>) {
        let mut seen: Vec<(DomId, u32)> = Vec::new();
        let doms = cx
            .env
            .store
            .directory(Tx::NONE, VIF_WATCH)
            .unwrap_or_default();
        for d in doms.iter().take(MAX_VIFS) {
            let Ok(dom) = DomId::parse(d) else { continue };
            let path = alloc::format!("{VIF_WATCH}/{d}");
            let devs = cx.env.store.directory(Tx::NONE, &path).unwrap_or_default();
            for v in devs.iter().take(MAX_VIFS) {
                if let Ok(devid) = v.parse::<u32>() {
                    seen.push((dom, devid));
                }
            }
        }
        let gone: Vec<(DomId, u32)> = self
            .clients
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for k in gone {
            self.close_client(cx, k);
        }
        // Listed but being removed (the toolstack's Closing, `online = 0`) or closed by the
        // client: let the device go, then say Closed as a backend driver does.
        let closing: Vec<(DomId, u32)> = self
            .clients
            .keys()
            .filter(|k| vif_closing(&mut cx.env.store, **k))
            .copied()
            .collect();
        for k in closing {
            self.close_client(cx, k);
            release_vif(cx, k);
        }
        self.failed.retain(|k| seen.contains(k));
        for k in seen {
            if self.clients.contains_key(&k) {
                continue;
            }
            if vif_closing(&mut cx.env.store, k) {
                // Removed before it ever connected: the toolstack still waits for our Closed.
                // It is not served again either (that would undo the Closed).
                release_vif(cx, k);
            } else {
                self.open_client(cx, k);
            }
        }
    }

    fn close_client(&mut self, cx: &mut Cx<'_, P>, k: (DomId, u32)) {
        if let Some(c) = self.clients.remove(&k) {
            if let Some(r) = self.router.as_mut() {
                r.remove_client(c.id);
            }
            cx.log(format_args!("client vif {}.{} gone", k.0.get(), k.1));
        }
    }

    fn open_client(&mut self, cx: &mut Cx<'_, P>, k: (DomId, u32)) {
        let Some(router) = self.router.as_mut() else {
            return;
        };
        let dir = alloc::format!("{VIF_WATCH}/{}/{}", k.0.get(), k.1);
        let read = |cx: &mut Cx<'_, P>, key: &str| -> Option<String> {
            let v = cx
                .env
                .store
                .read(Tx::NONE, &alloc::format!("{dir}/{key}"))
                .ok()?;
            String::from_utf8(v).ok()
        };
        let Some(ips) = read(cx, "ip") else {
            // The toolstack writes the directory in steps: wait for the next watch event.
            return;
        };
        let mut addrs = ClientAddrs {
            ip4: None,
            ip6: None,
        };
        for w in ips.split_ascii_whitespace() {
            match w.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if addrs.ip4.is_none() => addrs.ip4 = Some(a),
                Ok(IpAddr::V6(a)) if addrs.ip6.is_none() => addrs.ip6 = Some(a),
                _ => {}
            }
        }
        if addrs.ip4.is_none() && addrs.ip6.is_none() {
            cx.log(format_args!(
                "client vif {}.{}: no usable ip {ips:?}",
                k.0.get(),
                k.1
            ));
            return;
        }
        let mac = read(cx, "mac")
            .and_then(|m| parse_mac(&m))
            .unwrap_or(CLIENT_MAC);
        let id = ClientId(self.next_id);
        if let Err(e) = router.add_client(id, addrs, mac) {
            // Another live vif has this address (wait for it to go) or the table is full.
            if self.failed.insert(k) {
                cx.log(format_args!(
                    "client vif {}.{} not added yet: {e}",
                    k.0.get(),
                    k.1
                ));
            }
            self.retry_at = Some(Instant(cx.now().0 + RETRY_NANOS));
            return;
        }
        match P::netback(cx.env, k.0, k.1) {
            Ok(dev) => {
                self.next_id = self.next_id.wrapping_add(1);
                self.failed.remove(&k);
                self.clients.insert(k, ClientLink { id, dev });
                cx.log(format_args!("client vif {}.{} up: {ips}", k.0.get(), k.1));
            }
            Err(e) => {
                if let Some(r) = self.router.as_mut() {
                    r.remove_client(id);
                }
                // The frontend may not be ready: try again (quietly) while the vif is listed.
                if self.failed.insert(k) {
                    cx.log(format_args!(
                        "client vif {}.{}: netback not up yet: {e}",
                        k.0.get(),
                        k.1
                    ));
                }
                self.retry_at = Some(Instant(cx.now().0 + RETRY_NANOS));
            }
        }
    }

    fn open_uplink(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        self.uplink = None;
        let dev = P::netfront(cx.env, 0)?;
        if let Some(r) = self.router.as_mut() {
            r.reset_uplink(dev.mac());
            let c = r.firewall().config();
            cx.log(format_args!(
                "uplink up: {} via {}",
                c.own_ip, c.uplink_gateway
            ));
        }
        self.uplink = Some(dev);
        Ok(())
    }

    fn config_changed(&mut self, cx: &mut Cx<'_, P>) {
        let cfg = match NetConfig::from_qubesdb(cx.qubesdb()) {
            Ok(c) => c,
            Err(e) => {
                cx.log(format_args!("netvm configuration unusable: {e}"));
                return;
            }
        };
        let Some(r) = self.router.as_mut() else {
            return;
        };
        if *r.firewall().config() == cfg {
            return;
        }
        let gw_changed = r.firewall().config().uplink_gateway != cfg.uplink_gateway;
        r.firewall_mut().set_config(cfg);
        if gw_changed {
            // The netvm was switched: a new uplink (firewall-netvm.md §4).
            cx.log(format_args!(
                "uplink gateway changed: re-creating the uplink"
            ));
            if let Err(e) = self.open_uplink(cx) {
                cx.log(format_args!("uplink netfront failed: {e}"));
            }
        }
    }

    /// Asks dom0 for the ruleset it keeps for us (retried while qrexec is not up yet).
    fn fetch_ruleset(&mut self, cx: &mut Cx<'_, P>) {
        if self.fetch_tries == 0 {
            return;
        }
        self.fetch_tries -= 1;
        match cx.call("dom0", SERVICE_RULESET_GET) {
            Ok(id) => {
                self.fetch_tries = 0;
                cx.end_input(id);
                self.calls.insert(id, CallKind::Fetch(Vec::new()));
            }
            Err(CallError::NotConnected | CallError::Full { .. }) if self.fetch_tries > 0 => {
                self.retry_at = Some(Instant(cx.now().0 + RETRY_NANOS));
            }
            Err(e) => {
                self.fetch_tries = 0;
                cx.log(format_args!("cannot ask dom0 for the kept ruleset: {e}"));
            }
        }
    }

    fn flush_sends(&mut self, cx: &mut Cx<'_, P>) {
        let mut done = Vec::new();
        for (id, kind) in self.calls.iter_mut() {
            let CallKind::Sending { data, at, code } = kind else {
                continue;
            };
            while *at < data.len() {
                let n = cx.send_space(*id).min(data.len() - *at);
                if n == 0 {
                    break;
                }
                if cx.send(*id, &data[*at..*at + n]).is_err() {
                    *at = data.len();
                    break;
                }
                *at += n;
            }
            if *at >= data.len() {
                cx.finish(*id, *code);
                done.push(*id);
            }
        }
        for id in done {
            self.calls.remove(&id);
        }
    }

    fn reply(&mut self, cx: &mut Cx<'_, P>, id: CallId, text: String, code: i32) {
        self.calls.insert(
            id,
            CallKind::Sending {
                data: text.into_bytes(),
                at: 0,
                code,
            },
        );
        self.flush_sends(cx);
    }

    fn apply_ruleset(&mut self, cx: &mut Cx<'_, P>, text: &[u8]) -> Result<String, String> {
        let rs = Ruleset::parse(text).map_err(|e| alloc::format!("{e}"))?;
        let summary = alloc::format!(
            "{} forward(s), {} allow(s), {} reject(s)",
            rs.forwards.len(),
            rs.allows.len(),
            rs.reject.len()
        );
        let now = cx.now();
        let r = self
            .router
            .as_mut()
            .ok_or_else(|| String::from("not started"))?;
        let ended = r.firewall_mut().set_ruleset(now, rs);
        cx.log(format_args!(
            "ruleset applied: {summary}, {ended} flow(s) ended"
        ));
        Ok(alloc::format!("ok: {summary}, {ended} flow(s) ended\n"))
    }

    /// Drains one device; frames routed elsewhere are sent there.
    fn drain(&mut self, now: Instant, from: Link) {
        // While a frame waits for the uplink, clients' frames stay in their rings; the
        // uplink's own (replies for the clients) still flow.
        if self.held.is_some() && from != Link::Uplink {
            return;
        }
        let Some(router) = self.router.as_mut() else {
            return;
        };
        for _ in 0..BUDGET {
            let dev = match from {
                Link::Uplink => self.uplink.as_mut(),
                Link::Client(id) => self
                    .clients
                    .values_mut()
                    .find(|c| c.id == id)
                    .map(|c| &mut c.dev),
            };
            let Some(dev) = dev else { return };
            let n = match dev.recv(&mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) | Err(_) => return,
            };
            let Some(frame) = self.buf.get_mut(..n) else {
                return;
            };
            if let Some(to) = router.handle(now, from, frame) {
                if !send_on(&mut self.uplink, &mut self.clients, to, frame)
                    && to == Link::Uplink
                    && self.held.is_none()
                {
                    self.held = Some((now, frame.to_vec()));
                    if from != Link::Uplink {
                        return;
                    }
                }
            }
        }
        self.busy = true;
    }
}

/// Xenbus states (xen/io/xenbus.h) the vif close handshake uses.
const XENBUS_CLOSING: u8 = 5;
const XENBUS_CLOSED: u8 = 6;

fn vif_dir(k: (DomId, u32)) -> String {
    alloc::format!("{VIF_WATCH}/{}/{}", k.0.get(), k.1)
}

fn read_trimmed<S: Store + ?Sized>(store: &mut S, path: &str) -> Option<String> {
    let v = store.read(Tx::NONE, path).ok()?;
    Some(String::from_utf8_lossy(&v).trim().into())
}

fn state_of<S: Store + ?Sized>(store: &mut S, path: &str) -> u8 {
    read_trimmed(store, path)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether the vif `k` is being taken away: our state Closing or later (the toolstack's
/// removal), `online = 0`, or the frontend Closing/Closed. A missing key means nothing (a
/// toolstack that removes a vif just removes its directory; the listing sees that).
fn vif_closing<S: Store + ?Sized>(store: &mut S, k: (DomId, u32)) -> bool {
    let dir = vif_dir(k);
    if state_of(store, &alloc::format!("{dir}/state")) >= XENBUS_CLOSING
        || read_trimmed(store, &alloc::format!("{dir}/online")).as_deref() == Some("0")
    {
        return true;
    }
    match read_trimmed(store, &alloc::format!("{dir}/frontend")) {
        Some(fe) => state_of(store, &alloc::format!("{fe}/state")) >= XENBUS_CLOSING,
        None => false,
    }
}

/// After the device of `k` is dropped (rings unmapped, port closed): our state Closed, which
/// the toolstack waits for, and with `online = 0` the directory removed, as a driver domain's
/// `xl devd` does. A directory already removed stays removed.
fn release_vif<P: Platform>(cx: &mut Cx<'_, P>, k: (DomId, u32)) {
    let dir = vif_dir(k);
    let store = &mut cx.env.store;
    let state = state_of(store, &alloc::format!("{dir}/state"));
    // Our own write fires our `backend/vif` watch again: write only what is not there yet.
    if state == 0 {
        return;
    }
    if state != XENBUS_CLOSED {
        let closed = alloc::format!("{XENBUS_CLOSED}");
        let _ = store.write(Tx::NONE, &alloc::format!("{dir}/state"), closed.as_bytes());
        cx.log(format_args!(
            "client vif {}.{} released (Closed)",
            k.0.get(),
            k.1
        ));
    }
    if read_trimmed(&mut cx.env.store, &alloc::format!("{dir}/online")).as_deref() == Some("0") {
        let _ = cx.env.store.rm(Tx::NONE, &dir);
    }
}

/// Sends `frame` on `to`; `false` only when that link is up but has no room now (a link that
/// is gone or failing drops the frame, as a dead cable would).
fn send_on<N: NetDevice>(
    uplink: &mut Option<N>,
    clients: &mut BTreeMap<(DomId, u32), ClientLink<N>>,
    to: Link,
    frame: &[u8],
) -> bool {
    let dev = match to {
        Link::Uplink => uplink.as_mut(),
        Link::Client(id) => clients
            .values_mut()
            .find(|c| c.id == id)
            .map(|c| &mut c.dev),
    };
    match dev {
        Some(dev) => !matches!(dev.send(frame), Ok(false)),
        None => true,
    }
}

impl<P: Platform> App<P> for FirewallApp<P> {
    fn services(&self) -> &[&str] {
        &[SERVICE_RULESET, SERVICE_DROPS]
    }

    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        let cfg = NetConfig::from_qubesdb(cx.qubesdb()).map_err(|e| {
            cx.log(format_args!("netvm configuration unusable: {e}"));
            AppError::Failed("QubesDB lacks the netvm configuration")
        })?;
        let mut seed = [0u8; 8];
        cx.env.entropy.fill(&mut seed);
        let fw = Firewall::new(cfg, self.limits, u64::from_le_bytes(seed));
        self.router = Some(Router::new(fw, [0; 6], RouterLimits::DEFAULT));
        self.setup_devices(cx);
        // Rules already committed (dom0 writes them before our clients start).
        let mut ips: Vec<IpAddr> = Vec::new();
        for (path, _) in cx.qubesdb().list("/qubes-firewall/") {
            if let Some(ip) = commit_ip(path.as_str()) {
                ips.push(ip);
            }
        }
        for ip in ips {
            self.reload(cx, ip);
        }
        for key in [
            "/qubes-gateway",
            "/qubes-ip",
            "/qubes-primary-dns",
            "/qubes-secondary-dns",
        ] {
            cx.qubesdb_watch(key)?;
        }
        // "No error" for dom0's tools, as mirage writes it.
        let _ = cx.qubesdb_write("/qubes-iptables-error", b"");
        self.fetch_tries = FETCH_TRIES;
        self.fetch_ruleset(cx);
        Ok(())
    }

    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit {
        if call.source != "dom0" {
            // The shipped policy allows dom0 only; refuse anyone a looser policy lets through.
            return Admit::Refuse;
        }
        match call.service {
            SERVICE_RULESET => {
                self.calls.insert(id, CallKind::Ruleset(Vec::new()));
            }
            SERVICE_DROPS => {
                let mut text = String::new();
                if let Some(r) = self.router.as_ref() {
                    r.drop_log_text(&mut text);
                    let c = r.counters();
                    text.push_str(&alloc::format!(
                        "counters: received {} forwarded {} replied {} dropped {} generated {} queue-full {}\n",
                        c.received, c.forwarded, c.replied, c.dropped, c.generated, c.queue_full
                    ));
                }
                self.reply(cx, id, text, 0);
            }
            _ => return Admit::Refuse,
        }
        Admit::Accept
    }

    fn input(&mut self, _cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        if let Some(CallKind::Ruleset(buf)) = self.calls.get_mut(&id) {
            if buf.len() + data.len() <= MAX_TEXT + 1 {
                buf.extend_from_slice(data);
            } else {
                // Keep it just over the bound: the parser refuses it as too long.
                buf.resize(MAX_TEXT + 1, b' ');
            }
        }
    }

    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        let Some(CallKind::Ruleset(text)) = self.calls.remove(&id) else {
            return;
        };
        match self.apply_ruleset(cx, &text) {
            Ok(msg) => self.reply(cx, id, msg, 0),
            Err(e) => {
                cx.log(format_args!("ruleset refused: {e}"));
                self.reply(cx, id, alloc::format!("error: {e}\n"), 1);
            }
        }
    }

    fn output(&mut self, _cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        if let Some(CallKind::Fetch(buf)) = self.calls.get_mut(&id) {
            let room = (MAX_TEXT + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    fn closed(&mut self, cx: &mut Cx<'_, P>, id: CallId, exit: Option<i32>) {
        match self.calls.remove(&id) {
            Some(CallKind::Fetch(text)) if exit == Some(0) => {
                if let Err(e) = self.apply_ruleset(cx, &text) {
                    cx.log(format_args!("kept ruleset refused: {e}"));
                }
            }
            Some(CallKind::Fetch(_)) => {
                cx.log(format_args!("no kept ruleset from dom0 (exit {exit:?})"));
            }
            _ => {}
        }
    }

    fn qubesdb(&mut self, cx: &mut Cx<'_, P>, ev: &QubesDbEvent) {
        match ev {
            QubesDbEvent::FirewallCommit(path) => {
                if let Some(ip) = commit_ip(path.as_str()) {
                    self.reload(cx, ip);
                }
            }
            QubesDbEvent::Changed { .. } => self.config_changed(cx),
            _ => {}
        }
    }

    fn watch(&mut self, cx: &mut Cx<'_, P>, ev: &WatchEvent) {
        if ev.token == VIF_TOKEN {
            self.rescan(cx);
        }
    }

    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<Instant> {
        let now = cx.now();
        self.busy = false;
        if self.retry_at.is_some_and(|t| t.0 <= now.0) {
            self.setup_devices(cx);
            self.fetch_ruleset(cx);
            if !self.failed.is_empty() {
                self.rescan(cx);
            }
        }
        // Netbacks whose frontend went away.
        let dead: Vec<(DomId, u32)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.dev.is_up())
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.close_client(cx, k);
        }
        if let Some((since, frame)) = self.held.take() {
            let sent = send_on(&mut self.uplink, &mut self.clients, Link::Uplink, &frame);
            if !sent && now.0.saturating_sub(since.0) < HELD_MAX_NANOS {
                self.held = Some((since, frame));
            }
        }
        self.drain(now, Link::Uplink);
        let ids: Vec<ClientId> = self.clients.values().map(|c| c.id).collect();
        for id in ids {
            self.drain(now, Link::Client(id));
        }
        let mut next = None;
        if let Some(r) = self.router.as_mut() {
            next = r.poll(now);
            while let Some((to, frame)) = r.poll_transmit() {
                // Generated frames (ARP, ICMP errors, DNS queries) are few: a full link drops them.
                let _ = send_on(&mut self.uplink, &mut self.clients, to, &frame);
            }
            while let Some(line) = r.take_log() {
                cx.log(format_args!("{line}"));
            }
        }
        self.flush_sends(cx);
        if self.busy {
            return Some(now);
        }
        if self.held.is_some() {
            // The link's completion event wakes us too; this bounds the wait if it does not.
            return Some(Instant(now.0 + HELD_RETRY_NANOS));
        }
        match (next, self.retry_at) {
            (Some(a), Some(b)) => Some(Instant(a.0.min(b.0))),
            (a, b) => a.or(b),
        }
    }

    fn wait_ports(&self, ports: &mut PortSet) {
        if let Some(u) = self.uplink.as_ref() {
            ports.insert(u.port());
        }
        for c in self.clients.values() {
            ports.insert(c.dev.port());
        }
    }
}
