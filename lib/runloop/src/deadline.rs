//! When the loop must wake next: the earliest of the app's deadline and the loop's own timers,
//! and the wait timeout that gives, capped while the store cannot wake us.

use platform_api::{Duration, Instant};

/// The earliest of a set of optional deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Earliest(Option<Instant>);

impl Earliest {
    /// No deadline yet.
    pub const NONE: Self = Self(None);

    /// Takes `at` into account.
    pub fn add(&mut self, at: Option<Instant>) {
        self.0 = match (self.0, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The earliest deadline seen.
    pub fn get(self) -> Option<Instant> {
        self.0
    }

    /// How long to wait from `now`: zero once the deadline passed, at most `cap` (if any),
    /// `None` (forever) when there is neither deadline nor cap.
    pub fn timeout(self, now: Instant, cap: Option<Duration>) -> Option<Duration> {
        let until = self.0.map(|d| d.saturating_duration_since(now));
        match (until, cap) {
            (Some(u), Some(c)) => Some(u.min(c)),
            (u, c) => u.or(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_waits_forever_and_a_cap_bounds_it() {
        assert_eq!(Earliest::NONE.timeout(Instant(5), None), None);
        let cap = Duration::from_millis(100);
        assert_eq!(Earliest::NONE.timeout(Instant(5), Some(cap)), Some(cap));
    }

    #[test]
    fn past_deadline_is_zero_not_negative() {
        let mut e = Earliest::NONE;
        e.add(Some(Instant(10)));
        assert_eq!(e.timeout(Instant(50), None), Some(Duration::ZERO));
        assert_eq!(e.timeout(Instant(4), None), Some(Duration::from_nanos(6)));
    }

    proptest! {
        /// The deadline is the minimum of those given, and the timeout is never longer than
        /// either the time to it or the cap.
        #[test]
        fn earliest_is_min_and_timeout_bounded(
            ds in proptest::collection::vec(proptest::option::of(any::<u64>()), 0..8),
            now in any::<u64>(),
            cap in proptest::option::of(0u64..1_000_000_000),
        ) {
            let mut e = Earliest::NONE;
            for d in &ds {
                e.add(d.map(Instant));
            }
            let want = ds.iter().flatten().min().copied().map(Instant);
            prop_assert_eq!(e.get(), want);
            let cap = cap.map(Duration::from_nanos);
            let t = e.timeout(Instant(now), cap);
            match (want, cap) {
                (None, None) => prop_assert_eq!(t, None),
                _ => {
                    let t = t.unwrap();
                    if let Some(c) = cap { prop_assert!(t <= c); }
                    if let Some(w) = want {
                        prop_assert!(t <= Duration::from_nanos(w.0.saturating_sub(now)));
                    }
                }
            }
        }
    }
}
