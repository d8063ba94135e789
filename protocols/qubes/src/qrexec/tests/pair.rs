//! In-memory pair harness (quinn's `Pair`): moves bytes between two machines in chunks of a
//! chosen size, collecting events, until nothing moves (bounded, so a livelock fails the test).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::qrexec::{agent, daemon, data, Agent, Daemon, DataChannel, Error};

/// A machine that takes and gives bytes and events.
pub trait Endpoint {
    type Event;
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize>;
    fn input(&mut self, data: &[u8]) -> Result<usize, Error>;
    fn event(&mut self) -> Option<Self::Event>;
}

impl Endpoint for Agent {
    type Event = agent::Event;
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
    fn input(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.handle_input(data)
    }
    fn event(&mut self) -> Option<agent::Event> {
        self.poll_event()
    }
}

impl Endpoint for Daemon {
    type Event = daemon::Event;
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
    fn input(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.handle_input(data)
    }
    fn event(&mut self) -> Option<daemon::Event> {
        self.poll_event()
    }
}

impl Endpoint for DataChannel {
    type Event = data::Event;
    fn transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        self.poll_transmit(out)
    }
    fn input(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.handle_input(data)
    }
    fn event(&mut self) -> Option<data::Event> {
        self.poll_event()
    }
}

/// Bytes in flight in one direction (a vchan ring, unbounded here).
#[derive(Default)]
pub struct Wire {
    bytes: VecDeque<u8>,
}

/// Moves at most `chunk` bytes from `from` to `to`; true if anything moved.
fn step<A: Endpoint, B: Endpoint>(
    from: &mut A,
    wire: &mut Wire,
    to: &mut B,
    chunk: usize,
) -> Result<bool, Error> {
    let mut moved = false;
    let mut buf = alloc::vec![0u8; 4096];
    while let Some(n) = from.transmit(&mut buf) {
        wire.bytes.extend(&buf[..n]);
    }
    if !wire.bytes.is_empty() {
        let take: Vec<u8> = wire.bytes.iter().take(chunk).copied().collect();
        let used = to.input(&take)?;
        wire.bytes.drain(..used);
        moved |= used > 0;
    }
    Ok(moved)
}

/// Two machines and their event logs.
pub struct Pair<A: Endpoint, B: Endpoint> {
    pub a: A,
    pub b: B,
    pub a_events: Vec<A::Event>,
    pub b_events: Vec<B::Event>,
    ab: Wire,
    ba: Wire,
    pub chunk: usize,
}

impl<A: Endpoint, B: Endpoint> Pair<A, B> {
    pub fn new(a: A, b: B, chunk: usize) -> Self {
        Self {
            a,
            b,
            a_events: Vec::new(),
            b_events: Vec::new(),
            ab: Wire::default(),
            ba: Wire::default(),
            chunk,
        }
    }

    /// Runs until idle; errors from either side are returned.
    pub fn drive(&mut self) -> Result<(), Error> {
        for _ in 0..1_000_000 {
            let mut moved = step(&mut self.a, &mut self.ab, &mut self.b, self.chunk)?;
            moved |= step(&mut self.b, &mut self.ba, &mut self.a, self.chunk)?;
            while let Some(e) = self.a.event() {
                self.a_events.push(e);
                moved = true;
            }
            while let Some(e) = self.b.event() {
                self.b_events.push(e);
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
        panic!("pair did not go idle");
    }

    /// Takes the logged events of both sides.
    pub fn take_events(&mut self) -> (Vec<A::Event>, Vec<B::Event>) {
        (
            core::mem::take(&mut self.a_events),
            core::mem::take(&mut self.b_events),
        )
    }
}

/// The chunk sizes every transcript runs with: byte at a time, odd, one page, whole.
pub const CHUNKS: [usize; 4] = [1, 7, 4096, usize::MAX];
