//! The `messages` mode: seed 000's experiment done properly. Sends N distinct messages in
//! parallel (spread over replicas, and over books with `--books`), reads every book back, and
//! checks every acknowledged message is there exactly once, in its own book.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use guestbook_api::{MAX_PAGE_LIMIT, Message, MessagePage, NewMessageBody};
use serde::Serialize;

use crate::books::{Books, BooksReport};
use crate::stats::{Outcome, Percentiles, Stats};
use crate::timeline::{Attempt, MessageEnd, MessageSecond, timeline, trace_csv};
use crate::verify::{FoundMessage, SentMessage, Verdict, verify_books};

/// Read back in the largest pages the API serves.
const PAGE: usize = MAX_PAGE_LIMIT;

/// Most books read back at once: enough to hide a round trip per book, few enough that a
/// thousand-book read-back does not queue hundreds of full pages on the backend together.
const READ_BACK_CONCURRENCY: usize = 8;

/// What to send.
#[derive(Debug, Clone)]
pub struct MessagesRun {
    /// The backend (or client `/api` proxy) the guestbook is read back from.
    pub target: String,
    /// Where messages are posted, round-robin; the target when empty.
    pub replicas: Vec<String>,
    /// Messages to send.
    pub count: usize,
    /// Messages in flight at once.
    pub concurrency: usize,
    /// Send an Idempotency-Key and retry transient failures (503, 429, 502, 504, no answer)
    /// with it, on the next replica.
    pub idempotent_retries: bool,
    /// Attempts per message when retrying.
    pub max_attempts: u32,
    /// Tags every text, so runs sharing a guestbook do not mix.
    pub run_id: String,
    /// Clear the guestbook first with this admin token.
    pub clear_with: Option<String>,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Open loop: message *i* is due at `i / rate` seconds (still at most `concurrency` in
    /// flight); `None` sends each as soon as a slot is free.
    pub rate: Option<f64>,
    /// Write every attempt to this CSV file.
    pub trace: Option<PathBuf>,
    /// Keep no idle connection, so each attempt connects anew (and a per-connection balancer
    /// picks a backend for each).
    pub fresh_connections: bool,
    /// The books the messages are dealt over.
    pub books: Books,
}

/// The report of a messages run.
#[derive(Debug, Clone, Serialize)]
pub struct MessagesReport {
    /// The run's tag.
    pub run_id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds spent sending.
    pub send_seconds: f64,
    /// Acknowledged messages per second while sending.
    pub acknowledged_per_second: f64,
    /// POST attempts made (retries included).
    pub attempts: u64,
    /// POST latency percentiles (each attempt), milliseconds.
    pub latency_ms: Percentiles,
    /// Answers by status code, every attempt counted.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Transport errors by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The requested rate, messages per second (open loop).
    pub rate: Option<f64>,
    /// Wall-clock time of the start (second 0 of the series), milliseconds since the Unix
    /// epoch, to line the series up with events outside the tool.
    pub started_unix_ms: u64,
    /// The per-second timeline: attempts and messages by the second they ended.
    pub series: Vec<MessageSecond>,
    /// The books written to, with each one's figures.
    pub books: BooksReport,
}

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

impl MessagesRun {
    /// Runs the experiment. `progress` counts finished messages.
    pub async fn run(&self, progress: Option<Arc<AtomicU64>>) -> anyhow::Result<MessagesReport> {
        // reqwest is built with rustls but no provider of its own (the workspace's choice, for
        // the client's https:// backends); the tool speaks plain http:// only, yet reqwest sets
        // up TLS for every client, so it needs one installed. A no-op when one already is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .pool_max_idle_per_host(if self.fresh_connections {
                0
            } else {
                self.concurrency
            })
            .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
            .build()?;
        let target = trim(&self.target);
        if let Some(token) = &self.clear_with {
            for slot in 0..self.books.len() {
                let path = self.books.path(slot);
                let response = client
                    .delete(format!("{target}{path}"))
                    .bearer_auth(token)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "clearing {path} answered {}",
                    response.status()
                );
            }
        }
        let replicas: Vec<String> = if self.replicas.is_empty() {
            vec![target.clone()]
        } else {
            self.replicas.iter().map(|r| trim(r)).collect()
        };

        let started = Instant::now();
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let results: Vec<Sent> = futures_util::stream::iter(0..self.count)
            .map(|index| {
                let client = client.clone();
                let replicas = replicas.clone();
                let progress = progress.clone();
                async move {
                    if let Some(due) = self.due(index) {
                        tokio::time::sleep_until((started + due).into()).await;
                    }
                    let outcome = self.send_one(&client, &replicas, index, started).await;
                    if let Some(progress) = progress {
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let send_seconds = started.elapsed().as_secs_f64();

        let mut stats = Stats::default();
        let mut sent = Vec::with_capacity(results.len());
        let mut all_attempts = Vec::new();
        let mut ends = Vec::with_capacity(results.len());
        for result in results {
            for &(at, latency, outcome) in &result.outcomes {
                stats.record(at, latency, outcome);
            }
            ends.push(result.end);
            sent.push(result.message);
            all_attempts.extend(result.attempts);
        }
        let attempts = all_attempts.len() as u64;
        if let Some(path) = &self.trace {
            let csv = trace_csv(&all_attempts, |index| {
                self.due(index).unwrap_or_else(|| {
                    // Closed loop: a message is "due" when its first attempt left.
                    all_attempts
                        .iter()
                        .find(|a| a.message == index && a.attempt == 0)
                        .map_or(Duration::ZERO, |a| a.sent)
                })
            });
            std::fs::write(path, csv)
                .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
        }
        let series = timeline(&all_attempts, &ends);
        // In slot order (`buffered`, not `buffer_unordered`): the verdict pairs the n-th
        // read-back with book n.
        let read_back: Vec<Vec<FoundMessage>> = futures_util::stream::iter(0..self.books.len())
            .map(|slot| {
                let url = format!("{target}{}", self.books.path(slot));
                let client = client.clone();
                async move { read_all(&client, &url).await }
            })
            .buffered(self.concurrency.clamp(1, READ_BACK_CONCURRENCY))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let books_verdict = verify_books(&sent, &read_back);
        let books = BooksReport::new(&self.books, &books_verdict.per_book);
        let verdict = books_verdict.total;
        let passed = verdict.passed();
        Ok(MessagesReport {
            run_id: self.run_id.clone(),
            acknowledged_per_second: verdict.acknowledged as f64 / send_seconds.max(1e-9),
            passed,
            verdict,
            send_seconds,
            attempts,
            latency_ms: Percentiles::of(&stats.latency),
            statuses: stats.statuses.clone(),
            errors: stats.errors.clone(),
            rate: self.rate,
            started_unix_ms,
            series,
            books,
        })
    }

    /// When message `index` is due, relative to the start (open loop only).
    pub fn due(&self, index: usize) -> Option<Duration> {
        self.rate
            .map(|rate| Duration::from_secs_f64(index as f64 / rate))
    }

    async fn send_one(
        &self,
        client: &reqwest::Client,
        replicas: &[String],
        index: usize,
        started: Instant,
    ) -> Sent {
        let text = format!("{} #{index}", self.run_id);
        let key = self
            .idempotent_retries
            .then(|| format!("{}-{index}", self.run_id));
        let attempts = if self.idempotent_retries {
            self.max_attempts.max(1)
        } else {
            1
        };
        let book = self.books.of(index);
        let path = self.books.path(book);
        let body = NewMessageBody {
            author: "guestbook-loadtest".to_owned(),
            text: text.clone(),
        };
        // Plain records, folded into the run's one `Stats` at the end: a `Stats` per message
        // (three HDR histograms, and one more per second of the run so far) cost more than the
        // request itself and capped the tool near 2,300 messages/s whatever the concurrency.
        let mut outcomes = Vec::with_capacity(1);
        let mut acked_id = None;
        let mut made = Vec::new();
        let mut first_sent = None;
        for attempt in 0..attempts {
            let replica_index = (index + attempt as usize) % replicas.len();
            let replica = &replicas[replica_index];
            let mut request = client.post(format!("{replica}{path}")).json(&body);
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            let sent_at = started.elapsed();
            first_sent.get_or_insert(sent_at);
            let answer = request.send().await;
            let mut done = started.elapsed();
            let mut record = |done: Duration, outcome: String| {
                made.push(Attempt {
                    message: index,
                    attempt,
                    replica: replica_index,
                    sent: sent_at,
                    done,
                    outcome,
                });
            };
            let retryable = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if matches!(status, 200 | 201) {
                        acked_id = response.json::<Message>().await.ok().map(|m| m.id);
                        done = started.elapsed();
                    }
                    outcomes.push((done, done.saturating_sub(sent_at), Outcome::Status(status)));
                    record(done, status.to_string());
                    if matches!(status, 200 | 201) {
                        break;
                    }
                    matches!(status, 429 | 502 | 503 | 504)
                }
                Err(err) => {
                    let kind = if err.is_timeout() {
                        "timeout"
                    } else if err.is_connect() {
                        "connect"
                    } else {
                        "io"
                    };
                    outcomes.push((done, done.saturating_sub(sent_at), Outcome::Error(kind)));
                    record(done, kind.to_owned());
                    true
                }
            };
            if !retryable || attempt + 1 == attempts {
                break;
            }
            // Full jitter between 0 and min(1 s, 25 ms · 2^attempt).
            let ceiling = Duration::from_millis(25)
                .saturating_mul(1 << attempt.min(6))
                .min(Duration::from_secs(1));
            tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
        }
        let done = made.last().map_or_else(|| started.elapsed(), |a| a.done);
        Sent {
            end: MessageEnd {
                due: self
                    .due(index)
                    .unwrap_or_else(|| first_sent.unwrap_or_default()),
                done,
                acknowledged: acked_id.is_some(),
            },
            message: SentMessage {
                key,
                text,
                acked_id,
                book,
            },
            outcomes,
            attempts: made,
        }
    }
}

/// One message's outcome and record.
struct Sent {
    message: SentMessage,
    /// Each attempt's end (since the start), latency (from when it was due) and outcome.
    outcomes: Vec<(Duration, Duration, Outcome)>,
    attempts: Vec<Attempt>,
    end: MessageEnd,
}

/// Reads one whole book, page by page, from its messages URL (`{base}/api/messages` or
/// `{base}/api/books/{book}/messages`).
pub async fn read_all(
    client: &reqwest::Client,
    messages_url: &str,
) -> anyhow::Result<Vec<FoundMessage>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let response = client
            .get(format!("{messages_url}?after={after}&limit={PAGE}"))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "reading {messages_url} answered {}",
            response.status()
        );
        let page: MessagePage = response.json().await?;
        let full = page.messages.len() == PAGE;
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.id;
        all.extend(page.messages.into_iter().map(|m| FoundMessage {
            id: m.id,
            text: m.text,
        }));
        if !full {
            break;
        }
    }
    Ok(all)
}
