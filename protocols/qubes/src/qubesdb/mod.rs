//! QubesDB over vchan port 111: the wire format, the VM's local copy ([`Agent`]) and dom0's
//! per-VM daemon side ([`Daemon`], for the simulator). No watches on the wire; they are local.

use core::fmt;

use crate::framing::FrameError;

mod agent;
mod daemon;
mod entries;
mod out;
pub mod wire;

pub use agent::{firewall_commit_ip, Agent, Event, Limits, SyncState, WatchId};
pub use daemon::{Daemon, DaemonEvent, DaemonLimits};
use wire::{MsgType, QdbPath, WireError};

/// A well-formed message the peer was not allowed to send, one variant per rule of the C
/// daemon's `handle_vchan_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// A type that exists only on the local socket (READ, LIST, WATCH, ...).
    NotOnVchan(MsgType),
    /// A vchan type this side never receives, or not in this state.
    UnexpectedType(MsgType),
    /// `RESP_OK`/`RESP_ERROR` while nothing of ours awaits an answer.
    UnsolicitedAck(QdbPath),
    /// An answer naming another path than the oldest request awaiting one (the path answered).
    AckMismatch(QdbPath),
    /// A second `MULTIREAD` on one connection.
    SecondMultiread,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOnVchan(t) => write!(
                f,
                "qubesdb peer sent {t:?}, which is not allowed on the vchan"
            ),
            Self::UnexpectedType(t) => write!(f, "qubesdb peer sent an unexpected {t:?}"),
            Self::UnsolicitedAck(p) => {
                write!(f, "qubesdb peer acknowledged {p:?}, which nothing awaits")
            }
            Self::AckMismatch(got) => {
                write!(
                    f,
                    "qubesdb peer acknowledged {got:?}, not the oldest awaited path"
                )
            }
            Self::SecondMultiread => write!(f, "qubesdb peer sent a second MULTIREAD"),
        }
    }
}

impl core::error::Error for PeerError {}

/// Why a connection stopped. Sticky: every later input call returns it until reconnecting.
/// Each one ends this connection only (the C daemon drops the vchan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnError {
    /// The header stream is broken (bad type, path or length).
    Frame(FrameError),
    /// A frame did not decode.
    Wire(WireError),
    /// A forbidden message.
    Peer(PeerError),
    /// A bound of ours was reached where dropping data would leave a wrong copy.
    Full {
        /// Which bound.
        what: &'static str,
    },
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::Wire(e) => e.fmt(f),
            Self::Peer(e) => e.fmt(f),
            Self::Full { what } => write!(f, "qubesdb: {what} full"),
        }
    }
}

impl core::error::Error for ConnError {}

/// Why a local call (write, watch) was refused. Never affects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// No connection (never connected, or it failed).
    NotConnected,
    /// The path or value is not valid QubesDB.
    Invalid(WireError),
    /// A bound was reached; retry after the peer has caught up.
    Full {
        /// Which bound.
        what: &'static str,
    },
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => write!(f, "qubesdb: not connected"),
            Self::Invalid(e) => e.fmt(f),
            Self::Full { what } => write!(f, "qubesdb: {what} full"),
        }
    }
}

impl core::error::Error for LocalError {}

impl From<WireError> for LocalError {
    fn from(e: WireError) -> Self {
        Self::Invalid(e)
    }
}

#[cfg(test)]
mod tests;
