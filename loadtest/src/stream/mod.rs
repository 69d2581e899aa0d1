//! The `stream` mode: N live-update subscribers on one backend, then messages posted at a
//! steady rate, and for each message and each subscriber whether and when it was read.
//!
//! Subscribers open first (spread over loopback source addresses, so that the backend's
//! per-address cap sees many clients); a refusal by either stream cap is counted by cap, never
//! as a miss. Only once every subscriber has its answer does posting start, so each open one
//! owes every acknowledged message: [`tally`] turns what they read into deliveries, misses,
//! duplicates and fan-out delays. The backend's RSS before and after opening gives memory per
//! subscriber.
//!
//! - [`args`]: the flags, and the checks that keep the run on loopback.
//! - [`subscriber`]: one SSE connection and its `message` event ids.
//! - [`tally`]: the accounting, a pure function.
//! - [`system`]: the descriptor limit and the backend's resident memory.
//! - [`report`]: the table and the JSON.

pub mod args;
pub mod report;
pub mod subscriber;
pub mod system;
pub mod tally;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use guestbook_api::{Message, NewMessageBody};
use tokio::sync::{Semaphore, watch};

use crate::stream::report::{Cpu, Memory, StreamReport};
use crate::stream::subscriber::{Dial, Finish, Opened, open_stream};
use crate::stream::tally::{Posted, Received, tally};

/// POSTs in flight at once, at most (each is one message; a slow one does not hold the rest).
const POSTS_IN_FLIGHT: usize = 64;

/// Attempts per message; a retry carries the same Idempotency-Key, so it cannot duplicate.
const POST_ATTEMPTS: u32 = 3;

/// Pause after opening, before the backend's RSS is read again, for its allocator to settle.
const SETTLE: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct StreamRun {
    /// The backend's base URL (messages are posted there).
    pub base: String,
    /// The backend's loopback socket address.
    pub target: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Loopback addresses the subscribers connect from, round-robin.
    pub sources: Vec<IpAddr>,
    /// Subscribers to open.
    pub subscribers: usize,
    /// Messages per second.
    pub rate: f64,
    /// Messages to post (the duration times the rate).
    pub messages: usize,
    /// The subscribers' connects are spread over this long.
    pub ramp: Duration,
    /// Subscribers connecting at once, at most.
    pub connect_concurrency: usize,
    /// Time to connect and get the stream's answer.
    pub connect_timeout: Duration,
    /// Time allowed between two reads of an open stream.
    pub read_timeout: Duration,
    /// After the last message, how long subscribers may take to read it.
    pub grace: Duration,
    /// Per-POST time limit.
    pub post_timeout: Duration,
    /// The backend's pid, for its RSS from /proc.
    pub backend_pid: Option<u32>,
    /// Tags the texts and idempotency keys.
    pub run_id: String,
}

/// How opening went, over every subscriber.
#[derive(Debug, Default)]
struct Opening {
    opened: u64,
    refused: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
}

impl Opening {
    fn count(&mut self, opened: Opened) {
        match opened {
            Opened::Open => self.opened += 1,
            Opened::Refused { status, code } => {
                let cap = match (status, code.as_deref()) {
                    (429, Some("too-many-streams")) => "MAX_STREAMS_PER_CLIENT".to_owned(),
                    (503, Some("too-many-streams")) => "MAX_STREAM_CLIENTS".to_owned(),
                    (status, code) => format!("{status} {}", code.unwrap_or("(no code)")),
                };
                *self.refused.entry(cap).or_default() += 1;
            }
            Opened::Failed(kind) => *self.failed.entry(kind.to_owned()).or_default() += 1,
        }
    }
}

