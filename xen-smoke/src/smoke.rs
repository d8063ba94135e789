//! The checks, in order; each prints one `xen-smoke: <check> ok|FAIL ...` line that the lab
//! harness (tests/xen) greps for.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{
    Clock, DomId, Duration, Entropy, Events, Grants, NetDevice, Notify, Platform, PlatformError,
    Port, SharedMem, Store, StoreError, Tx,
};
use platform_xen::abi::ShutdownReason;
use platform_xen::{println, Mode, Xen, XenGrants, XenPlatform};

use crate::net::{mac_text, parse_ip, Link};

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

/// Runs the checks, then serves `control/shutdown`.
pub fn main(mut xen: Xen) -> ! {
    let mode = match xen.mode() {
        Mode::Pv => "pv",
        Mode::Pvh => "pvh",
    };
    let (maj, min) = xen.xen_version();
    println!(
        "xen-smoke: console ok mode={mode} xen={maj}.{min} cmdline=\"{}\"",
        xen.cmdline()
    );

    let clock = xen.clock();
    let r = clock.record();
    println!(
        "xen-smoke: time record version={} system_time={} tsc_timestamp={} mul={} shift={}",
        r.version, r.system_time, r.tsc_timestamp, r.tsc_to_system_mul, r.tsc_shift
    );
    let t0 = clock.now();
    let mut events = xen.events();
    let waited = events.wait(Some(Duration::from_millis(50)));
    let dt = clock.now().saturating_duration_since(t0);
    let wall = clock.wall_clock();
    if waited.is_ok() && dt >= Duration::from_millis(50) && dt < Duration::from_secs(5) {
        println!(
            "xen-smoke: clock ok poll-timeout={}us wallclock={}s",
            dt.as_micros(),
            wall.sec
        );
    } else {
        println!(
            "xen-smoke: clock FAIL poll-timeout={}us ({:?})",
            dt.as_micros(),
            waited.err()
        );
    }

    let mut env = match platform_xen::env(&mut xen) {
        Ok(env) => env,
        Err(e) => {
            println!("xen-smoke: env FAIL {e}");
            xen.shutdown(ShutdownReason::Crash)
        }
    };
    let mut rnd = [0u8; 8];
    env.entropy.fill(&mut rnd);
    println!(
        "xen-smoke: env ok domid={} name={} rdrand={:016x}",
        env.domid,
        env.name,
        u64::from_le_bytes(rnd)
    );
    println!(
        "xen-smoke: xenstore-read ok name={} domid={}",
        env.name, env.domid
    );
    let domid: Result<String, StoreError> = Ok(alloc::format!("{}", env.domid));
    let store = &mut env.store;
    match store.write(Tx::NONE, "data/smoke", b"hello from xen-smoke") {
        Ok(()) => println!("xen-smoke: xenstore-write ok data/smoke"),
        Err(e) => println!("xen-smoke: xenstore-write FAIL {e}"),
    }

    let mut evs = xen.events();
    match evs.alloc_unbound(DomId::DOM0) {
        Ok(p) => {
            let port = p.port();
            println!("xen-smoke: evtchn-unbound ok port={port}");
            let _ = store.write(
                Tx::NONE,
                "data/smoke-port",
                alloc::format!("{port}").as_bytes(),
            );
            core::mem::forget(p); // stays open for dom0 to inspect
        }
        Err(e) => println!("xen-smoke: evtchn-unbound FAIL {e}"),
    }
    // Loopback: bind to our own unbound port, notify one end, see the other pending.
    let me = domid
        .as_ref()
        .ok()
        .and_then(|d| DomId::parse(d.trim()).ok());
    match me.map(|me| (me, evs.alloc_unbound(me))) {
        Some((me, Ok(a))) => match evs.bind_interdomain(me, a.port()) {
            Ok(b) => {
                let sent = b.notify();
                let got = evs.wait(Some(Duration::from_secs(2)));
                let hit = got.as_ref().map(|s| s.contains(a.port())).unwrap_or(false);
                if sent.is_ok() && hit {
                    println!(
                        "xen-smoke: evtchn-interdomain ok {}<->{} send+poll",
                        a.port(),
                        b.port()
                    );
                } else {
                    println!("xen-smoke: evtchn-interdomain FAIL sent={sent:?} got={got:?}");
                }
            }
            Err(e) => println!("xen-smoke: evtchn-interdomain FAIL bind {e}"),
        },
        Some((_, Err(e))) => println!("xen-smoke: evtchn-interdomain FAIL alloc {e}"),
        None => println!("xen-smoke: evtchn-interdomain FAIL no domid"),
    }
    // VIRQ_TIMER: a one-shot timer 20 ms ahead wakes SCHEDOP_poll.
    match evs.bind_timer() {
        Ok(t) => {
            let start = clock.now();
            let armed = evs.set_timer(start.saturating_add(Duration::from_millis(20)));
            // Other ports of this event set (the loopback pair above) may still wake us: wait
            // on until the timer's port is among the pending ones, for at most 2 s.
            let (mut got, mut hit) = (Ok(platform_api::PortSet::new()), false);
            while !hit && clock.now().saturating_duration_since(start) < Duration::from_secs(2) {
                got = evs.wait(Some(Duration::from_secs(2)));
                hit = got.as_ref().map(|s| s.contains(t.port())).unwrap_or(false);
                if got.is_err() {
                    break;
                }
            }
            let dt = clock.now().saturating_duration_since(start);
            if armed.is_ok() && hit && dt >= Duration::from_millis(19) {
                println!("xen-smoke: virq-timer ok fired after {}us", dt.as_micros());
            } else {
                println!(
                    "xen-smoke: virq-timer FAIL armed={armed:?} got={got:?} after {}us",
                    dt.as_micros()
                );
            }
        }
        Err(e) => println!("xen-smoke: virq-timer FAIL bind {e}"),
    }

    match xen.grants() {
        Some(mut g) => {
            if let Some(me) = me {
                g.set_own_domid(me);
            }
            match g.share(DomId::DOM0, 2, true) {
                Ok((mem, refs)) => {
                    let wrote = mem.write(4096, b"granted by xen-smoke").is_ok();
                    let list: Vec<String> = refs.iter().map(|r| alloc::format!("{r}")).collect();
                    let _ = store.write(Tx::NONE, "data/smoke-grefs", list.join(" ").as_bytes());
                    let before = g.free_refs();
                    let ended = mem.end_access();
                    let back = g.free_refs() == before + refs.len();
                    if wrote && ended.is_ok() && back {
                        println!("xen-smoke: grant ok refs={} end-access ok", list.join(","));
                    } else {
                        println!(
                            "xen-smoke: grant FAIL wrote={wrote} end={ended:?} refs-back={back}"
                        );
                    }
                }
                Err(e) => println!("xen-smoke: grant FAIL share: {e}"),
            }
            match me {
                Some(me) => grant_map_loopback(&mut g, me, mode == "pvh"),
                None => println!("xen-smoke: grant-map FAIL no domid"),
            }
        }
        None => println!("xen-smoke: grant FAIL no grant table"),
    }

    // `blk=verify`: a later boot that only reads back what the first one wrote.
    let verify = xen.cmdline().split(' ').any(|w| w == "blk=verify");
    let skip_vchan = xen.cmdline().split(' ').any(|w| w == "vchan=skip");
    if !verify && !skip_vchan {
        crate::vchan_check::server(&xen, &mut env.store);
        crate::vchan_check::client(&xen, &mut env.store);
    }
    crate::blk::check(&mut env, !verify);

    let ip = parse_ip(xen.cmdline(), "ip").unwrap_or([10, 137, 99, 2]);
    let back_ip = parse_ip(xen.cmdline(), "backip").unwrap_or([10, 137, 98, 1]);
    let has_vif = env.store.read(Tx::NONE, "device/vif/0/backend").is_ok();
    let mut vif = if has_vif {
        match XenPlatform::netfront(&mut env, 0) {
            Ok(dev) => {
                println!(
                    "xen-smoke: netfront ok connected to netback, mac={} ip={}.{}.{}.{}",
                    mac_text(dev.mac()),
                    ip[0],
                    ip[1],
                    ip[2],
                    ip[3]
                );
                Some(Link::new(dev, "netfront", ip))
            }
            Err(e) => {
                println!("xen-smoke: netfront FAIL {e}");
                None
            }
        }
    } else {
        None
    };
    let mut back: Option<Link<platform_xen::XenNet>> = None;
    let mut tried_back = false;
    let mut next_check = env.clock.now();

    let (free, total) = xen.heap_stats();
    println!(
        "xen-smoke: heap in use {} KiB of {} KiB (after the checks, vif pages included)",
        (total - free) / 1024,
        total / 1024
    );
    println!("xen-smoke: ready, waiting for control/shutdown");
    let reason = loop {
        // One wait serves the vif, the netback and the store (all bound in env.events). The
        // store is looked at (control/shutdown, a new or closing client vif) every 200 ms
        // only: a xenstore round trip per frame would slow every answer down.
        let now = env.clock.now();
        let _ = env
            .events
            .wait(Some(next_check.saturating_duration_since(now)));
        for (link, what) in [(&mut vif, "netfront"), (&mut back, "netback")] {
            if let Some(l) = link.as_mut() {
                if let Err(e) = l.serve() {
                    println!("xen-smoke: {what} FAIL {e}");
                    l.summary();
                    *link = None;
                }
            }
        }
        let now = env.clock.now();
        if now < next_check {
            continue;
        }
        next_check = now.saturating_add(Duration::from_millis(200));
        let closing = match back.as_ref().map(|l| &l.dev) {
            Some(platform_xen::XenNet::Back(b)) => b.peer_closing(&mut env.store),
            _ => false,
        };
        if closing {
            if let Some(l) = back.take() {
                l.summary();
                if let platform_xen::XenNet::Back(b) = l.dev {
                    println!("xen-smoke: netback drops {:?}", b.drops());
                    match b.close(&mut env.store) {
                        Ok(()) => println!("xen-smoke: netback closed, rings unmapped"),
                        Err(e) => println!("xen-smoke: netback FAIL close: {e}"),
                    }
                }
            }
        }
        if back.is_none() && !tried_back {
            if let Some(found) = find_client(&mut env, back_ip) {
                (back, tried_back) = (found, true);
            }
        }
        let req = env
            .store
            .read(Tx::NONE, "control/shutdown")
            .map(text)
            .unwrap_or_default();
        match req.as_str() {
            "poweroff" | "halt" => break (req, ShutdownReason::Poweroff),
            "reboot" => break (req, ShutdownReason::Reboot),
            _ => {}
        }
    };
    for l in [&vif, &back].into_iter().flatten() {
        l.summary();
    }
    if let Some(platform_xen::XenNet::Back(b)) = back.as_ref().map(|l| &l.dev) {
        println!("xen-smoke: netback drops {:?}", b.drops());
    }
    let (free, total) = xen.heap_stats();
    println!(
        "xen-smoke: heap in use at the end {} KiB of {} KiB",
        (total - free) / 1024,
        total / 1024
    );
    let store = &mut env.store;
    // Acknowledge as Linux does: clear the request, then go.
    let _ = store.write(Tx::NONE, "control/shutdown", b"");
    println!("xen-smoke: shutdown ok request={}", reason.0);
    xen.shutdown(reason.1)
}

