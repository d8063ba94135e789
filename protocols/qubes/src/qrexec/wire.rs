//! qrexec bytes <-> values: the `msg_header` view, typed [`Message`]s, and the framing cap.
//! Contract (smoltcp): once `check_len` passes no accessor panics; input is checked, output is not.

use core::ops::Range;

use super::error::{EmitError, WireError};
use super::{max_chunk, MAX_CONTROL_BODY, PROTOCOL_V2};
use crate::framing::{FrameError, Framing};

macro_rules! msg_types {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, )*) => {
        /// A `msg_header.type` value (\[QX\] `qrexec.h` `enum` `MSG_*`); unknown numbers are kept.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum MsgType {
            $( $(#[$doc])* $name, )*
            /// A number qrexec does not define.
            Unknown(u32),
        }
        impl From<u32> for MsgType {
            fn from(v: u32) -> Self {
                match v { $( $value => Self::$name, )* other => Self::Unknown(other) }
            }
        }
        impl From<MsgType> for u32 {
            fn from(t: MsgType) -> u32 {
                match t { $( MsgType::$name => $value, )* MsgType::Unknown(v) => v }
            }
        }
    };
}

msg_types! {
    /// `MSG_DATA_STDIN`: caller -> service bytes; empty = EOF.
    DataStdin = 0x190,
    /// `MSG_DATA_STDOUT`: service -> caller bytes; empty = EOF.
    DataStdout = 0x191,
    /// `MSG_DATA_STDERR`: service -> caller bytes; empty = EOF.
    DataStderr = 0x192,
    /// `MSG_DATA_EXIT_CODE`: i32 status; ends the stream.
    DataExitCode = 0x193,
    /// `MSG_EXEC_CMDLINE`: daemon -> agent, run a command with I/O.
    ExecCmdline = 0x200,
    /// `MSG_JUST_EXEC`: daemon -> agent, run a command without I/O.
    JustExec = 0x201,
    /// `MSG_SERVICE_CONNECT`: daemon -> agent, our call was allowed.
    ServiceConnect = 0x202,
    /// `MSG_SERVICE_REFUSED`: daemon -> agent, our call was refused.
    ServiceRefused = 0x203,
    /// `MSG_TRIGGER_SERVICE`: agent -> daemon, v2 only.
    TriggerService = 0x210,
    /// `MSG_CONNECTION_TERMINATED`: agent -> daemon, a data channel closed.
    ConnectionTerminated = 0x211,
    /// `MSG_TRIGGER_SERVICE3`: agent -> daemon, v3+.
    TriggerService3 = 0x212,
    /// `MSG_TRIGGER_SERVICE4`: agent -> daemon, v4+.
    TriggerService4 = 0x213,
    /// `MSG_HELLO`: version exchange on both channels.
    Hello = 0x300,
}

impl MsgType {
    /// Whether this type travels on data channels (and is capped by the chunk size).
    pub fn is_data(self) -> bool {
        matches!(
            self,
            Self::DataStdin | Self::DataStdout | Self::DataStderr | Self::DataExitCode
        )
    }
}

/// Size of `struct msg_header`.
pub const HEADER_LEN: usize = 8;
/// Size of `struct exec_params` without its cmdline.
pub const EXEC_PARAMS_LEN: usize = 8;
/// Size of `struct service_params` (the request id).
pub const IDENT_LEN: usize = 32;
/// Size of `struct trigger_service_params` (v2).
pub const TRIGGER_V2_LEN: usize = 128;
/// Size of `struct trigger_service_params3` before the name.
pub const TRIGGER3_LEN: usize = 96;
/// Size of `struct trigger_service_params4` before the name.
pub const TRIGGER4_LEN: usize = 160;

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const LEN: Range<usize> = 4..8;
    // Offsets inside bodies.
    pub const DOMAIN: Range<usize> = 0..4;
    pub const PORT: Range<usize> = 4..8;
    pub const V2_SERVICE: Range<usize> = 0..64;
    pub const V2_TARGET: Range<usize> = 64..96;
    pub const V2_IDENT: Range<usize> = 96..128;
    pub const V3_TARGET: Range<usize> = 0..64;
    pub const V3_IDENT: Range<usize> = 64..96;
    pub const V4_SOURCE: Range<usize> = 0..64;
    pub const V4_TARGET: Range<usize> = 64..128;
    pub const V4_IDENT: Range<usize> = 128..160;
}

