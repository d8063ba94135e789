//! Off Xen (this CI machine), the backend refuses to start with one clear line naming the
//! missing device and its module.

use std::path::Path;

use platform_dom0::{DomEvents, DomGrants, EVTCHN, GNTALLOC, GNTDEV, XENBUS};

#[test]
fn without_xen_devices_env_from_system_says_which_module_to_load() {
    if Path::new("/dev/xen/evtchn").exists() {
        eprintln!("skipped: /dev/xen/evtchn exists (running on Xen)");
        return;
    }
    let e = platform_dom0::env_from_system().unwrap_err();
    assert_eq!(
        e.to_string(),
        "no /dev/xen/evtchn: not running on Xen (load xen-evtchn); open failed with errno 2"
    );
}

#[test]
fn each_device_names_itself_and_how_to_get_it() {
    for dev in [EVTCHN, GNTDEV, GNTALLOC, XENBUS] {
        let head = format!("no {}: not running on Xen (", dev.path);
        assert!(dev.missing.starts_with(&head), "{}", dev.missing);
    }
    if !Path::new("/dev/xen/gntdev").exists() {
        let e = DomGrants::open().unwrap_err().to_string();
        assert!(
            e.starts_with("no /dev/xen/gntdev: not running on Xen (load xen-gntdev)"),
            "{e}"
        );
    }
    if !Path::new("/dev/xen/evtchn").exists() {
        let e = DomEvents::open().unwrap_err().to_string();
        assert!(
            e.starts_with("no /dev/xen/evtchn: not running on Xen (load xen-evtchn)"),
            "{e}"
        );
    }
}
