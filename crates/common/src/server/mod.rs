//! Serving a router until shutdown: our own accept loop on hyper's HTTP/1 connections, with
//! the connection limits a public server needs, and the three shutdown steps described in
//! [`crate::lifecycle`].
//!
//! `axum::serve` runs hyper without a timer, so nothing bounds how long a connection may take
//! to send its headers or sit silent: a slowloris holds connections (and their memory and file
//! descriptors) forever. Here every connection has
//! - a header-read timeout ([`ConnectionArgs::header_read_timeout_secs`], hyper's own, which
//!   also bounds the wait for the next request on an idle keep-alive connection). Its clock is
//!   coarse (`coarse_timer`): a trickled header is cut at its first byte past the timeout, a
//!   silent one between one and one and a half timeouts after the head began;
//! - an idle timeout ([`ConnectionArgs::idle_timeout_secs`]): no byte read or written for that
//!   long closes it, whatever it is doing (a stalled request body, a reader that stopped
//!   reading; it is closed between one and one and a half timeouts after its last byte).
//!   Writes count, so a live Server-Sent-Events stream, which writes a keep-alive comment
//!   every 15 s, is never cut;
//! - a place under a per-process cap ([`ConnectionArgs::max_connections`]); past it, see
//!   [`OVERFLOW_CONNECTIONS`].
//!
//! The accept loop and its two lanes live in `accept`; the idle clock in `activity`.
//!
//! The shutdown trigger is an argument (as in mini-redis' `run(listener, shutdown)`), so tests
//! can stop a server without sending the process a signal.

mod accept;
mod activity;
mod coarse_timer;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use accept::{OVERFLOW_CONNECTIONS, OVERFLOW_HEADER_TIMEOUT, OVERFLOW_LIFETIME};

use crate::lifecycle::{Lifecycle, ShutdownArgs};
use crate::metrics::ConnectionMetrics;
use accept::Connections;

/// Connection limits, shared by both services' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Seconds a client has to send a request's headers, counted from when the server starts
    /// waiting for them: from the connection's start, and after each answer on a keep-alive
    /// connection (so it also closes a keep-alive connection that sends no next request).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = guestbook_api::DEFAULT_HEADER_READ_TIMEOUT_SECS)]
    pub header_read_timeout_secs: u64,

    /// Seconds without a byte read or written after which a connection is closed (within
    /// half as long again), whatever it is doing (a stalled upload, a reader that stopped
    /// reading). Must exceed the live-update
    /// stream's keep-alive interval (15 s) and the longest a handler may take without writing.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Open connections per process. Past it, a small overflow lane still answers the probes
    /// and /metrics, and answers everything else 503 with Retry-After.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
}

impl ConnectionArgs {
    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Checks the ranges; a one-line description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        // 30 s is hyper's own default: a real client sends its headers within one round trip.
        if !(1..=30).contains(&self.header_read_timeout_secs) {
            return Err("HEADER_READ_TIMEOUT_SECS must be between 1 and 30".into());
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err("IDLE_TIMEOUT_SECS must be between 1 and 86400".into());
        }
        // A million is beyond any file-descriptor limit a pod is given.
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err("MAX_CONNECTIONS must be between 1 and 1000000".into());
        }
        Ok(())
    }
}

/// Serves `router` on `listener` until `trigger` completes, then shuts down gracefully.
///
/// Returns once every connection has closed or the drain timeout has passed (connections
/// still open then are closed).
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    lifecycle: Lifecycle,
    timing: &ShutdownArgs,
    limits: &ConnectionArgs,
    metrics: ConnectionMetrics,
    trigger: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stop_accepting = CancellationToken::new();
    let delay = timing.delay();
    let drain_timeout = timing.drain_timeout();

    let sequencer = {
        let lifecycle = lifecycle.clone();
        let stop_accepting = stop_accepting.clone();
        async move {
            trigger.await;
            lifecycle.begin_shutdown();
            tracing::info!(
                delay_secs = delay.as_secs_f64(),
                "readiness now fails; serving on until the delay ends"
            );
            tokio::time::sleep(delay).await;
            tracing::info!(
                drain_timeout_secs = drain_timeout.as_secs_f64(),
                "closing the listener and draining"
            );
            lifecycle.begin_drain();
            stop_accepting.cancel();
        }
    };
    let sequencer = tokio::spawn(sequencer);

    let connections = Connections::new(router, limits, metrics);
    connections.accept_until(&listener, &stop_accepting).await;
    drop(listener);

    connections.graceful.cancel();
    connections.tracker.close();
    if tokio::time::timeout(drain_timeout, connections.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing the connections still open");
        connections.force.cancel();
        connections.tracker.wait().await;
    }
    sequencer.abort();
    tracing::info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_allow_ten_thousand_subscribers() {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            connections: ConnectionArgs,
        }
        let only = Only::parse_from(["t"]);
        assert_eq!(only.connections.validate(), Ok(()));
        assert!(only.connections.header_read_timeout_secs <= 30);
        assert!(
            only.connections.idle_timeout_secs > 15,
            "above the SSE keep-alive"
        );
        assert!(only.connections.max_connections > 10_000);
    }
}
