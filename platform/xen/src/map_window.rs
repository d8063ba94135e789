//! Where PVH maps a peer's grants: page slots of a guest-physical window no RAM uses, handed
//! out as contiguous runs (first fit) and merged back when unmapped.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// Free runs `(first page, pages)`, sorted and never adjacent (merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapWindow {
    free: Vec<(u64, u64)>,
    pages: u64,
}

impl MapWindow {
    /// A window of `pages` free slots, numbered from 0.
    pub fn new(pages: u64) -> Self {
        Self {
            free: if pages > 0 {
                alloc::vec![(0, pages)]
            } else {
                Vec::new()
            },
            pages,
        }
    }

    /// Slots free in total.
    pub fn free_pages(&self) -> u64 {
        self.free.iter().map(|(_, n)| n).sum()
    }

    /// `n` contiguous slots, first fit; `None` when no run is long enough (or `n` is 0).
    pub fn alloc(&mut self, n: u64) -> Option<u64> {
        if n == 0 {
            return None;
        }
        let i = self.free.iter().position(|&(_, len)| len >= n)?;
        let (start, len) = self.free[i];
        if len == n {
            self.free.remove(i);
        } else {
            self.free[i] = (start + n, len - n);
        }
        Some(start)
    }

    /// Returns `n` slots from `start`. Slots outside the window or already free are refused
    /// (false) and nothing changes: a double free must not hand one slot out twice.
    pub fn free(&mut self, start: u64, n: u64) -> bool {
        let Some(end) = start.checked_add(n) else {
            return false;
        };
        if n == 0 || end > self.pages {
            return false;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        let overlaps_prev = i > 0 && self.free[i - 1].0 + self.free[i - 1].1 > start;
        let overlaps_next = i < self.free.len() && self.free[i].0 < end;
        if overlaps_prev || overlaps_next {
            return false;
        }
        self.free.insert(i, (start, n));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_fit_and_merge() {
        let mut w = MapWindow::new(16);
        assert_eq!(w.alloc(4), Some(0));
        assert_eq!(w.alloc(4), Some(4));
        assert_eq!(w.alloc(9), None, "only 8 left");
        assert!(w.free(0, 4));
        assert_eq!(w.alloc(2), Some(0));
        assert!(w.free(4, 4));
        assert!(w.free(0, 2));
        assert_eq!(w.free_pages(), 16);
        assert_eq!(w.alloc(16), Some(0), "merged back into one run");
        assert_eq!(w.alloc(0), None);
    }

    #[test]
    fn double_free_and_out_of_window_refused() {
        let mut w = MapWindow::new(8);
        let a = w.alloc(2).unwrap();
        assert!(w.free(a, 2));
        assert!(!w.free(a, 2), "double free");
        assert!(!w.free(7, 2), "past the window");
        assert!(!w.free(u64::MAX, 2), "overflow");
        assert_eq!(w.free_pages(), 8);
    }

    proptest! {
        #[test]
        fn runs_never_overlap(ops in proptest::collection::vec((1u64..6, any::<bool>()), 1..100)) {
            let mut w = MapWindow::new(64);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (n, free) in ops {
                if free && !live.is_empty() {
                    let (s, k) = live.remove((n as usize) % live.len());
                    prop_assert!(w.free(s, k));
                } else if let Some(s) = w.alloc(n) {
                    prop_assert!(s + n <= 64);
                    for &(t, k) in &live {
                        prop_assert!(s + n <= t || t + k <= s);
                    }
                    live.push((s, n));
                }
                let used: u64 = live.iter().map(|(_, k)| k).sum();
                prop_assert_eq!(w.free_pages() + used, 64);
            }
        }
    }
}
