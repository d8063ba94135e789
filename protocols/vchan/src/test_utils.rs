//! In-memory test peers (feature `test-utils`): a counting [`TestNotify`], and a fake hub of
//! grants, event channels and a xenstore shared by several fake domains.

use std::sync::atomic::{AtomicUsize, Ordering as AtOrd};
use std::sync::Arc;

use platform_api::{Notify, PlatformError};

/// A notifier that counts notifications; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct TestNotify {
    count: Arc<AtomicUsize>,
}

impl TestNotify {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }
    /// Notifications sent so far.
    pub fn count(&self) -> usize {
        self.count.load(AtOrd::SeqCst)
    }
    /// Returns the count and resets it to 0.
    pub fn take(&self) -> usize {
        self.count.swap(0, AtOrd::SeqCst)
    }
}

impl Notify for TestNotify {
    fn notify(&self) -> Result<(), PlatformError> {
        self.count.fetch_add(1, AtOrd::SeqCst);
        Ok(())
    }
}
