//! The local socket between a command (`qrexec-client-vm`, the forwarder) and its qrexec end
//! (the VM agent, or dom0's daemon): one request line, one answer line, then tagged frames.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

/// Caller's stdin (an empty frame is its EOF).
pub const TAG_STDIN: u8 = 0;
/// Remote stdout.
pub const TAG_STDOUT: u8 = 1;
/// Remote stderr.
pub const TAG_STDERR: u8 = 2;
/// Remote exit code (4 bytes, little-endian `i32`); the last frame.
pub const TAG_EXIT: u8 = 3;
/// Largest frame body (one qrexec v3 chunk).
pub const MAX_FRAME: usize = 65536;
/// Longest request or answer line.
pub const MAX_LINE: usize = 1024;
/// Frame header: tag, then the body length as a little-endian `u32`.
pub const HEADER: usize = 5;

/// What the peer of the local socket did wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalError {
    /// A line longer than [`MAX_LINE`] without its newline.
    LineTooLong,
    /// A frame longer than [`MAX_FRAME`].
    FrameTooLong(u32),
    /// A frame tag this direction does not carry.
    BadTag(u8),
    /// The request line is not `CALL TARGET SERVICE[+ARG]`.
    BadRequest,
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            Self::FrameTooLong(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            Self::BadTag(t) => write!(f, "unexpected frame tag {t}"),
            Self::BadRequest => f.write_str("malformed request (want CALL TARGET SERVICE[+ARG])"),
        }
    }
}

impl std::error::Error for LocalError {}

/// `CALL TARGET SERVICE[+ARG]`, as the command sends it.
pub fn request_line(target: &str, service: &str) -> String {
    format!("CALL {target} {service}\n")
}

/// Parses a request line (without its newline) into (target, service).
pub fn parse_request(line: &str) -> Result<(&str, &str), LocalError> {
    let mut w = line.split(' ');
    match (w.next(), w.next(), w.next(), w.next()) {
        (Some("CALL"), Some(t), Some(s), None) if !t.is_empty() && !s.is_empty() => Ok((t, s)),
        _ => Err(LocalError::BadRequest),
    }
}

/// Encodes one frame.
pub fn frame(tag: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + data.len());
    v.push(tag);
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A decoded frame: tag, body, bytes used.
pub type Frame<'a> = (u8, &'a [u8], usize);

/// Decodes the first frame of `buf`: `Ok(Some((tag, body, used)))`, `Ok(None)` when it is not
/// complete yet; a declared length above [`MAX_FRAME`] fails before anything is buffered.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, LocalError> {
    let Some(&[tag, a, b, c, d]) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, d]);
    if len as usize > MAX_FRAME {
        return Err(LocalError::FrameTooLong(len));
    }
    let end = HEADER + len as usize;
    Ok(buf.get(HEADER..end).map(|body| (tag, body, end)))
}

/// Splits the first line off `buf`: `Ok(Some((line, used)))`.
pub fn parse_line(buf: &[u8]) -> Result<Option<(String, usize)>, LocalError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i <= MAX_LINE => Ok(Some((
            String::from_utf8_lossy(buf.get(..i).unwrap_or(&[])).into_owned(),
            i + 1,
        ))),
        Some(_) => Err(LocalError::LineTooLong),
        None if buf.len() > MAX_LINE => Err(LocalError::LineTooLong),
        None => Ok(None),
    }
}

/// Bytes a connection buffers from its peer before it stops reading.
const IN_CAP: usize = 2 * (HEADER + MAX_FRAME);

/// One non-blocking local connection with its input buffer and output queue.
#[derive(Debug)]
pub struct LocalConn {
    s: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    /// The peer closed its end (nothing more will be read).
    pub eof: bool,
    /// A read or write failed: the peer is gone.
    pub broken: bool,
}

impl LocalConn {
    /// Wraps an accepted or connected stream (made non-blocking).
    pub fn new(s: UnixStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(LocalConn {
            s,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_off: 0,
            eof: false,
            broken: false,
        })
    }

