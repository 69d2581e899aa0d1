//! Group commit for the `lua` strategy: appends that wait together go to Redis as one script
//! call (`scripts/append_batch.lua`), so Redis runs one script, one term check (its `INFO
//! replication`) and one sequence write for up to [`MAX_BATCH`] messages.
//!
//! Profiling `POST /api/messages` at 64 in flight showed Redis, not the backend, as the
//! bottleneck: each append paid a whole script call (argument checks, `INFO replication`,
//! the term `GET`) for a single `XADD`. Batching spreads that fixed cost over the batch.
//!
//! How a batch forms: callers queue their append (a bounded queue, [`QUEUE`]) and one worker
//! task sends whatever is waiting as soon as one of [`IN_FLIGHT`] call slots is free. A lone
//! waiting append goes at once, alone, through the plain `append.lua` (no added latency at
//! low load); under load, appends that arrive while the slots are busy share the next call.
//!
//! What stays as it was: each append of a batch is judged exactly as it would be alone, in
//! arrival order (its idempotency record, a replay, a reused key, even against an earlier
//! append of the same batch); ids are assigned in that order, dense and ascending; the term
//! check runs in the same script (see `store::sequence`); `WAIT` (replication) is still per
//! append, and its own group commit folds them. A failed call fails every append of its
//! batch with the error each would have had alone. Each caller waits at most the per-call
//! time limit, queueing included, and an append whose caller left before its batch was sent
//! is dropped, as a cancelled request's script call would never have been sent.

use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use futures_util::future::join_all;
use redis::Script;
use tokio::sync::{Semaphore, mpsc, oneshot};

use guestbook_common::dependency;

use crate::store::entry::created;
use crate::store::error::StoreError;
use crate::store::primary::PrimaryLinks;
use crate::store::sequence::script_with_sequence;
use crate::store::strategy::{AppendRequest, Ctx, Written, eval_sha, lua, script_reply_items};

/// Most appends in one script call: bounds the script's run time (Redis serves nothing else
/// meanwhile) and its argument list.
pub(crate) const MAX_BATCH: usize = 64;
/// Most appends waiting for a call; a caller waits (within its time limit) when it is full.
pub(crate) const QUEUE: usize = 4 * 1024;
/// Batch calls on the wire at once: two keep Redis busy while the backend handles the
/// previous reply, and leave room for the next batch to grow.
pub(crate) const IN_FLIGHT: usize = 2;

static APPEND_BATCH: LazyLock<Script> = LazyLock::new(|| script_with_sequence!("append_batch.lua"));

/// One queued append and where its answer goes.
struct Job {
    links: Arc<PrimaryLinks>,
    request: AppendRequest,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The queue of the `lua` strategy and its worker, started by the first append (it needs a
/// runtime, and the shared context, which the store builds after the strategy).
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
    idle: Mutex<Option<mpsc::Receiver<Job>>>,
    started: OnceLock<()>,
}

impl Default for Batcher {
    fn default() -> Self {
        let (jobs, idle) = mpsc::channel(QUEUE);
        Self {
            jobs,
            idle: Mutex::new(Some(idle)),
            started: OnceLock::new(),
        }
    }
}

impl Batcher {
    /// Appends on `links`, in a batch with whatever else is waiting.
    pub(crate) async fn append(
        &self,
        ctx: &Arc<Ctx>,
        links: &Arc<PrimaryLinks>,
        request: AppendRequest,
    ) -> Result<Written, StoreError> {
        self.start(ctx);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            links: Arc::clone(links),
            request,
            reply,
        };
        let limit = ctx.hop.timeout();
        let queued = async {
            self.jobs
                .send(job)
                .await
                .map_err(|_| StoreError::TaskFailed("the append queue is closed".into()))?;
            answer
                .await
                .map_err(|_| StoreError::TaskFailed("the append batch ended unanswered".into()))?
        };
        // Waiting for the batch is waiting on Redis, as the call alone would be.
        match dependency::timed(tokio::time::timeout(limit, queued)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }

