//! The guestbook's storage in Redis.
//!
//! Messages live in one Redis stream per guestbook (the *log*), whose entry ids are
//! `<message id>-0`: ascending ids, range reads by id (`XRANGE`), a retention cap
//! (`MAXLEN`), and a tail every backend replica can follow (`XREAD BLOCK`, see [`feed`]).
//!
//! One logical append touches four keys: the id sequence, the log, the idempotency record and
//! (through `MAXLEN`) the retention cap. [`AppendStrategy`] selects how that is made atomic;
//! see each module under [`strategy`] for the design and its costs.
//!
//! Connections: single commands and scripts share one multiplexed connection, which pipelines
//! concurrent requests over one socket (measured here: an axum handler doing one RPUSH reached
//! ≈ 77k req/s on a multiplexed connection and ≈ 27k through a connection pool). Only the
//! `watch` strategy takes pooled connections, because WATCH state belongs to a connection.
//!
//! This module is the facade ([`Store`]); its children never import it (the live tail,
//! [`feed`], is the one client of the facade among them):
//!
//! - [`config`]: [`RedisArgs`], every Redis and append setting, validated and redacted.
//! - [`entry`]: the log entry format, one contract with the Lua scripts; [`Page`], [`RawMessage`].
//! - [`strategy`]: the four append strategies as values owning their resources ([`AppendStrategy`]).
//! - `log`: reading and clearing the log (`naive` reads and clears its own way).
//! - [`hop`]: the one door to Redis (time limit, injected faults, dependency clock, metrics).
//! - `primary`, `sentinel`, `cluster`, `pool`, `replication`: the primary's connections,
//!   following it through Sentinel or to the Redis Cluster node serving the guestbook's slot,
//!   dedicated connections, and the `WAIT` that confirms an append.
//! - [`keys`], [`sequence`], [`metrics`], [`error`]: key names, ids across failovers, metrics,
//!   and what can go wrong.
//! - [`feed`]: this process's tail of the log, for live updates.

mod cluster;
pub mod config;
pub mod entry;
pub mod error;
pub mod feed;
pub mod hop;
pub mod keys;
mod log;
pub mod metrics;
mod pool;
mod primary;
mod replication;
mod sentinel;
pub mod sequence;
pub mod strategy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guestbook_common::dependency;
use redis::aio::ConnectionManager;

pub use cluster::ClusterNode;
pub use config::{AppendStrategy, RedisArgs};
pub use entry::{MAX_PAGE, Page, RawMessage};
pub use error::StoreError;
pub use keys::Keys;
pub use metrics::StoreMetrics;

use crate::domain::message::format_created_at;
use crate::domain::{IdempotencyKey, IdempotencyRecord, NewMessage, Replay, judge};
use crate::faults::Faults;
use cluster::Cluster;
use hop::Hop;
use metrics::AppendLabels;
use primary::{CurrentPrimary, PrimaryLinks, manager_config};
use sentinel::Sentinel;
use strategy::{AppendLimits, AppendRequest, Appender, Ctx, Written};

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// A new message was written.
    Created(RawMessage),
    /// The idempotency key was used before with the same author and text: the first answer.
    Replayed(RawMessage),
    /// The idempotency key was used before with another body; nothing was written.
    KeyReused,
}

/// Shared state of the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The primary's connections; replaced when Sentinel names another primary.
    primary: CurrentPrimary,
    /// `REDIS_REPLICA_URL`: where reads go first.
    replica: Option<ConnectionManager>,
    /// `REDIS_SENTINELS`: where to ask for the primary.
    sentinel: Option<Sentinel>,
    /// `REDIS_CLUSTER_NODES`: where to ask which node serves the guestbook's slot.
    cluster: Option<Cluster>,
    /// What rebuilding the primary's links needs.
    args: RedisArgs,
    /// The door to Redis, the key names, the limits and the metrics, shared with the strategies.
    ctx: Arc<Ctx>,
    /// The append strategy and its resources.
    appender: Appender,
    /// The highest message id this process has seen (appended, replayed or read by the live
    /// tail): a new term's ids start past it (see [`sequence`]).
    highest_seen: AtomicU64,
}

impl Inner {
    /// Notes a message id this process has seen.
    fn observe(&self, id: u64) {
        self.highest_seen.fetch_max(id, Ordering::AcqRel);
    }

    /// Points every connection at the primary at `url` (Sentinel named a new one).
    fn switch_primary(&self, url: &str) -> Result<(), StoreError> {
        let links = PrimaryLinks::new(url, &self.args, &self.ctx.keys)?;
        tracing::warn!(primary = %links.address, "following a new Redis primary");
        self.primary.set(links);
        Ok(())
    }

