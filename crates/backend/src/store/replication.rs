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
//! What this does not promise: `WAIT` is not consensus. A replica that acknowledged can still
//! lose the write if it is not the one promoted, and an append refused with 503 is on the
//! primary and may surface later. What it does bound is the window Jepsen found: a failover
//! that promotes an acknowledging replica keeps every acknowledged append.

use std::time::Duration;

use deadpool_redis::Pool;

use crate::store::StoreError;

/// Waits for replicas after each append.
pub(crate) struct Replication {
    pool: Pool,
    replicas: u32,
    wait: Duration,
    fence_key: String,
    /// Time limit of getting a connection and of the fence write.
    call_timeout: Duration,
}

impl Replication {
    pub(crate) fn new(
        pool: Pool,
        replicas: u32,
        wait: Duration,
        fence_key: String,
        call_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            replicas,
            wait,
            fence_key,
            call_timeout,
        }
    }

    /// Returns once `replicas` replicas have every write the primary had applied when called.
    pub(crate) async fn confirm(&self) -> Result<(), StoreError> {
        let mut conn = match tokio::time::timeout(self.call_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => return Err(StoreError::Pool(err.to_string())),
            Err(_) => return Err(StoreError::Timeout(self.call_timeout)),
        };
        let wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&self.fence_key)
            .ignore()
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(wait_ms);
        let limit = self.wait + self.call_timeout;
        let acked: (u32,) = match tokio::time::timeout(limit, pipe.query_async(&mut conn)).await {
            Ok(result) => result?,
            Err(_) => return Err(StoreError::Timeout(limit)),
        };
        if acked.0 < self.replicas {
            return Err(StoreError::NotReplicated {
                acked: acked.0,
                wanted: self.replicas,
                waited: self.wait,
            });
        }
        Ok(())
    }
}
