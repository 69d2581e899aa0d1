//! Turning runs into reports: a table for people, JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::books::BooksReport;
use crate::http_load::{HttpLoad, HttpRun};
use crate::messages::MessagesReport;
use crate::schedule::Schedule;
use crate::stats::Percentiles;
use crate::verify::Verdict;

/// One second of an `http` run.
#[derive(Debug, Clone, Serialize)]
pub struct SecondPoint {
    /// Seconds since the start.
    pub second: usize,
    /// 2xx answers completed in this second.
    pub ok: u64,
    /// Other answers and errors in this second.
    pub failed: u64,
    /// Latency percentiles of this second, milliseconds.
    pub latency_ms: Percentiles,
}

/// The report of an `http` run.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    /// Target URL.
    pub url: String,
    /// Method.
    pub method: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Requested rate (open loop).
    pub rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
    /// Requests that ended.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Requests per second (every outcome).
    pub requests_per_second: f64,
    /// 2xx answers per second (goodput).
    pub ok_per_second: f64,
    /// Latency percentiles over the run, milliseconds; from the intended send time when open.
    pub latency_ms: Percentiles,
    /// The same for 2xx answers only (the accepted requests).
    pub ok_latency_ms: Percentiles,
    /// The same for every other outcome (shed or failed requests).
    pub failed_latency_ms: Percentiles,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The per-second series.
    pub series: Vec<SecondPoint>,
    /// Wall clock of second 0, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

impl HttpReport {
    /// Summarises a run.
    pub fn new(load: &HttpLoad, run: &HttpRun) -> Self {
        let seconds = run.elapsed.as_secs_f64().max(1e-9);
        let (mode, rate) = match load.schedule {
            Schedule::Closed => ("closed", None),
            Schedule::Open { rate } => ("open", Some(rate)),
        };
        Self {
            url: load.url.to_string(),
            method: load.method.to_string(),
            mode,
            rate,
            connections: load.connections,
            elapsed_seconds: seconds,
            requests: run.stats.total(),
            ok: run.stats.ok(),
            requests_per_second: run.stats.total() as f64 / seconds,
            ok_per_second: run.stats.ok() as f64 / seconds,
            latency_ms: Percentiles::of(&run.stats.latency),
            ok_latency_ms: Percentiles::of(&run.stats.ok_latency),
            failed_latency_ms: Percentiles::of(&run.stats.failed_latency),
            statuses: run.stats.statuses.clone(),
            errors: run.stats.errors.clone(),
            series: run
                .stats
                .seconds
                .iter()
                .enumerate()
                .map(|(second, bucket)| SecondPoint {
                    second,
                    ok: bucket.ok,
                    failed: bucket.failed,
                    latency_ms: Percentiles::of(&bucket.latency),
                })
                .collect(),
            started_unix_ms: run.started_unix_ms,
        }
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let pacing = match self.rate {
            Some(rate) => {
                format!("open loop at {rate} req/s (latency from the intended send time)")
            }
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "{} {}  {}, {} connections",
            self.method, self.url, pacing, self.connections
        );
        let _ = writeln!(out);
        row(
            &mut out,
            "requests",
            &format!("{} in {:.2} s", self.requests, self.elapsed_seconds),
        );
        row(
            &mut out,
            "throughput",
            &format!("{:.1} req/s", self.requests_per_second),
        );
        row(
            &mut out,
            "goodput (2xx)",
            &format!("{:.1} req/s", self.ok_per_second),
        );
        outcome_rows(&mut out, &self.latency_ms, &self.statuses, &self.errors);
        out
    }
}

impl MessagesReport {
    /// The table people read.
    pub fn table(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {}: {}",
            self.run_id,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(out);
        row(&mut out, "sent", &v.sent.to_string());
        row(&mut out, "acknowledged", &v.acknowledged.to_string());
        row(&mut out, "found", &v.found.to_string());
        row(&mut out, "lost", &v.lost.to_string());
        row(&mut out, "duplicated", &v.duplicated.to_string());
        row(&mut out, "wrong id", &v.wrong_id.to_string());
        row(&mut out, "out of order", &v.out_of_order.to_string());
        row(
            &mut out,
            "unacked but present",
            &v.unacknowledged_present.to_string(),
        );
        books_rows(&mut out, &self.books, v);
        row(&mut out, "attempts", &self.attempts.to_string());
        if let Some(rate) = self.rate {
            row(&mut out, "rate", &format!("{rate} messages/s (open loop)"));
        }
        row(
            &mut out,
            "send time",
            &format!("{:.2} s", self.send_seconds),
        );
        row(
            &mut out,
            "acknowledged/s",
            &format!("{:.1}", self.acknowledged_per_second),
        );
        outcome_rows(&mut out, &self.latency_ms, &self.statuses, &self.errors);
        for text in &v.lost_examples {
            row(&mut out, "lost e.g.", text);
        }
        for text in &v.duplicated_examples {
            row(&mut out, "duplicated e.g.", text);
        }
        for text in &v.misplaced_examples {
            row(&mut out, "misplaced e.g.", text);
        }
        out
    }
}

/// Most troubled books named in the table (the JSON lists them all).
const TROUBLED_BOOKS_SHOWN: usize = 10;

/// The books rows, for named books only: a default-book run's table is as it was before books.
fn books_rows(out: &mut String, books: &BooksReport, verdict: &Verdict) {
    let Some(prefix) = &books.prefix else {
        return;
    };
    row(
        out,
        "books",
        &format!(
            "{} ({prefix}-0 .. {prefix}-{})",
            books.count,
            books.count - 1
        ),
    );
    row(
        out,
        "acked per book",
        &format!("{} .. {}", books.acknowledged_min, books.acknowledged_max),
    );
    row(out, "misplaced", &verdict.misplaced.to_string());
    let troubled: Vec<_> = books.per_book.iter().filter(|b| b.troubled()).collect();
    for book in troubled.iter().take(TROUBLED_BOOKS_SHOWN) {
        let figures = [
            ("lost", book.lost),
            ("duplicated", book.duplicated),
            ("wrong id", book.wrong_id),
            ("out of order", book.out_of_order),
        ];
        let problems: Vec<String> = figures
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        row(
            out,
            &format!("book {}", book.book.as_deref().unwrap_or("default")),
            &problems.join(", "),
        );
    }
    if troubled.len() > TROUBLED_BOOKS_SHOWN {
        row(
            out,
            "troubled books",
            &format!("{} (all in --json)", troubled.len()),
        );
    }
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "  {name:<20} {value}");
}

/// The latency percentiles, then the answers by status and the transport errors by kind.
fn outcome_rows(
    out: &mut String,
    latency: &Percentiles,
    statuses: &BTreeMap<u16, u64>,
    errors: &BTreeMap<String, u64>,
) {
    latency_rows(out, latency);
    for (status, count) in statuses {
        row(out, &format!("status {status}"), &count.to_string());
    }
    for (kind, count) in errors {
        row(out, &format!("error {kind}"), &count.to_string());
    }
}

fn latency_rows(out: &mut String, p: &Percentiles) {
    row(out, "latency p50", &format!("{:.3} ms", p.p50));
    row(out, "latency p90", &format!("{:.3} ms", p.p90));
    row(out, "latency p99", &format!("{:.3} ms", p.p99));
    row(out, "latency p99.9", &format!("{:.3} ms", p.p999));
    row(out, "latency max", &format!("{:.3} ms", p.max));
}
