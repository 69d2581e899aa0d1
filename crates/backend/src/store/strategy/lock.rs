//! The `lock` strategy: seed 000's fix (a lock around the read-modify-write), made safe.
//!
//! 1. Queue behind this process's other appends to the same book (a local FIFO mutex), so
//!    only one task per process and book polls Redis for the book's lock.
//! 2. Acquire and read (`scripts/acquire_and_read.lua`), one round trip: `SET lock <random
//!    value> NX PX <ttl>`; if taken, `INCR fence-seq`, whose value is this holder's *fencing
//!    token*; then the fenced read: refuse if a newer token has touched the data, else record
//!    this token as the newest, and read the idempotency record and the sequence. While the
//!    lock is busy, retry with jittered backoff until `LOCK_WAIT_MS`.
//! 3. Compute the new id and message here, in the application (the read-modify-write).
//! 4. Commit and release (`scripts/commit_and_release.lua`), one round trip: write only if no
//!    newer token touched the data since step 2, then compare-and-delete the lock.
//!
//! Two round trips per append, not four: the lock spans the same read-modify-write, and each
//! script is atomic, so merging the acquire with the read and the commit with the release
//! changes what the lock protects in nothing. Its throughput is one append per two round
//! trips per book (the appends of a book are serialized, which is this strategy's point);
//! with four it was under the goal of three times the original Node guestbook's lock.
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
//! Release: the commit script releases the lock, written or not; the first script releases it
//! itself when it answers a replay or a fenced read. A failed commit call (an error or a lost
//! answer) leaves the release to `scripts/unlock.lua`, best effort, and then to the TTL; a failed
//! first call leaves it to the TTL alone, as a holder that died would.
//!
//! # Why it runs in a task of its own
//! A request future is dropped when its client goes away. Dropped between steps 2 and 4, it
//! would leave the lock held until its TTL ran out, stalling every replica's appends for
//! `LOCK_TTL_MS`. [`crate::store::Store::append`] therefore runs this strategy in a spawned
//! task, which finishes (and releases) whatever happens to the request.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::Script;

use crate::store::entry::{RawMessage, stored_json};
use crate::store::error::StoreError;
use crate::store::primary::PrimaryLinks;
use crate::store::sequence::script_with_sequence;
use crate::store::strategy::{AppendRequest, Ctx, Written, full_jitter};

static ACQUIRE_AND_READ: LazyLock<Script> =
    LazyLock::new(|| script_with_sequence!("acquire_and_read.lua"));
