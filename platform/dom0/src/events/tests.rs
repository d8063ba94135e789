//! The device protocol (fired ports read as `u32`s, unmasked by writing them back) against a
//! datagram socket standing in for `/dev/xen/evtchn`, and the fd pseudo-ports.

use super::*;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Instant;

fn dom(d: u32) -> DomId {
    DomId::new(d).unwrap()
}

/// A handle whose "device" is one end of a datagram pair; the other end plays the driver.
fn fake() -> (DomEvents, UnixDatagram) {
    let (ours, driver) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    driver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ev = DomEvents::with_device(Some(File::from(OwnedFd::from(ours))));
    (ev, driver)
}

fn ports(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|p| p.to_ne_bytes()).collect()
}

fn set_of(s: &PortSet) -> Vec<u32> {
    s.iter().map(EvtchnPort::get).collect()
}

#[test]
fn fired_ports_are_reported_and_unmasked_by_writing_them_back() {
    let (mut ev, driver) = fake();
    ev.inner.ports().insert(5, dom(3));
    ev.inner.ports().insert(7, dom(3));
    driver.send(&ports(&[7, 5, 9, 7])).unwrap();
    let set = ev.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(set_of(&set), [5, 7], "ours only, each once");
    let mut back = [0u8; 64];
    let n = driver.recv(&mut back).unwrap();
    assert_eq!(
        &back[..n],
        &ports(&[5, 7])[..],
        "exactly the reported ports unmasked"
    );
}

#[test]
fn ports_not_bound_on_this_handle_are_neither_reported_nor_unmasked() {
    let (mut ev, driver) = fake();
    driver.send(&ports(&[11, 0, 4095, u32::MAX])).unwrap();
    let set = ev.wait(Some(Duration::from_secs(5))).unwrap();
    assert!(set.is_empty());
    driver.set_nonblocking(true).unwrap();
    let mut back = [0u8; 64];
    assert!(driver.recv(&mut back).is_err(), "nothing written back");
}

#[test]
fn a_partial_port_from_the_device_is_ignored() {
    let (mut ev, driver) = fake();
    ev.inner.ports().insert(6, dom(1));
    driver.send(&[6, 0, 0, 0, 9, 9]).unwrap();
    assert_eq!(set_of(&ev.wait(Some(Duration::ZERO)).unwrap()), [6]);
}

#[test]
fn wait_times_out_with_nothing_fired() {
    let (mut ev, _driver) = fake();
    let t = Instant::now();
    assert!(ev.wait(Some(Duration::from_millis(30))).unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(29));
    assert!(ev.wait(Some(Duration::ZERO)).unwrap().is_empty());
}

#[test]
fn a_registered_fd_wakes_wait_while_readable_and_not_after_unregistering() {
    let (mut ev, _driver) = fake();
    let (mine, mut peer) = UnixStream::pair().unwrap();
    let fp = ev.register_fd(mine.as_fd()).unwrap();
    assert!(fp.port().get() >= FIRST_PSEUDO_PORT);
    assert!(ev.wait(Some(Duration::ZERO)).unwrap().is_empty());
    peer.write_all(b"x").unwrap();
    let set = ev.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(set_of(&set), [fp.port().get()]);
    assert!(
        ev.wait(Some(Duration::ZERO)).unwrap().contains(fp.port()),
        "level-triggered until drained"
    );
    (&mine).read_exact(&mut [0u8; 1]).unwrap();
    assert!(ev.wait(Some(Duration::ZERO)).unwrap().is_empty());
    peer.write_all(b"y").unwrap();
    drop(fp);
    assert!(ev.wait(Some(Duration::from_millis(20))).unwrap().is_empty());
}

#[test]
fn pseudo_ports_run_out_cleanly() {
    let ev = DomEvents::fd_only();
    let (s, _p) = UnixStream::pair().unwrap();
    let held: Vec<FdPort> = (FIRST_PSEUDO_PORT..MAX_PORTS)
        .map(|_| ev.register_fd(s.as_fd()).unwrap())
        .collect();
    assert_eq!(
        ev.register_fd(s.as_fd()).unwrap_err(),
        PlatformError::Full {
            what: "fd pseudo-ports"
        }
    );
    let freed = held[3].port();
    drop(held);
    assert_eq!(
        ev.register_fd(s.as_fd()).unwrap().port(),
        EvtchnPort::new(FIRST_PSEUDO_PORT).unwrap()
    );
    assert!(freed.get() > FIRST_PSEUDO_PORT);
}

#[test]
fn an_fd_only_handle_refuses_event_channels_and_still_waits() {
    let mut ev = DomEvents::fd_only();
    assert!(matches!(
        ev.alloc_unbound(dom(1)),
        Err(PlatformError::Unsupported(_))
    ));
    assert!(matches!(
        ev.bind_interdomain(dom(1), EvtchnPort::new(3).unwrap()),
        Err(PlatformError::Unsupported(_))
    ));
    let t = Instant::now();
    assert!(ev.wait(Some(Duration::from_millis(10))).unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(9));
}

#[test]
fn a_driver_port_in_the_pseudo_range_is_refused() {
    let (ev, _driver) = fake();
    for raw in [0, FIRST_PSEUDO_PORT, MAX_PORTS, u32::MAX] {
        assert!(matches!(
            ev.adopt(raw, dom(2)),
            Err(PlatformError::Full { .. })
        ));
    }
    let p = ev.adopt(12, dom(2)).unwrap();
    assert_eq!((p.port().get(), p.remote()), (12, dom(2)));
    assert!(ev.inner.ports().contains_key(&12));
    drop(p);
    assert!(
        !ev.inner.ports().contains_key(&12),
        "dropping forgets the port"
    );
}

#[test]
fn bind_errors_name_what_failed() {
    let e = |n| io::Error::from_raw_os_error(n);
    let p = EvtchnPort::new(9).unwrap();
    assert_eq!(
        bind_error(&e(libc::ESRCH), dom(4), Some(p)),
        PlatformError::NoSuchDomain(dom(4))
    );
    assert_eq!(
        bind_error(&e(libc::EINVAL), dom(4), Some(p)),
        PlatformError::BadPort(p)
    );
    assert!(matches!(
        bind_error(&e(libc::ENOSPC), dom(4), None),
        PlatformError::Full { .. }
    ));
    assert!(matches!(
        bind_error(&e(libc::EPERM), dom(4), None),
        PlatformError::Os { .. }
    ));
}