/// Serves the first client vif the toolstack put under our `backend/vif` (the lab's Linux
/// domU whose vif names us as its backend); `None` while there is none, `Some(None)` when
/// connecting to it failed.
fn find_client(
    env: &mut platform_api::Env<XenPlatform>,
    ip: [u8; 4],
) -> Option<Option<Link<platform_xen::XenNet>>> {
    let fe = env.store.directory(Tx::NONE, "backend/vif").ok()?;
    let fe = fe.first()?;
    let devs = env
        .store
        .directory(Tx::NONE, &alloc::format!("backend/vif/{fe}"))
        .ok()?;
    let devid: u32 = devs.first()?.parse().ok()?;
    let frontend = DomId::parse(fe).ok()?;
    println!("xen-smoke: netback serving domain {frontend} vif {devid}");
    match platform_xen::netback_wait(env, frontend, devid) {
        Ok(dev) => {
            println!(
                "xen-smoke: netback ok connected to domain {frontend}'s netfront, our mac={} ip={}.{}.{}.{}",
                mac_text(dev.mac()),
                ip[0],
                ip[1],
                ip[2],
                ip[3]
            );
            Some(Some(Link::new(dev, "netback", ip)))
        }
        Err(e) => {
            println!("xen-smoke: netback FAIL domain {frontend} vif {devid}: {e}");
            Some(None)
        }
    }
}

