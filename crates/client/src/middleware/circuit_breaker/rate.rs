//! Trip strategy 2: failure and slow-call rates over a count-based window (resilience4j's
//! `COUNT_BASED` sliding window).
//!
//! A ring buffer holds the outcome of the last `window` calls, with running counts of
//! failures and slow calls, so recording a call and reading a rate are O(1): the call that
//! falls out of the window is subtracted as the new one is added.

/// One recorded call.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    failed: bool,
    slow: bool,
}

/// The last `capacity` calls that counted (ignored outcomes never enter).
#[derive(Debug, Clone)]
pub(super) struct RateWindow {
    samples: Box<[Sample]>,
    /// Where the next sample goes; once full, also the oldest sample.
    next: usize,
    len: usize,
    failures: usize,
    slow: usize,
}

impl RateWindow {
    /// A window of the last `capacity` calls; 0 records nothing.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            samples: vec![Sample::default(); capacity].into_boxed_slice(),
            next: 0,
            len: 0,
            failures: 0,
            slow: 0,
        }
    }

    /// Records one call, evicting the oldest once the window is full.
    pub(super) fn record(&mut self, failed: bool, slow: bool) {
        let capacity = self.samples.len();
        let Some(slot) = self.samples.get_mut(self.next) else {
            return; // A zero-sized window: nothing to keep.
        };
        if self.len == capacity {
            // Invariant: the counts include every sample in the window, so this never wraps.
            self.failures -= usize::from(slot.failed);
            self.slow -= usize::from(slot.slow);
        } else {
            self.len += 1;
        }
        *slot = Sample { failed, slow };
        self.failures += usize::from(failed);
        self.slow += usize::from(slow);
        self.next = (self.next + 1) % capacity;
    }

    /// Calls in the window.
    pub(super) fn calls(&self) -> usize {
        self.len
    }

    /// Share of failures in the window, 0 when it is empty.
    pub(super) fn failure_rate(&self) -> f64 {
        share(self.failures, self.len)
    }

    /// Share of slow calls in the window, 0 when it is empty.
    pub(super) fn slow_rate(&self) -> f64 {
        share(self.slow, self.len)
    }

    /// Forgets every call (when the circuit closes again).
    pub(super) fn reset(&mut self) {
        self.next = 0;
        self.len = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_its_oldest_call_once_full() {
        let mut window = RateWindow::new(4);
        window.record(true, true);
        for _ in 0..3 {
            window.record(false, false);
        }
        assert_eq!(window.calls(), 4);
        assert_eq!(window.failure_rate(), 0.25);
        assert_eq!(window.slow_rate(), 0.25);

        window.record(false, false);
        assert_eq!(window.calls(), 4);
        assert_eq!(window.failure_rate(), 0.0, "the failure fell out");
        assert_eq!(window.slow_rate(), 0.0);
    }

    #[test]
    fn an_empty_window_has_no_failures_and_a_reset_empties_it() {
        let mut window = RateWindow::new(3);
        assert_eq!(window.failure_rate(), 0.0);
        window.record(true, false);
        window.reset();
        assert_eq!(window.calls(), 0);
        window.record(false, true);
        assert_eq!(window.failure_rate(), 0.0);
        assert_eq!(window.slow_rate(), 1.0);
    }

    #[test]
    fn counts_stay_exact_over_many_wraps() {
        let mut window = RateWindow::new(5);
        // Every third call fails: after wrapping many times the last five are
        // calls 995..1000, of which 996 and 999 fail.
        for call in 0..1000 {
            window.record(call % 3 == 0, false);
        }
        assert_eq!(window.failure_rate(), 2.0 / 5.0);
    }

    #[test]
    fn a_zero_sized_window_records_nothing() {
        let mut window = RateWindow::new(0);
        window.record(true, true);
        assert_eq!(window.calls(), 0);
    }
}
