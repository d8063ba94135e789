//! vchan endpoints against a hostile peer: a server and a client share in-memory pages while
//! an operation list reads, writes and pokes arbitrary bytes into the control and ring pages.
//! Must never panic or hang; with no pokes, both streams must arrive intact and in order.
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering as AtOrd};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use platform_api::{GrantRef, HeapMem, Notify, Ordering, PlatformError, SharedMem, PAGE_SIZE};
use vchan::layout::{Offer, Repr, VchanInterface};
use vchan::{grant_list, Client, Error, Geometry, Interest, Ring, Server};

#[derive(Debug, Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl Notify for Count {
    fn notify(&self) -> Result<(), PlatformError> {
        self.0.fetch_add(1, AtOrd::Relaxed);
        Ok(())
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Mem {
    Ctrl,
    Left,
    Right,
}

#[derive(Arbitrary, Debug)]
enum Op {
    ServerWrite(u16),
    ServerRead(u16),
    ClientWrite(u16),
    ClientRead(u16),
    /// Any byte of any shared page.
    Poke { mem: Mem, offset: u16, value: u8 },
    /// An aligned word, e.g. an index, near a chosen value.
    PokeWord { mem: Mem, offset: u16, value: u32 },
    DataReady(bool),
    BufferSpace(bool),
    PrepareWait { server: bool, read: bool, write: bool },
    IsOpen(bool),
    Close(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Ring sizes asked of the server; capped at 16 KiB so each run stays fast.
    left_min: u16,
    right_min: u16,
    /// Bytes planted in the control page before the client reads the offer.
    early_pokes: Vec<(u16, u8)>,
    ops: Vec<Op>,
}

fn mem_for<'a>(m: Mem, ctrl: &'a HeapMem, l: &'a Option<HeapMem>, r: &'a Option<HeapMem>) -> &'a HeapMem {
    match m {
        Mem::Ctrl => ctrl,
        Mem::Left => l.as_ref().unwrap_or(ctrl),
        Mem::Right => r.as_ref().unwrap_or(ctrl),
    }
}

/// Feeds the control-page decoders arbitrary bytes.
fn decode_page(bytes: &[u8]) {
    if let Ok(v) = VchanInterface::new_checked(bytes) {
        if let Ok(repr) = Repr::parse(&v) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut VchanInterface::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &bytes[..out.len()]);
        }
    }
    let page = HeapMem::new(PAGE_SIZE);
    let n = bytes.len().min(PAGE_SIZE);
    page.write(0, &bytes[..n]).unwrap();
    if let Ok(offer) = Offer::read(&page) {
        assert_eq!(offer.left_grants.len() + offer.right_grants.len(), offer.geometry.grant_count());
    }
}

