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
    let reason = match platform_xen::env(&mut xen) {
        Ok(env) => match passman::parse_cmdline(&env.cmdline) {
            Ok(cfg) => {
                let app = passman::PassmanApp::<platform_xen::XenPlatform>::new(cfg);
                match runloop::run(env, app, passman::app::runloop_config()) {
                    Ok(()) => ShutdownReason::Poweroff,
                    Err(e) => {
                        platform_xen::println!("passman: {e}");
                        ShutdownReason::Crash
                    }
                }
            }
            Err(e) => {
                platform_xen::println!("passman: {e}");
                ShutdownReason::Crash
            }
        },
        Err(e) => {
            platform_xen::println!("passman: platform: {e}");
            ShutdownReason::Crash
        }
    };
    xen.shutdown(reason)
}

#[cfg(not(xen_image))]
fn main() {
    let env = match platform_hosted::env_from_environment() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("passman: hosted environment: {e}");
            std::process::exit(1);
        }
    };
    let cfg = match passman::parse_cmdline(&env.cmdline) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("passman: {e}");
            std::process::exit(1);
        }
    };
    let app = passman::PassmanApp::<platform_hosted::Hosted>::new(cfg);
    if let Err(e) = runloop::run(env, app, passman::app::runloop_config()) {
        eprintln!("passman: {e}");
        std::process::exit(1);
    }
}
