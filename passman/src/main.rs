//! The password vault's entry points: a Xen image (`cargo xtask build`) and a hosted process the
//! sim starts as a qube's kernel. The logic is the library's `PassmanApp`.
#![cfg_attr(xen_image, no_std, no_main)]
// The Xen entry macro carries the one allowed unsafe (the boot symbol), in platform-xen's code.
#![cfg_attr(not(xen_image), forbid(unsafe_code))]
#![cfg_attr(xen_image, deny(unsafe_code))]

#[cfg(xen_image)]
platform_xen::entry!(xen_main);

#[cfg(xen_image)]
fn xen_main(mut xen: platform_xen::Xen) -> ! {
    use platform_xen::abi::ShutdownReason;
    let env = platform_xen::env(&mut xen);
    let reason = match runloop::main_with("passman", env, |env| {
        passman::parse_cmdline(&env.cmdline)
            .map(|c| (passman::PassmanApp::new(c), passman::app::runloop_config()))
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
    match runloop::main_with("passman", env, |env| {
        passman::parse_cmdline(&env.cmdline)
            .map(|c| (passman::PassmanApp::new(c), passman::app::runloop_config()))
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("{line}");
            std::process::ExitCode::FAILURE
        }
    }
}
