//! Serving a router until shutdown, in the three steps described in [`crate::lifecycle`].
//!
//! The shutdown trigger is an argument (as in mini-redis' `run(listener, shutdown)`), so tests
//! can stop a server without sending the process a signal.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{Lifecycle, ShutdownArgs};

/// Serves `router` on `listener` until `trigger` completes, then shuts down gracefully.
///
/// Returns once every connection has closed or the drain timeout has passed.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    lifecycle: Lifecycle,
    timing: &ShutdownArgs,
    trigger: F,
) -> std::io::Result<()>
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

    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });

    let outcome = tokio::select! {
        ended = &mut server => Some(ended),
        () = stop_accepting.cancelled() => None,
    };
    let outcome = match outcome {
        Some(ended) => ended,
        None => match tokio::time::timeout(drain_timeout, &mut server).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!("drain timed out; abandoning the requests still in flight");
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    sequencer.abort();
    tracing::info!("server stopped");
    outcome.unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)))
}
