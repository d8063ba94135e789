//! Property tests: stream integrity across u32 index wrap-around with random chunk sizes.

use alloc::vec::Vec;

use proptest::prelude::*;

use super::pair::pair;

const ORDERS: [(u16, u16); 6] = [(10, 11), (11, 10), (12, 12), (11, 13), (13, 12), (14, 10)];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn stream_survives_index_wrap(
        back in 0u32..20_000,
        which in 0usize..ORDERS.len(),
        writes in proptest::collection::vec(1usize..9000, 1..40),
        reads in proptest::collection::vec(1usize..9000, 1..40),
    ) {
        let (l, r) = ORDERS[which];
        let (mut s, mut c, _, _) = pair(l, r);
        let start = 0u32.wrapping_sub(back);
        s.core.restart_at(start);
        c.core.restart_at(start);
        let total: usize = writes.iter().sum();
        let data: Vec<u8> = (0..total).map(|i| (i as u8) ^ ((i >> 8) as u8)).collect();
        let (mut sent, mut got_c, mut got_s) = (0usize, Vec::new(), Vec::new());
        let (mut wi, mut ri, mut s_sent) = (0usize, 0usize, 0usize);
        let mut buf = alloc::vec![0u8; 9000];
        let mut idle = 0;
        while got_s.len() < total || got_c.len() < total {
            let w = writes[wi % writes.len()];
            wi += 1;
            let a = c.write(&data[sent..(sent + w).min(total)]).unwrap();
            sent += a;
            let b = s.write(&data[s_sent..(s_sent + w).min(total)]).unwrap();
            s_sent += b;
            let rd = reads[ri % reads.len()];
            ri += 1;
            let x = s.read(&mut buf[..rd]).unwrap();
            got_s.extend_from_slice(&buf[..x]);
            let y = c.read(&mut buf[..rd]).unwrap();
            got_c.extend_from_slice(&buf[..y]);
            idle = if a + b + x + y == 0 { idle + 1 } else { 0 };
            prop_assert!(idle < 3, "stalled");
        }
        prop_assert_eq!(&got_s[..], &data[..]);
        prop_assert_eq!(&got_c[..], &data[..]);
        prop_assert!(s.error().is_none() && c.error().is_none());
    }

    #[test]
    fn space_plus_ready_is_ring_size(
        back in 0u32..5000,
        chunks in proptest::collection::vec(0usize..3000, 1..20),
    ) {
        let (mut s, mut c, _, _) = pair(11, 12);
        let start = u32::MAX - back;
        s.core.restart_at(start);
        c.core.restart_at(start);
        for n in chunks {
            let w = c.write(&alloc::vec![7u8; n]).unwrap();
            prop_assert!(w <= n);
            let ready = s.data_ready().unwrap();
            let space = c.buffer_space().unwrap();
            prop_assert_eq!(ready + space, 2048);
            let mut b = alloc::vec![0u8; n / 2];
            s.read(&mut b).unwrap();
        }
    }
}
