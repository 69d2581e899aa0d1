//! What can go wrong between the backend and Redis.

use std::time::Duration;

use crate::faults::InjectedFailure;

/// A failed store operation. Every variant but [`StoreError::Corrupt`] and
/// [`StoreError::Redis`] is transient: the caller may retry (with the same idempotency key).
/// Clone: a batched append's error is the answer of every append in the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or the connection broke.
    #[error("Redis is unavailable")]
    Unavailable(#[source] redis::RedisError),
    /// A Redis call did not answer within its time limit.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Fault injection failed the call on purpose.
    #[error(transparent)]
    Injected(#[from] InjectedFailure),
    /// The optimistic (watch) strategy lost every attempt to concurrent writers.
    #[error("append gave up after {attempts} conflicting attempts")]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// The append waited its whole time limit behind this process's other appends (the
    /// `watch` strategy's local queue) and was never sent: nothing was written.
    #[error("append queued behind this process's others for {0:?}; nothing was sent")]
    Queued(Duration),
    /// The lock strategy could not get the lock in time.
    #[error("lock not acquired within {0:?}")]
    LockTimeout(Duration),
    /// A newer lock holder touched the data; this holder's lock had expired.
    #[error("write fenced off: token {token} was superseded")]
    Fenced {
        /// The stale token.
        token: u64,
    },
    /// No pooled connection could be had in time.
    #[error("no Redis connection available: {0}")]
    Pool(String),
    /// The append is on the primary, but fewer replicas than `REDIS_MIN_REPLICAS_ACK`
    /// confirmed it within `REDIS_WAIT_TIMEOUT_MS`.
    #[error("only {acked} of {wanted} replicas confirmed the write within {waited:?}")]
    NotReplicated {
        /// Replicas that confirmed.
        acked: u32,
        /// Replicas required.
        wanted: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// The replication check (fence write and `WAIT`) itself failed.
    #[error("replication check failed: {0}")]
    ReplicationCheck(String),
    /// Sentinel has not named a primary yet (or none of the sentinels answered).
    #[error("no Redis primary known yet")]
    NoPrimary,
    /// Redis Cluster answered `MOVED`: the guestbook's slot is served by the node named (the
    /// command was not executed).
    #[error("the guestbook's slot is served by {0} (MOVED)")]
    Moved(String),
    /// `REDIS_URL` names one node of a Redis Cluster, which redirects the guestbook's keys.
    #[error(
        "REDIS_URL points at a Redis Cluster node; set REDIS_CLUSTER_NODES (it answered MOVED to {0})"
    )]
    ClusterNode(String),
    /// Redis holds something this program did not write.
    #[error("unexpected data in Redis: {0}")]
    Corrupt(String),
    /// The task running an append ended without an answer (it panicked, or the runtime is
    /// shutting down).
    #[error("the append task failed: {0}")]
    TaskFailed(String),
    /// Any other error reply from Redis.
    #[error("Redis error")]
    Redis(#[source] redis::RedisError),
}

impl StoreError {
    /// True when retrying later may succeed (the HTTP layer answers 503 + Retry-After).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::Corrupt(_) | Self::Redis(_) | Self::TaskFailed(_)
        )
    }

    /// True when an append that failed with this error may nevertheless be stored: the
    /// request reached Redis and its answer was lost or came too late, or the append is on the
    /// primary but unconfirmed by replicas. Only a retry with the same `Idempotency-Key` is
    /// then safe; a retry without one may store the message twice.
    pub fn may_have_written(&self) -> bool {
        !matches!(
            self,
            Self::Injected(_)
                | Self::Contention { .. }
                | Self::LockTimeout(_)
                | Self::Queued(_)
                | Self::Fenced { .. }
                | Self::Pool(_)
                | Self::NoPrimary
                | Self::Moved(_)
                | Self::ClusterNode(_)
        )
    }

    /// Why a request answered 503, for its body: the label, or for a misconfiguration the
    /// operator must fix, the whole message (it names the setting; it leaks nothing).
    pub fn reason(&self) -> String {
        match self {
            Self::ClusterNode(_) => self.to_string(),
            other => other.label().to_owned(),
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Injected(_) => "injected",
            Self::Contention { .. } => "contention",
            Self::LockTimeout(_) => "lock_timeout",
            Self::Queued(_) => "queued",
            Self::Fenced { .. } => "fenced",
            Self::Pool(_) => "pool",
            Self::NotReplicated { .. } => "not_replicated",
            Self::NoPrimary => "no_primary",
            Self::ReplicationCheck(_) => "replication_check",
            Self::Moved(_) => "moved",
            Self::ClusterNode(_) => "cluster_node",
            Self::Corrupt(_) => "corrupt",
            Self::TaskFailed(_) => "task_failed",
            Self::Redis(_) => "redis",
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        use redis::{ErrorKind, RetryMethod};
        if err.code() == Some("MOVED")
            && let Some((host, port)) = err.redirect_node()
        {
            return Self::Moved(format!("{host}:{port}"));
        }
        // redis-rs says which errors a retry can cure: connection loss, a reply cut off by a
        // dying server (a parse error), LOADING, TRYAGAIN... Only "no retry" is permanent.
        let retryable = !matches!(err.retry_method(), RetryMethod::NoRetry);
        let overloaded_or_moving = matches!(
            err.code(),
            Some(
                "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "OOM"
            )
        );
        // Credentials Redis refuses (a rotated password, a missing ACL user or permission) are
        // the operator's to fix: 503 while they do, not 500, and never a crash.
        // An unauthenticated connection that sends a long command (a script call with its keys
        // and arguments) gets "Protocol error: unauthenticated multibulk length" instead of
        // NOAUTH: the same missing credentials.
        let refused_credentials = matches!(err.kind(), ErrorKind::AuthenticationFailed)
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
            || err.to_string().contains("unauthenticated");
        if retryable
            || refused_credentials
            || err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || overloaded_or_moving
            || matches!(err.kind(), ErrorKind::Io)
        {
            Self::Unavailable(err)
        } else {
            Self::Redis(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_cut_off_by_a_dying_server_is_transient() {
        let cut = redis::RedisError::from((redis::ErrorKind::Parse, "unexpected end of reply"));
        assert!(StoreError::from(cut).is_transient());
    }

    #[test]
    fn refused_credentials_are_unavailability_not_corruption() {
        let noauth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "NOAUTH",
            "Authentication required.".to_owned(),
        ));
        assert!(StoreError::from(noauth).is_transient());
    }

    #[test]
    fn a_long_command_from_an_unauthenticated_connection_is_unavailability() {
        let refused = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "Protocol error",
            "unauthenticated multibulk length".to_owned(),
        ));
        assert!(StoreError::from(refused).is_transient());
    }

    #[test]
    fn a_wrong_type_is_permanent() {
        let wrong =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a string"));
        assert!(!StoreError::from(wrong).is_transient());
    }
}
