//! xenstored-to-client messages: replies (shaped by the request type they echo), watch
//! events and errors by name (xs_wire.h `xsd_errors` \[X\]).

use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{Perm, XsErrno};

use super::path::put_perm;
use super::{
    emit_msg, parse_perm, put_num, put_str, Fields, MsgHeader, MsgType, WireError, XsPath,
    HEADER_LEN,
};

/// A reply or event, decoded. The shape depends on the header type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK\0` acknowledging a request of this type.
    Ok(MsgType),
    /// `XS_CONTROL`'s implementation-specific answer.
    Control(Vec<u8>),
    /// `XS_DIRECTORY`: child names.
    Directory(Vec<String>),
    /// `XS_READ`: the value.
    Read(Vec<u8>),
    /// `XS_GET_PERMS`: owner first.
    Perms(Vec<Perm>),
    /// `XS_TRANSACTION_START`: the new id.
    TransactionStarted(u32),
    /// `XS_GET_DOMAIN_PATH`.
    DomainPath(String),
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsIntroduced(bool),
    /// `XS_DIRECTORY_PART`.
    DirectoryPart {
        /// Generation count of the node.
        gencnt: u64,
        /// Child names in this part.
        children: Vec<String>,
        /// Whether the list ended in this part (the extra empty string).
        complete: bool,
    },
    /// `XS_GET_FEATURE`.
    Feature(u32),
    /// `XS_GET_QUOTA`.
    Quota(u32),
    /// `XS_WATCH_EVENT`.
    WatchEvent {
        /// The changed path (relative if the watch was).
        path: XsPath,
        /// The watch's token.
        token: String,
    },
    /// `XS_ERROR` with a known name.
    Error(XsErrno),
    /// `XS_ERROR` with a name outside `xsd_errors`.
    UnknownError(String),
}

/// A reply with its header ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMsg {
    /// `req_id` of the request answered (0 for events).
    pub req_id: u32,
    /// `tx_id` of the request answered (0 for events).
    pub tx_id: u32,
    /// The reply.
    pub reply: Reply,
}

fn acked(t: MsgType) -> bool {
    matches!(
        t,
        MsgType::Watch
            | MsgType::Unwatch
            | MsgType::TransactionEnd
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::Write
            | MsgType::Mkdir
            | MsgType::Rm
            | MsgType::SetPerms
            | MsgType::Resume
            | MsgType::SetTarget
            | MsgType::ResetWatches
            | MsgType::SetFeature
            | MsgType::SetQuota
    )
}

/// A child name: a path segment of the allowed charset.
fn child(b: &[u8]) -> Result<String, WireError> {
    const FIELD: &str = "child";
    let s = core::str::from_utf8(b).map_err(|_| WireError::BadText { field: FIELD })?;
    if s.is_empty() || s.contains('/') {
        return Err(WireError::BadPath {
            field: FIELD,
            why: super::PathError::BadChar(b'/'),
        });
    }
    XsPath::node(s).map_err(|why| WireError::BadPath { field: FIELD, why })?;
    Ok(String::from(s))
}

fn u32_of(f: &mut Fields<'_>, field: &'static str) -> Result<u32, WireError> {
    u32::try_from(f.number(field)?).map_err(|_| WireError::BadNumber { field })
}

