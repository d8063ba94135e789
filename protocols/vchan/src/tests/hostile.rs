//! A hostile peer writing the shared page: each broken rule gives a typed, sticky error.

use platform_api::{HeapMem, Ordering::SeqCst, SharedMem, PAGE_SIZE};

use super::pair::{pair, server};
use crate::layout::{field, Offer};
use crate::test_utils::TestNotify;
use crate::{Client, Error, Geometry, LayoutError, PeerError, Ring};

fn page_with_orders(left: u16, right: u16) -> HeapMem {
    let ctrl = HeapMem::new(PAGE_SIZE);
    ctrl.store_u16(field::LEFT_ORDER.start, left, SeqCst)
        .unwrap();
    ctrl.store_u16(field::RIGHT_ORDER.start, right, SeqCst)
        .unwrap();
    ctrl
}

#[test]
fn client_refuses_order_below_10() {
    assert_eq!(
        Offer::read(&page_with_orders(9, 12)),
        Err(LayoutError::BadOrder {
            ring: Ring::Left,
            order: 9
        })
    );
    assert_eq!(
        Offer::read(&page_with_orders(12, 0)),
        Err(LayoutError::BadOrder {
            ring: Ring::Right,
            order: 0
        })
    );
}

#[test]
fn client_refuses_order_above_20() {
    assert_eq!(
        Offer::read(&page_with_orders(21, 12)),
        Err(LayoutError::BadOrder {
            ring: Ring::Left,
            order: 21
        })
    );
    assert!(matches!(
        Offer::read(&page_with_orders(12, 0xFFFF)),
        Err(LayoutError::BadOrder { .. })
    ));
}

#[test]
fn client_refuses_equal_in_page_orders() {
    assert_eq!(
        Offer::read(&page_with_orders(11, 11)),
        Err(LayoutError::SameInPageOrder { order: 11 })
    );
    assert_eq!(
        Offer::read(&page_with_orders(10, 10)),
        Err(LayoutError::SameInPageOrder { order: 10 })
    );
}

#[test]
fn client_refuses_grants_overflowing_their_slots() {
    assert_eq!(
        Offer::read(&page_with_orders(20, 10)),
        Err(LayoutError::TooManyGrants {
            needed: 256,
            slots: 250
        })
    );
}

#[test]
fn client_refuses_short_control_page() {
    assert_eq!(
        Offer::read(&HeapMem::new(100)),
        Err(LayoutError::ControlPageTooSmall { size: 100 })
    );
}

#[test]
fn client_refuses_ring_memory_not_matching_orders() {
    let (_s, _, ctrl, lp, _rp) = server(12, 13);
    let offer = Offer::read(&ctrl).unwrap();
    let short = Some(HeapMem::new(PAGE_SIZE));
    let e = Client::attach(ctrl, &offer, lp, short, TestNotify::new()).unwrap_err();
    assert_eq!(
        e,
        Error::Layout(LayoutError::RingMem {
            ring: Ring::Right,
            needed: 8192,
            given: 4096
        })
    );
}

#[test]
fn orders_rewritten_after_attach_are_ignored() {
    let (mut s, mut c, _, _) = pair(12, 12);
    let ctrl = c.control_page().clone();
    ctrl.store_u16(field::LEFT_ORDER.start, 20, SeqCst).unwrap();
    ctrl.store_u16(field::RIGHT_ORDER.start, 3, SeqCst).unwrap();
    assert_eq!(c.write(&[1u8; 5000]).unwrap(), 4096);
    let mut buf = [0u8; 8192];
    assert_eq!(s.read(&mut buf).unwrap(), 4096);
    assert_eq!(c.geometry(), Geometry::new(12, 12).unwrap());
}

#[test]
fn prod_minus_cons_above_size_breaks_reader_sticky() {
    let (mut s, mut c, _, _) = pair(10, 11);
    let ctrl = s.control_page().clone();
    c.write(b"abc").unwrap();
    ctrl.store_u32(field::LEFT_PROD.start, 1025, SeqCst)
        .unwrap();
    let want = Error::Peer(PeerError::BadIndex {
        ring: Ring::Left,
        in_flight: 1025,
        size: 1024,
    });
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Err(want.clone()));
    // Sticky: repairing the index does not revive the endpoint.
    ctrl.store_u32(field::LEFT_PROD.start, 3, SeqCst).unwrap();
    assert_eq!(s.read(&mut buf), Err(want.clone()));
    assert_eq!(s.write(b"x"), Err(want.clone()));
    assert_eq!(s.error(), Some(&want));
    assert!(!s.is_open());
}

#[test]
fn cons_ahead_of_prod_breaks_writer() {
    let (mut s, _c, _, _) = pair(12, 12);
    let ctrl = s.control_page().clone();
    ctrl.store_u32(field::RIGHT_CONS.start, 5, SeqCst).unwrap();
    let e = s.write(b"data").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Peer(PeerError::BadIndex {
                ring: Ring::Right,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn prod_far_behind_cons_breaks_reader() {
    let (_s, mut c, _, _) = pair(16, 16);
    c.control_page()
        .store_u32(field::RIGHT_PROD.start, u32::MAX, SeqCst)
        .unwrap();
    let mut buf = [0u8; 4];
    assert!(matches!(
        c.read(&mut buf),
        Err(Error::Peer(PeerError::BadIndex {
            in_flight: u32::MAX,
            ..
        }))
    ));
}

#[test]
fn live_byte_garbage_refused() {
    let (mut s, mut c, _, _) = pair(11, 10);
    s.control_page()
        .store_u8(field::CLI_LIVE, 7, SeqCst)
        .unwrap();
    let want = Error::Peer(PeerError::BadLive { value: 7 });
    assert_eq!(s.read(&mut [0u8; 4]), Err(want.clone()));
    assert!(!s.is_open());
    assert_eq!(s.is_connected(), Err(want));
    c.control_page()
        .store_u8(field::SRV_LIVE, 0xFF, SeqCst)
        .unwrap();
    assert_eq!(
        c.write(b"x"),
        Err(Error::Peer(PeerError::BadLive { value: 0xFF }))
    );
}

#[test]
fn peer_clearing_our_notify_byte_only_costs_wakeups() {
    let (mut s, mut c, sn, _) = pair(12, 12);
    let ctrl = s.control_page().clone();
    for _ in 0..100 {
        ctrl.store_u8(field::SRV_NOTIFY, 0xFF, SeqCst).unwrap();
        ctrl.store_u8(field::CLI_NOTIFY, 0xFF, SeqCst).unwrap();
        c.write(b"ab").unwrap();
        let mut b = [0u8; 2];
        assert_eq!(s.read(&mut b).unwrap(), 2);
        assert_eq!(&b, b"ab");
    }
    assert!(sn.count() <= 100);
}

#[test]
fn server_refuses_grant_list_not_matching_orders() {
    let g = Geometry::new(12, 13).unwrap();
    let e = crate::Server::new(
        HeapMem::new(PAGE_SIZE),
        g,
        Some(HeapMem::new(4096)),
        Some(HeapMem::new(8192)),
        &[platform_api::GrantRef(1)],
        TestNotify::new(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::GrantCount {
            given: 1,
            needed: 3
        }
    );
}
