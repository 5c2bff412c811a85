//! Candidates before files: while the submission lanes have a backlog (they keep taking full
//! batches), downloads run at a floor of a few at once, so that the two cores a worker may have go
//! to committing candidates; once the lanes catch up, downloads run at `attachments.concurrency`.
//! The candidates of a burst are then visible first, and their files follow.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long after the last full batch the lanes count as busy.
const BUSY_FOR: Duration = Duration::from_millis(500);

/// Whether the submission lanes are behind.
pub struct Backlog {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last full batch (0: never).
    last_full: AtomicU64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog { epoch: Instant::now(), last_full: AtomicU64::new(0) }
    }
}

impl Backlog {
    /// A lane took a full batch: the queue holds more.
    pub fn mark(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.last_full.store(now, Ordering::Relaxed);
    }

    pub fn busy(&self) -> bool {
        let last = self.last_full.load(Ordering::Relaxed);
        last > 0 && self.epoch.elapsed().saturating_sub(Duration::from_millis(last)) < BUSY_FOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_for_a_while_after_a_full_batch_only() {
        let b = Backlog::default();
        assert!(!b.busy(), "never marked");
        b.mark();
        assert!(b.busy());
        std::thread::sleep(BUSY_FOR + Duration::from_millis(50));
        assert!(!b.busy());
    }
}