impl StreamRun {
    /// Opens the subscribers, posts the messages, closes everything and reports.
    pub async fn run(&self) -> anyhow::Result<StreamReport> {
        // reqwest sets up TLS for every client, so it needs a provider, as in `messages`.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let warnings: Vec<String> = system::raise_descriptor_limit(self.subscribers)
            .into_iter()
            .collect();
        let client = reqwest::Client::builder()
            .timeout(self.post_timeout)
            .pool_max_idle_per_host(POSTS_IN_FLIGHT)
            .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
            .build()?;
        let rss_before = self.resident_bytes(&client).await;

        let start = Instant::now();
        let (finish, finishing) = watch::channel(Finish::Running);
        let (tasks, opens) = self.spawn_subscribers(start, &finishing);
        let mut opening = Opening::default();
        for open in opens {
            opening.count(open.await.unwrap_or(Opened::Failed("task")));
        }
        let open_seconds = start.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let rss_after = self.resident_bytes(&client).await;

        let posting = start.elapsed();
        let cpu_before = self.cpu_seconds();
        let outcomes: Vec<Result<Posted, String>> = futures_util::stream::iter(0..self.messages)
            .map(|index| {
                let client = client.clone();
                async move {
                    let due = posting + Duration::from_secs_f64(index as f64 / self.rate);
                    tokio::time::sleep_until((start + due).into()).await;
                    self.post(&client, index, start).await
                }
            })
            .buffer_unordered(POSTS_IN_FLIGHT)
            .collect()
            .await;
        let post_seconds = (start.elapsed() - posting).as_secs_f64();
        let mut posted = Vec::with_capacity(outcomes.len());
        let mut post_failures: BTreeMap<String, u64> = BTreeMap::new();
        for outcome in outcomes {
            match outcome {
                Ok(message) => posted.push(message),
                Err(kind) => *post_failures.entry(kind).or_default() += 1,
            }
        }

        let last = posted.iter().map(|message| message.id).max();
        finish.send_replace(last.map_or(Finish::Now, Finish::After));
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        let joined = match tokio::time::timeout(self.grace, &mut all).await {
            Ok(joined) => joined,
            Err(_) => {
                finish.send_replace(Finish::Now);
                all.await
            }
        };
        let cpu_after = self.cpu_seconds();
        let cpu = Cpu {
            wall_seconds: (start.elapsed() - posting).as_secs_f64(),
            backend_seconds: cpu_after.0.zip(cpu_before.0).map(|(a, b)| a - b),
            tool_seconds: cpu_after.1.zip(cpu_before.1).map(|(a, b)| a - b),
        };
        let received: Vec<Received> = joined.into_iter().flatten().flatten().collect();
        let mut ended_early: BTreeMap<String, u64> = BTreeMap::new();
        for kind in received.iter().filter_map(|r| r.ended_early) {
            *ended_early.entry(kind.to_owned()).or_default() += 1;
        }
        let tally = tally(&posted, &received);
        Ok(StreamReport::new(
            self,
            report::Counts {
                opened: opening.opened,
                refused: opening.refused,
                failed_to_open: opening.failed,
                ended_early,
                open_seconds,
                posted: self.messages as u64,
                acknowledged: posted.len() as u64,
                post_failures,
                post_seconds,
            },
            &tally,
            (Memory::new(rss_before, rss_after, opening.opened), cpu),
            warnings,
        ))
    }

    /// Spawns every subscriber's task: each waits for its turn in the ramp and for a connect
    /// slot, reports how opening went, then reads until told to finish.
    fn spawn_subscribers(
        &self,
        start: Instant,
        finishing: &watch::Receiver<Finish>,
    ) -> (
        Vec<tokio::task::JoinHandle<Option<Received>>>,
        Vec<tokio::sync::oneshot::Receiver<Opened>>,
    ) {
        let gate = Arc::new(Semaphore::new(self.connect_concurrency));
        let dial = Arc::new(Dial {
            target: self.target,
            host: self.host.clone(),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        });
        let mut tasks = Vec::with_capacity(self.subscribers);
        let mut opens = Vec::with_capacity(self.subscribers);
        for index in 0..self.subscribers {
            let (opened, open) = tokio::sync::oneshot::channel();
            opens.push(open);
            let due = self.ramp.mul_f64(index as f64 / self.subscribers as f64);
            let source = self.sources[index % self.sources.len()];
            let (gate, dial, finishing) = (Arc::clone(&gate), Arc::clone(&dial), finishing.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until((start + due).into()).await;
                let slot = gate.acquire_owned().await;
                let stream = open_stream(&dial, source).await;
                drop(slot);
                match stream {
                    Ok(stream) => {
                        let _ = opened.send(Opened::Open);
                        Some(stream.read(&dial, start, finishing).await)
                    }
                    Err(refused) => {
                        let _ = opened.send(refused);
                        None
                    }
                }
            }));
        }
        (tasks, opens)
    }

    /// Posts message `index` with its own Idempotency-Key; its id and times, or why not.
    async fn post(
        &self,
        client: &reqwest::Client,
        index: usize,
        start: Instant,
    ) -> Result<Posted, String> {
        let body = NewMessageBody {
            author: "guestbook-loadtest".to_owned(),
            text: format!("{} #{index}", self.run_id),
        };
        let key = format!("{}-{index}", self.run_id);
        let sent = start.elapsed();
        let mut failure = String::new();
        for attempt in 1..=POST_ATTEMPTS {
            let answer = client
                .post(format!("{}/api/messages", self.base))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    match response.json::<Message>().await {
                        Ok(message) => {
                            return Ok(Posted {
                                id: message.id,
                                sent,
                                acknowledged: start.elapsed(),
                            });
                        }
                        Err(_) => failure = "bad answer".to_owned(),
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    failure = format!("status {status}");
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        break;
                    }
                }
                Err(err) => failure = if err.is_timeout() { "timeout" } else { "io" }.to_owned(),
            }
            tokio::time::sleep(Duration::from_millis(50) * attempt).await;
        }
        Err(failure)
    }

    /// CPU seconds so far: the backend's (with its pid) and this tool's.
    fn cpu_seconds(&self) -> (Option<f64>, Option<f64>) {
        (
            self.backend_pid
                .and_then(|pid| system::cpu_seconds_of(Some(pid))),
            system::cpu_seconds_of(None),
        )
    }

    async fn resident_bytes(&self, client: &reqwest::Client) -> Option<u64> {
        match self.backend_pid {
            Some(pid) => system::resident_bytes_of(pid),
            None => system::resident_bytes_from_metrics(client, &self.base).await,
        }
    }
}