fn le32(b: &[u8], r: Range<usize>) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(r) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// A `struct msg_header` followed by its body (\[QX\] `qrexec.h`).
#[derive(Debug, Clone)]
pub struct MsgHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MsgHeader<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer that holds the whole header and the body it declares.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that the header and its declared body are present.
    pub fn check_len(&self) -> Result<(), WireError> {
        let got = self.buffer.as_ref().len();
        if got < HEADER_LEN {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                got,
            });
        }
        let needed = HEADER_LEN.saturating_add(self.len() as usize);
        if got < needed {
            return Err(WireError::Truncated { needed, got });
        }
        Ok(())
    }

    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        MsgType::from(le32(self.buffer.as_ref(), field::TYPE))
    }

    /// The declared body length.
    pub fn len(&self) -> u32 {
        le32(self.buffer.as_ref(), field::LEN)
    }

    /// Whether the declared body is empty (an EOF for data messages).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body (after `check_len`; shorter if the buffer is).
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = HEADER_LEN.saturating_add(self.len() as usize).min(b.len());
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MsgHeader<T> {
    /// Sets the type (buffer must hold a header).
    pub fn set_msg_type(&mut self, t: MsgType) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&u32::from(t).to_le_bytes());
    }

    /// Sets the body length (buffer must hold a header).
    pub fn set_len(&mut self, len: u32) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&len.to_le_bytes());
    }
}

/// Which byte stream a data message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Caller -> service.
    Stdin,
    /// Service -> caller.
    Stdout,
    /// Service -> caller.
    Stderr,
}

impl Stream {
    /// The message type that carries it.
    pub fn msg_type(self) -> MsgType {
        match self {
            Self::Stdin => MsgType::DataStdin,
            Self::Stdout => MsgType::DataStdout,
            Self::Stderr => MsgType::DataStderr,
        }
    }
}

/// One decoded qrexec message. Fixed `char[N]` fields hold the text before their NUL; bytes after
/// the NUL are not required to be zero (C peers do not always clear them). Trailing names of
/// TRIGGER_SERVICE3/4 exclude their final NUL but may contain other NULs (the daemon refuses
/// those; see `daemon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `MSG_HELLO` + `peer_info`.
    Hello {
        /// The sender's protocol version.
        version: u32,
    },
    /// `MSG_EXEC_CMDLINE` + `exec_params` + cmdline.
    ExecCmdline(Exec<'a>),
    /// `MSG_JUST_EXEC` + `exec_params` + cmdline.
    JustExec(Exec<'a>),
    /// `MSG_SERVICE_CONNECT` + `exec_params` + `service_params`.
    ServiceConnect {
        /// Domain to serve the data vchan to.
        connect_domain: u32,
        /// Data vchan port.
        connect_port: u32,
        /// Our request id, echoed.
        request_id: &'a [u8],
    },
    /// `MSG_SERVICE_REFUSED` + `service_params`.
    ServiceRefused {
        /// Our request id, echoed.
        request_id: &'a [u8],
    },
    /// `MSG_TRIGGER_SERVICE` + `trigger_service_params` (v2).
    TriggerService {
        /// `service[+arg]`, at most 63 bytes.
        service_name: &'a [u8],
        /// Target qube, at most 31 bytes.
        target_domain: &'a [u8],
        /// Request id, at most 31 bytes.
        request_id: &'a [u8],
    },
    /// `MSG_CONNECTION_TERMINATED` + `exec_params` (no cmdline).
    ConnectionTerminated {
        /// Peer domain of the closed channel.
        connect_domain: u32,
        /// Its port.
        connect_port: u32,
    },
    /// `MSG_TRIGGER_SERVICE3` + `trigger_service_params3` + name.
    TriggerService3 {
        /// Target qube or `@` keyword, at most 63 bytes.
        target_domain: &'a [u8],
        /// Request id, at most 31 bytes.
        request_id: &'a [u8],
        /// `service[+arg]`, without its final NUL.
        service_name: &'a [u8],
    },
    /// `MSG_TRIGGER_SERVICE4` + `trigger_service_params4` + name.
    TriggerService4 {
        /// Requested source (empty for none), at most 63 bytes.
        source_domain: &'a [u8],
        /// Target qube or `@` keyword, at most 63 bytes.
        target_domain: &'a [u8],
        /// Request id, at most 31 bytes.
        request_id: &'a [u8],
        /// `service[+arg]`, without its final NUL.
        service_name: &'a [u8],
    },
    /// `MSG_DATA_STDIN/STDOUT/STDERR`; empty data is EOF.
    Data {
        /// Which stream.
        stream: Stream,
        /// The chunk.
        data: &'a [u8],
    },
    /// `MSG_DATA_EXIT_CODE`.
    ExitCode(i32),
}

/// `struct exec_params` with its cmdline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec<'a> {
    /// The peer domain of the data channel.
    pub connect_domain: u32,
    /// The data channel port (0 in a client's request to the daemon).
    pub connect_port: u32,
    /// The command line without its NUL.
    pub cmdline: &'a [u8],
}

