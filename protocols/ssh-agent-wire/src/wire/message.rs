//! Typed requests (client -> agent) and responses (agent -> client), each with `parse` over one
//! message body (type byte first, no length) and `emit` of the same.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::codec::{put_bool, put_string, put_u32, Reader};
use super::constraint::Constraint;
use super::{msg, SignFlags, WireError};
use crate::key::{KeyBlob, PrivateKey};

/// Name of OpenSSH's session binding extension.
pub const SESSION_BIND: &str = "session-bind@openssh.com";
/// Name of the draft's extension listing extension.
pub const QUERY: &str = "query";
/// Longest extension name accepted.
pub const MAX_EXTENSION_NAME_LEN: usize = 256;

/// A lock passphrase: zeroized on drop, compared in constant time, never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps passphrase bytes.
    pub fn new(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for Passphrase {}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// `session-bind@openssh.com` (PROTOCOL.agent §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBind {
    /// The server's host key.
    pub host_key: KeyBlob,
    /// The exchange hash of the initial key exchange.
    pub session_id: Vec<u8>,
    /// The host key's signature over `session_id`, from the KEX reply.
    pub signature: Vec<u8>,
    /// Bound for forwarding (true) or for user authentication (false).
    pub is_forwarding: bool,
}

/// An SSH_AGENTC_EXTENSION request. As OpenSSH, the contents follow the name unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    /// Bind this connection to an SSH session.
    SessionBind(SessionBind),
    /// List the supported extensions.
    Query,
    /// Any other extension (answered with EXTENSION_FAILURE).
    Other {
        /// Its name.
        name: String,
        /// Its contents, unparsed.
        contents: Vec<u8>,
    },
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 11: list keys.
    RequestIdentities,
    /// 13: sign `data` with the key `key`.
    SignRequest {
        /// Public key (or certificate) blob.
        key: KeyBlob,
        /// Data to sign.
        data: Vec<u8>,
        /// Signature flags.
        flags: SignFlags,
    },
    /// 17 (no constraints) or 25: add a key.
    AddIdentity {
        /// The private key.
        key: PrivateKey,
        /// Its comment.
        comment: String,
        /// Constraints; emitted as 25 when not empty.
        constraints: Vec<Constraint>,
    },
    /// 18: remove a key.
    RemoveIdentity {
        /// Public key blob.
        key: KeyBlob,
    },
    /// 19: remove every key.
    RemoveAllIdentities,
    /// 22: lock.
    Lock(Passphrase),
    /// 23: unlock.
    Unlock(Passphrase),
    /// 27: an extension.
    Extension(Extension),
    /// 20, 21, 26 (PKCS#11) or any unknown type: kept raw, answered with FAILURE.
    Unsupported {
        /// The message type.
        kind: u8,
        /// The body after the type byte.
        body: Vec<u8>,
    },
}

impl Request {
    /// Parses one message body (type byte first).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let kind = r.u8("message type").map_err(|_| WireError::Empty)?;
        let req = match kind {
            msg::REQUEST_IDENTITIES => Self::RequestIdentities,
            msg::SIGN_REQUEST => Self::SignRequest {
                key: KeyBlob::new(r.string("key blob")?.to_vec())?,
                data: r.string("data")?.to_vec(),
                flags: SignFlags(r.u32("flags")?),
            },
            msg::ADD_IDENTITY | msg::ADD_ID_CONSTRAINED => {
                let key = PrivateKey::parse(&mut r)?;
                let comment = r.utf8_owned("comment")?;
                let constraints = if kind == msg::ADD_ID_CONSTRAINED {
                    Constraint::parse_all(&mut r)?
                } else {
                    Vec::new()
                };
                Self::AddIdentity {
                    key,
                    comment,
                    constraints,
                }
            }
            msg::REMOVE_IDENTITY => Self::RemoveIdentity {
                key: KeyBlob::new(r.string("key blob")?.to_vec())?,
            },
            msg::REMOVE_ALL_IDENTITIES => Self::RemoveAllIdentities,
            msg::LOCK => Self::Lock(Passphrase::new(r.string("passphrase")?)),
            msg::UNLOCK => Self::Unlock(Passphrase::new(r.string("passphrase")?)),
            msg::EXTENSION => Self::Extension(parse_extension(&mut r)?),
            kind => Self::Unsupported {
                kind,
                body: r.take_rest().to_vec(),
            },
        };
        r.expect_empty("request")?;
        Ok(req)
    }

    /// The message type this request is emitted as.
    pub fn kind(&self) -> u8 {
        match self {
            Self::RequestIdentities => msg::REQUEST_IDENTITIES,
            Self::SignRequest { .. } => msg::SIGN_REQUEST,
            Self::AddIdentity { constraints, .. } if constraints.is_empty() => msg::ADD_IDENTITY,
            Self::AddIdentity { .. } => msg::ADD_ID_CONSTRAINED,
            Self::RemoveIdentity { .. } => msg::REMOVE_IDENTITY,
            Self::RemoveAllIdentities => msg::REMOVE_ALL_IDENTITIES,
            Self::Lock(_) => msg::LOCK,
            Self::Unlock(_) => msg::UNLOCK,
            Self::Extension(_) => msg::EXTENSION,
            Self::Unsupported { kind, .. } => *kind,
        }
    }

    /// Appends the message body (type byte first, no length prefix).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        match self {
            Self::RequestIdentities | Self::RemoveAllIdentities => {}
            Self::SignRequest { key, data, flags } => {
                put_string(out, key.as_bytes());
                put_string(out, data);
                put_u32(out, flags.0);
            }
            Self::AddIdentity {
                key,
                comment,
                constraints,
            } => {
                key.emit(out);
                put_string(out, comment.as_bytes());
                for c in constraints {
                    c.emit(out);
                }
            }
            Self::RemoveIdentity { key } => put_string(out, key.as_bytes()),
            Self::Lock(p) | Self::Unlock(p) => put_string(out, p.as_bytes()),
            Self::Extension(e) => emit_extension(e, out),
            Self::Unsupported { body, .. } => out.extend_from_slice(body),
        }
    }
}

