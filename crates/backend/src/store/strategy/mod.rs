//! The four ways to make an append atomic, selected by `APPEND_STRATEGY`.
//!
//! | strategy | round trips | under contention | safe |
//! |---|---|---|---|
//! | [`lua`] | 1 (EVALSHA), shared by a [`batch`] | nothing to contend: Redis serialises scripts | yes |
//! | [`watch`] | 2 per attempt, and the pool's check of its connection | every concurrent writer aborts all others; retries | yes |
//! | [`lock`] | 2 + waiting | one writer at a time, cluster-wide; fenced | yes |
//! | [`naive`] | 3–4 | last writer wins: messages vanish | **no** |
//!
//! # Why the id must be assigned inside the atomic step
//! Reserving an id first (a lone `INCR`) and writing later would let id 6 land before id 5;
//! a reader paging with `after=5`, or a live-update client, would then skip id 5 for ever.
//! So every safe strategy assigns the id in the same atomic step that appends it, and the
//! watch strategy must WATCH the sequence, which is what makes it collapse under load.

pub mod batch;
pub mod lock;
pub mod lua;
pub mod naive;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use guestbook_common::dependency;

use crate::store::book::Book;
use crate::store::config::{AppendStrategy, RedisArgs};
use crate::store::entry::RawMessage;
use crate::store::error::StoreError;
use crate::store::hop::Hop;
use crate::store::metrics::StoreMetrics;
use crate::store::primary::PrimaryLinks;

/// Tunables of the append strategies.
#[derive(Debug, Clone)]
pub struct AppendLimits {
    /// Retention cap.
    pub max_messages: u64,
    /// Idempotency record lifetime, in seconds.
    pub idempotency_ttl_secs: u64,
    /// Attempts of the watch strategy.
    pub watch_max_attempts: u32,
    /// Lock lifetime.
    pub lock_ttl: Duration,
    /// Longest wait for the lock.
    pub lock_wait: Duration,
}

impl AppendLimits {
    /// The limits `args` sets.
    pub fn new(args: &RedisArgs) -> Self {
        Self {
            max_messages: args.max_messages,
            idempotency_ttl_secs: args.idempotency_ttl_secs,
            watch_max_attempts: args.watch_max_attempts,
            lock_ttl: Duration::from_millis(args.lock_ttl_ms),
            lock_wait: Duration::from_millis(args.lock_wait_ms),
        }
    }
}

/// What every strategy (and every read) works with besides its own resources: the one door
/// to Redis, the limits and the metrics (the book, with its keys, comes with each request).
/// Shared, so a detached strategy task can hold it.
pub(crate) struct Ctx {
    pub(crate) hop: Hop,
    pub(crate) limits: AppendLimits,
    pub(crate) metrics: StoreMetrics,
}

/// The append strategy in use, owning what it needs: the watch strategy its pool of
/// dedicated connections, the lock strategy its local queue.
pub(crate) enum Appender {
    /// See [`lua`]; appends waiting together share a call ([`batch`]).
    Lua(batch::Batcher),
    /// See [`watch`].
    Watch(watch::Watch),
    /// See [`lock`].
    Lock(lock::Lock),
    /// See [`naive`]; it also reads and clears its own way.
    Naive,
}

impl Appender {
    /// The strategy `APPEND_STRATEGY` names, with its resources.
    pub(crate) fn new(args: &RedisArgs) -> Self {
        match args.append_strategy {
            AppendStrategy::Lua => Self::Lua(batch::Batcher::default()),
            AppendStrategy::Watch => Self::Watch(watch::Watch),
            AppendStrategy::Lock => Self::Lock(lock::Lock),
            AppendStrategy::Naive => Self::Naive,
        }
    }

    /// Which strategy this is.
    pub(crate) fn strategy(&self) -> AppendStrategy {
        match self {
            Self::Lua(_) => AppendStrategy::Lua,
            Self::Watch(_) => AppendStrategy::Watch,
            Self::Lock(_) => AppendStrategy::Lock,
            Self::Naive => AppendStrategy::Naive,
        }
    }

    /// Appends on the primary `links` name.
    pub(crate) async fn append(
        &self,
        ctx: &Arc<Ctx>,
        links: &Arc<PrimaryLinks>,
        request: AppendRequest,
    ) -> Result<Written, StoreError> {
        match self {
            Self::Lua(batcher) => batcher.append(ctx, links, request).await,
            Self::Watch(watch) => {
                detached(
                    watch
                        .clone()
                        .append(Arc::clone(ctx), Arc::clone(links), request),
                )
                .await
            }
            Self::Lock(lock) => {
                detached(
                    lock.clone()
                        .append(Arc::clone(ctx), Arc::clone(links), request),
                )
                .await
            }
            Self::Naive => naive::append(ctx, links, &request).await,
        }
    }
}

