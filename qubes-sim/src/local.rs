//! The qube-local socket between `qrexec-client-vm` and the agent: one request line, one
//! answer line (unbuffered), then `[tag u8][len u32 le][bytes]` frames carrying the call's I/O.
//!
//! The request is `CALL <target> <service[+arg]>`; the answer `CONNECTED`, `REFUSED` or
//! `ERROR <why>`. Client → agent: `STDIN` chunks, an empty one for EOF. Agent → client: `STDOUT`/`STDERR`
//! chunks and one `EXIT` frame (i32 le). A socket closed before `EXIT` is a dead client or
//! agent; either side then ends the call.

use std::io::{self, ErrorKind, Read, Write};

use anyhow::{bail, Result};

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

/// Reads one `\n`-terminated line byte by byte, so that nothing after it is consumed.
pub fn read_line(r: &mut impl Read) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => bail!("connection closed"),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => bail!("line longer than {MAX_LINE} bytes"),
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
