//! What an `EXEC_CMDLINE` asks of an app: a [`Call`] for one of its services, or the exit code
//! the Linux agent would answer without running anything (125, 127).

use qubes::qrexec::cmdline::{CmdlineError, Command};
use qubes::qrexec::{EXIT_NOT_FOUND, EXIT_PROBLEM};

use crate::Call;

/// What to do with one command line from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition<'a> {
    /// Ask the app.
    Serve(Call<'a>),
    /// Answer with this exit code and nothing else.
    Answer(i32),
}

/// Sorts a parsed command line: a malformed one is a qrexec problem (125, as the Linux agent
/// answers a command it cannot parse); a shell command (a unikernel has no shell) or a service
/// outside `services` is not found (127); the rest goes to the app. Names are compared
/// exactly: the argument never takes part.
pub fn classify<'a>(
    command: &'a Result<Command, CmdlineError>,
    services: &[&str],
) -> Disposition<'a> {
    match command {
        Err(_) => Disposition::Answer(EXIT_PROBLEM),
        Ok(Command::Shell { .. }) => Disposition::Answer(EXIT_NOT_FOUND),
        Ok(Command::Service(call)) if services.contains(&call.service.as_str()) => {
            Disposition::Serve(Call {
                service: &call.service,
                argument: call.argument(),
                source: &call.source,
            })
        }
        Ok(Command::Service(_)) => Disposition::Answer(EXIT_NOT_FOUND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use qubes::qrexec::cmdline::{parse, ServiceCall};

    const SERVICES: &[&str] = &["qubes.SshAgent", "test.Echo"];

    fn serve(
        line: &str,
    ) -> Option<(
        std::string::String,
        std::string::String,
        std::string::String,
    )> {
        let cmd = parse(line.as_bytes());
        match classify(&cmd, SERVICES) {
            Disposition::Serve(c) => Some((c.service.into(), c.argument.into(), c.source.into())),
            Disposition::Answer(_) => None,
        }
    }

    fn answer(line: &[u8]) -> Option<i32> {
        match classify(&parse(line), SERVICES) {
            Disposition::Answer(code) => Some(code),
            Disposition::Serve(_) => None,
        }
    }

    #[test]
    fn service_argument_and_source_in_every_daemon_form() {
        let want = |a: &str, s: &str| Some(("qubes.SshAgent".into(), a.into(), s.into()));
        // VM→VM: the daemon always adds `+`.
        assert_eq!(
            serve("user:QUBESRPC qubes.SshAgent+ work"),
            want("", "work")
        );
        assert_eq!(
            serve("user:QUBESRPC qubes.SshAgent+work work"),
            want("work", "work")
        );
        // dom0's form: no `+` at all, and trailing words after the source.
        assert_eq!(serve("root:QUBESRPC qubes.SshAgent dom0"), want("", "dom0"));
        assert_eq!(
            serve("u:nogui:QUBESRPC qubes.SshAgent+a.b-c_d src x y"),
            want("a.b-c_d", "src")
        );
    }

    #[test]
    fn unknown_service_is_127_never_a_prefix_match() {
        assert_eq!(answer(b"user:QUBESRPC qubes.SshAgentX+ work"), Some(127));
        assert_eq!(answer(b"user:QUBESRPC qubes.Ssh+Agent work"), Some(127));
        assert_eq!(answer(b"user:QUBESRPC test.Echo+x work"), None);
    }

    #[test]
    fn shell_command_is_127() {
        assert_eq!(answer(b"user:echo hello"), Some(127));
        assert_eq!(answer(b"user:QUBESRPCqubes.SshAgent work"), Some(127));
    }

    #[test]
    fn malformed_command_line_is_125() {
        assert_eq!(answer(b"no user here"), Some(125));
        assert_eq!(answer(b"user:QUBESRPC qubes.SshAgent"), Some(125));
        assert_eq!(answer(b"user:QUBESRPC qubes.Ssh/Agent work"), Some(125));
        assert_eq!(answer(b"user:QUBESRPC \xff work"), Some(125));
    }

    proptest! {
        /// Any call the daemon can build reaches the app with exactly its service, argument
        /// (absent = empty) and source.
        #[test]
        fn parse_of_built_cmdline_gives_the_same_call(
            arg in proptest::option::of("[A-Za-z0-9+._-]{0,30}"),
            source in "[A-Za-z0-9_.-]{1,31}",
            nogui in any::<bool>(),
            svc in 0usize..2,
        ) {
            let call = ServiceCall {
                user: "user".into(),
                nogui,
                service: SERVICES[svc].into(),
                argument: arg.clone(),
                source: source.clone(),
            };
            let got = serve(&call.to_cmdline());
            let want = (SERVICES[svc].into(), arg.unwrap_or_default(), source);
            prop_assert_eq!(got, Some(want));
        }

        /// Arbitrary bytes never panic and always get a disposition.
        #[test]
        fn arbitrary_command_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let cmd = parse(&line);
            let _ = classify(&cmd, SERVICES);
        }
    }
}
