//! Live updates that work across backend replicas.
//!
//! Each backend process runs one *tail*: a task with a dedicated connection that follows the
//! message log with `XREAD BLOCK`, and hands every new message to this process's live-update
//! subscribers through a bounded broadcast channel. Whichever replica a message was posted to,
//! every replica's tail reads it from Redis, so every subscriber sees it.
//!
//! Why a stream and not Pub/Sub: Pub/Sub forgets what it published while a subscriber was
//! disconnected; the log remembers, so a subscriber that falls behind (or reconnects with
//! `Last-Event-ID`) catches up from Redis with `XRANGE` and misses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{RawMessage, Store, log_entry};

/// How many messages the broadcast channel holds for a slow subscriber before it lags (and
/// then catches up from Redis).
const CHANNEL_CAPACITY: usize = 1_024;
/// How long one XREAD blocks server-side.
const BLOCK: Duration = Duration::from_secs(5);
/// Messages per XREAD.
const BATCH: usize = 512;

/// The process's view of the log's tail.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<FeedInner>,
}

struct FeedInner {
    sender: broadcast::Sender<Arc<RawMessage>>,
    last_id: AtomicU64,
    following: AtomicBool,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    /// A feed with no tail running yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(FeedInner {
                sender,
                last_id: AtomicU64::new(0),
                following: AtomicBool::new(false),
            }),
        }
    }

    /// Subscribes to new messages, and returns the id of the last message already passed on:
    /// everything after it will arrive through the receiver (or, after lagging, from Redis).
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<RawMessage>>, u64) {
        let receiver = self.inner.sender.subscribe();
        (receiver, self.inner.last_id.load(Ordering::Acquire))
    }

    /// True while the tail is connected and following.
    pub fn is_following(&self) -> bool {
        self.inner.following.load(Ordering::Relaxed)
    }

    /// The id of the newest message seen by the tail.
    pub fn last_id(&self) -> u64 {
        self.inner.last_id.load(Ordering::Acquire)
    }

    /// Follows the log until `stop` is cancelled, reconnecting with backoff after errors.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut start: Option<u64> = None;
        while !stop.is_cancelled() {
            let session = self.follow(&store, &mut start);
            let ended = tokio::select! {
                () = stop.cancelled() => break,
                ended = session => ended,
            };
            self.inner.following.store(false, Ordering::Relaxed);
            if let Err(err) = ended {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis(), "live-update tail lost Redis");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.inner.following.store(false, Ordering::Relaxed);
    }

    async fn follow(
        &self,
        store: &Store,
        start: &mut Option<u64>,
    ) -> Result<(), redis::RedisError> {
        let limit = store.inner.hop.timeout();
        // No response timeout: XREAD BLOCK legitimately waits; we bound it ourselves below.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(None);
        // Asked again on every reconnection: with Sentinel, the primary may have moved.
        let client = store.client().map_err(|err| {
            redis::RedisError::from((redis::ErrorKind::Io, "no primary", err.to_string()))
        })?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let log = &store.keys().log;
        let after = match *start {
            Some(after) => after,
            None => {
                // Begin at the current end: earlier messages are served by XRANGE on request.
                let newest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
                    .arg(log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                newest
                    .first()
                    .and_then(|(id, _)| id.strip_suffix("-0"))
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(0)
            }
        };
        *start = Some(after);
        // The raw entry id we have read up to; kept apart from `after` so that an entry this
        // program did not write is stepped over instead of re-read for ever.
        let mut cursor = format!("{after}-0");
        self.inner.last_id.fetch_max(after, Ordering::AcqRel);
        self.inner.following.store(true, Ordering::Relaxed);
        tracing::info!(after, "live-update tail following the log");
        loop {
            let mut command = redis::cmd("XREAD");
            command
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(5_000))
                .arg("STREAMS")
                .arg(log)
                .arg(&cursor);
            let read =
                command.query_async::<Option<Vec<(String, Vec<(String, Vec<String>)>)>>>(&mut conn);
            let reply = match tokio::time::timeout(BLOCK + limit, read).await {
                Ok(reply) => reply?,
                Err(_) => {
                    return Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "XREAD did not return",
                    )));
                }
            };
            for (_stream, entries) in reply.into_iter().flatten() {
                for (entry_id, fields) in entries {
                    let decoded = log_entry(&entry_id, fields);
                    cursor = entry_id;
                    match decoded {
                        Ok(message) => {
                            *start = Some(message.id);
                            self.inner.last_id.fetch_max(message.id, Ordering::AcqRel);
                            // No subscribers is fine: nothing to deliver.
                            let _ = self.inner.sender.send(Arc::new(message));
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "skipping an unreadable log entry")
                        }
                    }
                }
            }
        }
    }
}
