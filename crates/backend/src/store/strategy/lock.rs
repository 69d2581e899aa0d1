//! The `lock` strategy: seed 000's fix (a lock around the read-modify-write), made safe.
//!
//! 1. Queue behind this process's other appends to the same book (a local FIFO mutex), so
//!    only one task per process and book polls Redis for the book's lock.
//! 2. Acquire: `SET lock <random token> NX PX <ttl>` and `INCR fence-seq` in one MULTI; the
//!    counter's value is this holder's *fencing token*. Retry with jittered backoff until
//!    `LOCK_WAIT_MS`.
//! 3. Fenced read (`scripts/fenced_read.lua`): refuse if a newer token has touched the data,
//!    else record this token as the newest, and read the idempotency record and the sequence.
//! 4. Compute the new id and message here, in the application (the read-modify-write).
//! 5. Fenced commit (`scripts/fenced_commit.lua`): write only if no newer token touched the
//!    data since step 3.
//! 6. Release with compare-and-delete (`scripts/unlock.lua`).
//!
//! # Why a fencing token and not just a lock
//! A lock with a TTL can expire while its holder is paused (GC, SIGSTOP, a slow network);
//! the next holder then runs concurrently with it (Kleppmann, "How to do distributed
//! locking"). The token makes the data itself refuse the stale holder: the newer holder's
//! fenced read raises the bar, and the stale holder's commit no longer clears it. Fencing
//! the *read* as well as the write matters: a newer holder may read before the stale one
//! writes, and that read would otherwise be based on data the stale write then changes.
//! A fenced append is retried from step 2 until `LOCK_WAIT_MS` runs out.
//!
//! # Why it runs in a task of its own
//! A request future is dropped when its client goes away. Dropped between steps 2 and 6, it
//! would leave the lock held until its TTL ran out, stalling every replica's appends for
//! `LOCK_TTL_MS`. [`crate::store::Store::append`] therefore runs this strategy in a spawned
//! task, which finishes (and releases) whatever happens to the request.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::Script;

use crate::store::entry::{RawMessage, stored_json};
use crate::store::error::StoreError;
use crate::store::keys::Keys;
use crate::store::primary::PrimaryLinks;
use crate::store::sequence::script_with_sequence;
use crate::store::strategy::{AppendRequest, Ctx, Written, full_jitter, script_reply};

static FENCED_READ: LazyLock<Script> = LazyLock::new(|| script_with_sequence!("fenced_read.lua"));
static FENCED_COMMIT: LazyLock<Script> =
    LazyLock::new(|| script_with_sequence!("fenced_commit.lua"));
static UNLOCK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/unlock.lua")));

const BACKOFF_BASE: Duration = Duration::from_millis(1);
const BACKOFF_CAP: Duration = Duration::from_millis(50);

/// A held lock: the random value that proves ownership and the fencing token.
struct Held {
    owner: String,
    token: u64,
}

/// The lock strategy. Its local queue is the book's ([`Book::local`]): contenders for one
/// book queue in this process, so only one task per process and book polls that book's Redis
/// lock (fair FIFO here instead of a polling storm against Redis); other books go on meanwhile.
#[derive(Clone, Default)]
pub(crate) struct Lock;

impl Lock {
    /// Appends under the lock; see the module's steps.
    pub(crate) async fn append(
        self,
        ctx: Arc<Ctx>,
        links: Arc<PrimaryLinks>,
        request: AppendRequest,
    ) -> Result<Written, StoreError> {
        locked_append(ctx, links, request).await
    }
}

