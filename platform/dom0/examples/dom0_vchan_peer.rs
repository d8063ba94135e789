//! The project's vchan over this backend, for interop on real Xen against Debian's libxenvchan
//! (`tests/interop/vchan_peer.c` built in a Linux domU): same arguments, stream and result line
//! as `platform-hosted`'s `vchan_peer`, with the domain's identity from `env_from_system`.
//!
//! usage: dom0_vchan_peer server|client PEER_DOMID PORT LEFT_MIN RIGHT_MIN SEND RECV [eof]
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use platform_api::{DomId, Events, Notify, SharedMem};
use platform_dom0::env_from_system;
use vchan::setup::{client_init, server_init};
use vchan::{Client, Error, Interest, Server};

const CHUNK: usize = 65536;
const SEED_SERVER_TX: u64 = 0x5EED_0000_0000_0001;
const SEED_CLIENT_TX: u64 = 0x5EED_0000_0000_0002;
const FNV_INIT: u64 = 0xCBF2_9CE4_8422_2325;
/// Longest quiet spell before the run is declared stuck.
const STALL: Duration = Duration::from_secs(30);

/// The test stream both peers generate: byte `i` is byte `i % 8` (little-endian) of
/// splitmix64(seed + i / 8).
fn stream_byte(seed: u64, i: u64) -> u8 {
    let mut x = seed.wrapping_add(i / 8).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x ^ (x >> 31)) >> (8 * (i % 8))) as u8
}

fn fnv1a(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

/// The endpoint operations the transfer needs, for either role.
trait Vchan {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
    fn write(&mut self, data: &[u8]) -> Result<usize, Error>;
    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error>;
    fn close(&mut self) -> Result<(), Error>;
}

impl<M: SharedMem, N: Notify> Vchan for Server<M, N> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        Server::read(self, buf)
    }
    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        Server::write(self, data)
    }
    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
        Server::prepare_wait(self, interest)
    }
    fn close(&mut self) -> Result<(), Error> {
        Server::close(self)
    }
}

impl<M: SharedMem, N: Notify> Vchan for Client<M, N> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        Client::read(self, buf)
    }
    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        Client::write(self, data)
    }
    fn prepare_wait(&mut self, interest: Interest) -> Result<bool, Error> {
        Client::prepare_wait(self, interest)
    }
    fn close(&mut self) -> Result<(), Error> {
        Client::close(self)
    }
}

struct Job {
    send: u64,
    recv: u64,
    tx_seed: u64,
    rx_seed: u64,
    eof: bool,
}

