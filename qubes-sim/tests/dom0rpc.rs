//! Calls whose target is dom0: dom0 runs the service from its configured `qubes-rpc` directory
//! (`QUBES_SIM_DOM0_RPC`, else the project's `qubes-rpc/dom0-services`, then the state
//! directory's `dom0/qubes-rpc`) with Qubes' environment and argument; policy decides first.

mod common;

use common::sim::Sim;
use common::State;

fn script(dir: &std::path::Path, name: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn policy(state: &State, text: &str) {
    let d = state.path().join("policy.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("30-test.policy"), text).unwrap();
}

/// `qvm-run -p VM CMD`: (exit code, stdout).
fn run(sim: &Sim, vm: &str, cmd: &str) -> (i32, String) {
    let (code, out, _) = sim.state.run("qvm-run", &["-p", vm, cmd]);
    (code, out)
}

#[test]
fn a_configured_dom0_directory_serves_with_qubes_environment() {
    let state = State::new("dom0rpc-env");
    state.ok("qvm-create", &["--label", "red", "work"]);
    state.ok("qvm-create", &["--label", "red", "other"]);
    policy(
        &state,
        "test.Env * work @adminvm allow\ntest.Env * @anyvm @anyvm deny\n",
    );
    let rpc = state.path().join("my-dom0-rpc");
    script(
        &rpc,
        "test.Env",
        "#!/bin/sh\nprintf '%s|%s|%s|%s\\n' \"$1\" \"$QREXEC_REMOTE_DOMAIN\" \"$QREXEC_SERVICE_ARGUMENT\" \"$QREXEC_SERVICE_FULL_NAME\"\ncat\nexit 5\n",
    );
    script(&rpc, "test.Env+special", "#!/bin/sh\necho specific\n");
    // The state directory's dom0 directory comes after the configured one.
    script(
        &state.path().join("dom0/qubes-rpc"),
        "test.Env",
        "#!/bin/sh\necho shadowed\n",
    );
    let sim = Sim::boot_with(
        state,
        &[
            ("QUBES_SIM_DOM0_RPC", rpc.to_str().unwrap()),
            ("QUBES_SIM_POLICY_DIRS", ""),
        ],
    );
    let (code, out) = run(&sim, "work", "echo in | qrexec-client-vm dom0 test.Env+abc");
    assert_eq!(
        (code, out.as_str()),
        (5, "abc|work|abc|test.Env+abc\nin\n"),
        "{}",
        sim.log()
    );
    let (code, out) = run(&sim, "work", "qrexec-client-vm @adminvm test.Env+special");
    assert_eq!((code, out.as_str()), (0, "specific\n"));
    // No argument: the full name ends in "+", as qrexec passes it since Qubes 4.1.
    let (code, out) = run(&sim, "work", "qrexec-client-vm dom0 test.Env");
    assert_eq!((code, out.as_str()), (5, "|work||test.Env+\n"));
    // Policy first: other may not call it, and nothing runs.
    let (code, out) = run(&sim, "other", "qrexec-client-vm dom0 test.Env+abc");
    assert_eq!((code, out.as_str()), (126, ""));
    // Allowed, but no such service in any dom0 directory.
    let (code, _) = run(&sim, "work", "qrexec-client-vm dom0 test.Nope");
    assert_eq!(code, 126, "no rule for test.Nope");
}

#[test]
fn the_projects_dom0_confirm_service_answers_the_ssh_vault_only() {
    let project = qubes_sim::policy::project_rpc_dir();
    if !project
        .join("dom0-services/qubes.UnikernelConfirm")
        .is_file()
    {
        eprintln!("skipped: no qubes-rpc/dom0-services/qubes.UnikernelConfirm yet");
        return;
    }
    let state = State::new("dom0rpc-confirm");
    // A Linux qube under the vault's name stands in for the unikernel's outgoing call.
    state.ok("qvm-create", &["--label", "black", "sshagent-unikernel"]);
    state.ok("qvm-create", &["--label", "red", "work"]);
    // The project's policy and dom0 services, as shipped.
    policy(&state, "");
    std::fs::write(state.path().join("confirm-answer"), "allow\n").unwrap();
    let sim = Sim::boot(state);
    let ask = "printf 'keyring=work\\nqube=work\\nkey=SHA256:x\\n' | qrexec-client-vm dom0 qubes.UnikernelConfirm+work";
    let (code, out) = run(&sim, "sshagent-unikernel", ask);
    assert_eq!((code, out.as_str()), (0, "allow\n"), "{}", sim.log());
    std::fs::write(sim.path().join("confirm-answer"), "deny\n").unwrap();
    let (code, out) = run(&sim, "sshagent-unikernel", ask);
    assert_eq!((code, out.as_str()), (1, "deny\n"));
    // Any other qube is refused by the project's policy before dom0 runs anything.
    std::fs::write(sim.path().join("confirm-answer"), "allow\n").unwrap();
    let (code, out) = run(&sim, "work", ask);
    assert_eq!((code, out.as_str()), (126, ""));
}