    /// After a `MOVED` in cluster mode: points every connection at the node it named.
    /// Returns whether the failed call may be retried (a `MOVED` command was not executed).
    fn follow_moved(&self, outcome: &Result<impl Sized, StoreError>) -> bool {
        let (Err(StoreError::Moved(to)), Some(cluster)) = (outcome, &self.cluster) else {
            return false;
        };
        let followed = cluster
            .moved_to(to)
            .and_then(|url| match self.primary.get() {
                Ok(links) if links.url == url => Ok(()),
                _ => self.switch_primary(&url),
            });
        followed.is_ok()
    }
}

impl Store {
    /// Builds the store. Connects lazily: a backend whose Redis is down still starts, stays
    /// live and ready (seed 004), and answers data requests with 503 until Redis returns.
    /// With `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES` no primary is known until
    /// [`Store::follow_sentinels`] asks.
    pub fn new(
        settings: &RedisArgs,
        faults: Arc<Faults>,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        // rediss:// needs a process-wide rustls provider; redis-rs leaves the choice to us. An
        // error means one is installed already (a second store in the same process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = settings.redis_timeout();
        let keys = Keys::new(&settings.guestbook_name);
        let sentinel = Sentinel::from_settings(settings);
        let cluster = Cluster::from_settings(settings, &keys.seq);
        let primary = CurrentPrimary::default();
        if sentinel.is_none() && cluster.is_none() {
            primary.set(PrimaryLinks::new(&settings.redis_url, settings, &keys)?);
        }
        let replica = match &settings.redis_replica_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str()).map_err(StoreError::Redis)?;
                Some(
                    ConnectionManager::new_lazy_with_config(client, manager_config(timeout))
                        .map_err(StoreError::Redis)?,
                )
            }
            None => None,
        };
        let ctx = Arc::new(Ctx {
            hop: Hop::new(faults, timeout, metrics.clone()).in_cluster(cluster.is_some()),
            keys,
            limits: AppendLimits::new(settings),
            metrics,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                primary,
                replica,
                sentinel,
                cluster,
                args: settings.clone(),
                ctx,
                appender: Appender::new(settings),
                highest_seen: AtomicU64::new(0),
            }),
        })
    }

    /// Asks the sentinels (or the cluster's nodes) for the primary until `stop`, switching
    /// when they name another; returns at once without `REDIS_SENTINELS` or
    /// `REDIS_CLUSTER_NODES`.
    pub async fn follow_sentinels(&self, stop: tokio_util::sync::CancellationToken) {
        let inner = &*self.inner;
        let switch = |url: &str| inner.switch_primary(url);
        if let Some(cluster) = &inner.cluster {
            let current = || inner.primary.get().ok().map(|links| links.url.clone());
            cluster::follow(cluster, switch, current, stop).await;
        } else if let Some(sentinel) = &inner.sentinel {
            sentinel::follow(sentinel, switch, stop).await;
        }
    }

    /// The cluster's nodes as last described, in cluster mode.
    pub fn cluster_nodes(&self) -> Option<Vec<ClusterNode>> {
        self.inner.cluster.as_ref().map(Cluster::nodes)
    }

    /// The primary in use (`host:port`), if one is known.
    pub fn primary_address(&self) -> Option<String> {
        self.inner.primary.address()
    }

    /// The strategy in use.
    pub fn strategy(&self) -> AppendStrategy {
        self.inner.appender.strategy()
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.inner.ctx.keys
    }

    /// Notes a message id seen outside an append (the live tail reads every new one).
    pub fn observe(&self, id: u64) {
        self.inner.observe(id);
    }

    /// Changes whenever Sentinel names another primary (the live tail starts over on it).
    pub fn primary_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.primary.changes()
    }

    /// The current primary's links (the live tail reads and confirms on them).
    pub(crate) fn primary(&self) -> Result<Arc<PrimaryLinks>, StoreError> {
        self.inner.primary.get()
    }

    /// The per-call Redis time limit.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.ctx.hop.timeout()
    }

    /// Appends a message exactly once per idempotency key.
    ///
    /// The primary is looked up once: the append and the `WAIT` that confirms it go to the
    /// same server, so a primary change in between cannot make another server vouch for it.
    pub async fn append(
        &self,
        message: &NewMessage,
        key: Option<&IdempotencyKey>,
    ) -> Result<AppendOutcome, StoreError> {
        let inner = &*self.inner;
        let created_at = format_created_at(time::OffsetDateTime::now_utc());
        let request = AppendRequest {
            tail: message.json_tail_at(&created_at),
            record: key.map(|key| {
                (
                    inner.ctx.keys.idempotency(key.as_str()),
                    IdempotencyRecord::suffix(&created_at, message),
                )
            }),
            known: inner.highest_seen.load(Ordering::Acquire),
        };
        // Kept for a retry after MOVED, which only a cluster answers.
        let retry = inner.cluster.as_ref().map(|_| request.clone());
        let mut outcome = self.append_on_one_primary(message, request).await;
        if let Some(request) = retry
            && inner.follow_moved(&outcome)
        {
            outcome = self.append_on_one_primary(message, request).await;
        }
        let label = match &outcome {
            Ok(AppendOutcome::Created(_)) => "created",
            Ok(AppendOutcome::Replayed(_)) => "replayed",
            Ok(AppendOutcome::KeyReused) => "key_reused",
            Err(err) => err.label(),
        };
        inner
            .ctx
            .metrics
            .appends
            .get_or_create(&AppendLabels {
                strategy: self.strategy().as_str(),
                outcome: label,
            })
            .inc();
        outcome
    }

    async fn append_on_one_primary(
        &self,
        message: &NewMessage,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let inner = &*self.inner;
        let links = inner.primary.get()?;
        let written = inner.appender.append(&inner.ctx, &links, request).await?;
        let outcome = match written {
            Written::Created(created) => AppendOutcome::Created(created),
            Written::Recorded(record) => replay(&record, message)?,
        };
        if let AppendOutcome::Created(raw) | AppendOutcome::Replayed(raw) = &outcome {
            inner.observe(raw.id);
            // A replayed key is confirmed too: its first answer may have been this very 503.
            if let Some(replication) = &links.replication {
                // WAIT bypasses the hop (its own time limit): time it here.
                dependency::timed(replication.confirm()).await?;
            }
        }
        Ok(outcome)
    }

    /// The messages `page` selects (at most [`MAX_PAGE`]), from the replica when there is one
    /// (it may lag the primary by a little; the primary answers when it is down).
    pub async fn list(&self, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        self.read(page, true).await
    }

    /// The same, always from the primary. Live-update catch-up uses this: a lagging replica
    /// would end the catch-up short of messages appended before the subscription, which the
    /// live feed never carries, leaving a gap.
    pub async fn list_from_primary(&self, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        self.read(page, false).await
    }

    async fn read(&self, page: Page, prefer_replica: bool) -> Result<Vec<RawMessage>, StoreError> {
        let read = self.read_once(page, prefer_replica).await;
        if self.inner.follow_moved(&read) {
            return self.read_once(page, prefer_replica).await;
        }
        read
    }

    async fn read_once(
        &self,
        page: Page,
        prefer_replica: bool,
    ) -> Result<Vec<RawMessage>, StoreError> {
        let page = Page {
            limit: page.limit.clamp(1, MAX_PAGE),
            ..page
        };
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        if let Appender::Naive = inner.appender {
            return strategy::naive::list(&inner.ctx, &*inner.primary.get()?, page).await;
        }
        let replica = inner.replica.as_ref().filter(|_| prefer_replica);
        log::read(&inner.ctx, &inner.primary, replica, page).await
    }

    /// Deletes every message and idempotency record; returns how many messages were removed.
    /// The id sequence is kept, so ids never repeat and live-update clients can resume.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let links = inner.primary.get()?;
        let removed = match inner.appender {
            Appender::Naive => strategy::naive::clear(&inner.ctx, &links).await?,
            _ => log::clear(&inner.ctx, &links).await?,
        };
        log::forget_keys(&inner.ctx, &links).await?;
        Ok(removed)
    }

    /// Round-trip time of a PING, for `/health/dependencies` (never for a probe).
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut conn = self.inner.primary.get()?.conn.clone();
        let _: String = self
            .inner
            .ctx
            .hop
            .call("ping", redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(started.elapsed())
    }
}

/// What an idempotency record says about a request that reused its key.
fn replay(record: &str, message: &NewMessage) -> Result<AppendOutcome, StoreError> {
    Ok(match judge(record, message).map_err(StoreError::Corrupt)? {
        Replay::Same { id, json } => AppendOutcome::Replayed(RawMessage { id, json }),
        Replay::OtherBody => AppendOutcome::KeyReused,
    })
}
