//! Everything bound to the current Redis primary: its client, the shared multiplexed
//! connection, and the dedicated pools. With Sentinel the primary can move; the links are
//! then rebuilt as a whole and swapped in (see [`super::sentinel`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::store::config::{AppendStrategy, RedisArgs};
use crate::store::error::StoreError;
use crate::store::pool;
use crate::store::replication::Replication;

/// Connections to one primary.
pub(crate) struct PrimaryLinks {
    /// `host:port`, for logs and `/health/dependencies`.
    pub(crate) address: String,
    pub(crate) client: redis::Client,
    pub(crate) conn: ConnectionManager,
    /// `REDIS_MIN_REPLICAS_ACK` above 0.
    pub(crate) replication: Option<Replication>,
    /// The `watch` strategy's `REDIS_POOL_SIZE` dedicated connections (WATCH state belongs to
    /// a connection); connected on first use.
    pub(crate) watch_pool: Option<deadpool_redis::Pool>,
}

/// How each connection manager behaves: every call's own timeout bounds its wait.
pub(crate) fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // Reconnect attempts are cheap and bounded; each request's own timeout bounds its wait.
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(500))
}

impl PrimaryLinks {
    /// Links to the primary at `url`. Connects lazily: a primary that is down still yields
    /// links, and calls fail with 503 until it answers.
    pub(crate) fn new(url: &str, settings: &RedisArgs) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::Redis)?;
        let timeout = settings.redis_timeout();
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config(timeout))
            .map_err(StoreError::Redis)?;
        let replication = match settings.redis_min_replicas_ack {
            0 => None,
            replicas => Some(Replication::new(
                pool::dedicated(url, settings.redis_pool_size, timeout)?,
                replicas,
                Duration::from_millis(settings.redis_wait_timeout_ms),
                timeout,
            )),
        };
        let watch_pool = match settings.append_strategy {
            AppendStrategy::Watch => Some(pool::dedicated(url, settings.redis_pool_size, timeout)?),
            _ => None,
        };
        let address = redis::parse_redis_url(url)
            .map(|parsed| {
                format!(
                    "{}:{}",
                    parsed.host_str().unwrap_or("?"),
                    parsed.port().unwrap_or(6379)
                )
            })
            .unwrap_or_default();
        Ok(Self {
            address,
            client,
            conn,
            replication,
            watch_pool,
        })
    }
}

/// The current primary's links, if one is known (with Sentinel, not before the first answer),
/// and a counter of changes that long-lived users (the live tail) watch.
pub(crate) struct CurrentPrimary {
    links: RwLock<Option<Arc<PrimaryLinks>>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for CurrentPrimary {
    fn default() -> Self {
        Self {
            links: RwLock::new(None),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl CurrentPrimary {
    pub(crate) fn get(&self) -> Result<Arc<PrimaryLinks>, StoreError> {
        self.links
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::NoPrimary)
    }

    pub(crate) fn set(&self, links: PrimaryLinks) {
        self.set_shared(Arc::new(links));
    }

    /// The same with links shared elsewhere (cluster mode keeps each node's links).
    pub(crate) fn set_shared(&self, links: Arc<PrimaryLinks>) {
        *self
            .links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(links);
        self.notify();
    }

    /// Tells the receivers of [`CurrentPrimary::changes`] that something moved.
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// A receiver that sees every [`CurrentPrimary::set`].
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The address of the current primary, if any.
    pub(crate) fn address(&self) -> Option<String> {
        self.get().ok().map(|links| links.address.clone())
    }
}
