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
    use ssh_agent_vm::app::{runloop_config, VaultApp};
    let reason = match platform_xen::env(&mut xen) {
        Ok(env) => match ssh_agent_vm::VaultConfig::parse(&env.cmdline) {
            Ok(cfg) => {
                let rl = runloop_config(&cfg);
                match runloop::run(env, VaultApp::new(cfg), rl) {
                    Ok(()) => ShutdownReason::Poweroff,
                    Err(e) => {
                        platform_xen::println!("ssh-agent-vm: {e}");
                        ShutdownReason::Crash
                    }
                }
            }
            Err(e) => {
                platform_xen::println!("ssh-agent-vm: {e}");
                ShutdownReason::Crash
            }
        },
        Err(e) => {
            platform_xen::println!("ssh-agent-vm: platform: {e}");
            ShutdownReason::Crash
        }
    };
    xen.shutdown(reason)
}

#[cfg(not(xen_image))]
fn main() {
    use ssh_agent_vm::app::{runloop_config, VaultApp};
    let env = match platform_hosted::env_from_environment() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("ssh-agent-vm: hosted environment: {e}");
            std::process::exit(1);
        }
    };
    let cfg = match ssh_agent_vm::VaultConfig::parse(&env.cmdline) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ssh-agent-vm: {e}");
            std::process::exit(1);
        }
    };
    let rl = runloop_config(&cfg);
    if let Err(e) = runloop::run(env, VaultApp::<platform_hosted::Hosted>::new(cfg), rl) {
        eprintln!("ssh-agent-vm: {e}");
        std::process::exit(1);
    }
}
