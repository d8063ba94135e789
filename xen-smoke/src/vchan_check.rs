//! The vchan checks against dom0's real libxenvchan (`vchan-socket-proxy`): 16 MiB each way,
//! once as the server (dom0 connects) and once as the client (dom0 serves), with `cksum`s.
#![forbid(unsafe_code)]

use platform_api::{Clock, DomId, Duration, Events, Notify, SharedMem, Store, StoreError};
use platform_xen::{println, Xen, XenClock};
use vchan::setup::{self, Stream};
use vchan::{Client, Error, Interest, Server, SetupError};

use crate::cksum::{Cksum, Stream as Pattern};

/// Bytes sent and expected in each direction.
pub const TOTAL: u64 = 16 << 20;
/// The longest quiet spell (no event at all) before a transfer is declared stuck.
const STALL: Duration = Duration::from_secs(60);

/// What the transfer loop needs beyond [`Stream`].
trait Chan: Stream {
    fn space(&mut self) -> Result<usize, Error>;
    fn shut(&mut self) -> Result<(), Error>;
}

impl<M: SharedMem, N: Notify> Chan for Server<M, N> {
    fn space(&mut self) -> Result<usize, Error> {
        self.buffer_space()
    }
    fn shut(&mut self) -> Result<(), Error> {
        self.close()
    }
}

impl<M: SharedMem, N: Notify> Chan for Client<M, N> {
    fn space(&mut self) -> Result<usize, Error> {
        self.buffer_space()
    }
    fn shut(&mut self) -> Result<(), Error> {
        self.close()
    }
}

/// Sums of one transfer.
struct Done {
    rx: Cksum,
    tx: Cksum,
    ms: u64,
}

/// Sends [`TOTAL`] bytes of the pattern while receiving [`TOTAL`] bytes, then waits until the
/// peer has taken everything from our ring (libxenvchan drops unread bytes on close) and closes.
fn transfer<V: Chan, E: Events>(
    v: &mut V,
    ev: &mut E,
    clock: &XenClock,
    seed: u64,
) -> Result<Done, Error> {
    let start = clock.now();
    let capacity = v.space()?;
    let (mut rx, mut tx) = (Cksum::new(), Cksum::new());
    let mut pattern = Pattern::new(seed);
    let mut chunk = [0u8; 4096];
    let (mut off, mut end) = (0usize, 0usize);
    let mut buf = [0u8; 4096];
    loop {
        let mut progress = false;
        if rx.len() < TOTAL {
            let want = (TOTAL - rx.len()).min(buf.len() as u64) as usize;
            let n = v.read(&mut buf[..want])?;
            rx.update(&buf[..n]);
            progress |= n > 0;
        }
        if off == end && tx.len() < TOTAL {
            pattern.fill(&mut chunk);
            tx.update(&chunk);
            (off, end) = (0, chunk.len());
        }
        if off < end {
            let n = v.write(&chunk[off..end])?;
            off += n;
            progress |= n > 0;
        }
        let sending = off < end || tx.len() < TOTAL;
        if rx.len() == TOTAL && !sending {
            break;
        }
        if !progress
            && v.prepare_wait(Interest {
                read: rx.len() < TOTAL,
                write: sending,
            })?
            && ev.wait(Some(STALL)).map_err(Error::Wait)?.is_empty()
        {
            return Err(Error::Timeout);
        }
    }
    let drain_start = clock.now();
    while v.space()? < capacity {
        if clock.now().saturating_duration_since(drain_start) > STALL {
            return Err(Error::Timeout);
        }
        let _ = ev.wait(Some(Duration::from_millis(10)));
    }
    let ms = u64::try_from(clock.now().saturating_duration_since(start).as_micros() / 1000)
        .unwrap_or(u64::MAX);
    v.shut()?;
    Ok(Done { rx, tx, ms })
}

fn report(role: &str, r: Result<Done, Error>) {
    match r {
        Ok(d) => println!(
            "xen-smoke: vchan-{role} ok rx-cksum={}/{} tx-cksum={}/{} in {} ms",
            d.rx.finish(),
            d.rx.len(),
            d.tx.finish(),
            d.tx.len(),
            d.ms
        ),
        Err(e) => println!("xen-smoke: vchan-{role} FAIL {e}"),
    }
}

/// Server role: advertises `data/vchan-srv` for dom0 (64 KiB rings), waits for its client.
pub fn server<S: Store>(xen: &Xen, store: &mut S) {
    let (Some(mut g), mut ev, clock) = (xen.grants(), xen.events(), xen.clock()) else {
        return println!("xen-smoke: vchan-server FAIL no grant table");
    };
    let (mut srv, dir) = match setup::server_init_at(
        &mut g,
        &mut ev,
        store,
        DomId::DOM0,
        "data/vchan-srv",
        65536,
        65536,
    ) {
        Ok(x) => x,
        Err(e) => return println!("xen-smoke: vchan-server FAIL init: {e}"),
    };
    println!("xen-smoke: vchan-server listening at data/vchan-srv");
    if let Err(e) = setup::wait_connected(&mut srv, &mut ev, Some(Duration::from_secs(240))) {
        let _ = dir.remove(store);
        return println!("xen-smoke: vchan-server FAIL no client: {e}");
    }
    let _ = dir.remove(store);
    report("server", transfer(&mut srv, &mut ev, &clock, 0x5EED_0001));
}

/// Client role: connects to dom0's server at `/local/domain/0/data/vchan-cli` (retrying
/// until it is advertised), maps its pages.
pub fn client<S: Store>(xen: &Xen, store: &mut S) {
    let (Some(mut g), mut ev, clock) = (xen.grants(), xen.events(), xen.clock()) else {
        return println!("xen-smoke: vchan-client FAIL no grant table");
    };
    let path = "/local/domain/0/data/vchan-cli";
    println!("xen-smoke: vchan-client looking for {path}");
    let t0 = clock.now();
    let mut cli = loop {
        match setup::client_init_at(&mut g, &mut ev, store, DomId::DOM0, path) {
            Ok(c) => break c,
            Err(SetupError::Store(StoreError::Xs(_)))
                if clock.now().saturating_duration_since(t0) < Duration::from_secs(240) =>
            {
                let _ = ev.wait(Some(Duration::from_millis(200)));
            }
            Err(e) => return println!("xen-smoke: vchan-client FAIL init: {e}"),
        }
    };
    println!("xen-smoke: vchan-client connected");
    report("client", transfer(&mut cli, &mut ev, &clock, 0x5EED_0002));
}
