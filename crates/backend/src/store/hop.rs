//! The one place every Redis call passes through: injected faults, the time limit, the
//! latency metric, and the request's dependency clock. A call that exceeds its limit becomes
//! [`StoreError::Timeout`], so a paused or unreachable Redis turns into a prompt 503 rather
//! than a hung request; its time (injected delay included) counts as waiting on Redis, so a slow
//! Redis does not make the pod look saturated ([`guestbook_common::dependency`]).
//!
//! Outside cluster mode a `MOVED` reply can only mean that `REDIS_URL` names a Redis Cluster
//! node: it becomes [`StoreError::ClusterNode`], which says so in the log and the 503's body.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestbook_common::dependency;

use crate::faults::Faults;
use crate::store::error::StoreError;
use crate::store::metrics::{OpLabels, StoreMetrics};

/// Wraps Redis calls with faults, a timeout and a latency observation.
#[derive(Clone)]
pub struct Hop {
    faults: Arc<Faults>,
    timeout: Duration,
    metrics: StoreMetrics,
    /// `REDIS_CLUSTER_NODES` is set: `MOVED` is the store's to follow.
    cluster: bool,
}

impl Hop {
    /// A hop with the given per-call time limit.
    pub fn new(faults: Arc<Faults>, timeout: Duration, metrics: StoreMetrics) -> Self {
        Self {
            faults,
            timeout,
            metrics,
            cluster: false,
        }
    }

    /// The same hop in cluster mode (`MOVED` is passed on to be followed, not a misconfiguration).
    pub fn in_cluster(self, cluster: bool) -> Self {
        Self { cluster, ..self }
    }

    /// The per-call time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one Redis call. `call` is not polled before injected faults have been applied,
    /// so an injected failure never reaches Redis.
    pub async fn call<T, E, F>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, E>>,
        StoreError: From<E>,
    {
        let started = Instant::now();
        let guarded = async {
            self.faults.before_redis_call().await?;
            call.await.map_err(StoreError::from)
        };
        let outcome = match dependency::timed(tokio::time::timeout(self.timeout, guarded)).await {
            // Logged where it is answered, with the rest of the request's failure.
            Ok(Err(StoreError::Moved(to))) if !self.cluster => Err(StoreError::ClusterNode(to)),
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        self.metrics
            .redis_call_seconds
            .get_or_create(&OpLabels { op })
            .observe(started.elapsed().as_secs_f64());
        outcome
    }
}
