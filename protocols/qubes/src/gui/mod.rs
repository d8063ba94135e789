//! The Qubes GUI protocol over vchan port 6000: the wire format, the VM's agent ([`Agent`]) and
//! the daemon half ([`Daemon`], for the simulator's GUI daemon).

use core::fmt;

use crate::framing::FrameError;

mod agent;
mod daemon;
mod queue;
pub mod wire;

pub use agent::{Agent, AgentLimits, Event};
pub use daemon::{Daemon, DaemonEvent, DaemonLimits};
use wire::{MsgType, Version, WindowId, WireError};

/// A well-formed message the peer was not allowed to send, one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// The version word's major is not 1.
    BadMajor(u16),
    /// The daemon's version is below 1.4 or above ours.
    VersionOutOfRange(Version),
    /// A message type this side never receives (the daemon exits on these).
    UnexpectedType(MsgType),
    /// A message for a window that was never created ("without CREATE").
    UnknownWindow(WindowId),
    /// CREATE for a window that exists.
    WindowExists(WindowId),
    /// CREATE for window 0, the daemon's whole-screen window.
    WindowZero,
    /// MFNDUMP, which needs foreign mapping the daemon does not do here.
    MfnDump,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMajor(m) => write!(f, "gui peer speaks protocol major {m}"),
            Self::VersionOutOfRange(v) => write!(f, "gui peer version {v} is outside 1.4..=1.8"),
            Self::UnexpectedType(t) => write!(f, "gui peer sent {t:?}, which it must not send"),
            Self::UnknownWindow(w) => write!(f, "gui peer named window {} without CREATE", w.0),
            Self::WindowExists(w) => write!(f, "gui peer created window {} twice", w.0),
            Self::WindowZero => write!(f, "gui peer created window 0"),
            Self::MfnDump => write!(f, "gui peer sent a deprecated MFNDUMP"),
        }
    }
}

impl core::error::Error for PeerError {}

/// Why a GUI connection stopped. Sticky; the real daemon exits on each of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnError {
    /// A header declared a wrong or too long body, or an unknown type where that is fatal.
    Frame(FrameError),
    /// A body did not decode.
    Wire(WireError),
    /// A forbidden message.
    Peer(PeerError),
    /// One of our bounds, where dropping would desynchronise the peers.
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
            Self::Full { what } => write!(f, "gui: {what} full"),
        }
    }
}

impl core::error::Error for ConnError {}

/// Why a local call was refused. Never affects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// The handshake has not completed, or the connection failed.
    NotConnected,
    /// Window 0 is the daemon's; ours start at 1.
    WindowZero,
    /// No such window.
    NoSuchWindow(WindowId),
    /// The window exists (or its DESTROY is not yet acknowledged).
    WindowExists(WindowId),
    /// Not now: a CONFIGURE awaits its reply, or the window is being destroyed.
    Busy(WindowId),
    /// Not at the negotiated version.
    Unsupported(Version),
    /// The message breaks a protocol rule (sizes, refs, clipboard length).
    Invalid(WireError),
    /// A bound was reached; retry after transmitting or taking events.
    Full {
        /// Which bound.
        what: &'static str,
    },
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => write!(f, "gui: not connected"),
            Self::WindowZero => write!(f, "gui: window 0 is reserved"),
            Self::NoSuchWindow(w) => write!(f, "gui: no window {}", w.0),
            Self::WindowExists(w) => write!(f, "gui: window {} exists", w.0),
            Self::Busy(w) => write!(f, "gui: window {} is busy", w.0),
            Self::Unsupported(v) => write!(f, "gui: not supported at version {v}"),
            Self::Invalid(e) => e.fmt(f),
            Self::Full { what } => write!(f, "gui: {what} full"),
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
