//! The firewall netvm's entry points: a Xen image (`cargo xtask build`) and a hosted process the
//! sim starts as a qube's kernel. The logic is the library's `app::FirewallApp`.
#![cfg_attr(xen_image, no_std, no_main)]
#![cfg_attr(not(xen_image), forbid(unsafe_code))]

#[cfg(xen_image)]
platform_xen::entry!(xen_main);

#[cfg(xen_image)]
fn xen_main(mut xen: platform_xen::Xen) -> ! {
    use firewall::app::FirewallApp;
    use platform_xen::abi::ShutdownReason;
    let reason = match platform_xen::env(&mut xen) {
        Ok(env) => match firewall::Limits::from_cmdline(&env.cmdline) {
            Ok(limits) => match runloop::run(env, FirewallApp::new(limits), Default::default()) {
                Ok(()) => ShutdownReason::Poweroff,
                Err(e) => {
                    platform_xen::println!("firewall: {e}");
                    ShutdownReason::Crash
                }
            },
            Err(e) => {
                platform_xen::println!("firewall: {e}");
                ShutdownReason::Crash
            }
        },
        Err(e) => {
            platform_xen::println!("firewall: platform: {e}");
            ShutdownReason::Crash
        }
    };
    xen.shutdown(reason)
}

#[cfg(not(xen_image))]
fn main() {
    use firewall::app::FirewallApp;
    let env = match platform_hosted::env_from_environment() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("firewall: hosted environment: {e}");
            std::process::exit(1);
        }
    };
    let limits = match firewall::Limits::from_cmdline(&env.cmdline) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("firewall: {e}");
            std::process::exit(1);
        }
    };
    let app = FirewallApp::<platform_hosted::Hosted>::new(limits);
    if let Err(e) = runloop::run(env, app, runloop::Config::default()) {
        eprintln!("firewall: {e}");
        std::process::exit(1);
    }
}
