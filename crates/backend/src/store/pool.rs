//! Dedicated connections, for what cannot share the multiplexed one: WATCH state belongs to a
//! connection, and WAIT blocks the connection it is sent on.
//!
//! The connections carry no response timeout of their own. redis-rs gives each connection a
//! 500 ms one by default, which cut off every `WAIT` of `REDIS_WAIT_TIMEOUT_MS` 500 ms or more
//! as "timed out" before Redis could answer "not enough replicas". Every caller bounds its own
//! calls instead: the `watch` strategy through `Hop` (`REDIS_TIMEOUT_MS`), a replication round
//! by the wait plus `REDIS_TIMEOUT_MS`.

use std::time::Duration;

use deadpool_redis::{Manager, Pool, PoolConfig, Runtime, Timeouts};
use redis::AsyncConnectionConfig;

use crate::store::error::StoreError;

/// A bounded pool of `size` (`REDIS_POOL_SIZE`) connections to the primary at `url`, each
/// connecting within `timeout` (`REDIS_TIMEOUT_MS`).
pub(crate) fn dedicated(url: &str, size: usize, timeout: Duration) -> Result<Pool, StoreError> {
    let timeout = Some(timeout);
    let connections = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(None);
    let manager = Manager::new_with_config(url, connections).map_err(StoreError::Redis)?;
    Pool::builder(manager)
        .config(PoolConfig {
            max_size: size,
            timeouts: Timeouts {
                wait: timeout,
                create: timeout,
                recycle: timeout,
            },
            ..PoolConfig::default()
        })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Pool(err.to_string()))
}
