//! Hostile domains against the xenstored core, as an operation list of raw bytes and
//! structured requests on several connections. Checks: no panic, node quotas hold, output
//! per connection stays bounded, and every byte we emit parses as a reply or event.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{Access, DomId, Perm};
use xen_store::server::{ConnId, Limits, Server};
use xen_store::wire::{MsgHeader, ReplyMsg, Request, RequestMsg, XsPath, MSG_MAX};

#[derive(Arbitrary, Debug)]
struct P {
    abs: bool,
    segs: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Req {
    Read(P),
    Write(P, u8),
    Mkdir(P),
    Rm(P),
    Dir(P),
    DirPart(P, u16),
    GetPerms(P),
    SetPerms(P, Vec<(u8, u8)>),
    Watch(P, u8, Option<u8>),
    Unwatch(P, u8),
    Special(bool, u8),
    TxStart,
    TxEnd(bool),
    Reset,
    Introduce(u8),
    Release(u8),
    IsIntro(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect(u8),
    Disconnect(u8),
    Raw(u8, Vec<u8>),
    Req(u8, u8, Req),
    Drain(u8),
    HostIntroduce(u8),
    HostRelease(u8),
}

const LIMITS: Limits = Limits {
    max_connections: 6,
    max_nodes_per_domain: 24,
    max_value_len: 64,
    max_perms: 4,
    max_watches: 4,
    max_transactions: 3,
    max_transaction_nodes: 16,
    max_output: 2048,
};

const SEGS: [&str; 8] = ["local", "domain", "1", "2", "data", "a", "b-c", "0"];

fn path(p: &P) -> XsPath {
    let segs: Vec<&str> = p
        .segs
        .iter()
        .take(6)
        .map(|&s| SEGS[usize::from(s % 8)])
        .collect();
    let s = match (p.abs, segs.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => format!("/{}", segs.join("/")),
        (false, true) => "data".to_string(),
        (false, false) => segs.join("/"),
    };
    XsPath::new(&s).unwrap()
}

fn dom(n: u8) -> DomId {
    DomId::new(u32::from(n % 4)).unwrap()
}

fn request(r: &Req) -> Request {
    match r {
        Req::Read(p) => Request::Read(path(p)),
        Req::Write(p, n) => Request::Write {
            path: path(p),
            value: vec![b'v'; usize::from(*n)],
        },
        Req::Mkdir(p) => Request::Mkdir(path(p)),
        Req::Rm(p) => Request::Rm(path(p)),
        Req::Dir(p) => Request::Directory(path(p)),
        Req::DirPart(p, o) => Request::DirectoryPart {
            path: path(p),
            offset: u32::from(*o),
        },
        Req::GetPerms(p) => Request::GetPerms(path(p)),
        Req::SetPerms(p, l) => Request::SetPerms {
            path: path(p),
            perms: std::iter::once((0u8, 0u8))
                .chain(l.iter().copied())
                .skip(usize::from(!l.is_empty()))
                .take(6)
                .map(|(d, a)| Perm {
                    domid: dom(d),
                    access: [Access::None, Access::Read, Access::Write, Access::Both]
                        [usize::from(a % 4)],
                })
                .collect(),
        },
        Req::Watch(p, t, depth) => Request::Watch {
            path: path(p),
            token: format!("t{}", t % 4),
            depth: depth.map(|d| u32::from(d % 4)),
        },
        Req::Unwatch(p, t) => Request::Unwatch {
            path: path(p),
            token: format!("t{}", t % 4),
        },
        Req::Special(release, t) => Request::Watch {
            path: XsPath::new(if *release {
                "@releaseDomain"
            } else {
                "@introduceDomain"
            })
            .unwrap(),
            token: format!("s{}", t % 2),
            depth: None,
        },
        Req::TxStart => Request::TransactionStart,
        Req::TxEnd(c) => Request::TransactionEnd { commit: *c },
        Req::Reset => Request::ResetWatches,
        Req::Introduce(d) => Request::Introduce {
            domid: dom(*d),
            gfn: 1,
            evtchn: 1,
        },
        Req::Release(d) => Request::Release(dom(*d)),
        Req::IsIntro(d) => Request::IsDomainIntroduced(dom(*d)),
    }
}

/// dom0 is trusted: the quota check below holds for what the domUs do, so dom0 only reads,
/// removes, watches and manages domains here.
fn dom0_may(r: &Req) -> bool {
    !matches!(r, Req::Write(..) | Req::Mkdir(_) | Req::SetPerms(..))
}

fn drain(s: &mut Server, c: ConnId) {
    let mut buf = vec![0u8; 1 << 17];
    let Some(n) = s.poll_transmit(c, &mut buf) else {
        return;
    };
    let mut at = 0;
    while at < n {
        let view = MsgHeader::new_checked(&buf[at..n]).expect("our output frames");
        ReplyMsg::parse(&view).expect("our output parses");
        at += view.total_len();
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut s = Server::new(LIMITS);
    let mut conns: Vec<ConnId> = Vec::new();
    for op in ops.into_iter().take(300) {
        let pick =
            |i: u8, conns: &Vec<ConnId>| conns.get(usize::from(i) % conns.len().max(1)).copied();
        match op {
            Op::Connect(d) => {
                if let Ok(c) = s.connect(dom(d)) {
                    conns.push(c);
                }
            }
            Op::Disconnect(i) => {
                if let Some(c) = pick(i, &conns) {
                    s.disconnect(c);
                    conns.retain(|&x| x != c);
                }
            }
            Op::Raw(i, bytes) => {
                if let Some(c) = pick(i, &conns) {
                    if s.conn_domid(c) != Some(DomId::DOM0) && s.handle_input(c, &bytes).is_err() {
                        s.disconnect(c);
                        conns.retain(|&x| x != c);
                    }
                }
            }
            Op::Req(i, tx, r) => {
                if let Some(c) = pick(i, &conns) {
                    if s.conn_domid(c) == Some(DomId::DOM0) && !dom0_may(&r) {
                        continue;
                    }
                    let m = RequestMsg {
                        req_id: 1,
                        tx_id: u32::from(tx % 6),
                        request: request(&r),
                    };
                    let bytes = m.to_vec().unwrap();
                    // Only a frame completing an earlier raw fragment can be refused.
                    if s.handle_input(c, &bytes).is_err() {
                        s.disconnect(c);
                        conns.retain(|&x| x != c);
                    }
                }
            }
            Op::Drain(i) => {
                if let Some(c) = pick(i, &conns) {
                    drain(&mut s, c);
                }
            }
            Op::HostIntroduce(d) => s.introduce_domain(dom(d)),
            Op::HostRelease(d) => s.release_domain(dom(d)),
        }
        for &c in &conns {
            assert!(s.output_len(c) <= LIMITS.max_output + MSG_MAX);
        }
        let mut total = 0;
        for d in 1..4 {
            let owned = s.nodes_owned_by(DomId::new(d).unwrap());
            // The toolstack's home and domid keys come on top of the quota.
            assert!(
                owned <= LIMITS.max_nodes_per_domain + 2,
                "dom{d} owns {owned}"
            );
            total += owned;
        }
        total += s.nodes_owned_by(DomId::DOM0);
        assert_eq!(s.node_count(), total);
    }
});
