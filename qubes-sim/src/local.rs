//! Relayed calls over a local socket (`qrexec-client-vm` ↔ agent, `qvm-run` ↔ sim): request
//! and answer lines, then `[tag u8][len u32 le][bytes]` frames; a close before `EXIT` ends the call.
//!
//! The agent's request is `CALL <target> <service[+arg]>`, answered `CONNECTED`, `REFUSED` or
//! `ERROR <why>` (the sim's is an admin JSON line). Client → server: `STDIN` chunks, an empty one
//! for EOF; server → client: `STDOUT`/`STDERR` chunks and one `EXIT` (i32 le).

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{anyhow, bail, Result};
use platform_api::DomId;
use qubes::qrexec::data::Event as DataEvent;
use qubes::qrexec::{DataChannel, Stream, AGENT_VERSION, EXIT_PROBLEM};

use crate::chan::{Hosted, Vchan};
use crate::pump::{self, Input, Sink, INPUT_DEPTH};

/// Caller stdin.
pub const TAG_STDIN: u8 = 0;
/// Service stdout.
pub const TAG_STDOUT: u8 = 1;
/// Service stderr.
pub const TAG_STDERR: u8 = 2;
/// Service exit status.
pub const TAG_EXIT: u8 = 3;
/// Largest frame body (one v3 data chunk).
pub const MAX_FRAME: usize = 65536;
/// Longest request or answer line.
pub const MAX_LINE: usize = 4096;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, tag: u8, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&head)?;
    w.write_all(data)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame. A length over
/// [`MAX_FRAME`] is refused before anything is allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let [tag, l0, l1, l2, l3] = head;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_FRAME {
        bail!("local frame of {len} bytes exceeds {MAX_FRAME}");
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((tag, data)))
}

/// Server side, once the caller end's vchan `v` (to `peer`) is served: runs the call with the
/// client on `conn` as its stdin/stdout/stderr and returns the exit status, which the caller
/// sends with [`finish`] once its own cleanup is done (so that a client that has its status
/// finds the channel slot free again). The client holds the socket until then, so its death
/// ends the call (and our close of the vchan stops the service).
pub fn relay(h: &mut Hosted, v: &mut Vchan, peer: DomId, conn: &UnixStream) -> Result<i32> {
    let gone = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Input>(INPUT_DEPTH);
    let mut reader = conn.try_clone()?;
    let gone_r = gone.clone();
    std::thread::spawn(move || {
        let mut eof = false;
        loop {
            match read_frame(&mut reader) {
                Ok(Some((TAG_STDIN, d))) if !eof => {
                    let input = if d.is_empty() {
                        eof = true;
                        Input::Eof(Stream::Stdin)
                    } else {
                        Input::Data(Stream::Stdin, d)
                    };
                    // The pump is gone: the call is over.
                    if tx.send(input).is_err() {
                        return;
                    }
                }
                // The client holds the socket until the exit status: an end is its death.
                _ => {
                    gone_r.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    let mut chan = DataChannel::caller(AGENT_VERSION);
    let mut sink = SocketSink {
        w: conn.try_clone()?,
        gone: gone.clone(),
        exit: None,
    };
    let stop = || gone.load(Ordering::SeqCst);
    let res = pump::pump(h, v, peer, &mut chan, &rx, &mut sink, &stop);
    match (res, sink.exit) {
        (_, Some(code)) => Ok(code),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(anyhow!("the call ended without an exit status")),
    }
}

/// Sends the exit status that ends a relayed call (125 for a failed one).
pub fn finish(mut conn: &UnixStream, result: &Result<i32>) {
    let code = result.as_ref().copied().unwrap_or(EXIT_PROBLEM);
    let _ = write_frame(&mut conn, TAG_EXIT, &code.to_le_bytes());
}

/// The caller's output and exit status to the local client.
struct SocketSink {
    w: UnixStream,
    gone: Arc<AtomicBool>,
    exit: Option<i32>,
}

impl Sink for SocketSink {
    fn offer(&mut self, ev: &DataEvent) -> bool {
        let r = match ev {
            DataEvent::Data { stream, data } => {
                let tag = if *stream == Stream::Stderr {
                    TAG_STDERR
                } else {
                    TAG_STDOUT
                };
                write_frame(&mut self.w, tag, data)
            }
            DataEvent::Exit(c) => {
                self.exit = Some(*c);
                Ok(())
            }
            _ => Ok(()),
        };
        if r.is_err() {
            self.gone.store(true, Ordering::SeqCst);
        }
        true
    }
}

/// Client side, once `CONNECTED`: our stdin as frames (or EOF at once), the service's output to
/// ours (or dropped); returns its exit status.
pub fn run_client(mut conn: UnixStream, with_stdin: bool, discard: bool) -> Result<i32> {
    conn.set_read_timeout(None)?;
    let mut writer = conn.try_clone()?;
    if with_stdin {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                if write_frame(&mut writer, TAG_STDIN, &buf[..n]).is_err() || n == 0 {
                    return;
                }
            }
        });
    } else {
        write_frame(&mut writer, TAG_STDIN, &[])?;
    }
    loop {
        let Some((tag, data)) = read_frame(&mut conn)? else {
            eprintln!("qrexec: the call ended without an exit status");
            return Ok(EXIT_PROBLEM);
        };
        match tag {
            TAG_STDOUT if !discard => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&data).and_then(|()| out.flush());
            }
            TAG_STDERR if !discard => {
                let _ = std::io::stderr().write_all(&data);
            }
            TAG_STDOUT | TAG_STDERR => {}
            TAG_EXIT => {
                let code: [u8; 4] = data
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow!("bad exit frame"))?;
                return Ok(i32::from_le_bytes(code));
            }
            other => bail!("unknown frame {other}"),
        }
    }
}

/// Reads one `\n`-terminated line byte by byte, so that nothing after it is consumed.
pub fn read_line(r: &mut impl Read) -> Result<String> {
    read_line_max(r, MAX_LINE)
}

/// [`read_line`] with another bound.
pub fn read_line_max(r: &mut impl Read, max: usize) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => bail!("connection closed"),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= max => bail!("line longer than {max} bytes"),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversize_is_refused_before_allocation() {
        let mut buf = Vec::new();
        write_frame(&mut buf, TAG_STDOUT, b"abc").unwrap();
        write_frame(&mut buf, TAG_STDIN, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((TAG_STDOUT, b"abc".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((TAG_STDIN, Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let huge = [TAG_STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &huge[..]).is_err());
        let truncated = [TAG_STDOUT, 4, 0, 0, 0, b'x'];
        assert!(read_frame(&mut &truncated[..]).is_err());
    }

    #[test]
    fn line_reader_leaves_the_rest_unread() {
        let data = b"CONNECTED\n\x01rest";
        let mut r = &data[..];
        assert_eq!(read_line(&mut r).unwrap(), "CONNECTED");
        assert_eq!(r, b"\x01rest");
        assert!(read_line(&mut &b"no newline"[..]).is_err());
        let long = vec![b'a'; MAX_LINE + 10];
        assert!(read_line(&mut &long[..]).is_err());
    }
}
