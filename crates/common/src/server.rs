//! Serving a router until shutdown: our own accept loop on hyper's HTTP/1 connections, with
//! the connection limits a public server needs, and the three shutdown steps described in
//! [`crate::lifecycle`].
//!
//! `axum::serve` runs hyper without a timer, so nothing bounds how long a connection may take
//! to send its headers or sit silent: a slowloris holds connections (and their memory and file
//! descriptors) forever. Here every connection has
//! - a header-read timeout ([`ConnectionArgs::header_read_timeout_secs`], hyper's own, which
//!   also bounds the wait for the next request on an idle keep-alive connection);
//! - an idle timeout ([`ConnectionArgs::idle_timeout_secs`]): no byte read or written for that
//!   long closes it, whatever it is doing (a stalled request body, a reader that stopped
//!   reading; it is closed between one and one and a half timeouts after its last byte).
//!   Writes count, so a live Server-Sent-Events stream, which writes a keep-alive comment
//!   every 15 s, is never cut;
//! - a place under a per-process cap ([`ConnectionArgs::max_connections`]); past it, see
//!   [`OVERFLOW_CONNECTIONS`].
//!
//! The shutdown trigger is an argument (as in mini-redis' `run(listener, shutdown)`), so tests
//! can stop a server without sending the process a signal.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::lifecycle::{Lifecycle, ShutdownArgs};
use crate::metrics::ConnectionMetrics;

/// Connections served past [`ConnectionArgs::max_connections`] at once, on the overflow lane.
///
/// At the cap a server can pause accepting (connections wait in the kernel's backlog, which
/// fills under a flood, and then the kubelet's probe times out and the pod is restarted,
/// cutting every live stream) or accept and close at once (the backlog never fills, but a
/// probe is refused as bluntly as an attacker). We do neither alone: a connection past the
/// cap is accepted onto a small overflow lane, with a short header timeout
/// ([`OVERFLOW_HEADER_TIMEOUT`]), no keep-alive and a short life ([`OVERFLOW_LIFETIME`]),
/// where the probes and `/metrics` are answered as usual and everything else gets 503 with
/// `Retry-After`. So the kubelet and Prometheus get through while the cap holds, unless an
/// attacker also fills this lane, whose places free within seconds. Only when it is full too
/// is a connection closed at once. Both are counted in `server_connections_refused_total`
/// (`how="overflow"` and `how="closed"`). 64 lets a node's probes and a scrape through at once
/// and costs at most 64 short-lived connections more than the cap.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// Header-read timeout on the overflow lane: a probe sends its request at once; 2 s covers a
/// busy kubelet and is short enough to free the lane quickly.
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest life of an overflow connection, whatever it does: the header timeout plus a few
/// seconds for the probe's answer.
pub const OVERFLOW_LIFETIME: Duration = Duration::from_secs(5);

/// Paths answered as usual on the overflow lane: the kubelet's probes and the scrape that shows
/// the cap being hit.
const OVERFLOW_PATHS: [&str; 3] = ["/liveness", "/readiness", "/metrics"];

/// Pause after an accept error other than a failed handshake (e.g. out of file descriptors),
/// as hyper and axum do: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Connection limits, shared by both services' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Seconds a client has to send a request's headers, counted from when the server starts
    /// waiting for them: from the connection's start, and after each answer on a keep-alive
    /// connection (so it also closes a keep-alive connection that sends no next request).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
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

/// Everything the accept loop hands to each connection.
struct Connections {
    router: Router,
    main: http1::Builder,
    overflow: http1::Builder,
    idle_timeout: Duration,
    slots: Arc<Semaphore>,
    overflow_slots: Arc<Semaphore>,
    metrics: ConnectionMetrics,
    tracker: TaskTracker,
    /// Cancelled when the drain starts: connections finish their request and close.
    graceful: CancellationToken,
    /// Cancelled when the drain times out: connections close at once.
    force: CancellationToken,
}

