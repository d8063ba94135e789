//! A hostile xenstored on the shared `xenstore_domain_interface` page: between our sends and
//! receives it writes any index, length or byte into the page. The guest side is the real
//! `RingTransport` (the one platform-xen uses) feeding the real `Client`. Must never panic,
//! hang, or read/write outside the page; a broken ring stays broken; queues stay bounded.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{Duration, HeapMem, Notify, Ordering, PlatformError, SharedMem, StoreError, Tx};
use xen_store::blocking::Transport;
use xen_store::client::{Client, Limits};
use xen_store::ring::{RingTransport, StoreRing, Side, REQ, RSP, RING_SIZE};
use xen_store::wire::{Request, XsPath, HEADER_LEN};

#[derive(Arbitrary, Debug)]
enum Op {
    /// We queue a request and push what fits into `req[]`.
    Send { kind: u8 },
    /// We read what `rsp[]` holds (one transport receive) into the client.
    Recv { len: u16 },
    /// The peer writes bytes at `rsp_prod` and advances it (ignoring free space).
    PeerWrite { bytes: Vec<u8> },
    /// The peer writes a whole reply message (header built from these fields).
    PeerReply { ty: u8, req_id: u8, tx: u8, len: u16, payload: Vec<u8> },
    /// The peer consumes `n` request bytes (`req_cons += n`).
    PeerConsume { n: u16 },
    /// The peer sets any index to any value.
    SetIndex { which: u8, value: u32 },
    /// The peer pokes any byte of the page.
    Poke { offset: u16, value: u8 },
    /// We take events and replies.
    Drain,
}

struct Silent;
impl Notify for Silent {
    fn notify(&self) -> Result<(), PlatformError> {
        Ok(())
    }
}

const LIMITS: Limits = Limits {
    max_pending: 4,
    max_events: 3,
};

fn request(kind: u8) -> Request {
    let p = XsPath::new("device/vif/0").expect("valid");
    match kind % 5 {
        0 => Request::Read(p),
        1 => Request::Write {
            path: p,
            value: vec![b'x'; usize::from(kind) * 9],
        },
        2 => Request::Directory(p),
        3 => Request::Watch {
            path: p,
            token: "t".into(),
            depth: None,
        },
        _ => Request::TransactionStart,
    }
}

fn peer_write(mem: &HeapMem, bytes: &[u8]) {
    let prod = mem.load_u32(RSP.prod, Ordering::Acquire).unwrap();
    for (i, b) in bytes.iter().take(4 * RING_SIZE as usize).enumerate() {
        let at = (prod.wrapping_add(i as u32) % RING_SIZE) as usize;
        mem.write(RSP.data + at, &[*b]).unwrap();
    }
    let n = bytes.len().min(4 * RING_SIZE as usize) as u32;
    mem.store_u32(RSP.prod, prod.wrapping_add(n), Ordering::Release)
        .unwrap();
}

fuzz_target!(|input: (u32, u32, Vec<Op>)| {
    let (start_req, start_rsp, ops) = input;
    let mem = HeapMem::new(4096);
    // Indices may start anywhere (a reconnect or a kexec'd predecessor left them).
    for (off, v) in [
        (REQ.cons, start_req),
        (REQ.prod, start_req),
        (RSP.cons, start_rsp),
        (RSP.prod, start_rsp),
    ] {
        mem.store_u32(off, v, Ordering::Relaxed).unwrap();
    }
    // A poll (zero timeout) returns at once; a wait for ever on a peer that does nothing
    // between our calls would never end, so it reports the peer as gone (as a timeout would).
    let wait = |t: Option<Duration>| -> Result<(), StoreError> {
        match t {
            Some(Duration::ZERO) => Ok(()),
            _ => Err(StoreError::Disconnected),
        }
    };
    let Ok(mut t) = RingTransport::new(mem.clone(), Silent, wait) else {
        return;
    };
    // A second guest view of the same page, to check a broken ring stays broken.
    let mut probe = StoreRing::attach(&mem, Side::Guest).ok();
    let mut c = Client::new(LIMITS);
    let mut buf = vec![0u8; 4096];
    let mut ids = Vec::new();
    let mut broken = false;
    for op in ops.into_iter().take(200) {
        match op {
            Op::Send { kind } => {
                if let Ok(id) = c.send(Tx::NONE, request(kind)) {
                    ids.push(id);
                }
                // Push at most one ring's worth: a peer that never consumes fills it.
                let mut out = [0u8; RING_SIZE as usize];
                if let Some(n) = c.poll_transmit(&mut out) {
                    let mut at = 0;
                    while at < n {
                        match t.send(&out[at..n]) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => {
                                assert!(k <= n - at, "sent more than asked");
                                at += k;
                            }
                        }
                    }
                }
            }
            Op::Recv { len } => {
                let want = usize::from(len).clamp(1, buf.len());
                match t.recv(&mut buf[..want], Some(Duration::ZERO)) {
                    Ok(n) => {
                        assert!(n <= want && n <= RING_SIZE as usize, "read {n} of {want}");
                        let _ = c.handle_input(&buf[..n]);
                    }
                    Err(e) => assert_eq!(e, StoreError::Disconnected),
                }
            }
            Op::PeerWrite { bytes } => peer_write(&mem, &bytes),
            Op::PeerReply {
                ty,
                req_id,
                tx,
                len,
                payload,
            } => {
                let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
                for w in [
                    u32::from(ty % 28),
                    u32::from(req_id % 8),
                    u32::from(tx % 3),
                    u32::from(len),
                ] {
                    m.extend_from_slice(&w.to_le_bytes());
                }
                m.extend_from_slice(&payload);
                peer_write(&mem, &m);
            }
            Op::PeerConsume { n } => {
                let cons = mem.load_u32(REQ.cons, Ordering::Acquire).unwrap();
                mem.store_u32(REQ.cons, cons.wrapping_add(u32::from(n)), Ordering::Release)
                    .unwrap();
            }
            Op::SetIndex { which, value } => {
                let off = [REQ.cons, REQ.prod, RSP.cons, RSP.prod][usize::from(which % 4)];
                mem.store_u32(off, value, Ordering::Release).unwrap();
            }
            Op::Poke { offset, value } => {
                let _ = mem.write(usize::from(offset) % 4096, &[value]);
            }
            Op::Drain => {
                let mut n = 0;
                while c.poll_event().is_some() {
                    n += 1;
                }
                assert!(n <= LIMITS.max_events);
                for id in ids.drain(..) {
                    let _ = c.take_reply(id);
                }
            }
        }
        // The probe only looks (never moves an index): once it saw an impossible index, it
        // must keep refusing even after the peer puts a sane one back.
        if let Some(p) = probe.as_mut() {
            let was_broken = broken;
            let now = p.readable(&mem).is_err() | p.writable(&mem).is_err();
            if was_broken {
                assert!(now, "a broken ring healed");
            }
            broken |= now;
            if let Ok(n) = p.readable(&mem) {
                assert!(n <= RING_SIZE as usize);
            }
        }
    }
});
