//! Client-to-xenstored messages: one typed variant per `XS_*` request type.
//! Payload shapes follow the table in docs/misc/xenstore.txt \[X\].

use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{DomId, Perm};

use super::path::put_perm;
use super::{
    emit_msg, parse_perm, put_num, put_str, Fields, MsgHeader, MsgType, WireError, XsPath,
    HEADER_LEN,
};

/// A request, decoded (xs_wire.h `xsd_sockmsg_type` \[X\]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `XS_CONTROL`: a command word and its arguments.
    Control {
        /// The command.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `XS_DIRECTORY`.
    Directory(XsPath),
    /// `XS_READ`.
    Read(XsPath),
    /// `XS_GET_PERMS` (special paths allowed).
    GetPerms(XsPath),
    /// `XS_WATCH`.
    Watch {
        /// Watched path (special paths allowed).
        path: XsPath,
        /// Opaque token echoed in events.
        token: String,
        /// Optional depth (`XENSTORE_SERVER_FEATURE_WATCHDEPTH`).
        depth: Option<u32>,
    },
    /// `XS_UNWATCH`.
    Unwatch {
        /// Watched path.
        path: XsPath,
        /// Token given to WATCH.
        token: String,
    },
    /// `XS_TRANSACTION_START`.
    TransactionStart,
    /// `XS_TRANSACTION_END`: `true` commits.
    TransactionEnd {
        /// Commit (`T`) or abort (`F`).
        commit: bool,
    },
    /// `XS_INTRODUCE` (dom0 only).
    Introduce {
        /// The domain.
        domid: DomId,
        /// Guest frame of its store page (signed decimal on the wire).
        gfn: i64,
        /// Its store event channel.
        evtchn: u32,
    },
    /// `XS_RELEASE` (dom0 only).
    Release(DomId),
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath(DomId),
    /// `XS_WRITE`: the value is raw bytes, not NUL-terminated.
    Write {
        /// Node.
        path: XsPath,
        /// Value.
        value: Vec<u8>,
    },
    /// `XS_MKDIR`.
    Mkdir(XsPath),
    /// `XS_RM`.
    Rm(XsPath),
    /// `XS_SET_PERMS`: owner first (special paths allowed).
    SetPerms {
        /// Node.
        path: XsPath,
        /// Permissions, at least the owner.
        perms: Vec<Perm>,
    },
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced(DomId),
    /// `XS_RESUME` (dom0 only).
    Resume(DomId),
    /// `XS_SET_TARGET` (dom0 only).
    SetTarget {
        /// The domain.
        domid: DomId,
        /// The domain it may manage.
        target: DomId,
    },
    /// `XS_RESET_WATCHES`.
    ResetWatches,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart {
        /// Node.
        path: XsPath,
        /// Byte offset into the child list.
        offset: u32,
    },
    /// `XS_GET_FEATURE`: own features when `None`.
    GetFeature(Option<DomId>),
    /// `XS_SET_FEATURE` (dom0 only).
    SetFeature {
        /// The domain.
        domid: DomId,
        /// Feature bits.
        value: u32,
    },
    /// `XS_GET_QUOTA`: `[[domid\0]quota\0]`.
    GetQuota {
        /// The domain, if named.
        domid: Option<DomId>,
        /// The quota name, if named.
        quota: Option<String>,
    },
    /// `XS_SET_QUOTA` (dom0 only): `[domid\0]quota\0value\0`.
    SetQuota {
        /// The domain, if named.
        domid: Option<DomId>,
        /// The quota name.
        quota: String,
        /// Its new value.
        value: u32,
    },
    /// `XS_INVALID`: header only.
    Invalid,
}

/// A request with its header ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMsg {
    /// `req_id`, echoed by the reply.
    pub req_id: u32,
    /// `tx_id`, 0 outside a transaction.
    pub tx_id: u32,
    /// The request.
    pub request: Request,
}

