//! Server core tests: semantics, permissions, watches, transactions, quotas, hostile input;
//! and the client machine plus blocking adapter driven against it in memory.

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use core::cell::RefCell;

use super::*;
use crate::blocking::{with_transaction, BlockingStore, Transport};
use crate::client::WatchEvent;
use crate::wire::MsgType;
use crate::wire::MSG_MAX;
use platform_api::{Duration, Store, StoreError, Tx};

fn d(n: u32) -> DomId {
    DomId::new(n).unwrap()
}

fn p(s: &str) -> XsPath {
    XsPath::new(s).unwrap()
}

struct Harness {
    s: Server,
}

#[derive(Debug, PartialEq)]
enum Out {
    R(Result<Reply, XsErrno>),
    Ev(String, String),
}

impl Harness {
    fn new() -> Self {
        let mut s = Server::new(Limits::DEFAULT);
        for n in [1, 2] {
            s.introduce_domain(d(n));
        }
        Self { s }
    }

    fn conn(&mut self, n: u32) -> ConnId {
        self.s.connect(d(n)).unwrap()
    }

    fn send(&mut self, c: ConnId, tx: u32, request: Request) {
        let b = RequestMsg {
            req_id: 7,
            tx_id: tx,
            request,
        }
        .to_vec()
        .unwrap();
        assert_eq!(self.s.handle_input(c, &b).unwrap(), b.len());
    }

    fn drain(&mut self, c: ConnId) -> Vec<Out> {
        let mut buf = vec![0u8; 1 << 20];
        let n = self.s.poll_transmit(c, &mut buf).unwrap_or(0);
        let mut at = 0;
        let mut out = Vec::new();
        while at < n {
            let view = MsgHeader::new_checked(&buf[at..n]).unwrap();
            let len = view.total_len();
            let m = ReplyMsg::parse(&view).unwrap();
            out.push(match m.reply {
                Reply::WatchEvent { path, token } => Out::Ev(path.to_string(), token),
                Reply::Error(e) => Out::R(Err(e)),
                r => Out::R(Ok(r)),
            });
            at += len;
        }
        out
    }

    /// Sends and returns the reply, checking no event came with it.
    fn req(&mut self, c: ConnId, tx: u32, request: Request) -> Result<Reply, XsErrno> {
        self.send(c, tx, request);
        let mut out = self.drain(c);
        assert_eq!(out.len(), 1, "{out:?}");
        match out.remove(0) {
            Out::R(r) => r,
            e => panic!("{e:?}"),
        }
    }

    fn read(&mut self, c: ConnId, path: &str) -> Result<Vec<u8>, XsErrno> {
        self.req(c, 0, Request::Read(p(path))).map(|r| match r {
            Reply::Read(v) => v,
            r => panic!("{r:?}"),
        })
    }

    fn write(&mut self, c: ConnId, tx: u32, path: &str, v: &str) -> Result<Reply, XsErrno> {
        self.req(
            c,
            tx,
            Request::Write {
                path: p(path),
                value: v.as_bytes().to_vec(),
            },
        )
    }
}

fn ok(t: MsgType) -> Result<Reply, XsErrno> {
    Ok(Reply::Ok(t))
}

fn perm(n: u32, access: Access) -> Perm {
    Perm {
        domid: d(n),
        access,
    }
}

#[test]
fn relative_paths_resolve_to_home() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    assert_eq!(h.read(c1, "domid"), Ok(b"1".to_vec()));
    assert_eq!(h.write(c1, 0, "data/x", "v"), ok(MsgType::Write));
    assert_eq!(h.read(c1, "/local/domain/1/data/x"), Ok(b"v".to_vec()));
    assert_eq!(
        h.req(c1, 0, Request::GetDomainPath(d(9))),
        Ok(Reply::DomainPath("/local/domain/9".into()))
    );
}