/// Grants two pages to ourselves and maps them: bytes written on one side appear on the other;
/// ending access while mapped is refused; after unmapping it succeeds.
fn grant_map_loopback(g: &mut XenGrants, me: DomId, pvh: bool) {
    let (shared, refs) = match g.share(me, 2, true) {
        Ok(x) => x,
        Err(e) => return println!("xen-smoke: grant-map FAIL share: {e}"),
    };
    let _ = shared.write(4100, b"ping");
    let mapped = match g.map(me, &refs, true) {
        Ok(m) => m,
        Err(PlatformError::Unsupported(what)) if pvh => {
            let ended = shared.end_access();
            // PVH maps a peer's grants (the vchan client check maps dom0's); a self-map would
            // take the page away from its own address, so the platform refuses it.
            return println!(
                "xen-smoke: grant-map ok PVH refuses a self-map ({what} is not supported), end={ended:?}"
            );
        }
        Err(e) => return println!("xen-smoke: grant-map FAIL map: {e}"),
    };
    let mut buf = [0u8; 4];
    let seen = mapped.read(4100, &mut buf).is_ok() && &buf == b"ping";
    let wrote = mapped.write(4104, b"pong");
    let _ = mapped.read(4104, &mut buf);
    let kept = &buf == b"pong";
    let _ = shared.read(4104, &mut buf);
    let back = &buf == b"pong";
    // The other direction too: written through our own page, read through the mapping.
    let _ = shared.write(4108, b"back");
    let _ = mapped.read(4108, &mut buf);
    let fwd = &buf == b"back";
    drop(mapped);
    let ended = shared.end_access();
    if seen && back && ended.is_ok() {
        println!("xen-smoke: grant-map ok loopback 2 pages both ways, unmapped, access ended");
    } else {
        println!("xen-smoke: grant-map FAIL seen={seen} wrote={wrote:?} kept={kept} back={back} shared-to-mapped={fwd} end={ended:?}");
    }
}
