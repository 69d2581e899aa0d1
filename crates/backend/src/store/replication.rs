//! `REDIS_MIN_REPLICAS_ACK`: an append is acknowledged only once `WAIT` reports that enough
//! replicas have it.
//!
//! `WAIT n t` waits for the writes *this connection* has sent. The strategies write over the
//! shared multiplexed connection (or, for `watch`, a pooled one), and a replayed key wrote
//! nothing at all, so each confirmation runs on a dedicated connection: it first writes a
//! fence (`INCR` of a small key), which moves that connection's replication offset past every
//! write the primary had already applied, this append or the original of a replayed one, and
//! then `WAIT`s. A dedicated connection also keeps `WAIT`, which blocks its connection, from
//! stalling everyone else's requests on the shared one.
//!
//! Group commit: one fence-and-`WAIT` covers every append that finished before its fence
//! write, so appends that finish while a round is in flight share the next round instead of
//! each waiting on its own (one round at a time, on one connection). A round's outcome,
//! confirmed or not, is the answer of every append it covered.
//!
//! What this does not promise: `WAIT` is not consensus. A replica that acknowledged can still
//! lose the write if it is not the one promoted, and an append refused with 503 is on the
//! primary and may surface later. What it does bound is the window Jepsen found: a failover
//! that promotes an acknowledging replica keeps every acknowledged append.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_redis::Pool;

use crate::store::error::StoreError;

/// Waits for replicas after each append.
pub(crate) struct Replication {
    pool: Pool,
    replicas: u32,
    wait: Duration,
    /// Time limit of getting a connection and of the fence write.
    call_timeout: Duration,
    /// Handed out to each append once its write is done, in order.
    tickets: AtomicU64,
    /// The last round; holding the lock is running the next one.
    round: tokio::sync::Mutex<Round>,
}

/// What the last round covered and found.
#[derive(Default)]
struct Round {
    /// Tickets below this were taken before the round's fence write.
    covered: u64,
    outcome: Option<Outcome>,
}

/// A round's result, shared by every append it covered.
#[derive(Debug, Clone)]
enum Outcome {
    Confirmed,
    NotReplicated { acked: u32 },
    Timeout(Duration),
    Failed(String),
}

impl Replication {
    pub(crate) fn new(pool: Pool, replicas: u32, wait: Duration, call_timeout: Duration) -> Self {
        Self {
            pool,
            replicas,
            wait,
            call_timeout,
            tickets: AtomicU64::new(0),
            round: tokio::sync::Mutex::new(Round::default()),
        }
    }

    /// Returns once `replicas` replicas have every write the primary had applied when called.
    /// `fence_key` is the fence of the book just written: any key served by this primary
    /// would do (a round covers every book on it), and the book's own surely is.
    pub(crate) async fn confirm(&self, fence_key: &str) -> Result<(), StoreError> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut round = self.round.lock().await;
        if ticket < round.covered
            && let Some(outcome) = &round.outcome
        {
            return self.answer(outcome.clone());
        }
        // Every ticket below this was taken after its append's write: the fence covers them.
        let covered = self.tickets.load(Ordering::SeqCst);
        let outcome = self.run_round(fence_key).await;
        *round = Round {
            covered,
            outcome: Some(outcome.clone()),
        };
        self.answer(outcome)
    }

    async fn run_round(&self, fence_key: &str) -> Outcome {
        let mut conn = match tokio::time::timeout(self.call_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => return Outcome::Failed(err.to_string()),
            Err(_) => return Outcome::Timeout(self.call_timeout),
        };
        let wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(fence_key)
            .ignore()
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(wait_ms);
        let limit = self.wait + self.call_timeout;
        match tokio::time::timeout(limit, pipe.query_async::<(u32,)>(&mut conn)).await {
            Ok(Ok((acked,))) if acked >= self.replicas => Outcome::Confirmed,
            Ok(Ok((acked,))) => Outcome::NotReplicated { acked },
            Ok(Err(err)) => Outcome::Failed(err.to_string()),
            Err(_) => Outcome::Timeout(limit),
        }
    }

    fn answer(&self, outcome: Outcome) -> Result<(), StoreError> {
        match outcome {
            Outcome::Confirmed => Ok(()),
            Outcome::NotReplicated { acked } => Err(StoreError::NotReplicated {
                acked,
                wanted: self.replicas,
                waited: self.wait,
            }),
            Outcome::Timeout(limit) => Err(StoreError::Timeout(limit)),
            Outcome::Failed(message) => Err(StoreError::ReplicationCheck(message)),
        }
    }
}