#[test]
fn permissions_enforced_between_domains() {
    let mut h = Harness::new();
    let (c0, c1, c2) = (h.conn(0), h.conn(1), h.conn(2));
    assert_eq!(h.write(c1, 0, "data/secret", "s"), ok(MsgType::Write));
    assert_eq!(
        h.read(c2, "/local/domain/1/data/secret"),
        Err(XsErrno::Eacces)
    );
    assert_eq!(h.read(c2, "/local/domain/1/domid"), Err(XsErrno::Eacces));
    assert_eq!(
        h.write(c2, 0, "/local/domain/1/data/x", "x"),
        Err(XsErrno::Eacces)
    );
    assert_eq!(
        h.write(c2, 0, "/local/domain/9/x", "x"),
        Err(XsErrno::Eacces)
    );
    assert_eq!(h.read(c0, "/local/domain/1/data/secret"), Ok(b"s".to_vec()));
    // Creator owns the node; default access is the owner's letter.
    assert_eq!(
        h.req(c1, 0, Request::GetPerms(p("data/secret"))),
        Ok(Reply::Perms(vec![perm(1, Access::None)]))
    );
    let perms = vec![perm(1, Access::None), perm(2, Access::Read)];
    let sp = Request::SetPerms {
        path: p("/local/domain/1/data/secret"),
        perms: perms.clone(),
    };
    assert_eq!(h.req(c2, 0, sp.clone()), Err(XsErrno::Eacces));
    assert_eq!(h.req(c1, 0, sp), ok(MsgType::SetPerms));
    assert_eq!(h.read(c2, "/local/domain/1/data/secret"), Ok(b"s".to_vec()));
    assert_eq!(
        h.write(c2, 0, "/local/domain/1/data/secret", "x"),
        Err(XsErrno::Eacces)
    );
    // Children inherit the parent's perms, owner replaced by the creator.
    assert_eq!(h.write(c1, 0, "data/secret/sub", "y"), ok(MsgType::Write));
    assert_eq!(
        h.read(c2, "/local/domain/1/data/secret/sub"),
        Ok(b"y".to_vec())
    );
    let give = Request::SetPerms {
        path: p("data/secret"),
        perms: vec![perm(2, Access::None)],
    };
    assert_eq!(h.req(c1, 0, give), Err(XsErrno::Eperm));
    // dom0 may change the owner.
    let give = Request::SetPerms {
        path: p("/local/domain/1/data/secret"),
        perms: vec![perm(2, Access::None)],
    };
    assert_eq!(h.req(c0, 0, give), ok(MsgType::SetPerms));
    assert_eq!(
        h.write(c2, 0, "/local/domain/1/data/secret", "mine"),
        ok(MsgType::Write)
    );
}

#[test]
fn write_creates_parents_and_rm_semantics() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    assert_eq!(h.write(c1, 0, "a/b/c", "1"), ok(MsgType::Write));
    assert_eq!(h.read(c1, "a/b"), Ok(Vec::new()));
    for s in ["a/b-x", "a/b0", "a/a"] {
        assert_eq!(h.write(c1, 0, s, ""), ok(MsgType::Write));
    }
    assert_eq!(
        h.req(c1, 0, Request::Directory(p("a"))),
        Ok(Reply::Directory(vec![
            "a".into(),
            "b".into(),
            "b-x".into(),
            "b0".into()
        ]))
    );
    assert_eq!(h.req(c1, 0, Request::Rm(p("a/zz"))), ok(MsgType::Rm));
    assert_eq!(h.req(c1, 0, Request::Rm(p("q/zz"))), Err(XsErrno::Enoent));
    assert_eq!(h.req(c1, 0, Request::Rm(p("a/b"))), ok(MsgType::Rm));
    assert_eq!(h.read(c1, "a/b/c"), Err(XsErrno::Enoent));
    assert_eq!(h.read(c1, "a/b-x"), Ok(Vec::new()));
    let c0 = h.conn(0);
    assert_eq!(h.req(c0, 0, Request::Rm(p("/"))), Err(XsErrno::Einval));
    assert_eq!(h.req(c1, 0, Request::Mkdir(p("m/n"))), ok(MsgType::Mkdir));
    assert_eq!(h.req(c1, 0, Request::Mkdir(p("m/n"))), ok(MsgType::Mkdir));
    assert_eq!(
        h.req(c1, 0, Request::Mkdir(p("/local/domain/2/x"))),
        Err(XsErrno::Eacces)
    );
}

#[test]
fn root_directory_lists_only_children() {
    let mut h = Harness::new();
    let c0 = h.conn(0);
    assert_eq!(
        h.req(c0, 0, Request::Directory(p("/"))),
        Ok(Reply::Directory(vec!["local".into()]))
    );
    let r = h
        .req(
            c0,
            0,
            Request::DirectoryPart {
                path: p("/"),
                offset: 0,
            },
        )
        .unwrap();
    assert!(matches!(r, Reply::DirectoryPart { ref children, .. } if children == &["local"]));
}