impl Connections {
    fn new(router: Router, limits: &ConnectionArgs, metrics: ConnectionMetrics) -> Self {
        let mut main = http1::Builder::new();
        main.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout());
        let mut overflow = http1::Builder::new();
        overflow
            .timer(TokioTimer::new())
            .header_read_timeout(OVERFLOW_HEADER_TIMEOUT.min(limits.header_read_timeout()))
            .keep_alive(false);
        Self {
            router,
            main,
            overflow,
            idle_timeout: limits.idle_timeout(),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            overflow_slots: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
            metrics,
            tracker: TaskTracker::new(),
            graceful: CancellationToken::new(),
            force: CancellationToken::new(),
        }
    }

    /// Accepts connections until `stop` is cancelled.
    async fn accept_until(&self, listener: &TcpListener, stop: &CancellationToken) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, remote)) => self.dispatch(stream, remote),
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    tracing::error!(error = %err, "accept failed; pausing");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            }
        }
    }

    /// Serves a new connection on the main lane, the overflow lane, or closes it.
    fn dispatch(&self, stream: TcpStream, remote: SocketAddr) {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            self.tracker.spawn(self.serve_main(stream, remote, slot));
        } else if let Ok(slot) = Arc::clone(&self.overflow_slots).try_acquire_owned() {
            self.metrics.refused("overflow");
            self.tracker
                .spawn(self.serve_overflow(stream, remote, slot));
        } else {
            self.metrics.refused("closed");
            tracing::debug!(%remote, "connection limit and overflow lane full; closing");
            drop(stream);
        }
    }

    fn serve_main(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            route(router.clone(), remote, request)
        });
        let activity = Activity::new();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let connection = self.main.serve_connection(io, service);
        let graceful = self.graceful.clone();
        let force = self.force.clone();
        let idle_timeout = self.idle_timeout;
        let open = self.metrics.open();
        async move {
            let _slot = slot;
            let _open = open;
            let mut connection = pin!(connection);
            let mut draining = pin!(graceful.cancelled_owned());
            let mut idle = pin!(activity.idle_for(idle_timeout));
            let mut closing = false;
            loop {
                tokio::select! {
                    // The connection first: it is what wakes the task nearly every time.
                    biased;
                    served = connection.as_mut() => {
                        if let Err(err) = served {
                            tracing::debug!(%remote, error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    () = &mut draining, if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = &mut idle => {
                        tracing::debug!(%remote, "connection idle; closing");
                        return;
                    }
                    () = force.cancelled() => return,
                }
            }
        }
    }

    fn serve_overflow(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move {
                let operational = request.method() == Method::GET
                    && OVERFLOW_PATHS.contains(&request.uri().path());
                if operational {
                    route(router, remote, request).await
                } else {
                    Ok(over_capacity())
                }
            }
        });
        let connection = self
            .overflow
            .serve_connection(TokioIo::new(stream), service);
        let force = self.force.clone();
        async move {
            let _slot = slot;
            tokio::select! {
                served = tokio::time::timeout(OVERFLOW_LIFETIME, connection) => {
                    if let Ok(Err(err)) = served {
                        tracing::debug!(%remote, error = %err, "overflow connection ended with an error");
                    }
                }
                () = force.cancelled() => {}
            }
        }
    }
}

/// One request through the router, with the peer's address as axum's `ConnectInfo`.
async fn route(
    router: Router,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    let mut request = request.map(Body::new);
    request.extensions_mut().insert(ConnectInfo(remote));
    router.oneshot(request).await
}

/// The answer past the connection cap.
fn over_capacity() -> Response {
    let body = serde_json::json!({"error": "too many connections; retry later"});
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Errors of one incoming connection (it was reset before we took it), not of the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Whether a connection moved a byte lately: a count of the reads and writes that did.
///
/// A count rather than a timestamp, because it is bumped on every read and write of every
/// connection: a store is cheaper than reading the clock. The idle check looks at it twice per
/// timeout instead (see [`Activity::idle_for`]).
#[derive(Debug, Default)]
struct Activity {
    moves: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn touch(&self) {
        // Only the connection's own task writes it, so a load and a store (no locked
        // read-modify-write) lose nothing; Relaxed, as the idle check needs no ordering.
        let moves = self.moves.load(Ordering::Relaxed);
        self.moves.store(moves.wrapping_add(1), Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`: checked every half `timeout`, so the
    /// connection is closed between `timeout` and 1.5 `timeout` after its last byte. One
    /// timer wake-up per half `timeout`, however busy the connection is.
    async fn idle_for(self: Arc<Self>, timeout: Duration) {
        let period = (timeout / 2).max(Duration::from_millis(1));
        let mut seen = self.moves.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            let moves = self.moves.load(Ordering::Relaxed);
            let now = Instant::now();
            if moves != seen {
                seen = moves;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= timeout {
                return;
            }
        }
    }
}

/// A stream that records in [`Activity`] every read or write that moved a byte.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

    #[tokio::test(start_paused = true)]
    async fn idleness_is_measured_from_the_last_byte() {
        let activity = Activity::new();
        let idle = tokio::spawn(Arc::clone(&activity).idle_for(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(6)).await;
        activity.touch();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!idle.is_finished(), "9 s after the last byte");
        // At most one and a half timeouts after the last byte.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(idle.is_finished(), "16 s after the last byte");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_keeps_moving_is_never_idle() {
        let activity = Activity::new();
        let idle = tokio::spawn(Arc::clone(&activity).idle_for(Duration::from_secs(10)));
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            activity.touch();
        }
        assert!(!idle.is_finished(), "a byte every 3 s for a minute");
    }
}
