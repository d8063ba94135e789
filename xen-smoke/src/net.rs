//! Netfront on `device/vif/0`: the frontend half of the XenbusState handshake with dom0's
//! netback, a pool of granted pages for xen-rings' [`Netfront`], and the echo responder loop.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::{
    Clock, DomId, Duration, Events, GrantRef, Grants, Notify, Port, SharedMem, Store, Tx,
};
use platform_xen::{println, GrantMem, XenClock, XenEvents, XenGrants, XenPort};
use xen_rings::netif::{CopyFailed, FrontPages, Netfront, NetfrontLimits, RxEvent};

use crate::echo::{respond, Reply};

/// Largest frame (no scatter-gather, no GSO: one MTU frame).
const MAX_FRAME: usize = 1536;
const RX_BUFFERS: usize = 64;
const TX_PAGES: usize = 64;
/// How long the backend gets to reach a state.
const STATE_PATIENCE: Duration = Duration::from_secs(60);

/// Our pages granted to the backend: a free list for sending and one for receiving.
struct Pool {
    pages: BTreeMap<u32, (GrantMem, bool)>,
    free_tx: Vec<GrantRef>,
    free_rx: Vec<GrantRef>,
}

impl Pool {
    fn new(g: &mut XenGrants, backend: DomId) -> Result<Self, String> {
        let mut pool = Self {
            pages: BTreeMap::new(),
            free_tx: Vec::new(),
            free_rx: Vec::new(),
        };
        for i in 0..TX_PAGES + RX_BUFFERS {
            let rx = i >= TX_PAGES;
            let (mem, refs) = g
                .share(backend, 1, rx)
                .map_err(|e| format!("grant pool: {e}"))?;
            let r = *refs.first().ok_or("grant pool: no ref")?;
            pool.pages.insert(r.0, (mem, rx));
            if rx {
                pool.free_rx.push(r);
            } else {
                pool.free_tx.push(r);
            }
        }
        Ok(pool)
    }
}

impl FrontPages for Pool {
    fn tx_page(&mut self, data: &[u8]) -> Option<GrantRef> {
        let r = self.free_tx.pop()?;
        match self.pages.get(&r.0) {
            Some((mem, _)) if mem.write(0, data).is_ok() => Some(r),
            _ => {
                self.free_tx.push(r);
                None
            }
        }
    }
    fn rx_page(&mut self) -> Option<GrantRef> {
        self.free_rx.pop()
    }
    fn read_rx(&mut self, gref: GrantRef, offset: u16, dst: &mut [u8]) -> Result<(), CopyFailed> {
        let (mem, _) = self.pages.get(&gref.0).ok_or(CopyFailed)?;
        mem.read(usize::from(offset), dst).map_err(|_| CopyFailed)
    }
    fn release(&mut self, gref: GrantRef) {
        match self.pages.get(&gref.0) {
            Some((_, true)) => self.free_rx.push(gref),
            Some((_, false)) => self.free_tx.push(gref),
            None => {}
        }
    }
}

/// A connected vif.
pub struct Vif {
    front: Netfront<GrantMem>,
    pool: Pool,
    port: XenPort,
    events: XenEvents,
    clock: XenClock,
    mac: [u8; 6],
    ip: [u8; 4],
    frame: Vec<u8>,
    reply: Vec<u8>,
    /// Answers sent, by kind: ARP, ping, UDP.
    pub answered: [u64; 3],
    /// Frames not answered, dropped by the ring machine, replies refused for a full ring.
    pub ignored: [u64; 3],
}