#[test]
fn directory_part_lists_with_closing_empty_string() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    for s in ["d/x", "d/yy"] {
        h.write(c1, 0, s, "").unwrap();
    }
    let r = h
        .req(
            c1,
            0,
            Request::DirectoryPart {
                path: p("d"),
                offset: 0,
            },
        )
        .unwrap();
    let Reply::DirectoryPart {
        children, complete, ..
    } = r
    else {
        panic!()
    };
    assert_eq!(children, vec!["x".to_string(), "yy".to_string()]);
    assert!(complete);
    let r = h
        .req(
            c1,
            0,
            Request::DirectoryPart {
                path: p("d"),
                offset: 2,
            },
        )
        .unwrap();
    assert!(
        matches!(r, Reply::DirectoryPart { ref children, complete: true, .. } if children == &["yy"])
    );
    let part = |offset| Request::DirectoryPart {
        path: p("d"),
        offset,
    };
    assert_eq!(h.req(c1, 0, part(1)), Err(XsErrno::Einval), "inside a name");
    let r = h.req(c1, 0, part(5)).unwrap();
    assert!(
        matches!(r, Reply::DirectoryPart { ref children, complete: true, .. } if children.is_empty())
    );
    let r = h.req(c1, 0, part(99));
    assert_eq!(r, Err(XsErrno::Einval));
}

#[test]
fn watch_fires_once_at_once_then_on_changes_below() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    h.send(
        c1,
        0,
        Request::Watch {
            path: p("dev"),
            token: "t".into(),
            depth: None,
        },
    );
    assert_eq!(
        h.drain(c1),
        vec![
            Out::R(ok(MsgType::Watch)),
            Out::Ev("dev".into(), "t".into())
        ]
    );
    h.send(
        c1,
        0,
        Request::Write {
            path: p("dev/vif/0"),
            value: b"x".to_vec(),
        },
    );
    assert_eq!(
        h.drain(c1),
        vec![
            Out::R(ok(MsgType::Write)),
            Out::Ev("dev/vif/0".into(), "t".into())
        ]
    );
    h.send(
        c1,
        0,
        Request::Write {
            path: p("other"),
            value: vec![],
        },
    );
    assert_eq!(h.drain(c1), vec![Out::R(ok(MsgType::Write))]);
    // An absolute watch below a removed subtree fires with its own path.
    h.send(
        c1,
        0,
        Request::Watch {
            path: p("/local/domain/1/dev/vif/0"),
            token: "a".into(),
            depth: None,
        },
    );
    assert_eq!(h.drain(c1).len(), 2);
    h.send(c1, 0, Request::Rm(p("dev")));
    let out = h.drain(c1);
    assert!(out.contains(&Out::Ev("dev".into(), "t".into())), "{out:?}");
    assert!(
        out.contains(&Out::Ev("/local/domain/1/dev/vif/0".into(), "a".into())),
        "{out:?}"
    );
    assert_eq!(
        h.req(
            c1,
            0,
            Request::Unwatch {
                path: p("dev"),
                token: "t".into()
            }
        ),
        ok(MsgType::Unwatch)
    );
    assert_eq!(
        h.req(
            c1,
            0,
            Request::Unwatch {
                path: p("dev"),
                token: "t".into()
            }
        ),
        Err(XsErrno::Enoent)
    );
    h.send(
        c1,
        0,
        Request::Write {
            path: p("dev/z"),
            value: vec![],
        },
    );
    assert_eq!(h.drain(c1), vec![Out::R(ok(MsgType::Write))]);
}

#[test]
fn watch_events_respect_read_permission_and_depth() {
    let mut h = Harness::new();
    let (c1, c2) = (h.conn(1), h.conn(2));
    h.send(
        c2,
        0,
        Request::Watch {
            path: p("/local/domain/1"),
            token: "spy".into(),
            depth: None,
        },
    );
    assert_eq!(h.drain(c2).len(), 2);
    h.write(c1, 0, "data/private", "p").unwrap();
    assert_eq!(h.drain(c2), vec![]);
    h.send(
        c1,
        0,
        Request::Watch {
            path: p("w"),
            token: "d".into(),
            depth: Some(1),
        },
    );
    assert_eq!(h.drain(c1).len(), 2);
    h.send(
        c1,
        0,
        Request::Write {
            path: p("w/a"),
            value: vec![],
        },
    );
    assert_eq!(
        h.drain(c1),
        vec![
            Out::R(ok(MsgType::Write)),
            Out::Ev("w/a".into(), "d".into())
        ]
    );
    h.send(
        c1,
        0,
        Request::Write {
            path: p("w/a/b"),
            value: vec![],
        },
    );
    assert_eq!(h.drain(c1), vec![Out::R(ok(MsgType::Write))]);
}