/// Sends `job.send` stream bytes while receiving and checking `job.recv`; the result line.
fn transfer(v: &mut impl Vchan, events: &mut impl Events, job: &Job) -> Result<String, String> {
    let (mut sent, mut recvd, mut fnv_tx, mut fnv_rx) = (0u64, 0u64, FNV_INIT, FNV_INIT);
    let mut out = Vec::new();
    let mut inb = vec![0u8; CHUNK];
    let mut saw_eof = false;
    let (mut first, mut last) = (None, None);
    let mut quiet_since = Instant::now();
    loop {
        let want_recv = recvd < job.recv || (job.eof && !saw_eof && job.recv > 0);
        if sent >= job.send && !want_recv {
            break;
        }
        let mut progress = false;
        if sent < job.send {
            if out.is_empty() {
                let n = (job.send - sent).min(CHUNK as u64);
                out = (sent..sent + n)
                    .map(|i| stream_byte(job.tx_seed, i))
                    .collect();
                fnv_tx = fnv1a(fnv_tx, &out);
            }
            let n = v.write(&out).map_err(|e| format!("write: {e}"))?;
            out.drain(..n);
            sent += n as u64;
            progress |= n > 0;
            if sent == job.send && job.eof {
                v.close().map_err(|e| format!("close: {e}"))?;
                return Ok(line(sent, recvd, fnv_tx, fnv_rx, 0));
            }
        }
        if want_recv {
            match v.read(&mut inb) {
                Ok(0) => {}
                Ok(n) => {
                    let got = &inb[..n];
                    if recvd + n as u64 > job.recv {
                        return Err(format!(
                            "{} bytes more than expected",
                            recvd + n as u64 - job.recv
                        ));
                    }
                    if let Some(i) =
                        (0..n).find(|&i| got[i] != stream_byte(job.rx_seed, recvd + i as u64))
                    {
                        return Err(format!("data mismatch at byte {}", recvd + i as u64));
                    }
                    first.get_or_insert_with(Instant::now);
                    last = Some(Instant::now());
                    fnv_rx = fnv1a(fnv_rx, got);
                    recvd += n as u64;
                    progress = true;
                }
                Err(Error::PeerClosed) if job.eof && recvd == job.recv => saw_eof = true,
                Err(Error::PeerClosed) => {
                    return Err(format!("EOF after {recvd} of {} bytes", job.recv))
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        if progress {
            quiet_since = Instant::now();
        } else if !saw_eof {
            if quiet_since.elapsed() > STALL {
                return Err(format!("stalled: sent {sent}, received {recvd}"));
            }
            let interest = Interest {
                read: want_recv,
                write: sent < job.send,
            };
            match v.prepare_wait(interest) {
                Ok(true) => {
                    events
                        .wait(Some(Duration::from_secs(1)))
                        .map_err(|e| format!("wait: {e}"))?;
                }
                Ok(false) | Err(Error::PeerClosed) => {}
                Err(e) => return Err(format!("prepare_wait: {e}")),
            }
        }
    }
    let ns = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_nanos(),
        _ => 0,
    };
    let _ = v.close();
    Ok(line(sent, recvd, fnv_tx, fnv_rx, ns))
}

fn line(sent: u64, recvd: u64, fnv_tx: u64, fnv_rx: u64, ns: u128) -> String {
    format!("OK sent={sent} recv={recvd} fnv_tx={fnv_tx:016x} fnv_rx={fnv_rx:016x} ns={ns}")
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad or missing {what}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let server =
        match args.first().map(String::as_str) {
            Some("server") => true,
            Some("client") => false,
            _ => return Err(
                "usage: dom0_vchan_peer server|client PEER PORT LEFT_MIN RIGHT_MIN SEND RECV [eof]"
                    .into(),
            ),
        };
    let peer = DomId::new(arg(args, 1, "PEER")?).map_err(|e| e.to_string())?;
    let port: u32 = arg(args, 2, "PORT")?;
    let left_min: usize = arg(args, 3, "LEFT_MIN")?;
    let right_min: usize = arg(args, 4, "RIGHT_MIN")?;
    let (own_seed, peer_seed) = if server {
        (SEED_SERVER_TX, SEED_CLIENT_TX)
    } else {
        (SEED_CLIENT_TX, SEED_SERVER_TX)
    };
    let job = Job {
        send: arg(args, 5, "SEND")?,
        recv: arg(args, 6, "RECV")?,
        tx_seed: own_seed,
        rx_seed: peer_seed,
        eof: args.get(7).map(String::as_str) == Some("eof"),
    };
    let mut env = env_from_system().map_err(|e| e.to_string())?;
    if server {
        let (mut v, _dir) = server_init(
            &mut env.grants,
            &mut env.events,
            &mut env.store,
            peer,
            port,
            left_min,
            right_min,
        )
        .map_err(|e| format!("server_init: {e}"))?;
        println!("READY");
        transfer(&mut v, &mut env.events, &job)
    } else {
        let mut v = client_init(&mut env.grants, &mut env.events, &mut env.store, peer, port)
            .map_err(|e| format!("client_init: {e}"))?;
        transfer(&mut v, &mut env.events, &job)
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
            eprintln!("dom0_vchan_peer: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of both streams, as `vchan_peer.c`'s `stream_fill` makes them
    /// (splitmix64 of the seed, little-endian), so the twin interoperates.
    #[test]
    fn the_stream_is_splitmix64_little_endian() {
        let mut x = SEED_SERVER_TX.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let word = (x ^ (x >> 31)).to_le_bytes();
        let bytes: Vec<u8> = (0..8).map(|i| stream_byte(SEED_SERVER_TX, i)).collect();
        assert_eq!(bytes, word);
        assert_eq!(fnv1a(FNV_INIT, b""), FNV_INIT);
        assert_eq!(
            fnv1a(FNV_INIT, b"a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a 64 of \"a\""
        );
    }
}