/// The first bytes of a frame in hex, for the console.
fn hex_head(frame: &[u8]) -> String {
    frame.iter().take(64).map(|b| format!("{b:02x}")).collect()
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `a.b.c.d` from the command line's `ip=` word.
pub fn parse_ip(cmdline: &str) -> Option<[u8; 4]> {
    let v = cmdline.split(' ').find_map(|w| w.strip_prefix("ip="))?;
    let mut ip = [0u8; 4];
    let mut parts = v.split('.');
    for b in ip.iter_mut() {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

fn wait_state<S: Store>(
    store: &mut S,
    ev: &mut XenEvents,
    clock: &XenClock,
    path: &str,
    want: &[u8],
) -> Result<(), String> {
    let t0 = clock.now();
    loop {
        let s = store.read(Tx::NONE, path).map(text).unwrap_or_default();
        if want.iter().any(|w| s.trim() == format!("{w}")) {
            return Ok(());
        }
        if clock.now().saturating_duration_since(t0) > STATE_PATIENCE {
            return Err(format!("{path} stayed {s:?}, wanted {want:?}"));
        }
        let _ = ev.wait(Some(Duration::from_millis(50)));
    }
}

/// Connects `device/vif/0` (frontend handshake, xenstore.md §5–6); `Ok(None)` without a vif.
pub fn connect<S: Store>(
    g: &mut XenGrants,
    mut events: XenEvents,
    clock: XenClock,
    store: &mut S,
    ip: [u8; 4],
) -> Result<Option<Vif>, String> {
    let dev = "device/vif/0";
    let Ok(backend) = store.read(Tx::NONE, &format!("{dev}/backend")).map(text) else {
        return Ok(None);
    };
    let backend_id = store
        .read(Tx::NONE, &format!("{dev}/backend-id"))
        .map(text)
        .ok()
        .and_then(|s| DomId::parse(s.trim()).ok())
        .ok_or("no backend-id")?;
    let mac = store
        .read(Tx::NONE, &format!("{dev}/mac"))
        .map(text)
        .ok()
        .and_then(|s| parse_mac(&s))
        .ok_or("no mac")?;
    wait_state(
        store,
        &mut events,
        &clock,
        &format!("{backend}/state"),
        &[2],
    )?;
    let (tx_mem, tx_refs) = g.share(backend_id, 1, true).map_err(|e| format!("{e}"))?;
    let (rx_mem, rx_refs) = g.share(backend_id, 1, true).map_err(|e| format!("{e}"))?;
    let limits = NetfrontLimits {
        max_packet: MAX_FRAME,
        rx_buffers: RX_BUFFERS,
        ..NetfrontLimits::DEFAULT
    };
    let mut front = Netfront::new(tx_mem, rx_mem, limits).map_err(|e| format!("{e}"))?;
    let mut pool = Pool::new(g, backend_id)?;
    let port = events
        .alloc_unbound(backend_id)
        .map_err(|e| format!("{e}"))?;
    let keys = [
        ("tx-ring-ref", format!("{}", tx_refs[0])),
        ("rx-ring-ref", format!("{}", rx_refs[0])),
        ("event-channel", format!("{}", port.port())),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
        ("feature-sg", "0".into()),
        ("feature-gso-tcpv4", "0".into()),
        // Ask netback for complete checksums: we answer from what we receive.
        ("feature-no-csum-offload", "1".into()),
        ("state", "4".into()),
    ];
    let mut written = false;
    for _ in 0..16 {
        let tx = store.transaction_start().map_err(|e| format!("{e}"))?;
        for (k, v) in &keys {
            store
                .write(tx, &format!("{dev}/{k}"), v.as_bytes())
                .map_err(|e| format!("{k}: {e}"))?;
        }
        if store.transaction_end(tx, true).is_ok() {
            written = true;
            break;
        }
    }
    if !written {
        return Err("transaction kept failing".into());
    }
    wait_state(
        store,
        &mut events,
        &clock,
        &format!("{backend}/state"),
        &[4],
    )?;
    front.post_rx(&mut pool).map_err(|e| format!("{e}"))?;
    if front.take_notify() {
        let _ = port.notify();
    }
    Ok(Some(Vif {
        front,
        pool,
        port,
        events,
        clock,
        mac,
        ip,
        frame: vec![0; MAX_FRAME],
        reply: Vec::with_capacity(MAX_FRAME),
        answered: [0; 3],
        ignored: [0; 3],
    }))
}

impl Vif {
    /// The MAC address dom0 gave us.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Answers frames for up to `budget`; `Err` when the frontend broke.
    pub fn serve(&mut self, budget: Duration) -> Result<(), String> {
        let t0 = self.clock.now();
        loop {
            let mut busy = false;
            loop {
                let ev = self.front.poll_rx(&mut self.pool, &mut self.frame);
                match ev.map_err(|e| format!("rx: {e}"))? {
                    RxEvent::Packet { len } => {
                        busy = true;
                        let frame = self.frame.get(..len).unwrap_or(&[]);
                        if let Some(kind) = respond(frame, self.mac, self.ip, &mut self.reply) {
                            match self.front.transmit(&mut self.pool, &self.reply) {
                                Ok(()) => {
                                    if kind == Reply::Udp && self.answered[2] == 0 {
                                        println!(
                                            "xen-smoke: netfront first udp in={} out={}",
                                            hex_head(frame),
                                            hex_head(&self.reply)
                                        );
                                    }
                                    self.answered[match kind {
                                        Reply::Arp => 0,
                                        Reply::Ping => 1,
                                        Reply::Udp => 2,
                                    }] += 1
                                }
                                Err(e) if e.is_fatal() => return Err(format!("tx: {e}")),
                                Err(e) => {
                                    // Ring full: the peer retries.
                                    self.ignored[2] += 1;
                                    if self.ignored[2] <= 3 {
                                        println!("xen-smoke: netfront reply not sent: {e}");
                                    }
                                }
                            }
                        } else {
                            self.ignored[0] += 1;
                            if self.ignored[0] <= 3 {
                                println!(
                                    "xen-smoke: netfront unanswered frame len={len} {}",
                                    hex_head(frame)
                                );
                            }
                        }
                    }
                    RxEvent::Dropped(why) => {
                        busy = true;
                        self.ignored[1] += 1;
                        if self.ignored[1] <= 3 {
                            println!("xen-smoke: netfront rx dropped: {why:?}");
                        }
                    }
                    RxEvent::Idle => break,
                }
            }
            self.front
                .poll_tx_responses(&mut self.pool)
                .map_err(|e| format!("tx responses: {e}"))?;
            if self.front.take_notify() {
                let _ = self.port.notify();
            }
            let spent = self.clock.now().saturating_duration_since(t0);
            if spent >= budget {
                return Ok(());
            }
            if !busy {
                let _ = self.events.wait(Some(budget.saturating_sub(spent)));
            }
        }
    }
}
