//! The `stream` mode's report: a table for people, JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Percentiles;
use crate::stream::StreamRun;
use crate::stream::tally::Tally;

/// The run's counts that are not deliveries.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Subscribers answered 200.
    pub opened: u64,
    /// Subscribers refused, by the cap (or status and code) that refused them.
    pub refused: BTreeMap<String, u64>,
    /// Subscribers that got no answer, by kind.
    pub failed_to_open: BTreeMap<String, u64>,
    /// Open subscribers whose stream ended before the run did, by kind.
    pub ended_early: BTreeMap<String, u64>,
    /// Seconds from the first connect to the last subscriber's answer.
    pub open_seconds: f64,
    /// Messages posted.
    pub posted: u64,
    /// Messages acknowledged (2xx with an id).
    pub acknowledged: u64,
    /// Messages not acknowledged, by the last attempt's outcome.
    pub post_failures: BTreeMap<String, u64>,
    /// Seconds spent posting.
    pub post_seconds: f64,
}

/// The backend's resident memory around opening the subscribers.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// Before the first subscriber, bytes.
    pub rss_before_bytes: Option<u64>,
    /// Once every subscriber had its answer, bytes.
    pub rss_after_bytes: Option<u64>,
    /// (after − before) / opened subscribers, bytes.
    pub per_subscriber_bytes: Option<u64>,
}

impl Memory {
    /// Memory per subscriber from the two readings.
    pub fn new(before: Option<u64>, after: Option<u64>, opened: u64) -> Self {
        let per_subscriber_bytes = match (before, after) {
            (Some(before), Some(after)) if opened > 0 => {
                Some(after.saturating_sub(before) / opened)
            }
            _ => None,
        };
        Self {
            rss_before_bytes: before,
            rss_after_bytes: after,
            per_subscriber_bytes,
        }
    }
}

/// CPU seconds spent while messages were posted and read (from the first POST to the last
/// subscriber's end): with every process on the same cores, which one was busy.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    /// Seconds of that phase.
    pub wall_seconds: f64,
    /// The backend's CPU seconds (with `--backend-pid`).
    pub backend_seconds: Option<f64>,
    /// The load tool's own CPU seconds.
    pub tool_seconds: Option<f64>,
}

/// The report of a `stream` run.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// The run's tag.
    pub run_id: String,
    /// No miss and no duplicate, with at least one subscriber open and one message acknowledged.
    pub passed: bool,
    /// Subscribers asked for.
    pub subscribers: u64,
    /// Subscribers answered 200.
    pub opened: u64,
    /// Refused subscribers by cap: `MAX_STREAMS_PER_CLIENT` (429), `MAX_STREAM_CLIENTS` (503),
    /// else `STATUS CODE`.
    pub refused: BTreeMap<String, u64>,
    /// Subscribers that got no answer, by kind (connect, timeout, bind, io).
    pub failed_to_open: BTreeMap<String, u64>,
    /// Open subscribers whose stream ended before the run did (their misses count).
    pub ended_early: BTreeMap<String, u64>,
    /// Source addresses used.
    pub source_addresses: usize,
    /// Seconds to open every subscriber.
    pub open_seconds: f64,
    /// Messages per second asked for.
    pub rate: f64,
    /// Messages posted.
    pub messages_posted: u64,
    /// Messages acknowledged.
    pub messages_acknowledged: u64,
    /// Messages not acknowledged, by outcome.
    pub post_failures: BTreeMap<String, u64>,
    /// Seconds spent posting.
    pub post_seconds: f64,
    /// Open subscribers × acknowledged messages.
    pub deliveries_expected: u64,
    /// Distinct deliveries read.
    pub deliveries_made: u64,
    /// Deliveries never read.
    pub misses: u64,
    /// Deliveries read more than once (the extra reads).
    pub duplicates: u64,
    /// Events of messages this run did not acknowledge.
    pub unexpected: u64,
    /// Subscribers that missed at least one message.
    pub subscribers_with_misses: u64,
    /// A few misses, `subscriber #i: message ID`.
    pub miss_examples: Vec<String>,
    /// Fan-out delay from the POST's answer to the event's read, milliseconds.
    pub fan_out_from_acknowledged_ms: Percentiles,
    /// Delay from the POST leaving to the event's read, milliseconds.
    pub fan_out_from_sent_ms: Percentiles,
    /// The backend's memory.
    pub memory: Memory,
    /// CPU time of the backend and of the tool while messages flowed.
    pub cpu: Cpu,
    /// What may have limited the run (the descriptor limit).
    pub warnings: Vec<String>,
}