/// Runs a strategy that must not stop half-way in a task of its own: the request that awaits
/// it may be dropped (its client left), the task finishes regardless.
///
/// The whole wait counts as waiting on Redis for the request: these strategies do nothing but
/// Redis calls, lock waits and backoff between them (all longer when Redis is slow), and the
/// request's clock does not cross `tokio::spawn` (so the calls inside are not counted twice).
///
/// Spawned at the call, not at the first poll: an `async fn` would hold `work` in its own state
/// until then, and so in every request's future whatever the strategy; these futures are
/// several KiB, which every append then paid to move and box.
fn detached<F>(work: F) -> impl std::future::Future<Output = Result<Written, StoreError>>
where
    F: std::future::Future<Output = Result<Written, StoreError>> + Send + 'static,
{
    let task = tokio::spawn(work);
    async move {
        dependency::timed(task)
            .await
            .map_err(|err| StoreError::TaskFailed(err.to_string()))?
    }
}

/// One append as the strategies see it. Everything is owned, so that a strategy which must
/// not be cancelled half-way (`lock`, `watch`) can run in a task of its own.
#[derive(Debug, Clone)]
pub(crate) struct AppendRequest {
    /// The book appended to: its keys, and its local queue for `watch` and `lock`.
    pub book: Arc<Book>,
    /// The message JSON after its id (`"author":...}`).
    pub tail: String,
    /// When an idempotency key was sent: the record's Redis key, and the record after its id.
    pub record: Option<(String, String)>,
    /// The highest id this backend has seen: a new term jumps past it (see `store::sequence`).
    pub known: u64,
}

impl AppendRequest {
    /// The script arguments for the record: its key (without one, `unused`, a key of the same
    /// hash tag the scripts never touch), its suffix, and `"1"` when there is a record.
    pub(crate) fn script_record<'a>(&'a self, unused: &'a str) -> (&'a str, &'a str, &'static str) {
        match &self.record {
            Some((key, suffix)) => (key.as_str(), suffix.as_str(), "1"),
            None => (unused, "", "0"),
        }
    }
}

/// What a strategy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// A new message.
    Created(RawMessage),
    /// Nothing: the key was used before, and this is its stored record.
    Recorded(String),
}

/// "Full jitter" backoff (AWS architecture blog): a uniform pick in
/// `[0, min(cap, base · 2^attempt)]`, so contenders spread out instead of colliding again.
pub(crate) fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1_u32 << attempt.min(16)).min(cap);
    ceiling.mul_f64(fastrand::f64())
}

/// Runs `evalsha` (an `EVALSHA` of `script`, its keys and arguments written straight into
/// the command) and, on `NOSCRIPT` (after a restart, failover or `SCRIPT FLUSH`), loads the
/// script and runs it again, as redis-rs's `ScriptInvocation::invoke_async` does. Built by
/// hand because an invocation keeps each key and argument in a buffer of its own, then copies
/// them all into the command: allocations per append, in the batch.
pub(crate) async fn eval_sha(
    script: &redis::Script,
    evalsha: &redis::Cmd,
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<redis::Value> {
    match evalsha.query_async(conn).await {
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            evalsha.query_async(conn).await
        }
        outcome => outcome,
    }
}

/// Parses the reply `{status, payload}` that the strategy scripts return.
pub(crate) fn script_reply(value: redis::Value) -> Result<(i64, Option<String>), StoreError> {
    let redis::Value::Array(items) = value else {
        return Err(StoreError::Corrupt(format!(
            "unexpected script reply {value:?}"
        )));
    };
    let mut items = items.into_iter();
    let status = match items.next() {
        Some(redis::Value::Int(status)) => status,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected script status {other:?}"
            )));
        }
    };
    let payload = match items.next() {
        None => None,
        Some(value) => Some(
            redis::from_redis_value::<String>(value)
                .map_err(|err| StoreError::Corrupt(format!("script payload: {err}")))?,
        ),
    };
    Ok((status, payload))
}

/// Parses the flat reply `{status_1, payload_1, ..., status_n, payload_n}` of a batch script.
pub(crate) fn script_reply_items(value: redis::Value) -> Result<Vec<(i64, String)>, StoreError> {
    let redis::Value::Array(items) = value else {
        return Err(StoreError::Corrupt(format!(
            "unexpected batch reply {value:?}"
        )));
    };
    let mut items = items.into_iter();
    let mut pairs = Vec::with_capacity(items.len() / 2);
    while let Some(status) = items.next() {
        let (redis::Value::Int(status), Some(payload)) = (status, items.next()) else {
            return Err(StoreError::Corrupt(
                "a batch reply without its pairs".into(),
            ));
        };
        let payload = redis::from_redis_value::<String>(payload)
            .map_err(|err| StoreError::Corrupt(format!("batch payload: {err}")))?;
        pairs.push((status, payload));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_never_exceeds_its_cap() {
        for attempt in 0..40 {
            let wait = full_jitter(attempt, Duration::from_millis(1), Duration::from_millis(20));
            assert!(wait <= Duration::from_millis(20));
        }
    }
}
