//! The pressure policy as a pure function of readings: readiness with hysteresis on each
//! signal, the shed decision and its reason, and the adaptive concurrency limit.
//!
//! No clock, no I/O, no tokio: [`super::Pressure`] measures (the windows, the recent counts,
//! the runtime probe, memory) and asks; the unit tests below feed readings and check decisions.

use std::time::Duration;

use super::PressureArgs;
use super::signals::Counts;
use crate::window::WindowSnapshot;

/// Readiness comes back once p99.9 is this share of its threshold (hysteresis); a request
/// slower than this share of it counts as pressure in the recent buckets.
pub(super) const RECOVER_RATIO: f64 = 0.9;
/// Readiness failed on the refused share comes back once the share is this part of
/// `READINESS_SHED_RATIO` (hysteresis: a pod hovering at the threshold does not flap).
const SHED_RECOVER_RATIO: f64 = 0.5;
/// The smallest concurrency limit shedding goes down to.
pub(super) const MIN_LIMIT: u64 = 2;
/// The concurrency limit while not overloaded: none.
pub(super) const NO_LIMIT: u64 = u64::MAX;

/// Why requests are being shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Not overloaded.
    None = 0,
    /// Windowed p99.9 above `SHED_P999_MS`.
    Latency = 1,
    /// tokio scheduling delay above `RUNTIME_DELAY_SHED_MS`.
    Runtime = 2,
    /// Resident memory above `MAX_RSS_MB`.
    Memory = 3,
}

impl Reason {
    pub(super) fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Latency,
            2 => Self::Runtime,
            3 => Self::Memory,
            _ => Self::None,
        }
    }

    /// The label used in metrics and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Latency => "latency",
            Self::Runtime => "runtime",
            Self::Memory => "memory",
        }
    }
}

/// Which readiness signal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unready {
    /// Ready.
    No,
    /// The windowed own p99.9 (and the recent seconds) above `READINESS_P999_MS`.
    Latency,
    /// The recent refused share above `READINESS_SHED_RATIO`.
    Shedding,
}

/// The thresholds of [`PressureArgs`] the decisions compare readings against.
#[derive(Debug, Clone)]
pub(super) struct Controller {
    readiness_p999_secs: f64,
    shed_p999_secs: f64,
    min_samples: u64,
    shed_ratio: f64,
    shedding: bool,
    runtime_delay: Duration,
    max_rss_bytes: Option<u64>,
}

impl Controller {
    pub(super) fn new(args: &PressureArgs) -> Self {
        Self {
            readiness_p999_secs: args.readiness_p999_ms as f64 / 1e3,
            shed_p999_secs: args.shed_p999_ms as f64 / 1e3,
            min_samples: args.readiness_min_samples,
            shed_ratio: args.readiness_shed_ratio,
            shedding: args.shedding,
            runtime_delay: Duration::from_millis(args.runtime_delay_shed_ms),
            max_rss_bytes: (args.max_rss_mb > 0).then(|| args.max_rss_mb * 1024 * 1024),
        }
    }

    /// Readiness from the own-time window and the recent counts, with hysteresis on each
    /// signal: `was` is the previous verdict.
    pub(super) fn readiness(&self, own: WindowSnapshot, counts: Counts, was: Unready) -> Unready {
        let enough = own.samples >= self.min_samples;
        let threshold = self.readiness_p999_secs;
        // The recent seconds' own p99.9 is above the recovery point: more than one request in
        // a thousand was slower than it.
        let pressing = counts.slow.saturating_mul(1_000) > counts.answered;
        let latency = if was == Unready::Latency {
            enough && own.p999 > threshold * RECOVER_RATIO && counts.slow > 0
        } else {
            enough && own.p999 > threshold && pressing
        };
        let ratio = counts.refused_ratio();
        let limit = self.shed_ratio;
        let shedding = if was == Unready::Shedding {
            ratio > limit * SHED_RECOVER_RATIO
        } else {
            counts.answered >= self.min_samples && ratio > limit
        };
        if latency {
            Unready::Latency
        } else if shedding {
            Unready::Shedding
        } else {
            Unready::No
        }
    }

    /// Why to shed, if at all: the own-time window's p99.9, the runtime's worst scheduling
    /// delay of the last second, resident memory (in that order).
    pub(super) fn shed_reason(
        &self,
        own: WindowSnapshot,
        delay: Duration,
        rss: Option<u64>,
    ) -> Reason {
        if own.samples >= self.min_samples && own.p999 > self.shed_p999_secs {
            Reason::Latency
        } else if delay > self.runtime_delay {
            Reason::Runtime
        } else if self
            .max_rss_bytes
            .is_some_and(|max| rss.is_some_and(|rss| rss > max))
        {
            Reason::Memory
        } else {
            Reason::None
        }
    }

    /// The next concurrency limit: none without overload; a fifth under what was in flight
    /// while recent latency (`recent_p99`, seconds) is still too high or another signal sheds;
    /// a tenth more per tick once the limit works.
    pub(super) fn next_limit(&self, reason: Reason, limit: u64, peak: u64, recent_p99: f64) -> u64 {
        if reason == Reason::None {
            NO_LIMIT
        } else if reason != Reason::Latency || recent_p99 > self.shed_p999_secs {
            ((limit.min(peak) as f64 * 0.8) as u64).max(MIN_LIMIT)
        } else {
            let base = limit.min(peak.max(MIN_LIMIT));
            base.saturating_add((base / 10).max(1))
        }
    }

