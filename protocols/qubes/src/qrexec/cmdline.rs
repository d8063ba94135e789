//! The command line of `EXEC_CMDLINE`/`JUST_EXEC`: `USER:[nogui:]QUBESRPC svc[+arg] src[ rest]`
//! becomes a typed [`ServiceCall`]; anything else is a shell command (which a unikernel refuses).

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use super::names::{split_service, NameError};

/// `RPC_REQUEST_COMMAND` followed by its separating space.
const RPC_PREFIX: &str = "QUBESRPC ";
/// `NOGUI_CMD_PREFIX`.
const NOGUI_PREFIX: &str = "nogui:";

/// A qrexec service call as the agent receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    /// The user to run as (`DEFAULT` already replaced by the daemon).
    pub user: String,
    /// Whether the command carried `nogui:`.
    pub nogui: bool,
    /// The service name (before `+`), at most 255 bytes of `A-Za-z0-9+-._` minus `+`.
    pub service: String,
    /// The argument: `None` without `+` (dom0's form), `Some("")` for a bare `+` (the daemon
    /// always adds one); policy treats them alike, so compare with [`argument`](Self::argument).
    pub argument: Option<String>,
    /// The calling qube (`dom0` for dom0's calls).
    pub source: String,
}

impl ServiceCall {
    /// The argument, empty when absent.
    pub fn argument(&self) -> &str {
        self.argument.as_deref().unwrap_or("")
    }

    /// `service+argument` the way the daemon spells it (always with `+`).
    pub fn service_and_arg(&self) -> String {
        format!("{}+{}", self.service, self.argument())
    }

    /// The command line a daemon sends for this call (no NUL).
    pub fn to_cmdline(&self) -> String {
        let nogui = if self.nogui { NOGUI_PREFIX } else { "" };
        let plus = match &self.argument {
            Some(a) => format!("+{a}"),
            None => String::new(),
        };
        format!(
            "{}:{nogui}{RPC_PREFIX}{}{plus} {}",
            self.user, self.service, self.source
        )
    }
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A qrexec service call.
    Service(ServiceCall),
    /// A shell command (`qvm-run`); a unikernel has no shell and answers 127.
    Shell {
        /// The user.
        user: String,
        /// Whether it carried `nogui:`.
        nogui: bool,
        /// The command text.
        command: String,
    },
}

/// Why a command line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// Not valid UTF-8.
    NotUtf8,
    /// No `USER:` prefix.
    NoUser,
    /// `QUBESRPC` without a source qube after the service.
    NoSource,
    /// The service name breaks the name rules.
    Name(NameError),
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("command line is not UTF-8"),
            Self::NoUser => f.write_str("command line has no USER: prefix"),
            Self::NoSource => f.write_str("service call without a source qube"),
            Self::Name(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for CmdlineError {}

/// Parses a command line (the bytes before its NUL). Splits at the first `:` like \[QX\]
/// `parse_qubes_rpc_command`; matches only the `QUBESRPC ` prefix, never whole strings.
pub fn parse(cmdline: &[u8]) -> Result<Command, CmdlineError> {
    let text = core::str::from_utf8(cmdline).map_err(|_| CmdlineError::NotUtf8)?;
    let (user, rest) = text.split_once(':').ok_or(CmdlineError::NoUser)?;
    if user.is_empty() {
        return Err(CmdlineError::NoUser);
    }
    let (nogui, rest) = match rest.strip_prefix(NOGUI_PREFIX) {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let Some(call) = rest.strip_prefix(RPC_PREFIX) else {
        return Ok(Command::Shell {
            user: user.to_string(),
            nogui,
            command: rest.to_string(),
        });
    };
    let (name, after) = call.split_once(' ').ok_or(CmdlineError::NoSource)?;
    let source = after.split(' ').next().unwrap_or("");
    if source.is_empty() {
        return Err(CmdlineError::NoSource);
    }
    let (service, argument) = split_service(name).map_err(CmdlineError::Name)?;
    Ok(Command::Service(ServiceCall {
        user: user.to_string(),
        nogui,
        service: service.to_string(),
        argument: argument.map(str::to_string),
        source: source.to_string(),
    }))
}
