//! The Rust layouts and ioctl numbers against the installed kernel UAPI headers, through a C
//! program compiled with gcc: a layout mistake here fails a test, not a lab run.

use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

const HEADER_DIR: &str = "/usr/include/xen/sys";

/// Prints `name value` lines: sizes, offsets, ioctl numbers, and the hex image of one map
/// request (2 refs) and one alloc request (3 pages) built the C way.
const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/event_channel.h>
#include <xen/sys/evtchn.h>
#include <xen/sys/gntdev.h>
#include <xen/sys/gntalloc.h>

#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
static void hex(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s ", name);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}
int main(void) {
    P("ioctl_evtchn_bind_interdomain", IOCTL_EVTCHN_BIND_INTERDOMAIN);
    P("ioctl_evtchn_bind_unbound_port", IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    P("ioctl_evtchn_unbind", IOCTL_EVTCHN_UNBIND);
    P("ioctl_evtchn_notify", IOCTL_EVTCHN_NOTIFY);
    P("ioctl_evtchn_reset", IOCTL_EVTCHN_RESET);
    P("ioctl_gntdev_map_grant_ref", IOCTL_GNTDEV_MAP_GRANT_REF);
    P("ioctl_gntdev_unmap_grant_ref", IOCTL_GNTDEV_UNMAP_GRANT_REF);
    P("ioctl_gntdev_set_unmap_notify", IOCTL_GNTDEV_SET_UNMAP_NOTIFY);
    P("ioctl_gntalloc_alloc_gref", IOCTL_GNTALLOC_ALLOC_GREF);
    P("ioctl_gntalloc_dealloc_gref", IOCTL_GNTALLOC_DEALLOC_GREF);
    P("ioctl_gntalloc_set_unmap_notify", IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
    P("gntalloc_flag_writable", GNTALLOC_FLAG_WRITABLE);
    P("unmap_notify_clear_byte", UNMAP_NOTIFY_CLEAR_BYTE);
    P("unmap_notify_send_event", UNMAP_NOTIFY_SEND_EVENT);
    P("sizeof_evtchn_port", sizeof(evtchn_port_t));

    P("sizeof_bind_interdomain", sizeof(struct ioctl_evtchn_bind_interdomain));
    P("off_bind_interdomain_remote_domain", offsetof(struct ioctl_evtchn_bind_interdomain, remote_domain));
    P("off_bind_interdomain_remote_port", offsetof(struct ioctl_evtchn_bind_interdomain, remote_port));
    P("sizeof_bind_unbound_port", sizeof(struct ioctl_evtchn_bind_unbound_port));
    P("sizeof_evtchn_unbind", sizeof(struct ioctl_evtchn_unbind));
    P("sizeof_evtchn_notify", sizeof(struct ioctl_evtchn_notify));

    P("sizeof_gntdev_grant_ref", sizeof(struct ioctl_gntdev_grant_ref));
    P("off_gntdev_grant_ref_domid", offsetof(struct ioctl_gntdev_grant_ref, domid));
    P("off_gntdev_grant_ref_ref", offsetof(struct ioctl_gntdev_grant_ref, ref));
    P("sizeof_gntdev_map", sizeof(struct ioctl_gntdev_map_grant_ref));
    P("off_gntdev_map_count", offsetof(struct ioctl_gntdev_map_grant_ref, count));
    P("off_gntdev_map_index", offsetof(struct ioctl_gntdev_map_grant_ref, index));
    P("off_gntdev_map_refs", offsetof(struct ioctl_gntdev_map_grant_ref, refs));
    P("sizeof_gntdev_unmap", sizeof(struct ioctl_gntdev_unmap_grant_ref));
    P("off_gntdev_unmap_index", offsetof(struct ioctl_gntdev_unmap_grant_ref, index));
    P("off_gntdev_unmap_count", offsetof(struct ioctl_gntdev_unmap_grant_ref, count));
    P("sizeof_gntdev_notify", sizeof(struct ioctl_gntdev_unmap_notify));
    P("off_gntdev_notify_index", offsetof(struct ioctl_gntdev_unmap_notify, index));
    P("off_gntdev_notify_action", offsetof(struct ioctl_gntdev_unmap_notify, action));
    P("off_gntdev_notify_port", offsetof(struct ioctl_gntdev_unmap_notify, event_channel_port));

    P("sizeof_gntalloc_alloc", sizeof(struct ioctl_gntalloc_alloc_gref));
    P("off_gntalloc_alloc_domid", offsetof(struct ioctl_gntalloc_alloc_gref, domid));
    P("off_gntalloc_alloc_flags", offsetof(struct ioctl_gntalloc_alloc_gref, flags));
    P("off_gntalloc_alloc_count", offsetof(struct ioctl_gntalloc_alloc_gref, count));
    P("off_gntalloc_alloc_index", offsetof(struct ioctl_gntalloc_alloc_gref, index));
    P("off_gntalloc_alloc_gref_ids", offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids));
    P("sizeof_gntalloc_dealloc", sizeof(struct ioctl_gntalloc_dealloc_gref));
    P("off_gntalloc_dealloc_index", offsetof(struct ioctl_gntalloc_dealloc_gref, index));
    P("off_gntalloc_dealloc_count", offsetof(struct ioctl_gntalloc_dealloc_gref, count));
    P("sizeof_gntalloc_notify", sizeof(struct ioctl_gntalloc_unmap_notify));
    P("off_gntalloc_notify_index", offsetof(struct ioctl_gntalloc_unmap_notify, index));
    P("off_gntalloc_notify_action", offsetof(struct ioctl_gntalloc_unmap_notify, action));
    P("off_gntalloc_notify_port", offsetof(struct ioctl_gntalloc_unmap_notify, event_channel_port));

    /* A map request for refs 100 and 0x01020304 of domain 7, as libxengnttab lays it out. */
    size_t mlen = sizeof(struct ioctl_gntdev_map_grant_ref) + sizeof(struct ioctl_gntdev_grant_ref);
    struct ioctl_gntdev_map_grant_ref *m = calloc(1, mlen);
    m->count = 2;
    m->refs[0].domid = 7; m->refs[0].ref = 100;
    m->refs[1].domid = 7; m->refs[1].ref = 0x01020304;
    hex("map_request_2", m, mlen);

    /* An alloc request of 3 writable pages for domain 0x1234. */
    size_t alen = offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids) + 3 * sizeof(uint32_t);
    if (alen < sizeof(struct ioctl_gntalloc_alloc_gref)) alen = sizeof(struct ioctl_gntalloc_alloc_gref);
    struct ioctl_gntalloc_alloc_gref *a = calloc(1, alen);
    a->domid = 0x1234; a->flags = GNTALLOC_FLAG_WRITABLE; a->count = 3;
    hex("alloc_request_3", a, alen);
    return 0;
}
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compiles and runs [`PROGRAM`]; panics with a one-line reason if gcc or the headers are
/// missing (Debian: `apt-get install gcc libxen-dev`).
fn header_values() -> BTreeMap<String, String> {
    assert!(
        std::path::Path::new(HEADER_DIR).join("gntdev.h").exists(),
        "no {HEADER_DIR}/gntdev.h: install libxen-dev (the kernel UAPI headers this test checks)"
    );
    let dir: PathBuf = std::env::temp_dir().join(format!("dom0-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi.c");
    let bin = dir.join("abi");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&bin)
        .output()
        .expect("the layout program runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rust_values() -> BTreeMap<String, String> {
    let n = |v: u64| v.to_string();
    let u = |v: usize| v.to_string();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put(
        "ioctl_evtchn_bind_interdomain",
        n(IOCTL_EVTCHN_BIND_INTERDOMAIN),
    );
    put(
        "ioctl_evtchn_bind_unbound_port",
        n(IOCTL_EVTCHN_BIND_UNBOUND_PORT),
    );
    put("ioctl_evtchn_unbind", n(IOCTL_EVTCHN_UNBIND));
    put("ioctl_evtchn_notify", n(IOCTL_EVTCHN_NOTIFY));
    put("ioctl_evtchn_reset", n(IOCTL_EVTCHN_RESET));
    put("ioctl_gntdev_map_grant_ref", n(IOCTL_GNTDEV_MAP_GRANT_REF));
    put(
        "ioctl_gntdev_unmap_grant_ref",
        n(IOCTL_GNTDEV_UNMAP_GRANT_REF),
    );
    put(
        "ioctl_gntdev_set_unmap_notify",
        n(IOCTL_GNTDEV_SET_UNMAP_NOTIFY),
    );
    put("ioctl_gntalloc_alloc_gref", n(IOCTL_GNTALLOC_ALLOC_GREF));
    put(
        "ioctl_gntalloc_dealloc_gref",
        n(IOCTL_GNTALLOC_DEALLOC_GREF),
    );
    put(
        "ioctl_gntalloc_set_unmap_notify",
        n(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY),
    );
    put(
        "gntalloc_flag_writable",
        n(u64::from(GNTALLOC_FLAG_WRITABLE)),
    );
    put(
        "unmap_notify_clear_byte",
        n(u64::from(UNMAP_NOTIFY_CLEAR_BYTE)),
    );
    put(
        "unmap_notify_send_event",
        n(u64::from(UNMAP_NOTIFY_SEND_EVENT)),
    );
    put("sizeof_evtchn_port", u(size_of::<u32>()));

    put(
        "sizeof_bind_interdomain",
        u(size_of::<EvtchnBindInterdomain>()),
    );
    put(
        "off_bind_interdomain_remote_domain",
        u(offset_of!(EvtchnBindInterdomain, remote_domain)),
    );
    put(
        "off_bind_interdomain_remote_port",
        u(offset_of!(EvtchnBindInterdomain, remote_port)),
    );
    put(
        "sizeof_bind_unbound_port",
        u(size_of::<EvtchnBindUnboundPort>()),
    );
    put("sizeof_evtchn_unbind", u(size_of::<EvtchnPortArg>()));
    put("sizeof_evtchn_notify", u(size_of::<EvtchnPortArg>()));

    put("sizeof_gntdev_grant_ref", u(size_of::<GntdevGrantRef>()));
    put(
        "off_gntdev_grant_ref_domid",
        u(offset_of!(GntdevGrantRef, domid)),
    );
    put(
        "off_gntdev_grant_ref_ref",
        u(offset_of!(GntdevGrantRef, gref)),
    );
    put("sizeof_gntdev_map", u(size_of::<GntdevMapGrantRef>()));
    put(
        "off_gntdev_map_count",
        u(offset_of!(GntdevMapGrantRef, count)),
    );
    put(
        "off_gntdev_map_index",
        u(offset_of!(GntdevMapGrantRef, index)),
    );
    put(
        "off_gntdev_map_refs",
        u(offset_of!(GntdevMapGrantRef, refs)),
    );
    put("sizeof_gntdev_unmap", u(size_of::<GntdevUnmapGrantRef>()));
    put(
        "off_gntdev_unmap_index",
        u(offset_of!(GntdevUnmapGrantRef, index)),
    );
    put(
        "off_gntdev_unmap_count",
        u(offset_of!(GntdevUnmapGrantRef, count)),
    );
    for dev in ["gntdev", "gntalloc"] {
        put(
            &format!("sizeof_{dev}_notify"),
            u(size_of::<UnmapNotifyArg>()),
        );
        put(
            &format!("off_{dev}_notify_index"),
            u(offset_of!(UnmapNotifyArg, index)),
        );
        put(
            &format!("off_{dev}_notify_action"),
            u(offset_of!(UnmapNotifyArg, action)),
        );
        put(
            &format!("off_{dev}_notify_port"),
            u(offset_of!(UnmapNotifyArg, event_channel_port)),
        );
    }

    put("sizeof_gntalloc_alloc", u(size_of::<GntallocAllocGref>()));
    put(
        "off_gntalloc_alloc_domid",
        u(offset_of!(GntallocAllocGref, domid)),
    );
    put(
        "off_gntalloc_alloc_flags",
        u(offset_of!(GntallocAllocGref, flags)),
    );
    put(
        "off_gntalloc_alloc_count",
        u(offset_of!(GntallocAllocGref, count)),
    );
    put(
        "off_gntalloc_alloc_index",
        u(offset_of!(GntallocAllocGref, index)),
    );
    put(
        "off_gntalloc_alloc_gref_ids",
        u(offset_of!(GntallocAllocGref, gref_ids)),
    );
    put(
        "sizeof_gntalloc_dealloc",
        u(size_of::<GntallocDeallocGref>()),
    );
    put(
        "off_gntalloc_dealloc_index",
        u(offset_of!(GntallocDeallocGref, index)),
    );
    put(
        "off_gntalloc_dealloc_count",
        u(offset_of!(GntallocDeallocGref, count)),
    );

    put(
        "map_request_2",
        hex(&map_grant_ref_request(7, &[100, 0x0102_0304]).unwrap()),
    );
    put(
        "alloc_request_3",
        hex(&alloc_gref_request(0x1234, true, 3).unwrap()),
    );
    m
}

#[test]
fn layouts_and_ioctl_numbers_match_the_kernel_headers() {
    let c = header_values();
    let rust = rust_values();
    let mut wrong = Vec::new();
    for (k, v) in &rust {
        match c.get(k) {
            Some(cv) if cv == v => {}
            Some(cv) => wrong.push(format!("{k}: headers say {cv}, Rust has {v}")),
            None => wrong.push(format!("{k}: not printed by the C program")),
        }
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the C program and Rust check the same names"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ioctl_numbers_are_the_known_values() {
    // The same numbers written out, so a change to `ioc_none` cannot cancel out.
    assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
    assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
    assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
    assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
}

#[test]
fn short_requests_keep_the_fixed_struct_size_the_kernel_copies() {
    assert_eq!(alloc_gref_request(1, false, 1).unwrap().len(), 24);
    assert_eq!(map_grant_ref_request(1, &[5]).unwrap().len(), 24);
    assert_eq!(alloc_gref_request(1, false, 5).unwrap().len(), 16 + 20);
}

#[test]
fn replies_are_read_from_the_kernel_offsets() {
    let mut buf = alloc_gref_request(3, true, 2).unwrap();
    buf[8..16].copy_from_slice(&0x5000u64.to_ne_bytes());
    buf[16..20].copy_from_slice(&77u32.to_ne_bytes());
    buf[20..24].copy_from_slice(&78u32.to_ne_bytes());
    assert_eq!(alloc_gref_reply(&buf, 2), (0x5000, vec![77, 78]));
    let mut m = map_grant_ref_request(3, &[9, 10]).unwrap();
    m[8..16].copy_from_slice(&0x2000u64.to_ne_bytes());
    assert_eq!(map_grant_ref_index(&m), 0x2000);
}
