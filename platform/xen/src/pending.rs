//! The 2-level event channel bitmaps: which of our ports are pending and unmasked, found by
//! scanning copies of shared_info's `evtchn_pending` and `evtchn_mask` words.
#![forbid(unsafe_code)]

use platform_api::{EvtchnPort, PortSet, MAX_PORTS};

/// Words in each bitmap (64 × 64 = 4096 ports).
pub const WORDS: usize = (MAX_PORTS / 64) as usize;

/// Word index and bit of a port.
pub fn word_bit(p: EvtchnPort) -> (usize, u64) {
    ((p.get() / 64) as usize, 1u64 << (p.get() % 64))
}

/// The ports of `interest` whose pending bit is set in `pending`, whatever the mask says: we
/// poll with delivery masked, so a masked port still counts once we asked for it.
pub fn pending_in(interest: &PortSet, pending: &[u64; WORDS]) -> PortSet {
    let mut out = PortSet::new();
    for p in interest.iter() {
        let (w, bit) = word_bit(p);
        if pending[w] & bit != 0 {
            out.insert(p);
        }
    }
    out
}

/// The pending and unmasked ports (what an upcall handler would serve), ascending.
pub fn pending_unmasked(pending: &[u64; WORDS], mask: &[u64; WORDS]) -> PortSet {
    let mut out = PortSet::new();
    for (w, (p, m)) in pending.iter().zip(mask.iter()).enumerate() {
        let mut bits = p & !m;
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            if let Ok(port) = EvtchnPort::new(w as u32 * 64 + b) {
                out.insert(port);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_vectors::load;

    fn words(v: &[u64]) -> [u64; WORDS] {
        let mut a = [0u64; WORDS];
        a.copy_from_slice(v);
        a
    }

    #[test]
    fn vector_shared_info_pending_bits() {
        let vf = load("boot.json");
        let v = vf.get("shared_info");
        let pending = words(&v.array("evtchn_pending"));
        let mask = words(&v.array("evtchn_mask"));
        // "ports 3 and 5 and 127 pending, 3 unmasked" in word 0; word 1 has no mask bits.
        let got: Vec<u32> = pending_unmasked(&pending, &mask)
            .iter()
            .map(|p| p.get())
            .collect();
        assert_eq!(got, [3, 127]);
        let mut interest = PortSet::new();
        for p in [5, 127, 200] {
            interest.insert(EvtchnPort::new(p).unwrap());
        }
        let got: Vec<u32> = pending_in(&interest, &pending)
            .iter()
            .map(|p| p.get())
            .collect();
        assert_eq!(got, [5, 127]);
        // And the raw bytes at the header's offsets say the same.
        let b = v.bytes();
        let w0 = u64::from_le_bytes(b[2048..2056].try_into().unwrap());
        assert_eq!(w0, pending[0]);
    }

    #[test]
    fn port_zero_never_reported() {
        let mut p = [0u64; WORDS];
        p[0] = 1;
        assert!(pending_unmasked(&p, &[0; WORDS]).is_empty());
    }

    proptest! {
        #[test]
        fn scan_matches_bit_by_bit(pw in proptest::collection::vec(any::<u64>(), WORDS), mw in proptest::collection::vec(any::<u64>(), WORDS)) {
            let (p, m) = (words(&pw), words(&mw));
            let got = pending_unmasked(&p, &m);
            for port in 1..MAX_PORTS {
                let e = EvtchnPort::new(port).unwrap();
                let (w, bit) = word_bit(e);
                prop_assert_eq!(got.contains(e), p[w] & bit != 0 && m[w] & bit == 0);
            }
        }
    }
}
