//! Dedicated connections, for what cannot share the multiplexed one: WATCH state belongs to a
//! connection, and WAIT blocks the connection it is sent on.

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

use crate::settings::Settings;
use crate::store::StoreError;

/// A bounded pool of `REDIS_POOL_SIZE` connections to the primary at `url`.
pub(crate) fn dedicated(url: &str, settings: &Settings) -> Result<Pool, StoreError> {
    let timeout = Some(settings.redis_timeout());
    let mut config = deadpool_redis::Config::from_url(url);
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
