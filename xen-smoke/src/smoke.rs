//! The checks, in order; each prints one `xen-smoke: <check> ok|FAIL ...` line that the lab
//! harness (tests/xen) greps for.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{Clock, DomId, Duration, Events, Notify, Port, Store, Tx};
use platform_xen::abi::ShutdownReason;
use platform_xen::{println, Mode, Xen};
use xen_store::blocking::BlockingStore;

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

    let Some(ring) = xen.take_store() else {
        println!("xen-smoke: xenstore FAIL no ring");
        xen.shutdown(ShutdownReason::Crash)
    };
    let mut store = BlockingStore::new(ring);
    let name = store.read(Tx::NONE, "name").map(text);
    let domid = store.read(Tx::NONE, "domid").map(text);
    match (&name, &domid) {
        (Ok(n), Ok(d)) => println!("xen-smoke: xenstore-read ok name={n} domid={d}"),
        _ => println!("xen-smoke: xenstore-read FAIL {name:?} {domid:?}"),
    }
    match store.write(Tx::NONE, "data/smoke", b"hello from xen-smoke") {
        Ok(()) => println!("xen-smoke: xenstore-write ok data/smoke"),
        Err(e) => println!("xen-smoke: xenstore-write FAIL {e}"),
    }

    let mut evs = xen.events();
    match evs.alloc_unbound(DomId::DOM0) {
        Ok(p) => {
            let port = p.port();
            let sent = p.notify();
            println!(
                "xen-smoke: evtchn ok alloc-unbound port={port} send={}",
                sent.is_ok()
            );
            let _ = store.write(
                Tx::NONE,
                "data/smoke-port",
                alloc::format!("{port}").as_bytes(),
            );
        }
        Err(e) => println!("xen-smoke: evtchn FAIL {e}"),
    }

    if let Err(e) = store.watch("control/shutdown", "shutdown") {
        println!("xen-smoke: watch FAIL {e}");
        xen.shutdown(ShutdownReason::Crash)
    }
    println!("xen-smoke: ready, waiting for control/shutdown");
    loop {
        match store.wait_watch(None) {
            Ok(Some(_)) => {}
            Ok(None) => continue,
            Err(e) => {
                println!("xen-smoke: watch FAIL {e}");
                xen.shutdown(ShutdownReason::Crash)
            }
        }
        let req = store
            .read(Tx::NONE, "control/shutdown")
            .map(text)
            .unwrap_or_default();
        let reason = match req.as_str() {
            "poweroff" | "halt" => ShutdownReason::Poweroff,
            "reboot" => ShutdownReason::Reboot,
            _ => continue,
        };
        // Acknowledge as Linux does: clear the request, then go.
        let _ = store.write(Tx::NONE, "control/shutdown", b"");
        println!("xen-smoke: shutdown ok request={req}");
        xen.shutdown(reason)
    }
}