fn check_read(got: &[u8], model: &mut VecDeque<u8>, poked: bool) {
    for &b in got {
        let want = model.pop_front();
        if !poked {
            assert_eq!(Some(b), want, "stream corrupted without a hostile write");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_page(data);
    let Ok(input) = arbitrary::Unstructured::new(data).arbitrary::<Input>() else { return };
    let cap = |n: u16| usize::from(n) % (16 * 1024 + 1);
    let Ok(g) = Geometry::for_minimums(cap(input.left_min), cap(input.right_min)) else { return };
    let pages = |ring| (g.pages(ring) > 0).then(|| HeapMem::new(g.size(ring) as usize));
    let (lp, rp) = (pages(Ring::Left), pages(Ring::Right));
    let lg: Vec<GrantRef> = (0..g.pages(Ring::Left) as u32).map(GrantRef).collect();
    let rg: Vec<GrantRef> = (0..g.pages(Ring::Right) as u32).map(|i| GrantRef(100 + i)).collect();
    let ctrl = HeapMem::new(PAGE_SIZE);
    let mut server =
        Server::new(ctrl.clone(), g, lp.clone(), rp.clone(), &grant_list(&lg, &rg), Count::default()).unwrap();
    let mut poked = !input.early_pokes.is_empty();
    for &(off, v) in &input.early_pokes {
        let _ = ctrl.store_u8(usize::from(off) % PAGE_SIZE, v, Ordering::SeqCst);
    }
    // A hostile offer is refused (then only the server runs) or read once and kept.
    let mut client = Offer::read(&ctrl)
        .ok()
        .and_then(|offer| Client::attach(ctrl.clone(), &offer, lp.clone(), rp.clone(), Count::default()).ok());

    let mut to_client: VecDeque<u8> = VecDeque::new();
    let mut to_server: VecDeque<u8> = VecDeque::new();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut seq = 0u8;
    let mut fill = |n: usize, buf: &mut Vec<u8>| {
        for b in &mut buf[..n] {
            seq = seq.wrapping_add(1);
            *b = seq;
        }
    };
    for op in input.ops.iter().take(2000) {
        match *op {
            Op::ServerWrite(n) => {
                let n = usize::from(n);
                fill(n, &mut buf);
                if let Ok(w) = server.write(&buf[..n]) {
                    assert!(w <= n);
                    to_client.extend(&buf[..w]);
                }
            }
            Op::ClientWrite(n) => {
                let Some(c) = client.as_mut() else { continue };
                let n = usize::from(n);
                fill(n, &mut buf);
                if let Ok(w) = c.write(&buf[..n]) {
                    assert!(w <= n);
                    to_server.extend(&buf[..w]);
                }
            }
            Op::ServerRead(n) => {
                let n = usize::from(n);
                if let Ok(r) = server.read(&mut buf[..n]) {
                    assert!(r <= n);
                    check_read(&buf[..r], &mut to_server, poked);
                }
            }
            Op::ClientRead(n) => {
                let Some(c) = client.as_mut() else { continue };
                let n = usize::from(n);
                if let Ok(r) = c.read(&mut buf[..n]) {
                    assert!(r <= n);
                    check_read(&buf[..r], &mut to_client, poked);
                }
            }
            Op::Poke { mem, offset, value } => {
                poked = true;
                let m = mem_for(mem, &ctrl, &lp, &rp);
                let _ = m.store_u8(usize::from(offset) % m.size(), value, Ordering::SeqCst);
            }
            Op::PokeWord { mem, offset, value } => {
                poked = true;
                let m = mem_for(mem, &ctrl, &lp, &rp);
                let _ = m.store_u32((usize::from(offset) * 4) % m.size(), value, Ordering::SeqCst);
            }
            Op::DataReady(true) => {
                if let Ok(n) = server.data_ready() {
                    assert!(n <= g.size(Ring::Left) as usize);
                }
            }
            Op::DataReady(false) => {
                if let Some(Ok(n)) = client.as_mut().map(|c| c.data_ready()) {
                    assert!(n <= g.size(Ring::Right) as usize);
                }
            }
            Op::BufferSpace(true) => {
                if let Ok(n) = server.buffer_space() {
                    assert!(n <= g.size(Ring::Right) as usize);
                }
            }
            Op::BufferSpace(false) => {
                if let Some(Ok(n)) = client.as_mut().map(|c| c.buffer_space()) {
                    assert!(n <= g.size(Ring::Left) as usize);
                }
            }
            Op::PrepareWait { server: true, read, write } => {
                let _ = server.prepare_wait(Interest { read, write });
            }
            Op::PrepareWait { server: false, read, write } => {
                if let Some(c) = client.as_mut() {
                    let _ = c.prepare_wait(Interest { read, write });
                }
            }
            Op::IsOpen(true) => {
                let _ = server.is_open();
            }
            Op::IsOpen(false) => {
                if let Some(c) = client.as_mut() {
                    let _ = c.is_open();
                }
            }
            Op::Close(true) => {
                let _ = server.close();
                assert_eq!(server.read(&mut buf[..1]), Err(Error::Closed));
            }
            Op::Close(false) => {
                if let Some(c) = client.as_mut() {
                    let _ = c.close();
                    assert_eq!(c.write(b"x"), Err(Error::Closed));
                }
            }
        }
        // A broken endpoint stays broken with the same error.
        if let Some(e) = server.error().cloned() {
            assert_eq!(server.write(b"y").unwrap_err(), e);
        }
    }
});
