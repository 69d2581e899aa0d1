//! Trip strategy 1: consecutive failures (seed 002's rule, pybreaker's `fail_max`).
//!
//! Cheap and quick for a dead backend: three calls and the circuit is open. It misses a
//! backend failing every other call, which is what the rate window in [`super::rate`] is for.

/// Counts failures since the last success.
#[derive(Debug, Clone, Default)]
pub(super) struct ConsecutiveFailures {
    count: u32,
}

impl ConsecutiveFailures {
    /// Records one call that counted (not an ignored one): a success resets the count.
    pub(super) fn record(&mut self, failed: bool) {
        self.count = if failed {
            self.count.saturating_add(1)
        } else {
            0
        };
    }

    /// Whether the count has reached `threshold`; a threshold of 0 never trips.
    pub(super) fn tripped(&self, threshold: u32) -> bool {
        threshold > 0 && self.count >= threshold
    }

    /// Failures since the last success.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Forgets the history (when the circuit closes again).
    pub(super) fn reset(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_reached_by_consecutive_failures_only() {
        let mut counter = ConsecutiveFailures::default();
        counter.record(true);
        counter.record(true);
        counter.record(false);
        counter.record(true);
        counter.record(true);
        assert!(
            !counter.tripped(3),
            "the success in between reset the count"
        );
        counter.record(true);
        assert!(counter.tripped(3));
        assert_eq!(counter.count(), 3);
    }

    #[test]
    fn a_threshold_of_zero_never_trips() {
        let mut counter = ConsecutiveFailures::default();
        for _ in 0..100 {
            counter.record(true);
        }
        assert!(!counter.tripped(0));
    }
}
