//! The `watch` strategy: optimistic concurrency with WATCH/MULTI/EXEC.
//!
//! 1. WATCH the id sequence, the term, the log (and the idempotency record), then read them and
//!    this server's replication id, in one pipeline.
//! 2. If the key was used before, UNWATCH and return what it stored.
//! 3. Compute the id: the sequence as this primary may continue it ([`continue_from`]), and
//!    above the log's last entry, so the log write inside the transaction cannot fail.
//! 4. MULTI: append, record the key, set the sequence to the id (and the term); EXEC. Inside
//!    a transaction a failing command does not stop the others, which is why step 3 rules out
//!    the one failure that would leave a record without its message.
//! 5. EXEC answers nil when any watched key changed since step 1: another writer won. Wait a
//!    jittered, growing pause and start again, at most `WATCH_MAX_ATTEMPTS` times.
//!
//! # Why it collapsed under load, and the local queue
//! Every append writes the sequence, so with N writers in flight one commits and N − 1 abort
//! per round (seed 000's measurement: ≈ 35 aborts per message at 64 in flight), and some ran
//! out of attempts (503s at 64 in flight). So, as the `lock` strategy does, a process queues
//! its own appends to a book (a local FIFO mutex per book, waited on within the per-call
//! time limit) and runs them one at a time: writers of one process never abort each other, and only other instances
//! can conflict, which the attempts and their backoff absorb. It is correct, and it is here
//! to show the cost of optimism next to [`super::lua`].
//!
//! WATCH state belongs to a connection, so this strategy takes a connection from a bounded
//! pool for the whole attempt; a connection that saw an error mid-transaction is discarded
//! rather than returned with a WATCH still armed. A request dropped mid-attempt would return
//! its connection with a WATCH armed (or inside MULTI); [`crate::store::Store::append`]
//! runs this strategy in a task of its own, so an attempt always ends with EXEC or UNWATCH.
//!
//! [`continue_from`]: crate::store::sequence::continue_from

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::{Connection, Pool};

use crate::store::entry::{RawMessage, stored_json};
use crate::store::error::StoreError;
use crate::store::primary::PrimaryLinks;
use crate::store::sequence::{continue_from, replication_id};
use crate::store::strategy::{AppendRequest, Ctx, Written, full_jitter};

const BACKOFF_BASE: Duration = Duration::from_micros(500);
const BACKOFF_CAP: Duration = Duration::from_millis(25);

/// The watch strategy. Its pool of dedicated connections belongs to each primary's links
/// (`PrimaryLinks::watch_pool`), so it follows Sentinel and, in a cluster, each book's node.
#[derive(Clone, Default)]
pub(crate) struct Watch;

impl Watch {
    /// Appends with optimistic retries; see the module's steps.
    pub(crate) async fn append(
        self,
        ctx: Arc<Ctx>,
        links: Arc<PrimaryLinks>,
        request: AppendRequest,
    ) -> Result<Written, StoreError> {
        let pool = links
            .watch_pool
            .clone()
            .ok_or_else(|| StoreError::TaskFailed("no pool for the watch strategy".into()))?;
        let limit = ctx.hop.timeout();
        let Ok(_turn) = tokio::time::timeout(limit, request.book.local.lock()).await else {
            // Nothing reached Redis: a retry without a key cannot store the message twice.
            return Err(StoreError::Queued(limit));
        };
        attempts(&ctx, &pool, &request).await
    }
}

async fn attempts(ctx: &Ctx, pool: &Pool, request: &AppendRequest) -> Result<Written, StoreError> {
    let mut conn = match tokio::time::timeout(ctx.hop.timeout(), pool.get()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return Err(StoreError::Pool(err.to_string())),
        Err(_) => return Err(StoreError::Timeout(ctx.hop.timeout())),
    };
    let attempts = ctx.limits.watch_max_attempts;
    for attempt in 0..attempts {
        match attempt_once(ctx, &mut conn, request).await {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {
                ctx.metrics.watch_conflicts.inc();
                tokio::time::sleep(full_jitter(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
            }
            Err(err) => {
                // The connection may still have a WATCH armed or a reply in flight.
                drop(Connection::take(conn));
                return Err(err);
            }
        }
    }
    Err(StoreError::Contention { attempts })
}

/// What step 1 reads.
type Read = (
    Option<String>,
    Option<String>,
    String,
    Vec<(String, Vec<String>)>,
    Option<String>,
);

/// One optimistic attempt; `Ok(None)` when another writer got in first.
async fn attempt_once(
    ctx: &Ctx,
    conn: &mut Connection,
    request: &AppendRequest,
) -> Result<Option<Written>, StoreError> {
    let keys = request.book.keys();
    let record = request.record.as_ref();

    // 1. One round trip: WATCH, then the reads. Without a key the last GET reads the sequence
    //    again, which keeps the reply's shape fixed.
    let mut read = redis::pipe();
    read.cmd("WATCH")
        .arg(&keys.seq)
        .arg(&keys.term)
        .arg(&keys.log);
    if let Some((key, _)) = record {
        read.arg(key);
    }
    read.ignore()
        .cmd("GET")
        .arg(&keys.seq)
        .cmd("GET")
        .arg(&keys.term)
        .cmd("INFO")
        .arg("replication")
        .cmd("XREVRANGE")
        .arg(&keys.log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .cmd("GET")
        .arg(record.map_or(keys.seq.as_str(), |(key, _)| key.as_str()));
    let (seq, term, info, last, existing): Read =
        ctx.hop.call("watch_read", read.query_async(conn)).await?;

    // 2. A replay.
    if let (Some(_), Some(existing)) = (record, existing) {
        let _: () = ctx
            .hop
            .call("unwatch", redis::cmd("UNWATCH").query_async(conn))
            .await?;
        return Ok(Some(Written::Recorded(existing)));
    }

    // 3. The id.
    let seq: u64 = match seq {
        None => 0,
        Some(seq) => seq
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("sequence value {seq:?}")))?,
    };
    let replid = replication_id(&info)
        .ok_or_else(|| StoreError::Corrupt("INFO replication names no master_replid".into()))?;
    let (base, new_term) = continue_from(seq, term.as_deref(), replid, request.known);
    let last_logged = match last.first() {
        None => 0,
        Some((entry, _)) => entry
            .split_once('-')
            .and_then(|(id, _)| id.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("log entry id {entry:?}")))?,
    };
    let id = base.max(last_logged) + 1;
    let json = stored_json(id, &request.tail);

    // 4. The transaction, log entry first.
    let mut write = redis::pipe();
    write
        .atomic()
        .cmd("XADD")
        .arg(&keys.log)
        .arg("MAXLEN")
        .arg(ctx.limits.max_messages)
        .arg(format!("{id}-0"))
        .arg("m")
        .arg(&json)
        .ignore();
    if let Some((key, suffix)) = record {
        write
            .cmd("SET")
            .arg(key)
            .arg(format!("{id} {suffix}"))
            .arg("EX")
            .arg(ctx.limits.idempotency_ttl_secs)
            .ignore();
    }
    write.cmd("SET").arg(&keys.seq).arg(id).ignore();
    if new_term {
        write.cmd("SET").arg(&keys.term).arg(replid).ignore();
    }
    let committed: Option<redis::Value> =
        ctx.hop.call("watch_exec", write.query_async(conn)).await?;
    Ok(committed.map(|_| Written::Created(RawMessage { id, json })))
}
