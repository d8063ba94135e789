//! The disposable PNG viewer's entry points: a Xen image (`cargo xtask build`) and a hosted
//! process the sim starts as a qube's kernel. The logic is the library's `app::Viewer`.
#![cfg_attr(xen_image, no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(xen_image)]
platform_xen::entry!(xen_main);

#[cfg(xen_image)]
fn xen_main(mut xen: platform_xen::Xen) -> ! {
    use platform_xen::abi::ShutdownReason;
    let reason = match platform_xen::env(&mut xen) {
        Ok(env) => {
            let app = fb_viewer::app::Viewer::new(fb_viewer::app::ViewerConfig::default());
            match runloop::run(env, app, runloop::Config::default()) {
                Ok(()) => ShutdownReason::Poweroff,
                Err(e) => {
                    platform_xen::println!("fb-viewer: {e}");
                    ShutdownReason::Crash
                }
            }
        }
        Err(e) => {
            platform_xen::println!("fb-viewer: platform: {e}");
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
            eprintln!("fb-viewer: hosted environment: {e}");
            std::process::exit(1);
        }
    };
    let app = fb_viewer::app::Viewer::new(fb_viewer::app::ViewerConfig::default());
    if let Err(e) = runloop::run(env, app, runloop::Config::default()) {
        eprintln!("fb-viewer: {e}");
        std::process::exit(1);
    }
}
