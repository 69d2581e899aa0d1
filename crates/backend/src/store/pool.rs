//! Dedicated connections, for what cannot share the multiplexed one: WATCH state belongs to a
//! connection, and WAIT blocks the connection it is sent on.

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

use crate::settings::Settings;
use crate::store::StoreError;

/// A bounded pool of `REDIS_POOL_SIZE` connections to the primary.
pub(crate) fn dedicated(settings: &Settings) -> Result<Pool, StoreError> {
    let timeout = Some(settings.redis_timeout());
    let mut config = deadpool_redis::Config::from_url(settings.redis_url.as_str());
    config.pool = Some(PoolConfig {
        max_size: settings.redis_pool_size,
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    });
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|err| StoreError::Pool(err.to_string()))
}