fn path(f: &mut Fields<'_>, field: &'static str, special_ok: bool) -> Result<XsPath, WireError> {
    let s = f.text(field)?;
    let p = if special_ok {
        XsPath::new(s)
    } else {
        XsPath::node(s)
    };
    p.map_err(|why| WireError::BadPath { field, why })
}

fn u32_field(f: &mut Fields<'_>, field: &'static str) -> Result<u32, WireError> {
    u32::try_from(f.number(field)?).map_err(|_| WireError::BadNumber { field })
}

fn text(f: &mut Fields<'_>, field: &'static str) -> Result<String, WireError> {
    f.text(field).map(String::from)
}

fn signed(b: &[u8]) -> Option<i64> {
    match b.split_first() {
        Some((b'-', digits)) => {
            let v = super::parse_decimal(digits)?;
            0i64.checked_sub_unsigned(v)
        }
        _ => i64::try_from(super::parse_decimal(b)?).ok(),
    }
}

impl Request {
    /// The `type` this request is sent with.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Control { .. } => MsgType::Control,
            Self::Directory(_) => MsgType::Directory,
            Self::Read(_) => MsgType::Read,
            Self::GetPerms(_) => MsgType::GetPerms,
            Self::Watch { .. } => MsgType::Watch,
            Self::Unwatch { .. } => MsgType::Unwatch,
            Self::TransactionStart => MsgType::TransactionStart,
            Self::TransactionEnd { .. } => MsgType::TransactionEnd,
            Self::Introduce { .. } => MsgType::Introduce,
            Self::Release(_) => MsgType::Release,
            Self::GetDomainPath(_) => MsgType::GetDomainPath,
            Self::Write { .. } => MsgType::Write,
            Self::Mkdir(_) => MsgType::Mkdir,
            Self::Rm(_) => MsgType::Rm,
            Self::SetPerms { .. } => MsgType::SetPerms,
            Self::IsDomainIntroduced(_) => MsgType::IsDomainIntroduced,
            Self::Resume(_) => MsgType::Resume,
            Self::SetTarget { .. } => MsgType::SetTarget,
            Self::ResetWatches => MsgType::ResetWatches,
            Self::DirectoryPart { .. } => MsgType::DirectoryPart,
            Self::GetFeature(_) => MsgType::GetFeature,
            Self::SetFeature { .. } => MsgType::SetFeature,
            Self::GetQuota { .. } => MsgType::GetQuota,
            Self::SetQuota { .. } => MsgType::SetQuota,
            Self::Invalid => MsgType::Invalid,
        }
    }

    /// Decodes the payload of a request of type `t`.
    pub fn parse_payload(t: MsgType, payload: &[u8]) -> Result<Request, WireError> {
        let mut f = Fields::new(payload);
        let req = match t {
            MsgType::Control => {
                let command = text(&mut f, "command")?;
                let mut args = Vec::new();
                while !f.is_empty() {
                    args.push(text(&mut f, "argument")?);
                }
                Self::Control { command, args }
            }
            MsgType::Directory => Self::Directory(path(&mut f, "path", false)?),
            MsgType::Read => Self::Read(path(&mut f, "path", false)?),
            MsgType::GetPerms => Self::GetPerms(path(&mut f, "path", true)?),
            MsgType::Watch => {
                let path = path(&mut f, "wpath", true)?;
                let token = text(&mut f, "token")?;
                let depth = if f.is_empty() {
                    None
                } else {
                    Some(u32_field(&mut f, "depth")?)
                };
                Self::Watch { path, token, depth }
            }
            MsgType::Unwatch => Self::Unwatch {
                path: path(&mut f, "wpath", true)?,
                token: text(&mut f, "token")?,
            },
            MsgType::TransactionStart | MsgType::ResetWatches => {
                // One empty string; an empty payload is tolerated as older clients send it.
                if !f.is_empty() && !f.bytes("empty")?.is_empty() {
                    return Err(WireError::TrailingBytes);
                }
                if t == MsgType::TransactionStart {
                    Self::TransactionStart
                } else {
                    Self::ResetWatches
                }
            }
            MsgType::TransactionEnd => Self::TransactionEnd {
                commit: f.flag("commit")?,
            },
            MsgType::Introduce => {
                let domid = f.domid("domid")?;
                let gfn = signed(f.bytes("gfn")?).ok_or(WireError::BadNumber { field: "gfn" })?;
                let evtchn = u32_field(&mut f, "evtchn")?;
                Self::Introduce { domid, gfn, evtchn }
            }
            MsgType::Release => Self::Release(f.domid("domid")?),
            MsgType::GetDomainPath => Self::GetDomainPath(f.domid("domid")?),
            MsgType::Write => {
                let path = path(&mut f, "path", false)?;
                Self::Write {
                    path,
                    value: f.rest().to_vec(),
                }
            }
            MsgType::Mkdir => Self::Mkdir(path(&mut f, "path", false)?),
            MsgType::Rm => Self::Rm(path(&mut f, "path", false)?),
            MsgType::SetPerms => {
                let path = path(&mut f, "path", true)?;
                let mut perms = Vec::new();
                while !f.is_empty() {
                    perms.push(parse_perm(f.bytes("perm")?)?);
                }
                if perms.is_empty() {
                    return Err(WireError::Empty { field: "perms" });
                }
                Self::SetPerms { path, perms }
            }
            MsgType::IsDomainIntroduced => Self::IsDomainIntroduced(f.domid("domid")?),
            MsgType::Resume => Self::Resume(f.domid("domid")?),
            MsgType::SetTarget => Self::SetTarget {
                domid: f.domid("domid")?,
                target: f.domid("tdomid")?,
            },
            MsgType::DirectoryPart => Self::DirectoryPart {
                path: path(&mut f, "path", false)?,
                offset: u32_field(&mut f, "offset")?,
            },
            MsgType::GetFeature => Self::GetFeature(if f.is_empty() {
                None
            } else {
                Some(f.domid("domid")?)
            }),
            MsgType::SetFeature => Self::SetFeature {
                domid: f.domid("domid")?,
                value: u32_field(&mut f, "value")?,
            },
            MsgType::GetQuota => {
                let mut words: Vec<&[u8]> = Vec::new();
                while !f.is_empty() && words.len() < 2 {
                    words.push(f.bytes("quota")?);
                }
                let (domid, quota) = match words.as_slice() {
                    [] => (None, None),
                    [q] => (None, Some(quota_name(q)?)),
                    [d, q] => (Some(domid_of(d)?), Some(quota_name(q)?)),
                    _ => return Err(WireError::TrailingBytes),
                };
                Self::GetQuota { domid, quota }
            }
            MsgType::SetQuota => {
                let mut words: Vec<&[u8]> = Vec::new();
                while !f.is_empty() && words.len() < 3 {
                    words.push(f.bytes("quota")?);
                }
                let (domid, quota, value) = match words.as_slice() {
                    [q, v] => (None, q, v),
                    [d, q, v] => (Some(domid_of(d)?), q, v),
                    _ => return Err(WireError::MissingNul { field: "value" }),
                };
                let value = super::parse_decimal(value)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(WireError::BadNumber { field: "value" })?;
                Self::SetQuota {
                    domid,
                    quota: quota_name(quota)?,
                    value,
                }
            }
            MsgType::Invalid => Self::Invalid,
            MsgType::WatchEvent | MsgType::Error | MsgType::Unknown(_) => {
                return Err(WireError::UnexpectedType(t))
            }
        };
        f.finish()?;
        Ok(req)
    }

    /// The payload bytes.
    pub fn payload(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Self::Control { command, args } => {
                put_str(&mut o, command.as_bytes());
                for a in args {
                    put_str(&mut o, a.as_bytes());
                }
            }
            Self::Directory(p)
            | Self::Read(p)
            | Self::GetPerms(p)
            | Self::Mkdir(p)
            | Self::Rm(p) => put_str(&mut o, p.as_str().as_bytes()),
            Self::Watch { path, token, depth } => {
                put_str(&mut o, path.as_str().as_bytes());
                put_str(&mut o, token.as_bytes());
                if let Some(d) = depth {
                    put_num(&mut o, d);
                }
            }
            Self::Unwatch { path, token } => {
                put_str(&mut o, path.as_str().as_bytes());
                put_str(&mut o, token.as_bytes());
            }
            Self::TransactionStart | Self::ResetWatches => o.push(0),
            Self::TransactionEnd { commit } => put_str(&mut o, if *commit { b"T" } else { b"F" }),
            Self::Introduce { domid, gfn, evtchn } => {
                put_num(&mut o, domid);
                put_num(&mut o, gfn);
                put_num(&mut o, evtchn);
            }
            Self::Release(d)
            | Self::GetDomainPath(d)
            | Self::IsDomainIntroduced(d)
            | Self::Resume(d) => put_num(&mut o, d),
            Self::Write { path, value } => {
                put_str(&mut o, path.as_str().as_bytes());
                o.extend_from_slice(value);
            }
            Self::SetPerms { path, perms } => {
                put_str(&mut o, path.as_str().as_bytes());
                for p in perms {
                    put_perm(&mut o, p);
                }
            }
            Self::SetTarget { domid, target } => {
                put_num(&mut o, domid);
                put_num(&mut o, target);
            }
            Self::DirectoryPart { path, offset } => {
                put_str(&mut o, path.as_str().as_bytes());
                put_num(&mut o, offset);
            }
            Self::GetFeature(d) => {
                if let Some(d) = d {
                    put_num(&mut o, d);
                }
            }
            Self::SetFeature { domid, value } => {
                put_num(&mut o, domid);
                put_num(&mut o, value);
            }
            Self::GetQuota { domid, quota } => {
                if let Some(d) = domid {
                    put_num(&mut o, d);
                }
                if let Some(q) = quota {
                    put_str(&mut o, q.as_bytes());
                }
            }
            Self::SetQuota {
                domid,
                quota,
                value,
            } => {
                if let Some(d) = domid {
                    put_num(&mut o, d);
                }
                put_str(&mut o, quota.as_bytes());
                put_num(&mut o, value);
            }
            Self::Invalid => {}
        }
        o
    }
}

