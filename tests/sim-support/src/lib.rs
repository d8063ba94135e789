//! Test-only helpers shared by the apps' integration tests: a qubes-sim in its own state
//! directory ([`Sim`]), OpenSSH tools against an agent socket and a loopback sshd ([`openssh`]).
//!
//! Every wait here polls a condition until [`DEADLINE`]; none sleeps a fixed time and hopes.

pub mod openssh;
mod sim;

use std::time::{Duration, Instant};

pub use sim::{sim_exe, wait_exit, Sim};

/// How long any awaited condition may take, generous for a loaded 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `done` every `step` until it holds; panics with `what` and `diag()` after [`DEADLINE`].
pub fn wait_until(
    what: &str,
    step: Duration,
    mut done: impl FnMut() -> bool,
    diag: impl FnOnce() -> String,
) {
    let end = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "timed out: {what}\n{}", diag());
        std::thread::sleep(step);
    }
}
