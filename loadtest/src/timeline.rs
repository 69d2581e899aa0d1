//! The `messages` mode's record of every attempt, its per-second timeline, and the `--trace`
//! CSV. A chaos run reads these to find the error rate and p99 while a fault lasted and the
//! moment everything succeeded again.
//!
//! Two views of each second, both bucketed by when things *ended*:
//! - **attempts**: every POST, retries included; what the servers answered;
//! - **messages**: each message once, when it was acknowledged or given up on, with its latency
//!   counted from when it was *due* (open loop, `--rate`) or first sent, retries and backoff
//!   included: what a user waiting for the acknowledgement saw.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::Percentiles;

/// Longest latency recorded exactly (one hour); longer values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("static histogram bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One POST attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Index of the message.
    pub message: usize,
    /// Attempt number, from 0.
    pub attempt: u32,
    /// Index of the replica it went to.
    pub replica: usize,
    /// When it was sent, since the start.
    pub sent: Duration,
    /// When it ended, since the start.
    pub done: Duration,
    /// `201`, `503`, ... or the transport error's kind (`connect`, `timeout`, `io`).
    pub outcome: String,
}

impl Attempt {
    /// True for a 2xx answer.
    pub fn ok(&self) -> bool {
        self.outcome.starts_with('2') && self.outcome.len() == 3
    }
}

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageEnd {
    /// When it was due (open loop) or first sent, since the start.
    pub due: Duration,
    /// When its last attempt ended, since the start.
    pub done: Duration,
    /// Whether an attempt was acknowledged.
    pub acknowledged: bool,
}

/// One second of a `messages` run.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSecond {
    /// Seconds since the start.
    pub second: usize,
    /// Attempts answered 2xx in this second.
    pub attempts_ok: u64,
    /// Attempts that failed (another status or no answer) in this second.
    pub attempts_failed: u64,
    /// Latency of this second's attempts, milliseconds.
    pub attempt_latency_ms: Percentiles,
    /// Messages acknowledged in this second.
    pub acknowledged: u64,
    /// Messages given up on (attempts exhausted or not retryable) in this second.
    pub gave_up: u64,
    /// Due-to-acknowledgement latency of this second's messages, milliseconds.
    pub message_latency_ms: Percentiles,
}

struct Bucket {
    attempts_ok: u64,
    attempts_failed: u64,
    attempt_latency: Histogram<u64>,
    acknowledged: u64,
    gave_up: u64,
    message_latency: Histogram<u64>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            attempts_ok: 0,
            attempts_failed: 0,
            attempt_latency: histogram(),
            acknowledged: 0,
            gave_up: 0,
            message_latency: histogram(),
        }
    }
}

fn bucket(buckets: &mut Vec<Bucket>, at: Duration) -> &mut Bucket {
    let second = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
    if second >= buckets.len() {
        buckets.resize_with(second.saturating_add(1), Bucket::default);
    }
    &mut buckets[second]
}

/// The per-second timeline of `attempts` and `messages`.
pub fn timeline(attempts: &[Attempt], messages: &[MessageEnd]) -> Vec<MessageSecond> {
    let mut buckets: Vec<Bucket> = Vec::new();
    for attempt in attempts {
        let at = bucket(&mut buckets, attempt.done);
        if attempt.ok() {
            at.attempts_ok += 1;
        } else {
            at.attempts_failed += 1;
        }
        at.attempt_latency
            .saturating_record(micros(attempt.done.saturating_sub(attempt.sent)));
    }
    for message in messages {
        let at = bucket(&mut buckets, message.done);
        if message.acknowledged {
            at.acknowledged += 1;
        } else {
            at.gave_up += 1;
        }
        at.message_latency
            .saturating_record(micros(message.done.saturating_sub(message.due)));
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(second, b)| MessageSecond {
            second,
            attempts_ok: b.attempts_ok,
            attempts_failed: b.attempts_failed,
            attempt_latency_ms: Percentiles::of(&b.attempt_latency),
            acknowledged: b.acknowledged,
            gave_up: b.gave_up,
            message_latency_ms: Percentiles::of(&b.message_latency),
        })
        .collect()
}