#[test]
fn special_watches_only_for_permitted_domains() {
    let mut h = Harness::new();
    let (c0, c1) = (h.conn(0), h.conn(1));
    for c in [c0, c1] {
        h.send(
            c,
            0,
            Request::Watch {
                path: p(INTRODUCE_DOMAIN),
                token: "i".into(),
                depth: None,
            },
        );
        assert_eq!(h.drain(c).len(), 2);
    }
    h.s.introduce_domain(d(3));
    assert_eq!(
        h.drain(c0),
        vec![Out::Ev(INTRODUCE_DOMAIN.into(), "i".into())]
    );
    assert_eq!(h.drain(c1), vec![]);
    let grant = Request::SetPerms {
        path: p(INTRODUCE_DOMAIN),
        perms: vec![perm(0, Access::None), perm(1, Access::Read)],
    };
    assert_eq!(h.req(c1, 0, grant.clone()), Err(XsErrno::Eacces));
    assert_eq!(h.req(c0, 0, grant), ok(MsgType::SetPerms));
    assert_eq!(
        h.req(
            c1,
            0,
            Request::Introduce {
                domid: d(4),
                gfn: 1,
                evtchn: 1
            }
        ),
        Err(XsErrno::Eacces)
    );
    h.send(
        c0,
        0,
        Request::Introduce {
            domid: d(4),
            gfn: 1,
            evtchn: 1,
        },
    );
    assert_eq!(h.drain(c0).len(), 2);
    assert_eq!(
        h.drain(c1),
        vec![Out::Ev(INTRODUCE_DOMAIN.into(), "i".into())]
    );
    assert_eq!(
        h.req(c1, 0, Request::IsDomainIntroduced(d(4))),
        Ok(Reply::IsIntroduced(true))
    );
    h.send(c0, 0, Request::Release(d(4)));
    assert_eq!(h.drain(c0), vec![Out::R(ok(MsgType::Release))]);
    assert_eq!(
        h.req(c1, 0, Request::IsDomainIntroduced(d(4))),
        Ok(Reply::IsIntroduced(false))
    );
    assert_eq!(h.req(c0, 0, Request::Release(d(4))), Err(XsErrno::Enoent));
}

fn start(h: &mut Harness, c: ConnId) -> u32 {
    match h.req(c, 0, Request::TransactionStart) {
        Ok(Reply::TransactionStarted(id)) => id,
        r => panic!("{r:?}"),
    }
}

#[test]
fn transactions_snapshot_conflict_and_commit() {
    let mut h = Harness::new();
    let (c1, c1b) = (h.conn(1), h.conn(1));
    h.write(c1, 0, "k", "0").unwrap();
    h.send(
        c1b,
        0,
        Request::Watch {
            path: p("k"),
            token: "w".into(),
            depth: None,
        },
    );
    assert_eq!(h.drain(c1b).len(), 2);

    let t = start(&mut h, c1);
    assert_eq!(h.write(c1, t, "k", "1"), ok(MsgType::Write));
    assert_eq!(h.write(c1, t, "new/node", "n"), ok(MsgType::Write));
    assert_eq!(
        h.read(c1, "k"),
        Ok(b"0".to_vec()),
        "outside sees the old value"
    );
    assert_eq!(h.drain(c1b), vec![], "no event before commit");
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: true }),
        ok(MsgType::TransactionEnd)
    );
    assert_eq!(h.read(c1, "k"), Ok(b"1".to_vec()));
    assert_eq!(h.read(c1, "new/node"), Ok(b"n".to_vec()));
    assert_eq!(h.drain(c1b), vec![Out::Ev("k".into(), "w".into())]);

    // A conflicting write in between: EAGAIN, nothing applied.
    let t = start(&mut h, c1);
    assert_eq!(h.read_tx(c1, t, "k"), Ok(b"1".to_vec()));
    h.write(c1, t, "x", "from-tx").unwrap();
    h.send(
        c1b,
        0,
        Request::Write {
            path: p("k"),
            value: b"2".to_vec(),
        },
    );
    assert_eq!(h.drain(c1b).len(), 2);
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: true }),
        Err(XsErrno::Eagain)
    );
    assert_eq!(h.read(c1, "x"), Err(XsErrno::Enoent));
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: true }),
        Err(XsErrno::Enoent)
    );

    // Unrelated concurrent writes do not conflict.
    h.write(c1, 0, "unrelated/z", "1").unwrap();
    let t = start(&mut h, c1);
    h.write(c1, t, "new/y", "1").unwrap();
    h.write(c1, 0, "unrelated/z", "2").unwrap();
    h.write(c1, 0, "unrelated/w", "2").unwrap();
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: true }),
        ok(MsgType::TransactionEnd)
    );

    // Creation of a node the transaction read as absent conflicts.
    let t = start(&mut h, c1);
    assert_eq!(h.read_tx(c1, t, "later/q"), Err(XsErrno::Enoent));
    h.write(c1, t, "elsewhere", "e").unwrap();
    h.write(c1b, 0, "later/q", "now").unwrap();
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: true }),
        Err(XsErrno::Eagain)
    );

    // Abort discards; rm inside a transaction removes the subtree on commit.
    let t = start(&mut h, c1);
    h.write(c1, t, "aborted", "a").unwrap();
    assert_eq!(
        h.req(c1, t, Request::TransactionEnd { commit: false }),
        ok(MsgType::TransactionEnd)
    );
    assert_eq!(h.read(c1, "aborted"), Err(XsErrno::Enoent));
    let t = start(&mut h, c1);
    assert_eq!(h.req(c1, t, Request::Rm(p("new"))), ok(MsgType::Rm));
    h.req(c1, t, Request::TransactionEnd { commit: true })
        .unwrap();
    assert_eq!(h.read(c1, "new/node"), Err(XsErrno::Enoent));
    assert_eq!(h.req(c1, 99, Request::Read(p("k"))), Err(XsErrno::Enoent));
}

