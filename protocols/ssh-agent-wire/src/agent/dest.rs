//! `restrict-destination-v00@openssh.com` checks against the connection's session bindings,
//! after OpenSSH's `identity_permitted` (exact host keys, or a CA that signed a host certificate).

use alloc::vec::Vec;

use ssh_key::Certificate;

use super::session::Binding;
use super::Identity;
use crate::key::KeyBlob;
use crate::wire::codec::Reader;
use crate::wire::{DestConstraint, Hop};

/// `SSH2_MSG_USERAUTH_REQUEST`.
const USERAUTH_REQUEST: u8 = 50;

/// The fields of a publickey userauth request the agent checks (RFC 4252 §7).
#[derive(Debug)]
pub(super) struct UserauthRequest<'a> {
    pub session_id: &'a [u8],
    pub user: &'a str,
    pub key: &'a [u8],
    pub hostkey: Option<&'a [u8]>,
}

/// Reads sign-request data as a publickey userauth request, if it is one.
pub(super) fn parse_userauth(data: &[u8]) -> Option<UserauthRequest<'_>> {
    let mut r = Reader::new(data);
    let session_id = r.string("session id").ok()?;
    if r.u8("type").ok()? != USERAUTH_REQUEST {
        return None;
    }
    let user = r.utf8("user").ok()?;
    let _service = r.string("service").ok()?;
    let method = r.string("method").ok()?;
    let hostbound = match method {
        b"publickey" => false,
        b"publickey-hostbound-v00@openssh.com" => true,
        _ => return None,
    };
    if !r.bool("has signature").ok()? {
        return None;
    }
    let _alg = r.string("algorithm").ok()?;
    let key = r.string("key").ok()?;
    let hostkey = if hostbound {
        Some(r.string("host key").ok()?)
    } else {
        None
    };
    r.expect_empty("userauth request").ok()?;
    Some(UserauthRequest {
        session_id,
        user,
        key,
        hostkey,
    })
}

fn key_in_hop(key: &KeyBlob, hop: &Hop) -> bool {
    hop.keys.iter().any(|spec| {
        if !spec.is_ca {
            return spec.key == *key;
        }
        // A CA entry matches a host certificate it signed (validity and principals unchecked).
        key.is_certificate()
            && Certificate::from_bytes(key.as_bytes())
                .ok()
                .and_then(|c| KeyBlob::from_key_data(c.signature_key()).ok())
                .is_some_and(|ca| ca == spec.key)
    })
}

/// `?` and `*` glob of OpenSSH's `match_pattern`, without recursion blow-up (bounded lengths).
fn glob(text: &str, pattern: &str) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                ti += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

fn permitted_by(
    dcs: &[DestConstraint],
    from: Option<&KeyBlob>,
    to: Option<&KeyBlob>,
    user: Option<&str>,
) -> bool {
    dcs.iter().any(|dc| {
        let from_ok = match from {
            None => dc.from.hostname.is_empty() && dc.from.keys.is_empty(),
            Some(k) => key_in_hop(k, &dc.from),
        };
        let to_ok = to.is_none_or(|k| key_in_hop(k, &dc.to));
        let user_ok = match user {
            Some(u) if !dc.to.user.is_empty() => glob(u, &dc.to.user),
            _ => true,
        };
        from_ok && to_ok && user_ok
    })
}

/// Whether `id` may be used over a connection with these bindings; `user` is set for a
/// signature (the userauth request's user), unset for listing.
pub(super) fn permitted(id: &Identity, binds: &[Binding], user: Option<&str>) -> bool {
    if id.destinations.is_empty() || binds.is_empty() {
        return true;
    }
    let last = binds.len() - 1;
    let mut from: Option<&KeyBlob> = None;
    for (i, b) in binds.iter().enumerate() {
        let test_user = if i == last {
            if b.forwarding && user.is_some() {
                return false; // signing on a forwarding hop
            }
            user
        } else {
            if !b.forwarding {
                return false; // forwarding through an authentication binding
            }
            None
        };
        if !permitted_by(&id.destinations, from, Some(&b.host_key), test_user) {
            return false;
        }
        from = Some(&b.host_key);
    }
    // A key forwarded past the last hop must be allowed onward from it.
    match binds.get(last) {
        Some(b) if b.forwarding => permitted_by(&id.destinations, Some(&b.host_key), None, None),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_openssh_patterns() {
        assert!(glob("alice", "alice"));
        assert!(glob("alice", "a*"));
        assert!(glob("alice", "*"));
        assert!(glob("alice", "al?ce"));
        assert!(glob("alice", "*c*"));
        assert!(!glob("alice", "bob"));
        assert!(!glob("alice", "a?"));
        assert!(!glob("", "?"));
        assert!(glob("", "*"));
    }
}