async fn locked_append(
    ctx: Arc<Ctx>,
    links: Arc<PrimaryLinks>,
    request: AppendRequest,
) -> Result<Written, StoreError> {
    let book = Arc::clone(&request.book);
    let keys = book.keys();
    let started = Instant::now();
    let deadline = started + ctx.limits.lock_wait;
    let Ok(_local) = tokio::time::timeout(ctx.limits.lock_wait, book.local.lock()).await else {
        return Err(StoreError::LockTimeout(ctx.limits.lock_wait));
    };
    loop {
        let held = acquire(&ctx, keys, &links, deadline).await?;
        ctx.metrics
            .lock_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = critical_section(&ctx, &links, &held, &request).await;
        release(&ctx, keys, &links, &held).await;
        match outcome {
            Err(StoreError::Fenced { token }) => {
                ctx.metrics.fenced_writes.inc();
                tracing::warn!(
                    token,
                    "append fenced off: the lock expired under this holder, or the primary changed"
                );
                if Instant::now() >= deadline {
                    return Err(StoreError::Fenced { token });
                }
            }
            other => return other,
        }
    }
}

async fn acquire(
    ctx: &Ctx,
    keys: &Keys,
    links: &PrimaryLinks,
    deadline: Instant,
) -> Result<Held, StoreError> {
    let ttl_ms = u64::try_from(ctx.limits.lock_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut attempt = 0;
    loop {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = links.conn.clone();
        let (set, token): (redis::Value, u64) = ctx
            .hop
            .call(
                "lock_acquire",
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&keys.lock)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .cmd("INCR")
                    .arg(&keys.fence_seq)
                    .query_async(&mut conn),
            )
            .await?;
        if set != redis::Value::Nil {
            return Ok(Held { owner, token });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(StoreError::LockTimeout(ctx.limits.lock_wait));
        }
        let pause = full_jitter(attempt, BACKOFF_BASE, BACKOFF_CAP).min(deadline - now);
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

async fn critical_section(
    ctx: &Ctx,
    links: &PrimaryLinks,
    held: &Held,
    request: &AppendRequest,
) -> Result<Written, StoreError> {
    let keys = request.book.keys();
    let (record, suffix, has_key) = request.script_record(&keys.seq);
    let mut conn = links.conn.clone();

    let mut read = FENCED_READ.prepare_invoke();
    read.key(&keys.fence_seen)
        .key(record)
        .key(&keys.seq)
        .key(&keys.term)
        .arg(held.token)
        .arg(has_key)
        .arg(request.known);
    let reply: redis::Value = ctx
        .hop
        .call("fenced_read", read.invoke_async(&mut conn))
        .await?;
    let seq: u64 = match script_reply(reply)? {
        (-1, _) => return Err(StoreError::Fenced { token: held.token }),
        (0, Some(existing)) => return Ok(Written::Recorded(existing)),
        (1, Some(seq)) => seq
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("sequence value {seq:?}")))?,
        other => {
            return Err(StoreError::Corrupt(format!(
                "fenced read replied {other:?}"
            )));
        }
    };

    let id = seq + 1;
    let json = stored_json(id, &request.tail);
    let mut commit = FENCED_COMMIT.prepare_invoke();
    commit
        .key(&keys.fence_seen)
        .key(&keys.seq)
        .key(&keys.log)
        .key(record)
        .key(&keys.term)
        .arg(held.token)
        .arg(id)
        .arg(&json)
        .arg(ctx.limits.max_messages)
        .arg(ctx.limits.idempotency_ttl_secs)
        .arg(has_key)
        .arg(suffix);
    let written: i64 = ctx
        .hop
        .call("fenced_commit", commit.invoke_async(&mut conn))
        .await?;
    if written == 1 {
        Ok(Written::Created(RawMessage { id, json }))
    } else {
        Err(StoreError::Fenced { token: held.token })
    }
}

/// Best effort: a lock that cannot be released expires on its own after its TTL.
async fn release(ctx: &Ctx, keys: &Keys, links: &PrimaryLinks, held: &Held) {
    let mut unlock = UNLOCK.prepare_invoke();
    unlock.key(&keys.lock).arg(&held.owner);
    let mut conn = links.conn.clone();
    if let Err(err) = ctx
        .hop
        .call::<i64, _, _>("lock_release", unlock.invoke_async(&mut conn))
        .await
    {
        tracing::debug!(error = %err, "lock release failed; it will expire");
    }
}