impl Harness {
    fn read_tx(&mut self, c: ConnId, tx: u32, path: &str) -> Result<Vec<u8>, XsErrno> {
        self.req(c, tx, Request::Read(p(path))).map(|r| match r {
            Reply::Read(v) => v,
            r => panic!("{r:?}"),
        })
    }
}

#[test]
fn quotas_bound_a_hostile_domain() {
    let limits = Limits {
        max_nodes_per_domain: 10,
        max_value_len: 16,
        max_watches: 2,
        max_transactions: 2,
        max_perms: 2,
        ..Limits::DEFAULT
    };
    let mut s = Server::new(limits);
    s.introduce_domain(d(1));
    let mut h = Harness { s };
    let c1 = h.conn(1);
    // The home and its domid key already count.
    for i in 0..8 {
        assert_eq!(
            h.write(c1, 0, &alloc::format!("n{i}"), ""),
            ok(MsgType::Write)
        );
    }
    assert_eq!(h.write(c1, 0, "n8", ""), Err(XsErrno::Enospc));
    assert_eq!(h.write(c1, 0, "n0", &"x".repeat(17)), Err(XsErrno::E2big));
    assert_eq!(h.write(c1, 0, "n0", &"x".repeat(16)), ok(MsgType::Write));
    for i in 0..2 {
        h.send(
            c1,
            0,
            Request::Watch {
                path: p("n0"),
                token: alloc::format!("{i}"),
                depth: None,
            },
        );
        assert_eq!(h.drain(c1).len(), 2);
    }
    let w = Request::Watch {
        path: p("n0"),
        token: "x".into(),
        depth: None,
    };
    assert_eq!(h.req(c1, 0, w), Err(XsErrno::E2big));
    let t1 = start(&mut h, c1);
    let t2 = start(&mut h, c1);
    assert_eq!(
        h.req(c1, 0, Request::TransactionStart),
        Err(XsErrno::Enospc)
    );
    // Two transactions each under quota cannot together exceed it.
    h.req(c1, t1, Request::Rm(p("n7"))).unwrap();
    h.write(c1, t1, "t1", "").unwrap();
    h.req(c1, t2, Request::Rm(p("n6"))).unwrap();
    h.write(c1, t2, "t2", "").unwrap();
    h.req(c1, t1, Request::TransactionEnd { commit: true })
        .unwrap();
    let sp = Request::SetPerms {
        path: p("n0"),
        perms: vec![
            perm(1, Access::None),
            perm(2, Access::Read),
            perm(3, Access::Read),
        ],
    };
    assert_eq!(h.req(c1, 0, sp), Err(XsErrno::E2big));
    let _ = t2;
    assert!(h.s.tree.owned_by(d(1)) <= 10);
}

#[test]
fn transactions_cannot_jointly_exceed_node_quota() {
    let limits = Limits {
        max_nodes_per_domain: 6,
        ..Limits::DEFAULT
    };
    let mut s = Server::new(limits);
    s.introduce_domain(d(1));
    let mut h = Harness { s };
    let c1 = h.conn(1);
    // Home, domid, a, b: 4 of 6. Disjoint directories, so the two do not conflict.
    h.write(c1, 0, "a", "").unwrap();
    h.write(c1, 0, "b", "").unwrap();
    let t1 = start(&mut h, c1);
    let t2 = start(&mut h, c1);
    h.write(c1, t1, "a/x", "").unwrap();
    h.write(c1, t1, "a/y", "").unwrap();
    h.write(c1, t2, "b/x", "").unwrap();
    h.write(c1, t2, "b/y", "").unwrap();
    assert_eq!(
        h.req(c1, t1, Request::TransactionEnd { commit: true }),
        ok(MsgType::TransactionEnd)
    );
    let r = h.req(c1, t2, Request::TransactionEnd { commit: true });
    assert_eq!(r, Err(XsErrno::Enospc));
    assert_eq!(h.s.tree.owned_by(d(1)), 6);
}

