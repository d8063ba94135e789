//! The split-SSH vault's entry points: a Xen image (`cargo xtask build`) and a hosted process the
//! sim starts as a qube's kernel. The logic is the library's `app::VaultApp`.
#![cfg_attr(xen_image, no_std, no_main)]
// deny, not forbid: platform_xen::entry! expands to the boot glue, which allows its own unsafe.
#![deny(unsafe_code)]

#[cfg(xen_image)]
platform_xen::entry!(xen_main);

#[cfg(xen_image)]
fn xen_main(mut xen: platform_xen::Xen) -> ! {
    use platform_xen::abi::ShutdownReason;
    let env = platform_xen::env(&mut xen);
    let reason = match runloop::main_with("ssh-agent-vm", env, |env| {
        ssh_agent_vm::VaultConfig::parse(&env.cmdline).map(|c| {
            let rl = ssh_agent_vm::app::runloop_config(&c);
            (ssh_agent_vm::app::VaultApp::new(c), rl)
        })
    }) {
        Ok(()) => ShutdownReason::Poweroff,
        Err(line) => {
            platform_xen::println!("{line}");
            ShutdownReason::Crash
        }
    };
    xen.shutdown(reason)
}

#[cfg(not(xen_image))]
fn main() -> std::process::ExitCode {
    let env = platform_hosted::env_from_environment();
    match runloop::main_with("ssh-agent-vm", env, |env| {
        ssh_agent_vm::VaultConfig::parse(&env.cmdline).map(|c| {
            let rl = ssh_agent_vm::app::runloop_config(&c);
            (ssh_agent_vm::app::VaultApp::new(c), rl)
        })
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("{line}");
            std::process::ExitCode::FAILURE
        }
    }
}
