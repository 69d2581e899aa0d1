//! The `http` mode: many HTTP/1.1 connections, each driven by its own task, closed- or
//! open-loop (see [`crate::schedule`]), bounded by a duration and/or a request count.
//!
//! It talks hyper's connection API directly rather than through a pooled client: one task
//! owns one keep-alive connection and sends on it sequentially, as wrk does, so the tool's own
//! cost per request stays small next to the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::schedule::Schedule;
use crate::stats::{Outcome, Stats};
use crate::timeline::{Attempt, trace_csv};

/// What to send, how, and for how long.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    /// An `http://` URL.
    pub url: Uri,
    /// Request method.
    pub method: Method,
    /// Extra request headers.
    pub headers: HeaderMap,
    /// Request body (empty for none).
    pub body: Bytes,
    /// Connections, each with one request in flight at most.
    pub connections: usize,
    /// Pacing.
    pub schedule: Schedule,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Per-request time limit, connecting included.
    pub timeout: Duration,
    /// Close each connection after one request: every request then opens a new one, so a
    /// per-connection balancer (a Kubernetes Service) picks a backend for each, as it does
    /// for many short-lived users rather than one long-lived client.
    pub fresh_connections: bool,
    /// Keep a record of every request (for `--trace`).
    pub trace: bool,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct HttpRun {
    /// Merged statistics of every connection.
    pub stats: Stats,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Wall clock of the start, milliseconds since the Unix epoch, to line the series and the
    /// trace up with events outside the tool (a chaos harness's faults).
    pub started_unix_ms: u64,
    /// Every request, when tracing (index, sent, done, outcome), in no particular order.
    pub requests: Vec<Attempt>,
}

impl HttpRun {
    /// The `--trace` CSV, in the `messages` mode's format: one row per request (`message` is
    /// the request's index, `attempt` and `replica` are 0); `due_s` is when it was due (open
    /// loop) or sent (closed loop).
    pub fn trace_csv(&self, schedule: Schedule) -> String {
        let sent: std::collections::HashMap<usize, Duration> = self
            .requests
            .iter()
            .map(|request| (request.message, request.sent))
            .collect();
        trace_csv(&self.requests, |index| {
            schedule
                .due(index as u64)
                .or_else(|| sent.get(&index).copied())
                .unwrap_or_default()
        })
    }
}

/// Shared between the workers.
struct Shared {
    next: AtomicU64,
    completed: AtomicU64,
    stop: AtomicBool,
    start: Instant,
}

impl HttpLoad {
    /// Checks what clap cannot: an absolute `http://` URL with a host, and a bound on the run.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.scheme_str() != Some("http") || self.url.host().is_none() {
            return Err(format!(
                "--url must be an absolute http:// URL, got {}",
                self.url
            ));
        }
        if self.duration.is_none() && self.requests.is_none() {
            return Err("give --duration and/or --requests: a load run must be bounded".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if let Schedule::Open { rate } = self.schedule
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number".into());
        }
        Ok(())
    }

    fn authority(&self) -> String {
        let host = self.url.host().unwrap_or("127.0.0.1");
        let port = self.url.port_u16().unwrap_or(80);
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// Runs the load; `completed` is bumped after every request (for a progress bar).
    pub async fn run(&self, completed: Option<Arc<AtomicU64>>) -> HttpRun {
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            start: Instant::now(),
        });
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let this = Arc::new(self.clone());
        let workers: Vec<_> = (0..self.connections)
            .map(|_| {
                tokio::spawn(worker(
                    Arc::clone(&this),
                    Arc::clone(&shared),
                    completed.clone(),
                ))
            })
            .collect();
        let mut stats = Stats::default();
        let mut requests = Vec::new();
        for worker in workers {
            if let Ok((worker_stats, worker_requests)) = worker.await {
                stats.merge(&worker_stats);
                requests.extend(worker_requests);
            }
        }
        HttpRun {
            stats,
            elapsed: shared.start.elapsed(),
            started_unix_ms,
            requests,
        }
    }
}

/// Claims the next request index, or `None` when the run is over.
fn claim(load: &HttpLoad, shared: &Shared) -> Option<(u64, Option<Duration>)> {
    if shared.stop.load(Ordering::Relaxed) {
        return None;
    }
    let index = shared.next.fetch_add(1, Ordering::Relaxed);
    if load.requests.is_some_and(|limit| index >= limit) {
        return None;
    }
    let due = load.schedule.due(index);
    let now = shared.start.elapsed();
    if let Some(limit) = load.duration
        && due.unwrap_or(now) >= limit
    {
        shared.stop.store(true, Ordering::Relaxed);
        return None;
    }
    Some((index, due))
}

async fn worker(
    load: Arc<HttpLoad>,
    shared: Arc<Shared>,
    progress: Option<Arc<AtomicU64>>,
) -> (Stats, Vec<Attempt>) {
    let mut stats = Stats::default();
    let mut requests = Vec::new();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    let authority = load.authority();
    let path = load
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    while let Some((index, due)) = claim(&load, &shared) {
        let claimed = shared.start.elapsed();
        if let Some(due) = due {
            tokio::time::sleep_until((shared.start + due).into()).await;
        }
        let sent = shared.start.elapsed();
        let outcome = tokio::time::timeout(
            load.timeout,
            send(&load, &authority, &path, &mut connection),
        )
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                connection = None;
                Outcome::Error("timeout")
            }
        };
        let done = shared.start.elapsed();
        stats.record(done, Schedule::latency(due, claimed, sent, done), outcome);
        if load.trace {
            requests.push(Attempt {
                message: usize::try_from(index).unwrap_or(usize::MAX),
                attempt: 0,
                replica: 0,
                sent,
                done,
                outcome: match outcome {
                    Outcome::Status(status) => status.to_string(),
                    Outcome::Error(kind) => kind.to_owned(),
                },
            });
        }
        if load.fresh_connections {
            // Dropping the sender closes the connection once its answer has been read.
            connection = None;
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(progress) = &progress {
            progress.fetch_add(1, Ordering::Relaxed);
        }
        if let Outcome::Error(_) = outcome {
            // Without a pause a refused connection would spin this loop at full speed.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    (stats, requests)
}

/// Sends one request on the worker's connection, opening one when needed.
async fn send(
    load: &HttpLoad,
    authority: &str,
    path: &str,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
) -> Outcome {
    if connection.as_ref().is_none_or(|sender| sender.is_closed()) {
        match connect(authority).await {
            Ok(sender) => *connection = Some(sender),
            Err(kind) => return Outcome::Error(kind),
        }
    }
    let Some(sender) = connection.as_mut() else {
        return Outcome::Error("connect");
    };
    if sender.ready().await.is_err() {
        *connection = None;
        return Outcome::Error("io");
    }
    let mut request = Request::builder()
        .method(load.method.clone())
        .uri(path)
        .header(http::header::HOST, authority);
    if let Some(headers) = request.headers_mut() {
        headers.extend(
            load.headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
    }
    let Ok(request) = request.body(Full::new(load.body.clone())) else {
        return Outcome::Error("request");
    };
    match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            // The whole body is read, as a real client would, before the next request.
            match response.into_body().collect().await {
                Ok(_) => Outcome::Status(status),
                Err(_) => {
                    *connection = None;
                    Outcome::Error("io")
                }
            }
        }
        Err(_) => {
            *connection = None;
            Outcome::Error("io")
        }
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, &'static str> {
    let stream = TcpStream::connect(authority).await.map_err(|_| "connect")?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "connect")?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; either is normal here.
        let _ = connection.await;
    });
    Ok(sender)
}