static COMMIT_AND_RELEASE: LazyLock<Script> =
    LazyLock::new(|| script_with_sequence!("commit_and_release.lua"));
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
    let started = Instant::now();
    let deadline = started + ctx.limits.lock_wait;
    let Ok(_local) = tokio::time::timeout(ctx.limits.lock_wait, book.local.lock()).await else {
        return Err(StoreError::LockTimeout(ctx.limits.lock_wait));
    };
    loop {
        let (held, read) = acquire_and_read(&ctx, &links, &request, deadline).await?;
        ctx.metrics
            .lock_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match read {
            Read::Fenced => Err(StoreError::Fenced { token: held.token }),
            Read::Replay(existing) => return Ok(Written::Recorded(existing)),
            Read::Sequence(seq) => commit_and_release(&ctx, &links, &held, &request, seq).await,
        };
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

/// What the fenced read found, the lock taken.
enum Read {
    /// A newer token than the one just drawn has touched the data: the token counter went
    /// back (a failover lost its latest increments). The lock is released already; the next
    /// attempt draws a higher token.
    Fenced,
    /// The idempotency key's stored record (the lock released already).
    Replay(String),
    /// The sequence to continue from; the lock is held for the commit.
    Sequence(u64),
}

/// Step 2: takes the lock (retrying while it is busy, until `deadline`) and reads, fenced.
async fn acquire_and_read(
    ctx: &Ctx,
    links: &PrimaryLinks,
    request: &AppendRequest,
    deadline: Instant,
) -> Result<(Held, Read), StoreError> {
    let keys = request.book.keys();
    let (record, _, has_key) = request.script_record(&keys.seq);
    let ttl_ms = u64::try_from(ctx.limits.lock_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut attempt = 0;
    loop {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let mut invocation = ACQUIRE_AND_READ.prepare_invoke();
        invocation
            .key(&keys.lock)
            .key(&keys.fence_seq)
            .key(&keys.fence_seen)
            .key(record)
            .key(&keys.seq)
            .key(&keys.term)
            .arg(&owner)
            .arg(ttl_ms)
            .arg(has_key)
            .arg(request.known);
        let mut conn = links.conn.clone();
        // A lost answer may leave the lock taken: it expires after its TTL, as a holder's
        // that died would (releasing here would double the wait when Redis is unreachable).
        let reply: redis::Value = ctx
            .hop
            .call("lock_acquire_read", invocation.invoke_async(&mut conn))
            .await?;
        match taken(reply) {
            Ok(Some((token, read))) => return Ok((Held { owner, token }, read)),
            Ok(None) => {}
            Err(err) => {
                release(ctx, &keys.lock, links, &owner).await;
                return Err(err);
            }
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

/// Parses `acquire_and_read.lua`'s answer: `None` while another holder has the lock.
fn taken(reply: redis::Value) -> Result<Option<(u64, Read)>, StoreError> {
    let corrupt = |what: &dyn std::fmt::Debug| {
        StoreError::Corrupt(format!("acquire and read replied {what:?}"))
    };
    let redis::Value::Array(items) = reply else {
        return Err(corrupt(&reply));
    };
    let (status, token, payload) = match items.as_slice() {
        [redis::Value::Int(-2)] => return Ok(None),
        [
            redis::Value::Int(status),
            redis::Value::Int(token),
            rest @ ..,
        ] => (*status, *token, rest.first()),
        _ => return Err(corrupt(&items)),
    };
    let token = u64::try_from(token).map_err(|_| corrupt(&token))?;
    let text = |value: Option<&redis::Value>| -> Result<String, StoreError> {
        let value = value.ok_or_else(|| corrupt(&items))?;
        redis::from_redis_value_ref::<String>(value).map_err(|_| corrupt(value))
    };
    let read = match status {
        -1 => Read::Fenced,
        0 => Read::Replay(text(payload)?),
        1 => {
            let seq = text(payload)?;
            Read::Sequence(
                seq.parse()
                    .map_err(|_| StoreError::Corrupt(format!("sequence value {seq:?}")))?,
            )
        }
        _ => return Err(corrupt(&items)),
    };
    Ok(Some((token, read)))
}

/// Step 3 and 4: the id and the message, then the fenced write and the release.
async fn commit_and_release(
    ctx: &Ctx,
    links: &PrimaryLinks,
    held: &Held,
    request: &AppendRequest,
    seq: u64,
) -> Result<Written, StoreError> {
    let keys = request.book.keys();
    let (record, suffix, has_key) = request.script_record(&keys.seq);
    let id = seq + 1;
    let json = stored_json(id, &request.tail);
    let mut commit = COMMIT_AND_RELEASE.prepare_invoke();
    commit
        .key(&keys.fence_seen)
        .key(&keys.seq)
        .key(&keys.log)
        .key(record)
        .key(&keys.term)
        .key(&keys.lock)
        .arg(held.token)
        .arg(id)
        .arg(&json)
        .arg(ctx.limits.max_messages)
        .arg(ctx.limits.idempotency_ttl_secs)
        .arg(has_key)
        .arg(suffix)
        .arg(&held.owner);
    let mut conn = links.conn.clone();
    match ctx
        .hop
        .call::<i64, _, _>("lock_commit_release", commit.invoke_async(&mut conn))
        .await
    {
        Ok(1) => Ok(Written::Created(RawMessage { id, json })),
        Ok(_) => Err(StoreError::Fenced { token: held.token }),
        Err(err) => {
            // The script may not have run: release, or leave it to the TTL if that fails too.
            release(ctx, &keys.lock, links, &held.owner).await;
            Err(err)
        }
    }
}

/// Best effort, after a failed call: a lock that cannot be released expires after its TTL.
async fn release(ctx: &Ctx, lock: &str, links: &PrimaryLinks, owner: &str) {
    let mut unlock = UNLOCK.prepare_invoke();
    unlock.key(lock).arg(owner);
    let mut conn = links.conn.clone();
    if let Err(err) = ctx
        .hop
        .call::<i64, _, _>("lock_release", unlock.invoke_async(&mut conn))
        .await
    {
        tracing::debug!(error = %err, "lock release failed; it will expire");
    }
}
