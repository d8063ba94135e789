//! Watches: registration with the initial event, matching a change against each watch
//! (at or below it, or above it for a removed subtree), relative event paths, bounded queues.

use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{DomId, XsErrno};

use super::op::Change;
use super::tree::{can_read, is_at_or_below};
use super::{Conn, ConnId, Server};
use crate::wire::{MsgType, Reply, ReplyMsg, XsPath, PAYLOAD_MAX};

#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub(crate) path: XsPath,
    pub(crate) abs: String,
    pub(crate) token: String,
    pub(crate) depth: Option<u32>,
}

impl Server {
    pub(crate) fn watch(
        &mut self,
        conn: ConnId,
        domid: DomId,
        path: XsPath,
        token: String,
        depth: Option<u32>,
    ) -> Result<Reply, XsErrno> {
        let max = self.limits.max_watches;
        let c = self.conns.get_mut(&conn.0).ok_or(XsErrno::Einval)?;
        if c.watches.iter().any(|w| w.path == path && w.token == token) {
            return Err(XsErrno::Eexist);
        }
        if c.watches.len() >= max {
            return Err(XsErrno::E2big);
        }
        let abs = path.resolve(domid);
        c.watches.push(Watch {
            path: path.clone(),
            abs,
            token: token.clone(),
            depth,
        });
        // The initial event follows the OK reply.
        c.pending_initial(path, token);
        Ok(Reply::Ok(MsgType::Watch))
    }

    pub(crate) fn flush_pending_events(&mut self, conn: ConnId) {
        let max = self.limits.max_output;
        if let Some(c) = self.conns.get_mut(&conn.0) {
            let initial = core::mem::take(&mut c.initial);
            for (path, token) in initial {
                c.push_event(max, path, token);
            }
        }
    }

    pub(crate) fn fire(&mut self, change: &Change) {
        let max = self.limits.max_output;
        for c in self.conns.values_mut() {
            let mut events = Vec::new();
            for w in &c.watches {
                if let Some(epath) = match_watch(w, change) {
                    if !can_read(c.domid, &change.perms) {
                        continue;
                    }
                    events.push((event_path(w, epath, c.domid), w.token.clone()));
                }
            }
            for (path, token) in events {
                c.push_event(max, path, token);
            }
        }
    }
}

impl Conn {
    pub(crate) fn pending_initial(&mut self, path: XsPath, token: String) {
        self.initial.push((path, token));
    }

    pub(crate) fn push_event(&mut self, max: usize, path: XsPath, token: String) {
        let bytes = ReplyMsg {
            req_id: 0,
            tx_id: 0,
            reply: Reply::WatchEvent { path, token },
        }
        .to_vec();
        match bytes {
            Ok(b) if self.out.len() + b.len() <= max + PAYLOAD_MAX => self.out.extend(b),
            _ => self.events_dropped += 1,
        }
    }
}

/// The absolute path an event carries for watch `w`, if `change` fires it.
fn match_watch<'a>(w: &'a Watch, change: &'a Change) -> Option<&'a str> {
    let special_w = w.path.is_special();
    let special_c = change.path.starts_with('@');
    if special_w || special_c {
        return (w.abs == change.path).then_some(change.path.as_str());
    }
    if is_at_or_below(&change.path, &w.abs) {
        if let Some(depth) = w.depth {
            let rest = if w.abs == "/" {
                &change.path[..]
            } else {
                &change.path[w.abs.len()..]
            };
            let levels = if change.path == w.abs {
                0
            } else {
                rest.matches('/').count()
            };
            if levels > depth as usize {
                return None;
            }
        }
        return Some(change.path.as_str());
    }
    (change.recursive && is_at_or_below(&w.abs, &change.path)).then_some(w.abs.as_str())
}

/// Relative watches get paths relative to the watcher's home, as xenstored sends them.
fn event_path(w: &Watch, abs: &str, domid: DomId) -> XsPath {
    if !w.path.is_absolute() && !w.path.is_special() {
        let home = alloc::format!("/local/domain/{domid}/");
        if let Some(rel) = abs.strip_prefix(home.as_str()) {
            if let Ok(p) = XsPath::new(rel) {
                return p;
            }
        }
    }
    XsPath::new(abs).unwrap_or_else(|_| w.path.clone())
}