/// The header of the `--trace` CSV.
pub const TRACE_HEADER: &str = "message,attempt,replica,due_s,sent_s,done_s,latency_ms,outcome";

/// Every attempt as CSV, one line each, sorted by end time; `due` gives each message's due
/// time. Times are seconds since the start, latency in milliseconds.
pub fn trace_csv(attempts: &[Attempt], due: impl Fn(usize) -> Duration) -> String {
    let mut sorted: Vec<&Attempt> = attempts.iter().collect();
    sorted.sort_by_key(|a| (a.done, a.message, a.attempt));
    let mut out = String::with_capacity(64 * (sorted.len() + 1));
    let _ = writeln!(out, "{TRACE_HEADER}");
    for a in sorted {
        let _ = writeln!(
            out,
            "{},{},{},{:.6},{:.6},{:.6},{:.3},{}",
            a.message,
            a.attempt,
            a.replica,
            due(a.message).as_secs_f64(),
            a.sent.as_secs_f64(),
            a.done.as_secs_f64(),
            a.done.saturating_sub(a.sent).as_secs_f64() * 1_000.0,
            a.outcome
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn attempt(message: usize, attempt: u32, sent: u64, done: u64, outcome: &str) -> Attempt {
        Attempt {
            message,
            attempt,
            replica: attempt as usize % 3,
            sent: ms(sent),
            done: ms(done),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn attempts_and_messages_land_in_the_second_they_ended() {
        let attempts = [
            attempt(0, 0, 100, 110, "201"),
            attempt(1, 0, 900, 1_200, "connect"),
            attempt(1, 1, 1_250, 1_260, "200"),
            attempt(2, 0, 1_500, 2_100, "503"),
        ];
        let messages = [
            MessageEnd {
                due: ms(100),
                done: ms(110),
                acknowledged: true,
            },
            MessageEnd {
                due: ms(900),
                done: ms(1_260),
                acknowledged: true,
            },
            MessageEnd {
                due: ms(1_500),
                done: ms(2_100),
                acknowledged: false,
            },
        ];
        let series = timeline(&attempts, &messages);
        let counts: Vec<_> = series
            .iter()
            .map(|s| (s.attempts_ok, s.attempts_failed, s.acknowledged, s.gave_up))
            .collect();
        assert_eq!(counts, vec![(1, 0, 1, 0), (1, 1, 1, 0), (0, 1, 0, 1)]);
        // Message 1 waited from its due time, 900 ms, to its acknowledgement at 1,260 ms.
        let p99 = series[1].message_latency_ms.p99;
        assert!((p99 - 360.0).abs() < 4.0, "{p99}");
        // Its attempts took 300 ms and 10 ms.
        assert!((series[1].attempt_latency_ms.max - 300.0).abs() < 3.0);
    }

    #[test]
    fn only_a_2xx_status_is_ok() {
        for (outcome, ok) in [
            ("200", true),
            ("201", true),
            ("503", false),
            ("429", false),
            ("timeout", false),
            ("2", false),
        ] {
            assert_eq!(attempt(0, 0, 0, 1, outcome).ok(), ok, "{outcome}");
        }
    }

    #[test]
    fn the_trace_is_one_csv_line_per_attempt_by_end_time() {
        let csv = trace_csv(
            &[
                attempt(1, 0, 0, 500, "503"),
                attempt(0, 0, 0, 20, "201"),
                attempt(1, 1, 520, 530, "201"),
            ],
            |message| ms(message as u64 * 10),
        );
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], TRACE_HEADER);
        assert_eq!(lines[1], "0,0,0,0.000000,0.000000,0.020000,20.000,201");
        assert_eq!(lines[2], "1,0,0,0.010000,0.000000,0.500000,500.000,503");
        assert_eq!(lines[3], "1,1,1,0.010000,0.520000,0.530000,10.000,201");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn an_empty_run_has_an_empty_timeline() {
        assert!(timeline(&[], &[]).is_empty());
    }
}
