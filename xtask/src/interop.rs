//! `cargo xtask interop`: our vchan against Debian's real libxenvchan (over the hosted
//! xen-shims) in both roles, in-page and multi-page rings, bulk data with checksums, and EOF.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

#[path = "interop_build.rs"]
pub(crate) mod interop_build;
#[path = "interop_harness.rs"]
pub(crate) mod interop_harness;

use interop_build::Artifacts;
use interop_harness::{Impl, Sim};

/// Server and client domains of every check.
const SERVER_DOM: u16 = 1;
const CLIENT_DOM: u16 = 2;
/// Bytes each way for the bulk checks.
const BULK: u64 = 64 << 20;
/// Generous per-check limit (in-page rings move 1 KiB per wakeup).
const TIMEOUT: Duration = Duration::from_secs(300);

/// One transfer between a server and a client.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub server: Impl,
    pub client: Impl,
    pub left_min: usize,
    pub right_min: usize,
    /// Bytes server→client and client→server.
    pub s2c: u64,
    pub c2s: u64,
    /// Which side closes right after sending (the other must see a clean EOF).
    pub closer: Option<Closer>,
    pub bench: bool,
    /// Pin both peers to this CPU (benches: measures the protocol, not the scheduler's
    /// placement of the two processes).
    pub cpu: Option<usize>,
}

/// The side that closes mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closer {
    Server,
    Client,
}

/// What both sides reported.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub server: interop_harness::Report,
    pub client: interop_harness::Report,
}

/// Runs one transfer in a fresh simulated run: the server first, the client once the server's
/// xenstore keys exist (libxenvchan's client does not wait for them).
pub(crate) fn transfer(art: &Artifacts, port: u32, t: &Transfer) -> Result<Outcome> {
    let sim = Sim::start(art, &[SERVER_DOM, CLIENT_DOM])?;
    let mode = |closes: bool, receives_eof: bool| -> Vec<String> {
        if t.bench {
            vec!["bench".into()]
        } else if closes || receives_eof {
            vec!["eof".into()]
        } else {
            vec![]
        }
    };
    let args = |role: &str, peer: u16, send: u64, recv: u64, m: Vec<String>| -> Vec<String> {
        let mut v = vec![
            role.to_string(),
            peer.to_string(),
            port.to_string(),
            t.left_min.to_string(),
            t.right_min.to_string(),
            send.to_string(),
            recv.to_string(),
        ];
        v.extend(m);
        v
    };
    let (s_send, s_recv, c_send, c_recv) = match t.closer {
        None => (t.s2c, t.c2s, t.c2s, t.s2c),
        Some(Closer::Server) => (t.s2c, 0, 0, t.s2c),
        Some(Closer::Client) => (0, t.c2s, t.c2s, 0),
    };
    let eof = t.closer.is_some();
    let s_args = args(
        "server",
        CLIENT_DOM,
        s_send,
        s_recv,
        mode(t.closer == Some(Closer::Server), eof),
    );
    let c_args = args(
        "client",
        SERVER_DOM,
        c_send,
        c_recv,
        mode(t.closer == Some(Closer::Client), eof),
    );
    let mut server = sim.spawn(t.server, SERVER_DOM, &s_args, t.cpu)?;
    server.wait_ready(Duration::from_secs(20))?;
    let client = sim.spawn(t.client, CLIENT_DOM, &c_args, t.cpu)?;
    let client_r = client.finish(TIMEOUT);
    let server_r = server.finish(TIMEOUT);
    let (server, client) = (server_r?, client_r?);
    if !t.bench {
        if server.sent != client.recv || client.sent != server.recv {
            bail!("byte counts differ: server {server:?}, client {client:?}");
        }
        if server.fnv_tx != client.fnv_rx || client.fnv_tx != server.fnv_rx {
            bail!("checksums differ: server {server:?}, client {client:?}");
        }
    }
    Ok(Outcome { server, client })
}

fn bulk(server: Impl, client: Impl, left_min: usize, right_min: usize) -> Transfer {
    Transfer {
        server,
        client,
        left_min,
        right_min,
        s2c: BULK,
        c2s: BULK,
        closer: None,
        bench: false,
        cpu: None,
    }
}

fn eof(server: Impl, client: Impl, closer: Closer) -> Transfer {
    // More than the 64 KiB rings hold, so the closer really closes mid-stream.
    let n = (1 << 20) + 12345;
    Transfer {
        server,
        client,
        left_min: 65536,
        right_min: 65536,
        s2c: n,
        c2s: n,
        closer: Some(closer),
        bench: false,
        cpu: None,
    }
}

/// Runs the interop checks; fails if any fails.
pub fn run(root: &Path) -> Result<()> {
    let art = interop_build::build(root)?;
    use Impl::{Libxenvchan as C, Ours as R};
    let checks: Vec<(String, Transfer)> = vec![
        (
            "libxenvchan server <-> libxenvchan client, rings 1024/2048, 64 MiB each way".into(),
            bulk(C, C, 1024, 2048),
        ),
        (
            "libxenvchan server <-> libxenvchan client, rings 64K/64K, 64 MiB each way".into(),
            bulk(C, C, 65536, 65536),
        ),
        (
            "ours server <-> libxenvchan client, rings 1024/2048, 64 MiB each way".into(),
            bulk(R, C, 1024, 2048),
        ),
        (
            "ours server <-> libxenvchan client, rings 2048/1024, 64 MiB each way".into(),
            bulk(R, C, 2048, 1024),
        ),
        (
            "ours server <-> libxenvchan client, rings 64K/128K, 64 MiB each way".into(),
            bulk(R, C, 65536, 131072),
        ),
        (
            "libxenvchan server <-> ours client, rings 1024/2048, 64 MiB each way".into(),
            bulk(C, R, 1024, 2048),
        ),
        (
            "libxenvchan server <-> ours client, rings 2048/1024, 64 MiB each way".into(),
            bulk(C, R, 2048, 1024),
        ),
        (
            "libxenvchan server <-> ours client, rings 128K/64K, 64 MiB each way".into(),
            bulk(C, R, 131072, 65536),
        ),
        (
            "ours server <-> ours client, rings 64K/64K, 64 MiB each way".into(),
            bulk(R, R, 65536, 65536),
        ),
        (
            "ours server closes mid-stream -> libxenvchan client sees clean EOF".into(),
            eof(R, C, Closer::Server),
        ),
        (
            "libxenvchan client closes mid-stream -> ours server sees clean EOF".into(),
            eof(R, C, Closer::Client),
        ),
        (
            "libxenvchan server closes mid-stream -> ours client sees clean EOF".into(),
            eof(C, R, Closer::Server),
        ),
        (
            "ours client closes mid-stream -> libxenvchan server sees clean EOF".into(),
            eof(C, R, Closer::Client),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (i, (name, t)) in checks.iter().enumerate() {
        let port = 600 + i as u32;
        match transfer(&art, port, t) {
            Ok(o) => {
                passed += 1;
                let bytes = o.server.sent + o.server.recv;
                println!("PASS {name} ({bytes} bytes checked)");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }
    println!("interop: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} interop checks failed");
    }
    Ok(())
}
