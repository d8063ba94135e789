//! Xenbus device handshakes over the store, shared by netfront, netback and blkfront: reading a
//! device's keys, waiting for the peer's `state`, and writing ours in one transaction.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{Clock, DomId, Duration, Events, PlatformError, Store, StoreError, Tx};
use xen_store::blocking::with_transaction;

use crate::events::{XenClock, XenEvents};

/// `XenbusStateInitWait`.
pub const INIT_WAIT: u8 = 2;
/// `XenbusStateInitialised`.
pub const INITIALISED: u8 = 3;
/// `XenbusStateConnected`.
pub const CONNECTED: u8 = 4;
/// `XenbusStateClosing`.
pub const CLOSING: u8 = 5;
/// `XenbusStateClosed`.
pub const CLOSED: u8 = 6;

/// How long a backend gets to reach a state (dom0's hotplug scripts run first under TCG).
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How long a frontend gets: the client domain may still be booting its kernel.
pub const FRONTEND_PATIENCE: Duration = Duration::from_secs(600);

/// A node's value as trimmed text (lossy: a value is only compared or parsed).
pub fn read_text<S: Store + ?Sized>(store: &mut S, path: &str) -> Result<String, PlatformError> {
    let v = store.read(Tx::NONE, path)?;
    Ok(String::from_utf8_lossy(&v).trim().into())
}

/// A node's value parsed as a number (or any `FromStr`).
pub fn read_num<S: Store + ?Sized, T: core::str::FromStr>(
    store: &mut S,
    path: &str,
) -> Result<T, PlatformError> {
    read_text(store, path)?
        .parse()
        .map_err(|_| PlatformError::Store(StoreError::BadReply("node is not a number")))
}

/// The state at `path` (0 when missing or garbage: treated as not there yet).
pub fn state<S: Store + ?Sized>(store: &mut S, path: &str) -> u8 {
    read_num(store, path).unwrap_or(0)
}

/// Polls `path` every 50 ms until its state is one of `want`; a peer that closes instead, or
/// stays silent for `patience`, is reported as gone.
pub fn wait_state<S: Store + ?Sized>(
    store: &mut S,
    events: &mut XenEvents,
    clock: &XenClock,
    peer: DomId,
    path: &str,
    want: &[u8],
    patience: Duration,
) -> Result<u8, PlatformError> {
    let t0 = clock.now();
    loop {
        let s = state(store, path);
        if want.contains(&s) {
            return Ok(s);
        }
        if s == CLOSING || s == CLOSED || clock.now().saturating_duration_since(t0) > patience {
            return Err(PlatformError::NoSuchDomain(peer));
        }
        events.wait(Some(Duration::from_millis(50)))?;
    }
}

/// Writes `keys` under `dir` in one transaction (retried on `EAGAIN`).
pub fn write_keys<S: Store + ?Sized>(
    store: &mut S,
    dir: &str,
    keys: &[(&str, String)],
) -> Result<(), PlatformError> {
    let paths: Vec<(String, &str)> = keys
        .iter()
        .map(|(k, v)| (format!("{dir}/{k}"), v.as_str()))
        .collect();
    with_transaction(store, 16, |s, tx| {
        for (p, v) in &paths {
            s.write(tx, p, v.as_bytes())?;
        }
        Ok(())
    })?;
    Ok(())
}