#[test]
fn transaction_touching_too_many_nodes_refused() {
    let limits = Limits {
        max_transaction_nodes: 5,
        ..Limits::DEFAULT
    };
    let mut s = Server::new(limits);
    s.introduce_domain(d(1));
    let mut h = Harness { s };
    let c1 = h.conn(1);
    let t = start(&mut h, c1);
    for i in 0..5 {
        assert_eq!(
            h.read_tx(c1, t, &alloc::format!("missing{i}")),
            Err(XsErrno::Enoent)
        );
    }
    assert_eq!(
        h.read_tx(c1, t, "missing0"),
        Err(XsErrno::Enoent),
        "already touched"
    );
    assert_eq!(h.read_tx(c1, t, "missing5"), Err(XsErrno::Enospc));
    // Outside the transaction nothing is bounded this way.
    assert_eq!(h.read(c1, "missing5"), Err(XsErrno::Enoent));
}

#[test]
fn transaction_sees_own_writes_and_lists_them() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    h.write(c1, 0, "dir/old", "o").unwrap();
    let t = start(&mut h, c1);
    h.write(c1, t, "dir/new", "n").unwrap();
    h.req(c1, t, Request::Rm(p("dir/old"))).unwrap();
    assert_eq!(h.read_tx(c1, t, "dir/new"), Ok(b"n".to_vec()));
    assert_eq!(h.read_tx(c1, t, "dir/old"), Err(XsErrno::Enoent));
    assert_eq!(
        h.req(c1, t, Request::Directory(p("dir"))),
        Ok(Reply::Directory(vec!["new".into()]))
    );
    assert_eq!(
        h.req(c1, 0, Request::Directory(p("dir"))),
        Ok(Reply::Directory(vec!["old".into()]))
    );
    h.req(c1, t, Request::TransactionEnd { commit: true })
        .unwrap();
    assert_eq!(
        h.req(c1, 0, Request::Directory(p("dir"))),
        Ok(Reply::Directory(vec!["new".into()]))
    );
}

#[test]
fn toolstack_requests_fire_watches() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    h.send(
        c1,
        0,
        Request::Watch {
            path: p("control"),
            token: "c".into(),
            depth: None,
        },
    );
    assert_eq!(h.drain(c1).len(), 2);
    let w = Request::Write {
        path: p("/local/domain/1/control/shutdown"),
        value: b"poweroff".to_vec(),
    };
    assert_eq!(h.s.execute_as(d(0), &w), ok(MsgType::Write));
    assert_eq!(
        h.drain(c1),
        vec![Out::Ev("control/shutdown".into(), "c".into())]
    );
    assert_eq!(h.read(c1, "control/shutdown"), Ok(b"poweroff".to_vec()));
    assert_eq!(h.s.execute_as(d(2), &w), Err(XsErrno::Eacces));
    assert_eq!(
        h.s.execute_as(d(0), &Request::TransactionStart),
        Err(XsErrno::Einval)
    );
}

#[test]
fn hostile_oversized_len_drops_connection() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    let mut b = vec![0u8; 16];
    b[0] = 2;
    b[12..16].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(
        h.s.handle_input(c1, &b),
        Err(ServerError::Malformed(WireError::PayloadTooLong {
            len: 5000
        }))
    );
}

#[test]
fn unsupported_and_malformed_requests_get_errors() {
    let mut h = Harness::new();
    let c1 = h.conn(1);
    for r in [
        Request::Control {
            command: "print".into(),
            args: vec![],
        },
        Request::GetFeature(None),
        Request::SetQuota {
            domid: None,
            quota: "n".into(),
            value: 1,
        },
        Request::Invalid,
        Request::Resume(d(1)),
    ] {
        assert_eq!(h.req(c1, 0, r), Err(XsErrno::Enosys));
    }
    let mut raw = RequestMsg {
        req_id: 3,
        tx_id: 0,
        request: Request::Invalid,
    }
    .to_vec()
    .unwrap();
    raw[0] = 20;
    h.s.handle_input(c1, &raw).unwrap();
    assert_eq!(h.drain(c1), vec![Out::R(Err(XsErrno::Enosys))]);
    let mut raw = RequestMsg {
        req_id: 3,
        tx_id: 0,
        request: Request::Read(p("a")),
    }
    .to_vec()
    .unwrap();
    raw[16] = b'/';
    raw[17] = b'/';
    h.s.handle_input(c1, &raw).unwrap();
    assert_eq!(h.drain(c1), vec![Out::R(Err(XsErrno::Einval))]);
}

