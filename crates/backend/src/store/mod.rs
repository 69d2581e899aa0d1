//! The guestbook's storage in Redis.
//!
//! Messages live in one Redis stream per guestbook (a *book*, see [`book`]; the *log*), whose entry ids are
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
//! - [`book`]: the books this process serves, their keys and what it remembers of each.
//! - [`keys`], [`sequence`], [`metrics`], [`error`]: key names, ids across failovers, metrics,
//!   and what can go wrong.
//! - [`feed`]: this process's tail of the log, for live updates.

pub mod book;
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use guestbook_common::dependency;
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;

pub use book::Book;
pub use cluster::ClusterNode;
pub use config::{AppendStrategy, RedisArgs};
pub use entry::{MAX_PAGE, Page, RawMessage};
pub use error::StoreError;
pub use keys::Keys;
pub use metrics::StoreMetrics;

use crate::domain::message::format_created_at;
use crate::domain::{IdempotencyKey, IdempotencyRecord, NewMessage, Replay, judge};
use crate::faults::Faults;
use book::Books;
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
    /// The primary's connections; replaced when Sentinel names another primary. In cluster
    /// mode, the links of the node serving the default book (and its counter of changes
    /// moves whenever any slot changes hands).
    primary: CurrentPrimary,
    /// In cluster mode: the links of each node serving a book, by URL.
    nodes: Mutex<HashMap<String, Arc<PrimaryLinks>>>,
    /// The default book and the others met so far.
    books: Books,
    /// `REDIS_REPLICA_URL`: where reads go first.
    replica: Option<ConnectionManager>,
    /// `REDIS_SENTINELS`: where to ask for the primary.
    sentinel: Option<Sentinel>,
    /// `REDIS_CLUSTER_NODES`: where to ask which node serves each book's slot.
    cluster: Option<Cluster>,
    /// What rebuilding the primary's links needs.
    args: RedisArgs,
    /// The door to Redis, the limits and the metrics, shared with the strategies.
    ctx: Arc<Ctx>,
    /// The append strategy and its resources.
    appender: Appender,
    /// `guestbook_appends_total{outcome="created"}` of the strategy, once an append made it:
    /// the one outcome of nearly every append, kept so as not to look it up each time.
    created: OnceLock<Counter>,
}

impl Inner {
    /// Points every connection at the primary at `url` (Sentinel named a new one).
    fn switch_primary(&self, url: &str) -> Result<(), StoreError> {
        let links = PrimaryLinks::new(url, &self.args)?;
        tracing::warn!(primary = %links.address, "following a new Redis primary");
        self.primary.set(links);
        Ok(())
    }

    /// The links to the primary serving `book`: the one primary, or in cluster mode the node
    /// serving the book's slot.
    fn links_for(&self, book: &Book) -> Result<Arc<PrimaryLinks>, StoreError> {
        let Some(cluster) = &self.cluster else {
            return self.primary.get();
        };
        let url = cluster.url_for(book.slot()).ok_or(StoreError::NoPrimary)?;
        self.node_links(&url)
    }

    /// The links to the cluster node at `url`, made on first use.
    fn node_links(&self, url: &str) -> Result<Arc<PrimaryLinks>, StoreError> {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(links) = nodes.get(url) {
            return Ok(Arc::clone(links));
        }
        let links = Arc::new(PrimaryLinks::new(url, &self.args)?);
        tracing::info!(node = %links.address, "connecting to a Redis Cluster node");
        nodes.insert(url.to_owned(), Arc::clone(&links));
        Ok(links)
    }

    /// In cluster mode, after a slot changed hands: the default book's node becomes the
    /// "primary" shown by `/health/dependencies`, and every live tail is told.
    fn cluster_changed(&self) {
        let default = self.books.default_book();
        let current = self.primary.get().ok();
        match self.links_for(default) {
            Ok(links) if current.as_ref().is_some_and(|now| Arc::ptr_eq(now, &links)) => {
                self.primary.notify();
            }
            Ok(links) => {
                tracing::warn!(node = %links.address, "the default book is served by another Redis Cluster node");
                self.primary.set_shared(links);
            }
            Err(_) => self.primary.notify(),
        }
    }

