//! The body every unikernel's `main` shares on both backends: take the backend's `Env`, build
//! the app from the command line, run it; one error line, prefixed with the unikernel's name.

use alloc::format;
use alloc::string::String;
use core::fmt::Display;

use platform_api::{Env, Platform, PlatformError};

use crate::{App, Config};

/// Runs `build`'s app on `env` until a clean poweroff (`Ok`), or says in one line, prefixed
/// with `name`, why it could not start or why it stopped (the caller prints it and exits or
/// crashes the domain).
pub fn main_with<P, A, E>(
    name: &str,
    env: Result<Env<P>, PlatformError>,
    build: impl FnOnce(&Env<P>) -> Result<(A, Config), E>,
) -> Result<(), String>
where
    P: Platform,
    A: App<P>,
    E: Display,
{
    let env = env.map_err(|e| format!("{name}: platform: {e}"))?;
    let (app, cfg) = build(&env).map_err(|e| format!("{name}: {e}"))?;
    crate::run(env, app, cfg).map_err(|e| format!("{name}: {e}"))
}
