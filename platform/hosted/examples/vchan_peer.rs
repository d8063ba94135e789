//! Interop peer over the project's vchan crate and the hosted backend: the Rust twin of
//! `tests/interop/vchan_peer.c` (same arguments, same test stream, same output line).
//!
//! usage: vchan_peer server|client PEER_DOMID PORT LEFT_MIN RIGHT_MIN SEND RECV [eof|bench]
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use platform_api::{DomId, Events, Notify, SharedMem};
use platform_hosted::events::HostedEvents;
use platform_hosted::grants::HostedGrants;
use vchan::setup::{client_init, server_init};
use vchan::{Client, Error, Interest, Server};

const CHUNK: usize = 65536;
const SEED_SERVER_TX: u64 = 0x5EED_0000_0000_0001;
const SEED_CLIENT_TX: u64 = 0x5EED_0000_0000_0002;
const FNV_INIT: u64 = 0xCBF2_9CE4_8422_2325;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Byte i of a stream is byte i%8 (little-endian) of splitmix64(seed + i/8).
fn stream_fill(seed: u64, pos: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let p = pos + i as u64;
        *b = (splitmix64(seed.wrapping_add(p / 8)) >> (8 * (p % 8))) as u8;
    }
}

fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}

/// What the transfer loop needs from a server or client endpoint.
trait Endpoint {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
    fn write(&mut self, data: &[u8]) -> Result<usize, Error>;
    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error>;
    fn close(&mut self) -> Result<(), Error>;
}

macro_rules! endpoint {
    ($t:ident) => {
        impl<M: SharedMem, N: Notify> Endpoint for $t<M, N> {
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
                $t::read(self, buf)
            }
            fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
                $t::write(self, data)
            }
            fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
                $t::prepare_wait(self, interest)
            }
            fn close(&mut self) -> Result<(), Error> {
                $t::close(self)
            }
        }
    };
}
endpoint!(Server);
endpoint!(Client);

struct Job {
    to_send: u64,
    to_recv: u64,
    tx_seed: u64,
    rx_seed: u64,
    eof: bool,
    bench: bool,
}

fn transfer<V: Endpoint, E: Events>(
    v: &mut V,
    events: &mut E,
    job: &Job,
) -> Result<String, String> {
    let mut out = vec![0u8; CHUNK];
    let mut inb = vec![0u8; CHUNK];
    let mut want = vec![0u8; CHUNK];
    let (mut sent, mut recvd, mut fnv_tx, mut fnv_rx) = (0u64, 0u64, FNV_INIT, FNV_INIT);
    let (mut out_len, mut out_off) = (0usize, 0usize);
    let (mut t_first, mut t_last) = (None, None);
    let mut saw_eof = false;
    let report = |sent, recvd, fnv_tx, fnv_rx, ns: u128| {
        format!("OK sent={sent} recv={recvd} fnv_tx={fnv_tx:016x} fnv_rx={fnv_rx:016x} ns={ns}")
    };
    loop {
        let want_recv = recvd < job.to_recv || (job.eof && !saw_eof && job.to_recv > 0);
        if sent >= job.to_send && !want_recv {
            break;
        }
        let mut progress = false;
        if sent < job.to_send {
            if out_off == out_len {
                out_len = (job.to_send - sent).min(CHUNK as u64) as usize;
                out_off = 0;
                if !job.bench {
                    stream_fill(job.tx_seed, sent, &mut out[..out_len]);
                    fnv_tx = fnv1a(fnv_tx, &out[..out_len]);
                }
            }
            let n = v
                .write(&out[out_off..out_len])
                .map_err(|e| format!("write: {e}"))?;
            out_off += n;
            sent += n as u64;
            progress |= n > 0;
            if sent == job.to_send && job.eof {
                // Mid-stream close: the peer is still reading what we sent.
                v.close().map_err(|e| format!("close: {e}"))?;
                return Ok(report(sent, recvd, fnv_tx, fnv_rx, 0));
            }
        }
        if want_recv {
            match v.read(&mut inb) {
                Ok(0) => {}
                Ok(n) => {
                    t_first.get_or_insert_with(Instant::now);
                    if recvd + n as u64 > job.to_recv {
                        return Err(format!(
                            "{} bytes more than expected",
                            recvd + n as u64 - job.to_recv
                        ));
                    }
                    if !job.bench {
                        stream_fill(job.rx_seed, recvd, &mut want[..n]);
                        if inb[..n] != want[..n] {
                            return Err(format!("data mismatch in bytes {recvd}..+{n}"));
                        }
                        fnv_rx = fnv1a(fnv_rx, &inb[..n]);
                    }
                    recvd += n as u64;
                    t_last = Some(Instant::now());
                    progress = true;
                }
                Err(Error::PeerClosed) if job.eof && recvd == job.to_recv => saw_eof = true,
                Err(Error::PeerClosed) => {
                    return Err(format!("EOF after {recvd} of {} bytes", job.to_recv))
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        if !progress && !saw_eof {
            let interest = Interest {
                read: want_recv,
                write: sent < job.to_send,
            };
            match v.prepare_wait(interest) {
                Ok(true) => {
                    events
                        .wait(Some(Duration::from_secs(1)))
                        .map_err(|e| format!("wait: {e}"))?;
                }
                Ok(false) => {}
                Err(Error::PeerClosed) => {}
                Err(e) => return Err(format!("prepare_wait: {e}")),
            }
        }
    }
    let ns = match (t_first, t_last) {
        (Some(a), Some(b)) => b.duration_since(a).as_nanos(),
        _ => 0,
    };
    let line = report(sent, recvd, fnv_tx, fnv_rx, ns);
    let _ = v.close();
    Ok(line)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad or missing {what}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let server = match args.first().map(String::as_str) {
        Some("server") => true,
        Some("client") => false,
        _ => return Err(
            "usage: vchan_peer server|client PEER PORT LEFT_MIN RIGHT_MIN SEND RECV [eof|bench]"
                .into(),
        ),
    };
    let peer = DomId::new(arg(args, 1, "PEER")?).map_err(|e| e.to_string())?;
    let port: u32 = arg(args, 2, "PORT")?;
    let left_min: usize = arg(args, 3, "LEFT_MIN")?;
    let right_min: usize = arg(args, 4, "RIGHT_MIN")?;
    let mode = args.get(7).map(String::as_str);
    let job = Job {
        to_send: arg(args, 5, "SEND")?,
        to_recv: arg(args, 6, "RECV")?,
        tx_seed: if server {
            SEED_SERVER_TX
        } else {
            SEED_CLIENT_TX
        },
        rx_seed: if server {
            SEED_CLIENT_TX
        } else {
            SEED_SERVER_TX
        },
        eof: mode == Some("eof"),
        bench: mode == Some("bench"),
    };
    let mut grants = HostedGrants::from_env().map_err(|e| e.to_string())?;
    let mut events = HostedEvents::from_env().map_err(|e| e.to_string())?;
    let mut store = platform_hosted::store::connect_from_env().map_err(|e| e.to_string())?;
    if server {
        let (mut v, _dir) = server_init(
            &mut grants,
            &mut events,
            &mut store,
            peer,
            port,
            left_min,
            right_min,
        )
        .map_err(|e| format!("server_init: {e}"))?;
        println!("READY");
        transfer(&mut v, &mut events, &job)
    } else {
        let mut v = client_init(&mut grants, &mut events, &mut store, peer, port)
            .map_err(|e| format!("client_init: {e}"))?;
        transfer(&mut v, &mut events, &job)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vchan_peer(rust): {e}");
            ExitCode::FAILURE
        }
    }
}