impl StreamReport {
    /// Puts the run's parts together.
    pub fn new(
        run: &StreamRun,
        counts: Counts,
        tally: &Tally,
        (memory, cpu): (Memory, Cpu),
        warnings: Vec<String>,
    ) -> Self {
        Self {
            run_id: run.run_id.clone(),
            passed: tally.misses == 0
                && tally.duplicates == 0
                && counts.opened > 0
                && counts.acknowledged > 0,
            subscribers: run.subscribers as u64,
            opened: counts.opened,
            refused: counts.refused,
            failed_to_open: counts.failed_to_open,
            ended_early: counts.ended_early,
            source_addresses: run.sources.len(),
            open_seconds: counts.open_seconds,
            rate: run.rate,
            messages_posted: counts.posted,
            messages_acknowledged: counts.acknowledged,
            post_failures: counts.post_failures,
            post_seconds: counts.post_seconds,
            deliveries_expected: tally.expected,
            deliveries_made: tally.made,
            misses: tally.misses,
            duplicates: tally.duplicates,
            unexpected: tally.unexpected,
            subscribers_with_misses: tally.subscribers_with_misses,
            miss_examples: tally.miss_examples.clone(),
            fan_out_from_acknowledged_ms: Percentiles::of(&tally.from_acknowledged),
            fan_out_from_sent_ms: Percentiles::of(&tally.from_sent),
            memory,
            cpu,
            warnings,
        }
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "stream run {}: {verdict}\n", self.run_id);
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<26} {value}");
        };
        row(
            "subscribers",
            format!(
                "{} opened of {} from {} source addresses in {:.2} s",
                self.opened, self.subscribers, self.source_addresses, self.open_seconds
            ),
        );
        for (cap, count) in &self.refused {
            row(&format!("refused by {cap}"), count.to_string());
        }
        for (kind, count) in &self.failed_to_open {
            row(&format!("failed to open ({kind})"), count.to_string());
        }
        for (kind, count) in &self.ended_early {
            row(&format!("ended early ({kind})"), count.to_string());
        }
        row(
            "messages",
            format!(
                "{} acknowledged of {} posted at {}/s in {:.2} s",
                self.messages_acknowledged, self.messages_posted, self.rate, self.post_seconds
            ),
        );
        for (kind, count) in &self.post_failures {
            row(&format!("post failed ({kind})"), count.to_string());
        }
        row(
            "deliveries",
            format!(
                "{} made of {}",
                self.deliveries_made, self.deliveries_expected
            ),
        );
        row("misses", self.misses.to_string());
        row("duplicates", self.duplicates.to_string());
        row("unexpected events", self.unexpected.to_string());
        for example in &self.miss_examples {
            row("missed e.g.", example.clone());
        }
        for (name, p) in [
            ("fan-out from ack", &self.fan_out_from_acknowledged_ms),
            ("fan-out from send", &self.fan_out_from_sent_ms),
        ] {
            row(
                name,
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
                    p.p50, p.p99, p.p999, p.max
                ),
            );
        }
        let kib = |bytes: Option<u64>| {
            bytes.map_or("?".to_owned(), |b| format!("{:.1} KiB", b as f64 / 1024.0))
        };
        row(
            "backend RSS",
            format!(
                "{} before, {} after opening",
                kib(self.memory.rss_before_bytes),
                kib(self.memory.rss_after_bytes)
            ),
        );
        row(
            "memory per subscriber",
            kib(self.memory.per_subscriber_bytes),
        );
        let seconds = |cpu: Option<f64>| cpu.map_or("?".to_owned(), |s| format!("{s:.1} s"));
        row(
            "CPU while messages flowed",
            format!(
                "backend {}, load tool {}, in {:.1} s",
                seconds(self.cpu.backend_seconds),
                seconds(self.cpu.tool_seconds),
                self.cpu.wall_seconds
            ),
        );
        for warning in &self.warnings {
            row("warning", warning.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stream::tally::tally;

    fn run() -> StreamRun {
        StreamRun {
            base: "http://127.0.0.1:8080".to_owned(),
            target: "127.0.0.1:8080".parse().expect("an address"),
            host: "127.0.0.1:8080".to_owned(),
            sources: vec!["127.0.0.1".parse().expect("an address")],
            subscribers: 3,
            rate: 10.0,
            messages: 0,
            ramp: Duration::ZERO,
            connect_concurrency: 1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            post_timeout: Duration::from_secs(1),
            backend_pid: None,
            run_id: "t".to_owned(),
        }
    }

    #[test]
    fn the_table_names_refusals_by_cap_and_the_cpu_of_both_sides() {
        let counts = Counts {
            opened: 2,
            refused: BTreeMap::from([("MAX_STREAM_CLIENTS".to_owned(), 1)]),
            ..Counts::default()
        };
        let cpu = Cpu {
            wall_seconds: 1.0,
            backend_seconds: Some(0.5),
            tool_seconds: None,
        };
        let report = StreamReport::new(
            &run(),
            counts,
            &tally(&[], &[]),
            (Memory::new(Some(1_000), Some(3_048), 2), cpu),
            Vec::new(),
        );
        let table = report.table();
        assert!(!report.passed, "nothing was acknowledged");
        assert!(table.contains("refused by MAX_STREAM_CLIENTS"), "{table}");
        assert!(
            table.contains("memory per subscriber      1.0 KiB"),
            "{table}"
        );
        assert!(table.contains("backend 0.5 s, load tool ?"), "{table}");
    }
}