impl Reply {
    /// The `type` this reply is sent with.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Ok(t) => *t,
            Self::Control(_) => MsgType::Control,
            Self::Directory(_) => MsgType::Directory,
            Self::Read(_) => MsgType::Read,
            Self::Perms(_) => MsgType::GetPerms,
            Self::TransactionStarted(_) => MsgType::TransactionStart,
            Self::DomainPath(_) => MsgType::GetDomainPath,
            Self::IsIntroduced(_) => MsgType::IsDomainIntroduced,
            Self::DirectoryPart { .. } => MsgType::DirectoryPart,
            Self::Feature(_) => MsgType::GetFeature,
            Self::Quota(_) => MsgType::GetQuota,
            Self::WatchEvent { .. } => MsgType::WatchEvent,
            Self::Error(_) | Self::UnknownError(_) => MsgType::Error,
        }
    }

    /// Decodes the payload of a reply of type `t`.
    pub fn parse_payload(t: MsgType, payload: &[u8]) -> Result<Reply, WireError> {
        let mut f = Fields::new(payload);
        let reply = match t {
            t if acked(t) => {
                if f.bytes("ok")? != b"OK" {
                    return Err(WireError::NotOk);
                }
                Self::Ok(t)
            }
            MsgType::Control => Self::Control(f.rest().to_vec()),
            MsgType::Read => Self::Read(f.rest().to_vec()),
            // Some xenstoreds answer an empty listing with one empty string.
            MsgType::Directory if payload == b"\0" => {
                f.rest();
                Self::Directory(Vec::new())
            }
            MsgType::Directory => {
                let mut v = Vec::new();
                while !f.is_empty() {
                    v.push(child(f.bytes("child")?)?);
                }
                Self::Directory(v)
            }
            MsgType::GetPerms => {
                let mut v = Vec::new();
                while !f.is_empty() {
                    v.push(parse_perm(f.bytes("perm")?)?);
                }
                if v.is_empty() {
                    return Err(WireError::Empty { field: "perms" });
                }
                Self::Perms(v)
            }
            MsgType::TransactionStart => Self::TransactionStarted(u32_of(&mut f, "txid")?),
            MsgType::GetDomainPath => {
                let s = f.text("path")?;
                let p = XsPath::node(s).map_err(|why| WireError::BadPath { field: "path", why })?;
                Self::DomainPath(String::from(p.as_str()))
            }
            MsgType::IsDomainIntroduced => Self::IsIntroduced(f.flag("answer")?),
            MsgType::DirectoryPart => {
                let gencnt = f.number("gencnt")?;
                let mut children = Vec::new();
                let mut complete = false;
                while !f.is_empty() {
                    let name = f.bytes("child")?;
                    if name.is_empty() {
                        complete = true;
                        break;
                    }
                    children.push(child(name)?);
                }
                Self::DirectoryPart {
                    gencnt,
                    children,
                    complete,
                }
            }
            MsgType::GetFeature => Self::Feature(u32_of(&mut f, "value")?),
            MsgType::GetQuota => Self::Quota(u32_of(&mut f, "value")?),
            MsgType::WatchEvent => {
                let s = f.text("epath")?;
                let path = XsPath::new(s).map_err(|why| WireError::BadPath {
                    field: "epath",
                    why,
                })?;
                Self::WatchEvent {
                    path,
                    token: String::from(f.text("token")?),
                }
            }
            MsgType::Error => {
                let name = f.text("error")?;
                match XsErrno::from_name(name) {
                    Some(e) => Self::Error(e),
                    None => Self::UnknownError(String::from(name)),
                }
            }
            _ => return Err(WireError::UnexpectedType(t)),
        };
        f.finish()?;
        Ok(reply)
    }

    /// The payload bytes.
    pub fn payload(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Self::Ok(_) => put_str(&mut o, b"OK"),
            Self::Control(b) | Self::Read(b) => o.extend_from_slice(b),
            Self::Directory(names) => {
                for n in names {
                    put_str(&mut o, n.as_bytes());
                }
            }
            Self::Perms(perms) => {
                for p in perms {
                    put_perm(&mut o, p);
                }
            }
            Self::TransactionStarted(id) => put_num(&mut o, id),
            Self::DomainPath(p) => put_str(&mut o, p.as_bytes()),
            Self::IsIntroduced(b) => put_str(&mut o, if *b { b"T" } else { b"F" }),
            Self::DirectoryPart {
                gencnt,
                children,
                complete,
            } => {
                put_num(&mut o, gencnt);
                for n in children {
                    put_str(&mut o, n.as_bytes());
                }
                if *complete {
                    o.push(0);
                }
            }
            Self::Feature(v) | Self::Quota(v) => put_num(&mut o, v),
            Self::WatchEvent { path, token } => {
                put_str(&mut o, path.as_str().as_bytes());
                put_str(&mut o, token.as_bytes());
            }
            Self::Error(e) => put_str(&mut o, e.name().as_bytes()),
            Self::UnknownError(s) => put_str(&mut o, s.as_bytes()),
        }
        o
    }
}

impl ReplyMsg {
    /// Decodes a checked message view.
    pub fn parse<T: AsRef<[u8]>>(msg: &MsgHeader<T>) -> Result<ReplyMsg, WireError> {
        msg.check_len()?;
        let reply = Reply::parse_payload(msg.msg_type(), msg.payload())?;
        Ok(ReplyMsg {
            req_id: msg.req_id(),
            tx_id: msg.tx_id(),
            reply,
        })
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.reply.payload().len()
    }

    /// Encodes into `buf`, returning the length; refuses a payload above `PAYLOAD_MAX`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let payload = self.reply.payload();
        emit_msg(
            buf,
            self.reply.msg_type(),
            self.req_id,
            self.tx_id,
            &payload,
        )
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let payload = self.reply.payload();
        let mut v = alloc::vec![0u8; HEADER_LEN + payload.len()];
        emit_msg(
            &mut v,
            self.reply.msg_type(),
            self.req_id,
            self.tx_id,
            &payload,
        )?;
        Ok(v)
    }
}
