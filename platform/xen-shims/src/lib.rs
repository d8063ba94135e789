//! Replacement `libxengnttab.so.1`, `libxenevtchn.so.1` and `libxenstore.so.4` over the hosted
//! backend, so Debian's real libxenvchan runs between simulated domains (interop tests, bench).
//!
//! Each C entry point turns its raw arguments into calls on `platform_hosted` and reports
//! failure the C way (NULL/-1 and `errno`). Handles are boxed Rust values behind opaque
//! pointers. Only what libxenvchan imports is provided (see `vers/*.map`). Unsafe: only at the
//! C boundary (pointer arguments), each block with its reason.

mod cutil;
pub mod evtchn;
pub mod gnttab;
pub mod xenstore;

#[cfg(test)]
mod tests {
    use std::ffi::c_void;

    use crate::evtchn::*;
    use crate::gnttab::*;

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Both domains live in this process: the env names the domain at each `*_open`.
    #[test]
    fn share_map_and_unmap_notify_through_the_c_entry_points() {
        let dir = std::env::temp_dir().join(format!("xen-shims-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("QUBES_HOSTED_DIR", &dir);
        // SAFETY: (whole test) every handle passed back is one the matching open returned and
        // that is not yet closed; pointers passed are to live locals.
        unsafe {
            std::env::set_var("QUBES_HOSTED_DOMID", "1");
            let ev_a = xenevtchn_open(std::ptr::null_mut(), 0);
            let shr = xengntshr_open(std::ptr::null_mut(), 0);
            assert!(!ev_a.is_null() && !shr.is_null());
            let port_a = xenevtchn_bind_unbound_port(ev_a, 2);
            assert!(port_a > 0);
            let mut r = 0u32;
            let p = xengntshr_share_page_notify(shr, 2, &mut r, 1, 21, port_a as u32).cast::<u8>();
            assert!(!p.is_null());
            assert!(r >= 8);

            std::env::set_var("QUBES_HOSTED_DOMID", "2");
            let ev_b = xenevtchn_open(std::ptr::null_mut(), 0);
            let gt = xengnttab_open(std::ptr::null_mut(), 0);
            let port_b = xenevtchn_bind_interdomain(ev_b, 1, port_a as u32);
            assert!(port_b > 0);
            let q = xengnttab_map_grant_ref_notify(
                gt,
                1,
                r,
                libc::PROT_READ | libc::PROT_WRITE,
                20,
                port_b as u32,
            )
            .cast::<u8>();
            assert!(!q.is_null());
            assert!(xengnttab_map_grant_ref(gt, 1, r + 100, libc::PROT_READ).is_null());
            assert_eq!(errno(), libc::EINVAL);

            p.add(20).write_volatile(1);
            p.add(21).write_volatile(1);
            assert_eq!(q.add(20).read_volatile(), 1);
            assert_eq!(xenevtchn_notify(ev_b, port_b as u32), 0);
            assert_eq!(xenevtchn_pending(ev_a), port_a);

            // Client unmap: its live byte (20) is cleared and the server's port signalled.
            assert_eq!(xengnttab_unmap(gt, q.cast::<c_void>(), 1), 0);
            assert_eq!(p.add(20).read_volatile(), 0);
            assert_eq!(xenevtchn_pending(ev_a), port_a);

            // Server unshare: the client's port is signalled and the grant is gone.
            let q2 = xengnttab_map_grant_ref(gt, 1, r, libc::PROT_READ).cast::<u8>();
            assert!(!q2.is_null());
            assert_eq!(xengntshr_unshare(shr, p.cast::<c_void>(), 1), 0);
            assert_eq!(
                q2.add(21).read_volatile(),
                0,
                "unshare clears the notify byte first"
            );
            assert_eq!(xenevtchn_pending(ev_b), port_b);
            assert!(xengnttab_map_grant_ref(gt, 1, r, libc::PROT_READ).is_null());
            assert_eq!(xengnttab_unmap(gt, q2.cast::<c_void>(), 1), 0);
            assert_eq!(
                xengnttab_unmap(gt, q2.cast::<c_void>(), 1),
                -1,
                "double unmap refused"
            );

            assert_eq!(xengnttab_close(gt), 0);
            assert_eq!(xengntshr_close(shr), 0);
            assert_eq!(xenevtchn_close(ev_b), 0);
            assert_eq!(xenevtchn_close(ev_a), 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
