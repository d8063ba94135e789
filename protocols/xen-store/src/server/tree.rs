//! The node tree: absolute path -> value, permissions and generation, with per-owner counts
//! so quotas are one lookup; children are found by key range, not stored lists.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{Access, DomId, Perm};

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) value: Vec<u8>,
    /// Owner first; never empty.
    pub(crate) perms: Vec<Perm>,
    /// Generation of the last change to the node or its child list (unique per change).
    pub(crate) gen: u64,
}

impl Node {
    pub(crate) fn owner(&self) -> DomId {
        self.perms.first().map_or(DomId::DOM0, |p| p.domid)
    }
}

/// What `domid` may do on a node with `perms` (xenstored `perm_for_conn`).
pub(crate) fn access(domid: DomId, perms: &[Perm]) -> Access {
    let Some((owner, rest)) = perms.split_first() else {
        return Access::None;
    };
    if domid == DomId::DOM0 || owner.domid == domid {
        return Access::Both;
    }
    rest.iter()
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access)
}

pub(crate) fn can_read(domid: DomId, perms: &[Perm]) -> bool {
    matches!(access(domid, perms), Access::Read | Access::Both)
}

pub(crate) fn can_write(domid: DomId, perms: &[Perm]) -> bool {
    matches!(access(domid, perms), Access::Write | Access::Both)
}

/// The parent of an absolute path; `None` for the root.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Whether `path` is `dir` or below it.
pub(crate) fn is_at_or_below(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// The key range holding everything strictly below `dir` ('0' follows '/').
fn below(dir: &str) -> (String, String) {
    if dir == "/" {
        (String::from("/"), String::from("0"))
    } else {
        (alloc::format!("{dir}/"), alloc::format!("{dir}0"))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    owned: BTreeMap<DomId, usize>,
}

impl Tree {
    pub(crate) fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub(crate) fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes owned by `domid`.
    pub(crate) fn owned_by(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    pub(crate) fn insert(&mut self, path: String, node: Node) {
        *self.owned.entry(node.owner()).or_insert(0) += 1;
        if let Some(old) = self.nodes.insert(path, node) {
            self.uncount(old.owner());
        }
    }

    pub(crate) fn remove(&mut self, path: &str) -> Option<Node> {
        let old = self.nodes.remove(path)?;
        self.uncount(old.owner());
        Some(old)
    }

    fn uncount(&mut self, owner: DomId) {
        if let Some(c) = self.owned.get_mut(&owner) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// Names of the direct children, stepping over each child's subtree in one range jump.
    pub(crate) fn children(&self, dir: &str) -> Vec<String> {
        use core::ops::Bound::{Excluded, Included};
        let (lo, hi) = below(dir);
        let mut out: Vec<String> = Vec::new();
        let mut cursor: String = lo.clone();
        // The root's range starts at "/" itself, which is no child.
        let mut inclusive = dir != "/";
        loop {
            let lower = if inclusive {
                Included(cursor.as_str())
            } else {
                Excluded(cursor.as_str())
            };
            let Some((k, _)) = self
                .nodes
                .range::<str, _>((lower, Excluded(hi.as_str())))
                .next()
            else {
                break;
            };
            let rest = &k[lo.len()..];
            match rest.find('/') {
                Some(i) => {
                    let name = &rest[..i];
                    let child = alloc::format!("{lo}{name}");
                    // A child node sorts before its subtree, so it was listed already.
                    if !self.nodes.contains_key(&child) {
                        out.push(String::from(name));
                    }
                    // Siblings sorting before '/' came earlier; the next is at "<name>0" or later.
                    cursor = alloc::format!("{lo}{name}0");
                    inclusive = true;
                }
                None => {
                    out.push(String::from(rest));
                    cursor = k.clone();
                    inclusive = false;
                }
            }
        }
        out
    }

    /// Every path strictly below `dir`.
    pub(crate) fn descendants(&self, dir: &str) -> Vec<String> {
        let (lo, hi) = below(dir);
        self.nodes
            .range(lo..hi)
            .filter(|(k, _)| *k != dir)
            .map(|(k, _)| k.clone())
            .collect()
    }
}