/// The text of a fixed `char[N]` field: the bytes before its first NUL.
fn fixed_text<'a>(field: &'a [u8], name: &'static str) -> Result<&'a [u8], WireError> {
    match field.iter().position(|&b| b == 0) {
        Some(n) => Ok(field.get(..n).unwrap_or(&[])),
        None => Err(WireError::Unterminated { field: name }),
    }
}

/// A trailing NUL-terminated name whose NUL must be the last byte.
fn trailing_name<'a>(rest: &'a [u8], name: &'static str) -> Result<&'a [u8], WireError> {
    match rest.split_last() {
        Some((0, text)) => Ok(text),
        _ => Err(WireError::Unterminated { field: name }),
    }
}

/// The raw 32-byte request id of a trigger message body, for the daemon's tail rule.
pub fn request_id_field(msg: MsgType, body: &[u8]) -> Option<&[u8]> {
    match msg {
        MsgType::TriggerService => body.get(field::V2_IDENT),
        MsgType::TriggerService3 => body.get(field::V3_IDENT),
        MsgType::TriggerService4 => body.get(field::V4_IDENT),
        _ => None,
    }
}

impl<'a> Message<'a> {
    /// Decodes the message at the start of `buffer` (header and declared body).
    pub fn parse(buffer: &'a [u8]) -> Result<Self, WireError> {
        let hdr = MsgHeader::new_checked(buffer)?;
        let (ty, len) = (hdr.msg_type(), hdr.len());
        let body = buffer
            .get(HEADER_LEN..HEADER_LEN + len as usize)
            .unwrap_or(&[]);
        let bad_len = WireError::BadLength { msg: ty, len };
        let exact = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(bad_len)
            }
        };
        let slice = |r: Range<usize>| body.get(r).ok_or(bad_len);
        Ok(match ty {
            MsgType::Hello => {
                exact(4)?;
                Self::Hello {
                    version: le32(body, 0..4),
                }
            }
            MsgType::ExecCmdline | MsgType::JustExec => {
                if body.len() <= EXEC_PARAMS_LEN {
                    return Err(bad_len);
                }
                let exec = Exec {
                    connect_domain: le32(body, field::DOMAIN),
                    connect_port: le32(body, field::PORT),
                    cmdline: fixed_text(slice(EXEC_PARAMS_LEN..body.len())?, "cmdline")?,
                };
                if ty == MsgType::ExecCmdline {
                    Self::ExecCmdline(exec)
                } else {
                    Self::JustExec(exec)
                }
            }
            MsgType::ServiceConnect => {
                exact(EXEC_PARAMS_LEN + IDENT_LEN)?;
                Self::ServiceConnect {
                    connect_domain: le32(body, field::DOMAIN),
                    connect_port: le32(body, field::PORT),
                    request_id: fixed_text(slice(EXEC_PARAMS_LEN..body.len())?, "request_id")?,
                }
            }
            MsgType::ServiceRefused => {
                exact(IDENT_LEN)?;
                Self::ServiceRefused {
                    request_id: fixed_text(body, "request_id")?,
                }
            }
            MsgType::TriggerService => {
                exact(TRIGGER_V2_LEN)?;
                Self::TriggerService {
                    service_name: fixed_text(slice(field::V2_SERVICE)?, "service_name")?,
                    target_domain: fixed_text(slice(field::V2_TARGET)?, "target_domain")?,
                    request_id: fixed_text(slice(field::V2_IDENT)?, "request_id")?,
                }
            }
            MsgType::ConnectionTerminated => {
                exact(EXEC_PARAMS_LEN)?;
                Self::ConnectionTerminated {
                    connect_domain: le32(body, field::DOMAIN),
                    connect_port: le32(body, field::PORT),
                }
            }
            MsgType::TriggerService3 => {
                if body.len() <= TRIGGER3_LEN {
                    return Err(bad_len);
                }
                Self::TriggerService3 {
                    target_domain: fixed_text(slice(field::V3_TARGET)?, "target_domain")?,
                    request_id: fixed_text(slice(field::V3_IDENT)?, "request_id")?,
                    service_name: trailing_name(slice(TRIGGER3_LEN..body.len())?, "service_name")?,
                }
            }
            MsgType::TriggerService4 => {
                if body.len() <= TRIGGER4_LEN {
                    return Err(bad_len);
                }
                Self::TriggerService4 {
                    source_domain: fixed_text(slice(field::V4_SOURCE)?, "source_domain")?,
                    target_domain: fixed_text(slice(field::V4_TARGET)?, "target_domain")?,
                    request_id: fixed_text(slice(field::V4_IDENT)?, "request_id")?,
                    service_name: trailing_name(slice(TRIGGER4_LEN..body.len())?, "service_name")?,
                }
            }
            MsgType::DataStdin => Self::Data {
                stream: Stream::Stdin,
                data: body,
            },
            MsgType::DataStdout => Self::Data {
                stream: Stream::Stdout,
                data: body,
            },
            MsgType::DataStderr => Self::Data {
                stream: Stream::Stderr,
                data: body,
            },
            MsgType::DataExitCode => {
                exact(4)?;
                Self::ExitCode(le32(body, 0..4) as i32)
            }
            MsgType::Unknown(t) => return Err(WireError::UnknownType(t)),
        })
    }

    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Hello { .. } => MsgType::Hello,
            Self::ExecCmdline(_) => MsgType::ExecCmdline,
            Self::JustExec(_) => MsgType::JustExec,
            Self::ServiceConnect { .. } => MsgType::ServiceConnect,
            Self::ServiceRefused { .. } => MsgType::ServiceRefused,
            Self::TriggerService { .. } => MsgType::TriggerService,
            Self::ConnectionTerminated { .. } => MsgType::ConnectionTerminated,
            Self::TriggerService3 { .. } => MsgType::TriggerService3,
            Self::TriggerService4 { .. } => MsgType::TriggerService4,
            Self::Data { stream, .. } => stream.msg_type(),
            Self::ExitCode(_) => MsgType::DataExitCode,
        }
    }

    /// Body length when emitted.
    pub fn body_len(&self) -> usize {
        match self {
            Self::Hello { .. } | Self::ExitCode(_) => 4,
            Self::ExecCmdline(e) | Self::JustExec(e) => EXEC_PARAMS_LEN + e.cmdline.len() + 1,
            Self::ServiceConnect { .. } => EXEC_PARAMS_LEN + IDENT_LEN,
            Self::ServiceRefused { .. } => IDENT_LEN,
            Self::TriggerService { .. } => TRIGGER_V2_LEN,
            Self::ConnectionTerminated { .. } => EXEC_PARAMS_LEN,
            Self::TriggerService3 { service_name, .. } => TRIGGER3_LEN + service_name.len() + 1,
            Self::TriggerService4 { service_name, .. } => TRIGGER4_LEN + service_name.len() + 1,
            Self::Data { data, .. } => data.len(),
        }
    }

    /// Total length when emitted (header and body).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Encodes into the start of `buf`, zero-padding every fixed field; returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let total = self.buffer_len();
        let body_len = u32::try_from(self.body_len()).map_err(|_| EmitError::FieldTooLong {
            field: "body",
            max: u32::MAX as usize,
        })?;
        let out = buf
            .get_mut(..total)
            .ok_or(EmitError::BufferTooSmall { needed: total })?;
        out.fill(0);
        let (hdr, body) = out.split_at_mut(HEADER_LEN);
        hdr[field::TYPE].copy_from_slice(&u32::from(self.msg_type()).to_le_bytes());
        hdr[field::LEN].copy_from_slice(&body_len.to_le_bytes());
        let put32 =
            |body: &mut [u8], r: Range<usize>, v: u32| body[r].copy_from_slice(&v.to_le_bytes());
        match *self {
            Self::Hello { version } => put32(body, 0..4, version),
            Self::ExitCode(code) => put32(body, 0..4, code as u32),
            Self::ExecCmdline(e) | Self::JustExec(e) => {
                put32(body, field::DOMAIN, e.connect_domain);
                put32(body, field::PORT, e.connect_port);
                body[EXEC_PARAMS_LEN..EXEC_PARAMS_LEN + e.cmdline.len()].copy_from_slice(e.cmdline);
            }
            Self::ServiceConnect {
                connect_domain,
                connect_port,
                request_id,
            } => {
                put32(body, field::DOMAIN, connect_domain);
                put32(body, field::PORT, connect_port);
                put_fixed(&mut body[EXEC_PARAMS_LEN..], request_id, "request_id")?;
            }
            Self::ServiceRefused { request_id } => put_fixed(body, request_id, "request_id")?,
            Self::TriggerService {
                service_name,
                target_domain,
                request_id,
            } => {
                put_fixed(&mut body[field::V2_SERVICE], service_name, "service_name")?;
                put_fixed(&mut body[field::V2_TARGET], target_domain, "target_domain")?;
                put_fixed(&mut body[field::V2_IDENT], request_id, "request_id")?;
            }
            Self::ConnectionTerminated {
                connect_domain,
                connect_port,
            } => {
                put32(body, field::DOMAIN, connect_domain);
                put32(body, field::PORT, connect_port);
            }
            Self::TriggerService3 {
                target_domain,
                request_id,
                service_name,
            } => {
                put_fixed(&mut body[field::V3_TARGET], target_domain, "target_domain")?;
                put_fixed(&mut body[field::V3_IDENT], request_id, "request_id")?;
                body[TRIGGER3_LEN..TRIGGER3_LEN + service_name.len()].copy_from_slice(service_name);
            }
            Self::TriggerService4 {
                source_domain,
                target_domain,
                request_id,
                service_name,
            } => {
                put_fixed(&mut body[field::V4_SOURCE], source_domain, "source_domain")?;
                put_fixed(&mut body[field::V4_TARGET], target_domain, "target_domain")?;
                put_fixed(&mut body[field::V4_IDENT], request_id, "request_id")?;
                body[TRIGGER4_LEN..TRIGGER4_LEN + service_name.len()].copy_from_slice(service_name);
            }
            Self::Data { data, .. } => body.copy_from_slice(data),
        }
        Ok(total)
    }
}