    /// `Some(reason)` when a request arriving with `in_flight` others should be shed.
    pub(super) fn admit(&self, reason: Reason, in_flight: u64, limit: u64) -> Option<Reason> {
        if !self.shedding || reason == Reason::None {
            return None;
        }
        (in_flight >= limit).then_some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pressure::settings::tests::args;

    fn controller() -> Controller {
        Controller::new(&args())
    }

    /// An own-time window of `samples` with this p99.9 (ms) and p99.
    fn own(samples: u64, p999_ms: f64) -> WindowSnapshot {
        WindowSnapshot {
            samples,
            p999: p999_ms / 1e3,
            p99: p999_ms / 1e3,
            ..WindowSnapshot::default()
        }
    }

    fn counts(answered: u64, refused: u64, slow: u64) -> Counts {
        Counts {
            answered,
            refused,
            slow,
        }
    }

    /// Each case: the own-time window, the recent counts, the previous verdict, the expected
    /// verdict and why.
    fn judge(cases: &[(WindowSnapshot, Counts, Unready, Unready, &str)]) {
        let c = controller();
        for &(own, counts, was, expected, why) in cases {
            assert_eq!(c.readiness(own, counts, was), expected, "{why}");
        }
    }

    #[test]
    fn latency_fails_readiness_only_with_enough_samples_and_recent_pressure() {
        let pressing = counts(100, 0, 1);
        judge(&[
            (
                own(9, 500.0),
                pressing,
                Unready::No,
                Unready::No,
                "9 samples",
            ),
            (
                own(10, 500.0),
                pressing,
                Unready::No,
                Unready::Latency,
                "10 samples",
            ),
            (
                own(10, 500.0),
                counts(1_000, 0, 1),
                Unready::No,
                Unready::No,
                "one slow request in a thousand is not pressure",
            ),
        ]);
    }

    #[test]
    fn latency_readiness_recovers_under_ninety_percent_or_once_nothing_is_slow() {
        let slow = counts(100, 0, 5);
        let was = Unready::Latency;
        judge(&[
            (own(10, 380.0), slow, was, Unready::Latency, "above 360 ms"),
            (own(10, 350.0), slow, was, Unready::No, "under 360 ms"),
            (
                own(10, 500.0),
                counts(100, 0, 0),
                was,
                Unready::No,
                "none slow",
            ),
        ]);
    }

    #[test]
    fn the_refused_share_fails_readiness_above_its_ratio_and_recovers_at_half() {
        let quiet = own(0, 0.0);
        let was = Unready::Shedding;
        judge(&[
            (
                quiet,
                counts(8, 5, 0),
                Unready::No,
                Unready::No,
                "8 requests",
            ),
            (
                quiet,
                counts(100, 11, 0),
                Unready::No,
                Unready::Shedding,
                "11 %",
            ),
            (
                quiet,
                counts(100, 7, 0),
                was,
                Unready::Shedding,
                "7 %, above 5 %",
            ),
            (quiet, counts(100, 3, 0), was, Unready::No, "3 %, under 5 %"),
        ]);
    }

    #[test]
    fn shedding_follows_latency_then_the_runtime_then_memory() {
        let mut settings = args();
        settings.runtime_delay_shed_ms = 250;
        settings.max_rss_mb = 1;
        let c = Controller::new(&settings);
        let calm = Duration::from_millis(10);
        let late = Duration::from_millis(300);
        assert_eq!(
            c.shed_reason(own(10, 900.0), late, Some(u64::MAX)),
            Reason::Latency
        );
        assert_eq!(c.shed_reason(own(9, 900.0), late, None), Reason::Runtime);
        assert_eq!(
            c.shed_reason(own(10, 10.0), calm, Some(2 << 20)),
            Reason::Memory
        );
        assert_eq!(
            c.shed_reason(own(10, 10.0), calm, Some(1 << 20)),
            Reason::None
        );
        assert_eq!(
            controller().shed_reason(own(10, 10.0), calm, Some(u64::MAX)),
            Reason::None
        );
    }

    #[test]
    fn the_limit_shrinks_by_a_fifth_while_slow_and_grows_by_a_tenth_once_it_works() {
        let c = controller();
        assert_eq!(c.next_limit(Reason::None, 8, 10, 0.0), NO_LIMIT);
        assert_eq!(c.next_limit(Reason::Latency, NO_LIMIT, 10, 0.9), 8);
        assert_eq!(c.next_limit(Reason::Runtime, 100, 50, 0.0), 40);
        assert_eq!(c.next_limit(Reason::Latency, 2, 2, 0.9), MIN_LIMIT);
        assert_eq!(c.next_limit(Reason::Latency, 40, 50, 0.1), 44);
        assert_eq!(
            c.next_limit(Reason::Latency, 40, 0, 0.1),
            3,
            "from the floor"
        );
    }

    #[test]
    fn only_an_overloaded_pod_at_its_limit_sheds_and_only_with_shedding_on() {
        let c = controller();
        assert_eq!(c.admit(Reason::None, 1_000, 2), None);
        assert_eq!(c.admit(Reason::Latency, 7, 8), None);
        assert_eq!(c.admit(Reason::Latency, 8, 8), Some(Reason::Latency));
        let mut off = args();
        off.shedding = false;
        assert_eq!(Controller::new(&off).admit(Reason::Memory, 8, 2), None);
    }
}
