//! How long each side keeps an idle keep-alive connection, defined once so the two cannot race.
//!
//! The services close a keep-alive connection that sends no next request within
//! [`DEFAULT_HEADER_READ_TIMEOUT_SECS`]. A pooled client that kept such a connection longer
//! could send on it just as the server closes it, and see the request fail with an incomplete
//! message through no fault of either side. Every client of the services in this repository
//! (the client's pool to the backend, the load tool, the tests) drops an idle connection after
//! [`POOL_IDLE_TIMEOUT`], well before the server would.

use std::time::Duration;

/// The default of `HEADER_READ_TIMEOUT_SECS`: how long the services wait for a request's
/// headers, from a connection's start and after each answer on a keep-alive connection.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// How long a client keeps an unused pooled connection to one of the services.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

// Half the server's wait: room for a scheduler's delay on a loaded machine on either side.
const _: () = assert!(POOL_IDLE_TIMEOUT.as_secs() * 2 <= DEFAULT_HEADER_READ_TIMEOUT_SECS);
