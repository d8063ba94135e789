//! What one operation sees: the main tree, or a transaction's overlay on it. A transaction
//! records the main-tree generation of every node it touches; commit fails if any moved.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use platform_api::{DomId, XsErrno};

use super::op::Changes;
use super::tree::{is_at_or_below, parent, Node, Tree};

/// One open transaction: its own changes over the main tree (as modern xenstored keeps them,
/// rather than a copy of the store), bounded by `Limits::max_transaction_nodes`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxState {
    /// Nodes written (`Some`) or removed (`None`) by the transaction.
    overlay: BTreeMap<String, Option<Node>>,
    /// Main-tree generation of each touched path when first touched (`None`: absent).
    seen: BTreeMap<String, Option<u64>>,
    /// Net nodes gained per owner.
    delta: BTreeMap<DomId, isize>,
    pub(crate) changes: Changes,
}

impl TxState {
    /// Whether the main tree still holds what the transaction based itself on.
    pub(crate) fn conflicts(&self, main: &Tree) -> bool {
        self.seen
            .iter()
            .any(|(p, g)| main.get(p).map(|n| n.gen) != *g)
    }

    /// Owners that would end above `max` nodes, other than dom0.
    pub(crate) fn over_quota(&self, main: &Tree, max: usize) -> bool {
        self.delta.iter().any(|(d, n)| {
            *d != DomId::DOM0 && *n > 0 && main.owned_by(*d) as isize + n > max as isize
        })
    }

    /// Writes the overlay into the main tree.
    pub(crate) fn apply(self, main: &mut Tree) -> Changes {
        for (p, v) in self.overlay {
            match v {
                Some(n) => main.insert(p, n),
                None => {
                    main.remove(&p);
                }
            }
        }
        self.changes
    }
}

/// The main tree (with the changes to fire) or a transaction over it.
pub(crate) enum View<'a> {
    Main {
        tree: &'a mut Tree,
        changes: &'a mut Changes,
    },
    Tx {
        main: &'a Tree,
        tx: &'a mut TxState,
        max_nodes: usize,
    },
}

impl View<'_> {
    pub(crate) fn get(&self, path: &str) -> Option<&Node> {
        match self {
            View::Main { tree, .. } => tree.get(path),
            View::Tx { main, tx, .. } => match tx.overlay.get(path) {
                Some(v) => v.as_ref(),
                None => main.get(path),
            },
        }
    }

    pub(crate) fn changes(&mut self) -> &mut Changes {
        match self {
            View::Main { changes, .. } => changes,
            View::Tx { tx, .. } => &mut tx.changes,
        }
    }

    /// Records what the main tree holds at `path`, once; refuses past the transaction bound.
    pub(crate) fn touch(&mut self, path: &str) -> Result<(), XsErrno> {
        let View::Tx {
            main,
            tx,
            max_nodes,
        } = self
        else {
            return Ok(());
        };
        if !tx.seen.contains_key(path) {
            if tx.seen.len() >= *max_nodes {
                return Err(XsErrno::Enospc);
            }
            tx.seen
                .insert(String::from(path), main.get(path).map(|n| n.gen));
        }
        Ok(())
    }

    pub(crate) fn owned_by(&self, domid: DomId) -> usize {
        match self {
            View::Main { tree, .. } => tree.owned_by(domid),
            View::Tx { main, tx, .. } => {
                let d = tx.delta.get(&domid).copied().unwrap_or(0);
                (main.owned_by(domid) as isize + d).max(0) as usize
            }
        }
    }

    /// Inserts or replaces a node; the caller has touched `path`.
    pub(crate) fn insert(&mut self, path: String, node: Node) {
        match self {
            View::Main { tree, .. } => tree.insert(path, node),
            View::Tx { main, tx, .. } => {
                let old = match tx.overlay.get(&path) {
                    Some(v) => v.as_ref().map(Node::owner),
                    None => main.get(&path).map(Node::owner),
                };
                if let Some(o) = old {
                    *tx.delta.entry(o).or_insert(0) -= 1;
                }
                *tx.delta.entry(node.owner()).or_insert(0) += 1;
                tx.overlay.insert(path, Some(node));
            }
        }
    }

    /// Removes a node; the caller has touched `path`.
    pub(crate) fn remove(&mut self, path: &str) {
        match self {
            View::Main { tree, .. } => {
                tree.remove(path);
            }
            View::Tx { main, tx, .. } => {
                let old = match tx.overlay.get(path) {
                    Some(v) => v.as_ref().map(Node::owner),
                    None => main.get(path).map(Node::owner),
                };
                if let Some(o) = old {
                    *tx.delta.entry(o).or_insert(0) -= 1;
                    tx.overlay.insert(String::from(path), None);
                }
            }
        }
    }

    /// Sets a node's generation (its child list changed).
    pub(crate) fn set_gen(&mut self, path: &str, gen: u64) {
        if let Some(mut n) = self.get(path).cloned() {
            n.gen = gen;
            self.insert(String::from(path), n);
        }
    }

    /// Direct children's names, sorted.
    pub(crate) fn children(&self, dir: &str) -> Vec<String> {
        match self {
            View::Main { tree, .. } => tree.children(dir),
            View::Tx { main, tx, .. } => {
                let mut set: BTreeSet<String> = main
                    .children(dir)
                    .into_iter()
                    .filter(|c| !matches!(tx.overlay.get(&join(dir, c)), Some(None)))
                    .collect();
                for (p, v) in &tx.overlay {
                    if v.is_some() && parent(p) == Some(dir) {
                        if let Some(name) = p.rsplit('/').next() {
                            set.insert(String::from(name));
                        }
                    }
                }
                set.into_iter().collect()
            }
        }
    }

    /// Every existing path strictly below `dir`.
    pub(crate) fn descendants(&self, dir: &str) -> Vec<String> {
        match self {
            View::Main { tree, .. } => tree.descendants(dir),
            View::Tx { main, tx, .. } => {
                let mut set: BTreeSet<String> = main.descendants(dir).into_iter().collect();
                for p in tx.overlay.keys() {
                    if p != dir && is_at_or_below(p, dir) {
                        set.insert(p.clone());
                    }
                }
                set.into_iter().filter(|p| self.get(p).is_some()).collect()
            }
        }
    }
}

fn join(dir: &str, child: &str) -> String {
    if dir == "/" {
        alloc::format!("/{child}")
    } else {
        alloc::format!("{dir}/{child}")
    }
}