#[test]
fn hostile_reader_that_never_drains_is_throttled() {
    let limits = Limits {
        max_output: 256,
        ..Limits::DEFAULT
    };
    let mut s = Server::new(limits);
    s.introduce_domain(d(1));
    let c = s.connect(d(1)).unwrap();
    let one = RequestMsg {
        req_id: 1,
        tx_id: 0,
        request: Request::Read(p("domid")),
    }
    .to_vec()
    .unwrap();
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let taken = s.handle_input(c, &many).unwrap();
    assert!(taken < many.len());
    assert!(s.output_len(c) <= 256 + MSG_MAX);
    let mut buf = vec![0u8; 1 << 16];
    while s.poll_transmit(c, &mut buf).is_some() {}
    assert!(s.handle_input(c, &many[taken..]).unwrap() > 0);
}

// --- client machine + blocking adapter against the server, in memory ---

#[derive(Clone)]
struct Pipe {
    s: Rc<RefCell<Server>>,
    c: ConnId,
}

impl Transport for Pipe {
    fn send(&mut self, data: &[u8]) -> Result<usize, StoreError> {
        self.s
            .borrow_mut()
            .handle_input(self.c, data)
            .map_err(|_| StoreError::Disconnected)
    }
    fn recv(&mut self, buf: &mut [u8], _t: Option<Duration>) -> Result<usize, StoreError> {
        Ok(self.s.borrow_mut().poll_transmit(self.c, buf).unwrap_or(0))
    }
}

fn store(s: &Rc<RefCell<Server>>, n: u32) -> BlockingStore<Pipe> {
    let c = s.borrow_mut().connect(d(n)).unwrap();
    BlockingStore::new(Pipe { s: s.clone(), c })
}

#[test]
fn blocking_store_against_server() {
    let s = Rc::new(RefCell::new(Server::new(Limits::DEFAULT)));
    s.borrow_mut().introduce_domain(d(1));
    s.borrow_mut().introduce_domain(d(2));
    let (mut a, mut b) = (store(&s, 1), store(&s, 2));
    assert_eq!(a.read(Tx::NONE, "domid").unwrap(), b"1");
    a.write(Tx::NONE, "data/v", b"hello").unwrap();
    assert_eq!(
        b.read(Tx::NONE, "/local/domain/1/data/v"),
        Err(StoreError::Xs(XsErrno::Eacces))
    );
    a.set_perms(
        Tx::NONE,
        "data/v",
        &[perm(1, Access::None), perm(2, Access::Read)],
    )
    .unwrap();
    assert_eq!(
        b.read(Tx::NONE, "/local/domain/1/data/v").unwrap(),
        b"hello"
    );
    assert_eq!(
        a.directory(Tx::NONE, "data").unwrap(),
        vec!["v".to_string()]
    );
    b.watch("/local/domain/1/data/v", "tok").unwrap();
    let first = b.wait_watch(Some(Duration::from_millis(1))).unwrap();
    assert_eq!(
        first,
        Some(WatchEvent {
            path: "/local/domain/1/data/v".into(),
            token: "tok".into()
        })
    );
    a.write(Tx::NONE, "data/v", b"again").unwrap();
    assert!(b
        .wait_watch(Some(Duration::from_millis(1)))
        .unwrap()
        .is_some());
    assert_eq!(b.wait_watch(Some(Duration::from_millis(1))).unwrap(), None);
    assert_eq!(a.get_domain_path(d(1)).unwrap(), "/local/domain/1");
    assert_eq!(
        a.read(Tx::NONE, "a//b"),
        Err(StoreError::Xs(XsErrno::Einval))
    );
}