    fn start(&self, ctx: &Arc<Ctx>) {
        self.started.get_or_init(|| {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.take());
            if let Some(jobs) = idle {
                tokio::spawn(run(Arc::clone(ctx), jobs));
            }
        });
    }
}

/// The worker: sends what waits, at most [`MAX_BATCH`] a call and [`IN_FLIGHT`] calls at
/// once. Ends when the strategy is dropped (the queue's sender with it).
async fn run(ctx: Arc<Ctx>, mut jobs: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // What arrived while every slot was busy joins this call.
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let ready = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            commit(&ctx, ready).await;
            drop(slot);
        });
    }
}

/// Sends `jobs`, one call per book and primary they were meant for (one script call touches
/// one book's keys, which on a cluster live on one node), all at once.
async fn commit(ctx: &Ctx, jobs: Vec<Job>) {
    // A caller that left (timed out, or its client went away) gets nothing written.
    let mut jobs: Vec<Job> = jobs
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .collect();
    let mut groups = Vec::new();
    while let Some(first) = jobs.first() {
        let links = Arc::clone(&first.links);
        let book = Arc::clone(&first.request.book);
        let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| {
            Arc::ptr_eq(&job.links, &links) && job.request.book.name() == book.name()
        });
        jobs = rest;
        groups.push((links, same));
    }
    // Books are independent: their calls go out together (pipelined on each node's shared
    // connection), not one after another; within a book, one call keeps the arrival order.
    join_all(
        groups
            .into_iter()
            .map(|(links, same)| async move { commit_on(ctx, &links, same).await }),
    )
    .await;
}

async fn commit_on(ctx: &Ctx, links: &PrimaryLinks, mut jobs: Vec<Job>) {
    if jobs.len() == 1
        && let Some(job) = jobs.pop()
    {
        let outcome = lua::append(ctx, links, &job.request).await;
        let _ = job.reply.send(outcome);
        return;
    }
    match call(ctx, links, &jobs).await {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(answer);
            }
        }
        Err(err) => {
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// One `append_batch.lua` call; an answer per job, in order.
async fn call(
    ctx: &Ctx,
    links: &PrimaryLinks,
    jobs: &[Job],
) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let keys = first.request.book.keys();
    let known = jobs.iter().map(|job| job.request.known).max().unwrap_or(0);
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha
        .arg(APPEND_BATCH.get_hash())
        .arg(3 + jobs.len())
        .arg(&keys.seq)
        .arg(&keys.log)
        .arg(&keys.term);
    // Without a key, the record names a key of the same hash tag the script never touches.
    for job in jobs {
        evalsha.arg(job.request.script_record(&keys.seq).0);
    }
    evalsha
        .arg(ctx.limits.max_messages)
        .arg(ctx.limits.idempotency_ttl_secs)
        .arg(known);
    for job in jobs {
        let (_, suffix, has_key) = job.request.script_record(&keys.seq);
        evalsha.arg(&job.request.tail).arg(has_key).arg(suffix);
    }
    let mut conn = links.conn.clone();
    let reply = ctx
        .hop
        .call(
            "append_batch_script",
            eval_sha(&APPEND_BATCH, &evalsha, &mut conn),
        )
        .await?;
    let items = script_reply_items(reply)?;
    if items.len() != jobs.len() {
        return Err(StoreError::Corrupt(format!(
            "append batch of {} answered {} appends",
            jobs.len(),
            items.len()
        )));
    }
    Ok(jobs
        .iter()
        .zip(items)
        .map(|(job, item)| answer(&job.request.tail, item))
        .collect())
}

/// One append's answer within the batch reply (`tail`: the message it sent, after its id).
fn answer(tail: &str, (status, payload): (i64, String)) -> Result<Written, StoreError> {
    match status {
        1 => Ok(Written::Created(created(&payload, tail)?)),
        0 => Ok(Written::Recorded(payload)),
        -1 => Err(StoreError::from(redis::RedisError::from((
            redis::ErrorKind::Extension,
            "append script error",
            payload,
        )))),
        other => Err(StoreError::Corrupt(format!("append batch status {other}"))),
    }
}

#[cfg(test)]
mod tests;
