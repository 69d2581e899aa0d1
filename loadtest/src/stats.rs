//! Latency and outcome statistics: HDR histograms (microseconds, 3 significant digits), status
//! codes, errors, and a per-second time series. Each worker records into its own [`Stats`]
//! without sharing; the workers' stats are merged once at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded exactly: one hour. Longer values are clamped (saturating).
const MAX_MICROS: u64 = 3_600_000_000;

/// An empty histogram of microseconds, 1 µs to one hour, with `sigfig` significant digits.
pub fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("static histogram bounds are valid")
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Latencies of the requests that completed in this second.
    pub latency: Histogram<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers and transport errors.
    pub failed: u64,
}

impl Default for Second {
    fn default() -> Self {
        // Two significant digits: a per-second plot needs no more, and it keeps memory small.
        Self {
            latency: histogram(2),
            ok: 0,
            failed: 0,
        }
    }
}

/// Everything measured by one worker, or by all of them once merged.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Every latency.
    pub latency: Histogram<u64>,
    /// Latencies of 2xx answers (under overload: the accepted requests).
    pub ok_latency: Histogram<u64>,
    /// Latencies of the other answers and errors (under overload: the shed requests).
    pub failed_latency: Histogram<u64>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors by kind (connect, timeout, io).
    pub errors: BTreeMap<String, u64>,
    /// Per-second series, indexed by seconds since the start.
    pub seconds: Vec<Second>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(3),
            ok_latency: histogram(3),
            failed_latency: histogram(3),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            seconds: Vec::new(),
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer: the connection failed, timed out, or broke.
    Error(&'static str),
}

impl Stats {
    /// Records one request that ended `at` after the start, `latency` after it was due.
    pub fn record(&mut self, at: Duration, latency: Duration, outcome: Outcome) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency.saturating_record(micros);
        let second = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
        if second >= self.seconds.len() {
            self.seconds
                .resize_with(second.saturating_add(1), Second::default);
        }
        let bucket = &mut self.seconds[second];
        bucket.latency.saturating_record(micros);
        match outcome {
            Outcome::Status(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    bucket.ok += 1;
                    self.ok_latency.saturating_record(micros);
                } else {
                    bucket.failed += 1;
                    self.failed_latency.saturating_record(micros);
                }
            }
            Outcome::Error(kind) => {
                *self.errors.entry(kind.to_owned()).or_default() += 1;
                bucket.failed += 1;
                self.failed_latency.saturating_record(micros);
            }
        }
    }

    /// Adds another worker's stats to these.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.ok_latency.add(&other.ok_latency);
        let _ = self.failed_latency.add(&other.failed_latency);
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        if other.seconds.len() > self.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            let _ = mine.latency.add(&theirs.latency);
            mine.ok += theirs.ok;
            mine.failed += theirs.failed;
        }
    }

    /// Requests that ended, answered or not.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    /// 2xx answers.
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The usual percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// Reads the percentiles off `histogram` (recorded in microseconds).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        // HDR with 3 significant digits: within 0.1 % (plus rounding at bucket edges).
        (actual - expected).abs() <= expected * 0.002
    }

    /// Records a 200 sent at second 0 that took `latency`.
    fn ok(stats: &mut Stats, latency: Duration) {
        stats.record(Duration::ZERO, latency, Outcome::Status(200));
    }

    #[test]
    fn percentiles_of_a_uniform_distribution_are_its_quantiles() {
        let mut stats = Stats::default();
        for micros in 1..=100_000_u64 {
            ok(&mut stats, Duration::from_micros(micros));
        }
        let p = Percentiles::of(&stats.latency);
        assert!(close(p.p50, 50.0), "{p:?}");
        assert!(close(p.p90, 90.0), "{p:?}");
        assert!(close(p.p99, 99.0), "{p:?}");
        assert!(close(p.p999, 99.9), "{p:?}");
        assert!(close(p.max, 100.0), "{p:?}");
    }

    #[test]
    fn a_single_outlier_shows_in_p999_only_when_it_is_above_one_in_a_thousand() {
        let mut stats = Stats::default();
        for _ in 0..9_990 {
            ok(&mut stats, Duration::from_millis(1));
        }
        for _ in 0..10 {
            ok(&mut stats, Duration::from_secs(1));
        }
        let p = Percentiles::of(&stats.latency);
        assert!(close(p.p99, 1.0), "{p:?}");
        assert!(close(p.p999, 1.0), "{p:?}");
        assert!(close(p.max, 1_000.0), "{p:?}");
    }

    #[test]
    fn outcomes_are_counted_by_status_error_and_second() {
        let mut a = Stats::default();
        a.record(
            Duration::from_millis(100),
            Duration::from_millis(1),
            Outcome::Status(200),
        );
        a.record(
            Duration::from_millis(1_500),
            Duration::from_millis(1),
            Outcome::Status(503),
        );
        let mut b = Stats::default();
        b.record(
            Duration::from_millis(2_100),
            Duration::from_millis(1),
            Outcome::Error("connect"),
        );
        a.merge(&b);
        assert_eq!(a.total(), 3);
        assert_eq!((a.ok_latency.len(), a.failed_latency.len()), (1, 2));
        assert_eq!(a.ok(), 1);
        assert_eq!(a.statuses.get(&503), Some(&1));
        assert_eq!(a.errors.get("connect"), Some(&1));
        let per_second: Vec<(u64, u64)> = a.seconds.iter().map(|s| (s.ok, s.failed)).collect();
        assert_eq!(per_second, vec![(1, 0), (0, 1), (0, 1)]);
    }

    #[test]
    fn an_empty_histogram_reads_as_zeros() {
        assert_eq!(Percentiles::of(&Stats::default().latency).max, 0.0);
    }
}