/// Copies `text` into a zeroed fixed field, leaving room for its NUL.
fn put_fixed(dst: &mut [u8], text: &[u8], name: &'static str) -> Result<(), EmitError> {
    let max = dst.len().saturating_sub(1);
    let slot = dst.get_mut(..text.len()).filter(|_| text.len() <= max);
    slot.ok_or(EmitError::FieldTooLong { field: name, max })?
        .copy_from_slice(text);
    Ok(())
}

/// qrexec framing: an 8-byte header whose body is capped before allocation, per type: data
/// messages by the negotiated chunk size (v2 4096, v3+ 65536), everything else by
/// [`MAX_CONTROL_BODY`]. Until a version is negotiated the v2 chunk size applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrexecFraming {
    version: u32,
}

impl Default for QrexecFraming {
    fn default() -> Self {
        Self {
            version: PROTOCOL_V2,
        }
    }
}

impl QrexecFraming {
    /// Framing for a channel whose version is not yet negotiated.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the negotiated version.
    pub fn set_version(&mut self, version: u32) {
        self.version = version;
    }

    /// The version the caps follow.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The largest body accepted for a message of this type.
    pub fn max_body(&self, msg: MsgType) -> usize {
        if msg.is_data() {
            max_chunk(self.version)
        } else {
            MAX_CONTROL_BODY
        }
    }
}

impl Framing for QrexecFraming {
    const HEADER_LEN: usize = HEADER_LEN;

    fn body_len(&self, header: &[u8]) -> Result<usize, FrameError> {
        if header.len() < HEADER_LEN {
            return Err(FrameError::BadHeader("short qrexec header"));
        }
        let msg = MsgType::from(le32(header, field::TYPE));
        let len = le32(header, field::LEN);
        let max = self.max_body(msg);
        if len as usize > max {
            return Err(FrameError::TooLong {
                len: u64::from(len),
                max,
            });
        }
        Ok(len as usize)
    }
}