    /// Reads what is there (up to the buffer's bound); whether anything came.
    pub fn fill(&mut self) -> bool {
        let mut progress = false;
        let mut buf = [0u8; 16384];
        while !self.eof && !self.broken && self.inbuf.len() < IN_CAP {
            let room = (IN_CAP - self.inbuf.len()).min(buf.len());
            match self.s.read(buf.get_mut(..room).unwrap_or(&mut [])) {
                Ok(0) => {
                    self.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    progress = true;
                }
            }
        }
        progress
    }

    /// Bytes read and not taken yet.
    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// The request or answer line, once complete.
    pub fn take_line(&mut self) -> Result<Option<String>, LocalError> {
        let r = parse_line(&self.inbuf)?;
        Ok(r.map(|(line, used)| {
            self.inbuf.drain(..used);
            line
        }))
    }

    /// The next complete frame.
    pub fn take_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, LocalError> {
        let r = parse_frame(&self.inbuf)?.map(|(t, b, used)| (t, b.to_vec(), used));
        Ok(r.map(|(t, b, used)| {
            self.inbuf.drain(..used);
            (t, b)
        }))
    }

    /// Queues bytes for the peer.
    pub fn queue(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// Bytes queued and not written yet.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_off
    }

    /// Writes what the socket takes; whether anything was written.
    pub fn flush(&mut self) -> bool {
        let mut progress = false;
        while self.pending() > 0 && !self.broken {
            match self.s.write(self.out.get(self.out_off..).unwrap_or(&[])) {
                Ok(0) => {
                    self.broken = true;
                }
                Ok(n) => {
                    self.out_off += n;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_off = 0;
        }
        progress
    }

    /// Writes an answer line and the rest of the queue as far as the socket takes it now.
    pub fn answer(&mut self, line: &str) {
        self.queue(line.as_bytes());
        self.queue(b"\n");
        self.flush();
    }

    /// Reads what came and takes the client's request line once complete. A bad line is
    /// answered with `ERROR` and, like a closed connection, ends it ([`Request::Gone`]).
    pub fn poll_request(&mut self, progress: &mut bool) -> Request {
        *progress |= self.fill();
        match self.take_line() {
            Ok(Some(line)) => match parse_request(&line) {
                Ok((t, s)) => Request::Call(t.to_string(), s.to_string()),
                Err(e) => {
                    self.answer(&format!("ERROR {e}"));
                    Request::Gone
                }
            },
            Ok(None) if self.eof || self.broken => Request::Gone,
            Ok(None) => Request::Pending,
            Err(e) => {
                self.answer(&format!("ERROR {e}"));
                Request::Gone
            }
        }
    }
}

/// What [`LocalConn::poll_request`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// The request: target and service.
    Call(String, String),
    /// Not complete yet.
    Pending,
    /// The connection ended or was refused; drop it.
    Gone,
}

/// The command side: sends the request, reads the answer line; `Ok(Err(code))` when the call
/// did not start (126 refused, 125 error, message printed), else the connected stream.
pub fn start_call(
    mut s: UnixStream,
    target: &str,
    service: &str,
) -> io::Result<Result<UnixStream, i32>> {
    s.write_all(request_line(target, service).as_bytes())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => {
                eprintln!("qrexec: the agent closed the connection before answering");
                return Ok(Err(qubes::qrexec::EXIT_PROBLEM));
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => {
                return Err(io::Error::new(ErrorKind::InvalidData, "answer too long"))
            }
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let line = String::from_utf8_lossy(&line);
    match line.split_once(' ').map_or((&*line, ""), |(a, b)| (a, b)) {
        ("CONNECTED", _) => Ok(Ok(s)),
        ("REFUSED", _) => {
            eprintln!("Request refused");
            Ok(Err(qubes::qrexec::EXIT_REFUSED))
        }
        (_, why) => {
            eprintln!("qrexec: {why}");
            Ok(Err(qubes::qrexec::EXIT_PROBLEM))
        }
    }
}

/// Reads one frame from a blocking stream; `None` at a clean end.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; HEADER];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let [tag, a, b, c, d] = head;
    let len = u32::from_le_bytes([a, b, c, d]);
    if len as usize > MAX_FRAME {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            LocalError::FrameTooLong(len),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(Some((tag, body)))
}

/// Runs a started call with blocking I/O: `input` to the remote's stdin (then EOF), its stdout
/// to `output`, its stderr to our stderr; the remote exit code (125 if the call broke).
pub fn run_call(
    s: UnixStream,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
) -> io::Result<i32> {
    let mut w = s.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let data = buf.get(..n).unwrap_or(&[]);
            if w.write_all(&frame(TAG_STDIN, data)).is_err() || n == 0 {
                return;
            }
        }
    });
    let mut r = s;
    loop {
        let Some((tag, body)) = read_frame(&mut r)? else {
            eprintln!("qrexec: the call ended without an exit code");
            return Ok(qubes::qrexec::EXIT_PROBLEM);
        };
        match tag {
            TAG_STDOUT => {
                if output
                    .write_all(&body)
                    .and_then(|()| output.flush())
                    .is_err()
                {
                    // Our reader went (e.g. the ssh client closed): the call is over for us.
                    return Ok(qubes::qrexec::EXIT_PROBLEM);
                }
            }
            TAG_STDERR => {
                let _ = io::stderr().write_all(&body);
            }
            TAG_EXIT => {
                let code: [u8; 4] = body
                    .as_slice()
                    .try_into()
                    .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad exit frame"))?;
                return Ok(i32::from_le_bytes(code));
            }
            t => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    LocalError::BadTag(t),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poll_request_takes_a_call_waits_for_a_partial_line_and_ends_a_bad_one() {
        use std::io::Read as _;
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut conn = LocalConn::new(server).unwrap();
        let mut progress = false;
        assert_eq!(conn.poll_request(&mut progress), Request::Pending);
        client.write_all(b"CALL vault qubes.Ss").unwrap();
        assert_eq!(conn.poll_request(&mut progress), Request::Pending);
        assert!(progress, "bytes came");
        client.write_all(b"hAgent+work\n").unwrap();
        assert_eq!(
            conn.poll_request(&mut progress),
            Request::Call("vault".into(), "qubes.SshAgent+work".into())
        );

        let (mut client, server) = UnixStream::pair().unwrap();
        let mut conn = LocalConn::new(server).unwrap();
        client.write_all(b"HELLO there\n").unwrap();
        assert_eq!(conn.poll_request(&mut progress), Request::Gone);
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"ERROR ");

        let (client, server) = UnixStream::pair().unwrap();
        let mut conn = LocalConn::new(server).unwrap();
        drop(client);
        assert_eq!(conn.poll_request(&mut progress), Request::Gone);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut h = vec![TAG_STDIN];
        h.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert_eq!(
            parse_frame(&h),
            Err(LocalError::FrameTooLong(MAX_FRAME as u32 + 1))
        );
        assert_eq!(parse_frame(&h[..3]), Ok(None), "partial header waits");
    }

    #[test]
    fn line_without_newline_is_bounded() {
        assert_eq!(parse_line(&[b'a'; MAX_LINE]), Ok(None));
        assert_eq!(
            parse_line(&[b'a'; MAX_LINE + 1]),
            Err(LocalError::LineTooLong)
        );
        assert_eq!(
            parse_line(b"CALL a b\nrest"),
            Ok(Some(("CALL a b".to_string(), 9)))
        );
    }

    #[test]
    fn request_lines_parse_strictly() {
        assert_eq!(
            parse_request("CALL vault qubes.SshAgent+work"),
            Ok(("vault", "qubes.SshAgent+work"))
        );
        for bad in ["", "CALL", "CALL a", "CALL a b c", "call a b", "CALL  b"] {
            assert_eq!(parse_request(bad), Err(LocalError::BadRequest), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(tag in 0u8..4, data in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2010) {
            let f = frame(tag, &data);
            let (t, b, used) = parse_frame(&f).unwrap().unwrap();
            prop_assert_eq!((t, b, used), (tag, &data[..], f.len()));
            let cut = cut.min(f.len().saturating_sub(1));
            prop_assert_eq!(parse_frame(&f[..cut]), Ok(None));
        }
    }
}
