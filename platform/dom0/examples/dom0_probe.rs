//! Lab self-check of the dom0 backend on real Xen, all within this one domain: xenstore
//! write/read/watch, a loopback event channel both ways, and grants shared to ourselves and
//! mapped back (with unmap-notify clearing a byte and signalling a port).
//!
//! usage: dom0_probe   (as root, in dom0 or a Linux domU). One line per check, then
//! `dom0-probe: N passed, M failed`; exit status 0 only if all passed. Off Xen it prints the
//! missing-device line and exits 1.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use platform_api::{
    Env, Events, EvtchnPort, Grants, Notify, Ordering, Port, SharedMem, Store, Tx, Watches,
    PAGE_SIZE,
};
use platform_dom0::{env_from_system, Dom0, UnmapNotify};

/// One check: what it showed, or why it failed.
type Check = fn(&mut Env<Dom0>) -> Result<String, String>;

const PATIENCE: Duration = Duration::from_secs(3);

/// Waits until `port` is reported by `wait` (other ports are ignored).
fn wait_for(env: &mut Env<Dom0>, port: EvtchnPort) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        let set = env
            .events
            .wait(Some(Duration::from_millis(100)))
            .map_err(|e| format!("wait: {e}"))?;
        if set.contains(port) {
            return Ok(start.elapsed());
        }
    }
    Err(format!("port {port} did not fire within {PATIENCE:?}"))
}

fn store_check(env: &mut Env<Dom0>) -> Result<String, String> {
    let key = format!("/local/domain/{}/data/dom0-probe", env.domid);
    let e = |what: &str| {
        let what = what.to_string();
        move |err: platform_api::StoreError| format!("{what}: {err}")
    };
    env.store
        .write(Tx::NONE, &key, b"one")
        .map_err(e("write"))?;
    let back = env.store.read(Tx::NONE, &key).map_err(e("read"))?;
    if back != b"one" {
        return Err(format!("read back {back:?}"));
    }
    env.store.watch(&key, "probe").map_err(e("watch"))?;
    Watches::port(&env.store).ok_or("the store has no port to wait on")?;
    env.store
        .write(Tx::NONE, &key, b"two")
        .map_err(e("write again"))?;
    // The initial firing and the change: both must arrive, through `wait` on the store port.
    let mut fired = 0;
    let start = Instant::now();
    while fired < 2 && start.elapsed() < PATIENCE {
        while let Some(ev) = Watches::poll_watch(&mut env.store).map_err(e("poll_watch"))? {
            if ev.token == "probe" && ev.path == key {
                fired += 1;
            }
        }
        if fired < 2 {
            let _ = env.events.wait(Some(Duration::from_millis(100)));
        }
    }
    env.store.unwatch(&key, "probe").map_err(e("unwatch"))?;
    env.store.rm(Tx::NONE, &key).map_err(e("rm"))?;
    if fired < 2 {
        return Err(format!("{fired} of 2 watch events arrived"));
    }
    Ok(format!("write/read/watch/rm on {key}"))
}

fn evtchn_check(env: &mut Env<Dom0>) -> Result<String, String> {
    let me = env.domid;
    let a = env
        .events
        .alloc_unbound(me)
        .map_err(|e| format!("alloc_unbound: {e}"))?;
    let b = env
        .events
        .bind_interdomain(me, a.port())
        .map_err(|e| format!("bind_interdomain: {e}"))?;
    b.notify().map_err(|e| format!("notify: {e}"))?;
    let t1 = wait_for(env, a.port())?;
    a.notify().map_err(|e| format!("notify back: {e}"))?;
    let t2 = wait_for(env, b.port())?;
    // Unmasked after the first delivery: a second notify must arrive too.
    b.notify().map_err(|e| format!("notify again: {e}"))?;
    let t3 = wait_for(env, a.port())?;
    Ok(format!(
        "loopback ports {} <-> {}: {t1:?}, {t2:?}, again {t3:?}",
        a.port(),
        b.port()
    ))
}

fn grant_check(env: &mut Env<Dom0>) -> Result<String, String> {
    let me = env.domid;
    let (shared, refs) = env
        .grants
        .share(me, 2, true)
        .map_err(|e| format!("share (gntalloc): {e}"))?;
    let mapped = env
        .grants
        .map(me, &refs, true)
        .map_err(|e| format!("map own refs {refs:?} (gntdev): {e}"))?;
    let oob = |e: platform_api::OutOfBounds| e.to_string();
    shared.write(PAGE_SIZE - 3, b"across").map_err(oob)?;
    let mut buf = [0u8; 6];
    mapped.read(PAGE_SIZE - 3, &mut buf).map_err(oob)?;
    if &buf != b"across" {
        return Err(format!("mapped side read {buf:?}"));
    }
    mapped
        .store_u32(8, 0xC0FF_EE00, Ordering::Release)
        .map_err(oob)?;
    if shared.load_u32(8, Ordering::Acquire).map_err(oob)? != 0xC0FF_EE00 {
        return Err("shared side did not see the mapped side's store".into());
    }
    // libxenvchan's pattern: the mapper's "live" byte is cleared and a port signalled when
    // its mapping goes, even if the process dies.
    let a = env
        .events
        .alloc_unbound(me)
        .map_err(|e| format!("alloc_unbound: {e}"))?;
    let b = env
        .events
        .bind_interdomain(me, a.port())
        .map_err(|e| format!("bind_interdomain: {e}"))?;
    shared.store_u8(20, 1, Ordering::Release).map_err(oob)?;
    mapped
        .set_unmap_notify(UnmapNotify {
            clear_byte: Some(20),
            port: Some(b.port()),
        })
        .map_err(|e| format!("set_unmap_notify (gntdev): {e}"))?;
    drop(mapped);
    let t = wait_for(env, a.port())?;
    let live = shared.load_u8(20, Ordering::Acquire).map_err(oob)?;
    if live != 0 {
        return Err(format!("unmap-notify left the byte at {live}"));
    }
    drop(shared);
    drop(b);
    Ok(format!(
        "2 pages shared to ourselves as refs {refs:?}, mapped back, unmap-notify in {t:?}"
    ))
}

fn main() -> ExitCode {
    let mut env = match env_from_system() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("dom0-probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("dom0-probe: domain {} ({})", env.domid, env.name);
    let checks: [(&str, Check); 3] = [
        ("xenstore", store_check),
        ("evtchn", evtchn_check),
        ("grants", grant_check),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        match check(&mut env) {
            Ok(what) => {
                passed += 1;
                println!("dom0-probe: {name} ok: {what}");
            }
            Err(e) => {
                failed += 1;
                println!("dom0-probe: {name} FAILED: {e}");
            }
        }
    }
    println!("dom0-probe: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