fn domid_of(b: &[u8]) -> Result<DomId, WireError> {
    super::parse_decimal(b)
        .and_then(|n| u32::try_from(n).ok())
        .and_then(|n| DomId::new(n).ok())
        .ok_or(WireError::BadNumber { field: "domid" })
}

fn quota_name(b: &[u8]) -> Result<String, WireError> {
    core::str::from_utf8(b)
        .map(String::from)
        .map_err(|_| WireError::BadText { field: "quota" })
}

impl RequestMsg {
    /// Decodes a checked message view.
    pub fn parse<T: AsRef<[u8]>>(msg: &MsgHeader<T>) -> Result<RequestMsg, WireError> {
        msg.check_len()?;
        let request = Request::parse_payload(msg.msg_type(), msg.payload())?;
        Ok(RequestMsg {
            req_id: msg.req_id(),
            tx_id: msg.tx_id(),
            request,
        })
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.request.payload().len()
    }

    /// Encodes into `buf`, returning the length; refuses a payload above `PAYLOAD_MAX`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let payload = self.request.payload();
        emit_msg(
            buf,
            self.request.msg_type(),
            self.req_id,
            self.tx_id,
            &payload,
        )
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let payload = self.request.payload();
        let mut v = alloc::vec![0u8; HEADER_LEN + payload.len()];
        emit_msg(
            &mut v,
            self.request.msg_type(),
            self.req_id,
            self.tx_id,
            &payload,
        )?;
        Ok(v)
    }
}
