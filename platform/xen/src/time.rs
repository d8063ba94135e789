//! Xen's PV clock: system time from a `vcpu_time_info` record and the TSC, and wall time from
//! shared_info's `wc_*` fields.
#![forbid(unsafe_code)]

use crate::abi::VcpuTimeInfo;

impl VcpuTimeInfo {
    /// Xen system time (ns since the host booted) at TSC value `tsc`.
    ///
    /// `delta = tsc - tsc_timestamp`, shifted by `tsc_shift`, times the 32.32 multiplier. The
    /// shift and product are taken in 128 bits so nothing overflows; a TSC behind the record gives the
    /// record's own time rather than going backwards.
    pub fn system_time_at(&self, tsc: u64) -> u64 {
        let delta = u128::from(tsc.saturating_sub(self.tsc_timestamp));
        let shift = u32::from(self.tsc_shift.unsigned_abs());
        let delta = if self.tsc_shift >= 0 {
            delta << shift
        } else {
            delta >> shift
        };
        let scaled = (delta * u128::from(self.tsc_to_system_mul)) >> 32;
        self.system_time
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// Whether Xen was updating the record while it was copied (odd version): copy again.
    pub fn in_update(&self) -> bool {
        self.version & 1 == 1
    }
}

/// Wall-clock seconds and nanoseconds at Xen system time zero (`wc_sec`, `wc_sec_hi`, `wc_nsec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WallClock {
    /// Seconds since the epoch.
    pub sec: u64,
    /// Nanoseconds.
    pub nsec: u32,
}

impl WallClock {
    /// From shared_info's fields.
    pub fn new(sec_lo: u32, sec_hi: u32, nsec: u32) -> Self {
        Self {
            sec: (u64::from(sec_hi) << 32) | u64::from(sec_lo),
            nsec,
        }
    }

    /// Nanoseconds since the epoch at system time `now_ns`.
    pub fn unix_nanos(&self, now_ns: u64) -> u128 {
        u128::from(self.sec) * 1_000_000_000 + u128::from(self.nsec) + u128::from(now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_vectors::load;

    #[test]
    fn vector_time_record_scales() {
        let vf = load("boot.json");
        let v = vf.get("vcpu_time_info");
        let t = <VcpuTimeInfo as crate::abi::Wire>::decode(&v.bytes()).unwrap();
        assert_eq!(t.system_time_at(t.tsc_timestamp), t.system_time);
        assert!(!t.in_update() || v.u64("version") % 2 == 1);
    }

    #[test]
    fn one_ghz_tsc_is_one_ns_per_tick() {
        // mul = 2^31 with shift 1 is 1.0: a 1 GHz TSC.
        let t = VcpuTimeInfo {
            tsc_timestamp: 1000,
            system_time: 5,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            ..Default::default()
        };
        assert_eq!(t.system_time_at(1000 + 12345), 5 + 12345);
        let half = VcpuTimeInfo {
            tsc_shift: -1,
            tsc_to_system_mul: 1 << 31,
            ..t
        };
        assert_eq!(half.system_time_at(1000 + 4000), 5 + 1000);
        assert_eq!(
            t.system_time_at(10),
            5,
            "TSC behind the record does not go back"
        );
    }

    #[test]
    fn wall_clock_from_vector() {
        let vf = load("boot.json");
        let v = vf.get("shared_info");
        let w = WallClock::new(
            v.u64("wc_sec") as u32,
            v.u64("wc_sec_hi") as u32,
            v.u64("wc_nsec") as u32,
        );
        assert_eq!(w.unix_nanos(0), 1727111859 * 1_000_000_000 + 123456789);
    }

    proptest! {
        #[test]
        fn system_time_is_monotonic(ts: u64, st in 0u64..1 << 62, mul: u32, shift in -8i8..8, a: u64, b: u64) {
            let t = VcpuTimeInfo { tsc_timestamp: ts, system_time: st, tsc_to_system_mul: mul, tsc_shift: shift, ..Default::default() };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(t.system_time_at(lo) <= t.system_time_at(hi));
        }
    }
}