fn parse_extension(r: &mut Reader<'_>) -> Result<Extension, WireError> {
    let name = r.utf8("extension name")?;
    if name.len() > MAX_EXTENSION_NAME_LEN {
        return Err(WireError::TooLong {
            field: "extension name",
            max: MAX_EXTENSION_NAME_LEN,
        });
    }
    Ok(match name {
        SESSION_BIND => Extension::SessionBind(SessionBind {
            host_key: KeyBlob::new(r.string("host key")?.to_vec())?,
            session_id: r.string("session id")?.to_vec(),
            signature: r.string("signature")?.to_vec(),
            is_forwarding: r.bool("is_forwarding")?,
        }),
        QUERY => Extension::Query,
        other => Extension::Other {
            name: String::from(other),
            contents: r.take_rest().to_vec(),
        },
    })
}

fn emit_extension(e: &Extension, out: &mut Vec<u8>) {
    match e {
        Extension::SessionBind(b) => {
            put_string(out, SESSION_BIND.as_bytes());
            put_string(out, b.host_key.as_bytes());
            put_string(out, &b.session_id);
            put_string(out, &b.signature);
            put_bool(out, b.is_forwarding);
        }
        Extension::Query => put_string(out, QUERY.as_bytes()),
        Extension::Other { name, contents } => {
            put_string(out, name.as_bytes());
            out.extend_from_slice(contents);
        }
    }
}

/// One entry of IDENTITIES_ANSWER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEntry {
    /// Public key or certificate blob.
    pub key: KeyBlob,
    /// Comment.
    pub comment: String,
}

/// An agent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// 5.
    Failure,
    /// 6.
    Success,
    /// 12: the keys.
    IdentitiesAnswer(Vec<IdentityEntry>),
    /// 14: an encoded signature (`string algorithm || string blob`).
    SignResponse(Vec<u8>),
    /// 28.
    ExtensionFailure,
    /// 29: an extension's answer, e.g. `query`'s list of names.
    ExtensionResponse {
        /// The extension's name.
        name: String,
        /// Its contents, unwrapped.
        contents: Vec<u8>,
    },
}

impl Response {
    /// Parses one message body (type byte first); for a client or a test peer.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let kind = r.u8("message type").map_err(|_| WireError::Empty)?;
        let resp = match kind {
            msg::FAILURE => Self::Failure,
            msg::SUCCESS => Self::Success,
            msg::IDENTITIES_ANSWER => {
                let n = r.u32("key count")?;
                let mut keys = Vec::new();
                for _ in 0..n {
                    // Each entry holds at least two length words: a lying count stops here.
                    let key = KeyBlob::new(r.string("key blob")?.to_vec())?;
                    let comment = r.utf8_owned("comment")?;
                    keys.push(IdentityEntry { key, comment });
                }
                Self::IdentitiesAnswer(keys)
            }
            msg::SIGN_RESPONSE => Self::SignResponse(r.string("signature")?.to_vec()),
            msg::EXTENSION_FAILURE => Self::ExtensionFailure,
            msg::EXTENSION_RESPONSE => Self::ExtensionResponse {
                name: r.utf8_owned("extension name")?,
                contents: r.take_rest().to_vec(),
            },
            _ => return Err(WireError::UnknownResponse { kind }),
        };
        r.expect_empty("response")?;
        Ok(resp)
    }

    /// Appends the message body (type byte first, no length prefix).
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Self::Failure => out.push(msg::FAILURE),
            Self::Success => out.push(msg::SUCCESS),
            Self::IdentitiesAnswer(keys) => {
                out.push(msg::IDENTITIES_ANSWER);
                put_u32(out, u32::try_from(keys.len()).unwrap_or(u32::MAX));
                for k in keys {
                    put_string(out, k.key.as_bytes());
                    put_string(out, k.comment.as_bytes());
                }
            }
            Self::SignResponse(sig) => {
                out.push(msg::SIGN_RESPONSE);
                put_string(out, sig);
            }
            Self::ExtensionFailure => out.push(msg::EXTENSION_FAILURE),
            Self::ExtensionResponse { name, contents } => {
                out.push(msg::EXTENSION_RESPONSE);
                put_string(out, name.as_bytes());
                out.extend_from_slice(contents);
            }
        }
    }

    /// The framed bytes (`uint32 length || body`).
    pub fn to_frame(&self) -> Vec<u8> {
        let mut body = Vec::new();
        self.emit(&mut body);
        super::frame::frame(&body)
    }
}