#[test]
fn with_transaction_retries_on_eagain() {
    let s = Rc::new(RefCell::new(Server::new(Limits::DEFAULT)));
    s.borrow_mut().introduce_domain(d(1));
    let (mut a, mut other) = (store(&s, 1), store(&s, 1));
    a.write(Tx::NONE, "counter", b"0").unwrap();
    let mut attempts = 0;
    let r = with_transaction(&mut a, 5, |st, tx| {
        attempts += 1;
        let v = st.read(tx, "counter")?;
        if attempts == 1 {
            // A concurrent writer makes the first attempt conflict.
            other.write(Tx::NONE, "counter", b"10").unwrap();
        }
        let n: u32 = core::str::from_utf8(&v).unwrap().parse().unwrap();
        st.write(tx, "counter", alloc::format!("{}", n + 1).as_bytes())?;
        Ok(n + 1)
    });
    assert_eq!(r, Ok(11));
    assert_eq!(attempts, 2);
    assert_eq!(a.read(Tx::NONE, "counter").unwrap(), b"11");
    // Always conflicting: gives up with EAGAIN after the given attempts.
    let mut n = 0;
    let r: Result<(), _> = with_transaction(&mut a, 3, |st, tx| {
        n += 1;
        st.read(tx, "counter")?;
        other.write(Tx::NONE, "counter", b"x").unwrap();
        st.write(tx, "counter", b"y")
    });
    assert_eq!(r, Err(StoreError::Xs(XsErrno::Eagain)));
    assert_eq!(n, 3);
}

#[test]
fn byte_at_a_time_input_gives_the_same_output() {
    let script = [
        Request::Write {
            path: p("a/b"),
            value: b"1".to_vec(),
        },
        Request::Watch {
            path: p("a"),
            token: "t".into(),
            depth: None,
        },
        Request::Read(p("a/b")),
        Request::Directory(p("a")),
        Request::Rm(p("a")),
        Request::Read(p("a/b")),
    ];
    let run = |chunk: usize| {
        let mut s = Server::new(Limits::DEFAULT);
        s.introduce_domain(d(1));
        let c = s.connect(d(1)).unwrap();
        let mut bytes = Vec::new();
        for (i, r) in script.iter().enumerate() {
            let m = RequestMsg {
                req_id: i as u32,
                tx_id: 0,
                request: r.clone(),
            };
            bytes.extend(m.to_vec().unwrap());
        }
        for piece in bytes.chunks(chunk) {
            assert_eq!(s.handle_input(c, piece).unwrap(), piece.len());
        }
        let mut out = vec![0u8; 1 << 16];
        let n = s.poll_transmit(c, &mut out).unwrap();
        out.truncate(n);
        out
    };
    let whole = run(usize::MAX);
    assert_eq!(run(1), whole);
    assert_eq!(run(7), whole);
    // Six replies and two events: the initial one and the removal of a.
    let mut at = 0;
    let mut count = 0;
    while at < whole.len() {
        at += MsgHeader::new_checked(&whole[at..]).unwrap().total_len();
        count += 1;
    }
    assert_eq!(count, 8);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = (u8, u8, Request)> {
        let path = proptest::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c-d"), Just("0")],
            1..4,
        )
        .prop_map(|v| p(&v.join("/")));
        let req = prop_oneof![
            (path.clone(), 0usize..80).prop_map(|(path, n)| Request::Write {
                path,
                value: vec![b'x'; n]
            }),
            path.clone().prop_map(Request::Mkdir),
            path.clone().prop_map(Request::Rm),
            path.clone().prop_map(Request::Read),
            path.clone().prop_map(Request::Directory),
            (path, 0u8..3).prop_map(|(path, t)| Request::Watch {
                path,
                token: alloc::format!("{t}"),
                depth: None
            }),
            Just(Request::TransactionStart),
            any::<bool>().prop_map(|commit| Request::TransactionEnd { commit }),
        ];
        (0u8..3, 0u8..4, req)
    }

    proptest! {
        /// Hostile domains issuing any sequence stay within their node quota and output bound.
        #[test]
        fn quotas_hold_for_any_sequence(ops in proptest::collection::vec(op(), 0..120)) {
            let limits = Limits { max_nodes_per_domain: 12, max_value_len: 40, max_output: 1024, ..Limits::DEFAULT };
            let mut s = Server::new(limits);
            let conns: Vec<ConnId> = (1..4).map(|n| {
                s.introduce_domain(d(n));
                s.connect(d(n)).unwrap()
            }).collect();
            for (c, tx, request) in ops {
                let c = conns[c as usize];
                let m = RequestMsg { req_id: 1, tx_id: u32::from(tx), request };
                let _ = s.handle_input(c, &m.to_vec().unwrap()).unwrap();
                for n in 1..4 {
                    prop_assert!(s.nodes_owned_by(d(n)) <= 12);
                }
                prop_assert!(s.output_len(c) <= 1024 + MSG_MAX);
                let mut buf = vec![0u8; 512];
                let _ = s.poll_transmit(c, &mut buf);
            }
        }
    }
}
