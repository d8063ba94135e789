//! qrexec (protocol v2–v4, \[QX\] `libqrexec/qrexec.h`) sans-IO: [`wire`], [`names`], [`cmdline`],
//! the VM [`agent`], one [`data`] channel (either role, either side) and dom0's [`daemon`].

// Trust: peer bytes are hostile; bodies are capped by `QrexecFraming` before allocation, queues
// by each machine's `Limits`, and a peer's error is sticky (every later call returns it).

pub mod agent;
pub mod cmdline;
pub mod daemon;
pub mod data;
mod error;
pub mod names;
mod queue;
pub mod wire;

#[cfg(test)]
mod tests;

pub use agent::Agent;
pub use cmdline::{Command, ServiceCall};
pub use daemon::Daemon;
pub use data::DataChannel;
pub use error::{EmitError, Error, PeerError, WireError};
pub use names::RequestId;
pub use wire::{Message, MsgHeader, MsgType, QrexecFraming, Stream};

/// Protocol version 2 (R3.0–R4.0); the oldest one the daemon accepts.
pub const PROTOCOL_V2: u32 = 2;
/// Protocol version 3 (R4.1–R4.2): 64 KiB chunks, `TRIGGER_SERVICE3`.
pub const PROTOCOL_V3: u32 = 3;
/// Protocol version 4 (R4.3): `TRIGGER_SERVICE4`.
pub const PROTOCOL_V4: u32 = 4;
/// The version our VM agent announces.
pub const AGENT_VERSION: u32 = PROTOCOL_V3;
/// The version our dom0 side announces (`QREXEC_PROTOCOL_VERSION` at \[QX\] HEAD).
pub const DAEMON_VERSION: u32 = PROTOCOL_V4;

/// Largest data chunk at v2 (`MAX_DATA_CHUNK_V2`).
pub const MAX_DATA_CHUNK_V2: usize = 4096;
/// Largest data chunk at v3 and later (`MAX_DATA_CHUNK_V3`).
pub const MAX_DATA_CHUNK_V3: usize = 65536;
/// Largest body of any control message we accept or send. The control vchan's rings are 4 KiB
/// and the C peers send each body with one `libvchan_send`, which fails for a body larger than
/// the ring, so no working peer sends more; it also bounds what a hostile peer makes us buffer.
pub const MAX_CONTROL_BODY: usize = 4096;
/// Longest service name the C daemon takes in `TRIGGER_SERVICE3/4` (`MAX_SERVICE_NAME_LEN`);
/// [`MAX_CONTROL_BODY`] is the tighter bound in practice.
pub const MAX_SERVICE_NAME_LEN: usize = 65000;
/// Longest service part (before `+`) the agent runs (`NAME_MAX`).
pub const MAX_SERVICE_LEN: usize = 255;

/// The control channel's vchan port (`VCHAN_BASE_PORT`).
pub const CONTROL_PORT: u32 = 512;
/// First data-channel port a daemon allocates (`VCHAN_BASE_DATA_PORT`).
pub const FIRST_DATA_PORT: u32 = 513;
/// How many data ports a daemon allocates (`MAX_CLIENTS` = `MAX_FDS`): 513..=768.
pub const DATA_PORT_COUNT: u32 = 256;

/// Exit status for a qrexec problem (`QREXEC_EXIT_PROBLEM`).
pub const EXIT_PROBLEM: i32 = 125;
/// Exit status for a call refused by policy (`QREXEC_EXIT_REQUEST_REFUSED`).
pub const EXIT_REFUSED: i32 = 126;
/// Exit status for a service that does not exist (`QREXEC_EXIT_SERVICE_NOT_FOUND`).
pub const EXIT_NOT_FOUND: i32 = 127;

/// The largest data chunk a peer may send at this negotiated version.
pub fn max_chunk(version: u32) -> usize {
    if version >= PROTOCOL_V3 {
        MAX_DATA_CHUNK_V3
    } else {
        MAX_DATA_CHUNK_V2
    }
}

/// Whether `port` is one a daemon hands out for data channels.
pub fn is_data_port(port: u32) -> bool {
    port.wrapping_sub(FIRST_DATA_PORT) < DATA_PORT_COUNT
}
