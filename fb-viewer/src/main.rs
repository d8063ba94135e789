//! The disposable PNG viewer's entry points: a Xen image (`cargo xtask build`) and a hosted
//! process the sim starts as a qube's kernel. The logic is the library's `app::Viewer`.
#![cfg_attr(xen_image, no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(xen_image)]
platform_xen::entry!(xen_main);

#[cfg(xen_image)]
fn xen_main(mut xen: platform_xen::Xen) -> ! {
    use platform_xen::abi::ShutdownReason;
    let env = platform_xen::env(&mut xen);
    let reason = match runloop::main_with("fb-viewer", env, |_| {
        let app = fb_viewer::app::Viewer::new(fb_viewer::app::ViewerConfig::default());
        Ok::<_, core::convert::Infallible>((app, runloop::Config::default()))
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
    match runloop::main_with("fb-viewer", env, |_| {
        let app = fb_viewer::app::Viewer::new(fb_viewer::app::ViewerConfig::default());
        Ok::<_, core::convert::Infallible>((app, runloop::Config::default()))
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("{line}");
            std::process::ExitCode::FAILURE
        }
    }
}