    /// After a `MOVED` in cluster mode: the book's slot is served by the node it named.
    /// Returns whether the failed call may be retried (a `MOVED` command was not executed).
    fn follow_moved(&self, book: &Book, outcome: &Result<impl Sized, StoreError>) -> bool {
        let (Err(StoreError::Moved(to)), Some(cluster)) = (outcome, &self.cluster) else {
            return false;
        };
        let followed = cluster.moved(book.slot(), to).is_ok();
        if followed {
            self.cluster_changed();
        }
        followed
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
        let books = Books::new(&settings.guestbook_name);
        let sentinel = Sentinel::from_settings(settings);
        let cluster = Cluster::from_settings(settings, &books.default_book().keys().seq);
        let primary = CurrentPrimary::default();
        if sentinel.is_none() && cluster.is_none() {
            primary.set(PrimaryLinks::new(&settings.redis_url, settings)?);
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
            limits: AppendLimits::new(settings),
            metrics,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                primary,
                nodes: Mutex::default(),
                books,
                replica,
                sentinel,
                cluster,
                args: settings.clone(),
                ctx,
                appender: Appender::new(settings),
                created: OnceLock::new(),
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
            cluster::follow(cluster, || inner.cluster_changed(), stop).await;
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

    /// The default book's key names.
    pub fn keys(&self) -> &Keys {
        self.inner.books.default_book().keys()
    }

    /// The default book (`GUESTBOOK_NAME`).
    pub fn default_book(&self) -> Arc<Book> {
        Arc::clone(self.inner.books.default_book())
    }

    /// The book called `name`, which the caller has validated
    /// (`guestbook_api::is_valid_book_name`).
    pub fn book(&self, name: &str) -> Arc<Book> {
        self.inner.books.get(name)
    }

    /// Changes whenever Sentinel names another primary, or a cluster slot changes hands (the
    /// live tails start over).
    pub fn primary_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.primary.changes()
    }

    /// The links to the primary serving `book` (a live tail reads and confirms on them).
    pub(crate) fn links_for(&self, book: &Book) -> Result<Arc<PrimaryLinks>, StoreError> {
        self.inner.links_for(book)
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
        book: &Arc<Book>,
        message: &NewMessage,
        key: Option<&IdempotencyKey>,
    ) -> Result<AppendOutcome, StoreError> {
        let inner = &*self.inner;
        let created_at = format_created_at(time::OffsetDateTime::now_utc());
        let request = AppendRequest {
            book: Arc::clone(book),
            tail: message.json_tail_at(&created_at),
            record: key.map(|key| {
                (
                    book.keys().idempotency(key.as_str()),
                    IdempotencyRecord::suffix(&created_at, message),
                )
            }),
            known: book.known(),
        };
        // Kept for a retry after MOVED, which only a cluster answers.
        let retry = inner.cluster.as_ref().map(|_| request.clone());
        let mut outcome = self.append_on_one_primary(message, request).await;
        if let Some(request) = retry
            && inner.follow_moved(book, &outcome)
        {
            outcome = self.append_on_one_primary(message, request).await;
        }
        let label = match &outcome {
            Ok(AppendOutcome::Created(_)) => {
                inner
                    .created
                    .get_or_init(|| self.appends_counter("created"))
                    .inc();
                return outcome;
            }
            Ok(AppendOutcome::Replayed(_)) => "replayed",
            Ok(AppendOutcome::KeyReused) => "key_reused",
            Err(err) => err.label(),
        };
        self.appends_counter(label).inc();
        outcome
    }

    /// The counter of appends with `outcome` by this strategy (a clone shares the count).
    fn appends_counter(&self, outcome: &'static str) -> Counter {
        self.inner
            .ctx
            .metrics
            .appends
            .get_or_create(&AppendLabels {
                strategy: self.strategy().as_str(),
                outcome,
            })
            .clone()
    }

    async fn append_on_one_primary(
        &self,
        message: &NewMessage,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let inner = &*self.inner;
        let book = Arc::clone(&request.book);
        let links = inner.links_for(&book)?;
        let written = inner.appender.append(&inner.ctx, &links, request).await?;
        let outcome = match written {
            Written::Created(created) => AppendOutcome::Created(created),
            Written::Recorded(record) => replay(&record, message)?,
        };
        if let AppendOutcome::Created(raw) | AppendOutcome::Replayed(raw) = &outcome {
            book.observe(raw.id);
            // A replayed key is confirmed too: its first answer may have been this very 503.
            if let Some(replication) = &links.replication {
                // WAIT bypasses the hop (its own time limit): time it here. Boxed: its future
                // (a pool checkout and a pipeline, ~7 KiB) would otherwise sit in every
                // append's future, replicated or not, and be moved with it.
                let confirm = Box::pin(replication.confirm(&book.keys().replication_fence));
                dependency::timed(confirm).await?;
            }
        }
        Ok(outcome)
    }

    /// The messages `page` selects (at most [`MAX_PAGE`]), from the replica when there is one
    /// (it may lag the primary by a little; the primary answers when it is down).
    pub async fn list(&self, book: &Book, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        self.read(book, page, true).await
    }

    /// The same, always from the primary. Live-update catch-up uses this: a lagging replica
    /// would end the catch-up short of messages appended before the subscription, which the
    /// live feed never carries, leaving a gap.
    pub async fn list_from_primary(
        &self,
        book: &Book,
        page: Page,
    ) -> Result<Vec<RawMessage>, StoreError> {
        self.read(book, page, false).await
    }

    async fn read(
        &self,
        book: &Book,
        page: Page,
        prefer_replica: bool,
    ) -> Result<Vec<RawMessage>, StoreError> {
        let read = self.read_once(book, page, prefer_replica).await;
        if self.inner.follow_moved(book, &read) {
            return self.read_once(book, page, prefer_replica).await;
        }
        read
    }

    async fn read_once(
        &self,
        book: &Book,
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
            let links = inner.links_for(book)?;
            return strategy::naive::list(&inner.ctx, book.keys(), &links, page).await;
        }
        let replica = inner.replica.as_ref().filter(|_| prefer_replica);
        let primary = || inner.links_for(book);
        log::read(&inner.ctx, book.keys(), primary, replica, page).await
    }

    /// Deletes every message and idempotency record; returns how many messages were removed.
    /// The id sequence is kept, so ids never repeat and live-update clients can resume.
    pub async fn clear(&self, book: &Book) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let links = inner.links_for(book)?;
        let keys = book.keys();
        let removed = match inner.appender {
            Appender::Naive => strategy::naive::clear(&inner.ctx, keys, &links).await?,
            _ => log::clear(&inner.ctx, keys, &links).await?,
        };
        log::forget_keys(&inner.ctx, keys, &links).await?;
        Ok(removed)
    }

    /// Round-trip time of a PING to the default book's primary, for `/health/dependencies`
    /// (never for a probe).
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut conn = self
            .inner
            .links_for(self.inner.books.default_book())?
            .conn
            .clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, R>(_: impl FnOnce(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_append_future_stays_small() {
        // Each request's future is moved and boxed several times on its way through the
        // router: at ~15 KiB (the replication check and the detached strategies held inline)
        // those copies were a fifth of the backend's instructions per append.
        let size = future_size(Store::append);
        assert!(size < 4 * 1024, "Store::append's future is {size} bytes");
    }
}
