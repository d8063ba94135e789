//! What the loop and the app's requests to it fail on: one enum per operation, one-line
//! Display each, sorted so that only [`RunError`] ends [`crate::run`].

use core::fmt;

use platform_api::{PlatformError, StoreError};
use qubes::qrexec;
use qubes::qubesdb::{ConnError, LocalError};
use vchan::SetupError;

use crate::CallId;

/// Why [`crate::run`] stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The QubesDB vchan to dom0 could not be set up.
    QubesDbSetup(SetupError),
    /// dom0's QubesDB daemon did not appear or sync within `Config::qubesdb_timeout`.
    QubesDbTimeout,
    /// dom0's QubesDB daemon broke the protocol or its vchan failed.
    QubesDb(ConnError),
    /// The qrexec control vchan could not be set up.
    QrexecSetup(SetupError),
    /// dom0's qrexec daemon broke the control protocol.
    Qrexec(qrexec::Error),
    /// A control vchan (qrexec or QubesDB) failed on our side or dom0 corrupted it.
    Vchan(vchan::Error),
    /// Waiting for events failed.
    Wait(PlatformError),
    /// The xenstore connection failed (shutdown watch).
    Store(StoreError),
    /// [`crate::App::start`] failed.
    Start(AppError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QubesDbSetup(e) => write!(f, "qubesdb vchan setup failed: {e}"),
            Self::QubesDbTimeout => f.write_str("qubesdb: no sync from dom0 in time"),
            Self::QubesDb(e) => write!(f, "qubesdb connection failed: {e}"),
            Self::QrexecSetup(e) => write!(f, "qrexec control vchan setup failed: {e}"),
            Self::Qrexec(e) => write!(f, "qrexec control channel failed: {e}"),
            Self::Vchan(e) => write!(f, "control vchan failed: {e}"),
            Self::Wait(e) => write!(f, "waiting for events failed: {e}"),
            Self::Store(e) => write!(f, "xenstore: {e}"),
            Self::Start(e) => write!(f, "app start failed: {e}"),
        }
    }
}

impl core::error::Error for RunError {}

/// An app's own failure (from [`crate::App::start`]) or a refused request to QubesDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    /// A device or other backend operation failed.
    Platform(PlatformError),
    /// A xenstore operation failed.
    Store(StoreError),
    /// QubesDB refused a local request (bad path, too many watches, not connected).
    QubesDb(LocalError),
    /// The app's own reason.
    Failed(&'static str),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform(e) => e.fmt(f),
            Self::Store(e) => write!(f, "xenstore: {e}"),
            Self::QubesDb(e) => e.fmt(f),
            Self::Failed(what) => f.write_str(what),
        }
    }
}

impl core::error::Error for AppError {}

impl From<PlatformError> for AppError {
    fn from(e: PlatformError) -> Self {
        Self::Platform(e)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<LocalError> for AppError {
    fn from(e: LocalError) -> Self {
        Self::QubesDb(e)
    }
}

/// Why [`crate::Cx::send`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such call (never existed, or already closed).
    UnknownCall(CallId),
    /// This direction is over: the served call was finished, or our call's input ended.
    Ended(CallId),
    /// The call's queue ([`crate::Config::out_bytes`]) has only `space` bytes free; retry
    /// after [`crate::App::poll`] when [`crate::Cx::send_space`] has grown.
    Full {
        /// Free bytes now.
        space: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCall(id) => write!(f, "{id} does not exist"),
            Self::Ended(id) => write!(f, "{id} takes no more data"),
            Self::Full { space } => write!(f, "call queue full: {space} bytes free"),
        }
    }
}

impl core::error::Error for SendError {}

/// Why [`crate::Cx::call`] made no call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// [`crate::Config::max_calls`] calls are open, or the control queue is full.
    Full {
        /// Which bound.
        what: &'static str,
    },
    /// The target or service name is not one qrexec accepts.
    InvalidName(&'static str),
    /// dom0's qrexec daemon has not connected yet (retry from [`crate::App::poll`]).
    NotConnected,
    /// The loop is stopping.
    Stopping,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { what } => write!(f, "{what} full"),
            Self::InvalidName(what) => write!(f, "invalid {what}"),
            Self::NotConnected => f.write_str("qrexec daemon not connected yet"),
            Self::Stopping => f.write_str("the run loop is stopping"),
        }
    }
}

impl core::error::Error for CallError {}
