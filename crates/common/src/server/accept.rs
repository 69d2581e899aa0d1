//! The accept loop: each new connection goes to the main lane (under the connection cap), the
//! overflow lane (probes and `/metrics` only, short-lived) or is closed at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::ConnectionArgs;
use super::activity::{Activity, Tracked};
use super::coarse_timer::CoarseTimer;
use crate::error_body::{ErrorBody, ErrorCode, respond_retry_after};
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

/// Everything the accept loop hands to each connection.
pub(super) struct Connections {
    router: Router,
    main: http1::Builder,
    overflow: http1::Builder,
    idle_timeout: Duration,
    /// How often a main-lane connection's idle clock looks, and so wakes the connection for
    /// its [`CoarseTimer`]: every half of the shorter of the idle and header-read timeouts.
    idle_tick: Duration,
    slots: Arc<Semaphore>,
    overflow_slots: Arc<Semaphore>,
    metrics: ConnectionMetrics,
    pub(super) tracker: TaskTracker,
    /// Cancelled when the drain starts: connections finish their request and close.
    pub(super) graceful: CancellationToken,
    /// Cancelled when the drain times out: connections close at once.
    pub(super) force: CancellationToken,
}

impl Connections {
    pub(super) fn new(router: Router, limits: &ConnectionArgs, metrics: ConnectionMetrics) -> Self {
        let mut main = http1::Builder::new();
        main.timer(CoarseTimer)
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
            // The idle clock also wakes the connection for the coarse header-read timer.
            idle_tick: limits.idle_timeout().min(limits.header_read_timeout()) / 2,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            overflow_slots: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
            metrics,
            tracker: TaskTracker::new(),
            graceful: CancellationToken::new(),
            force: CancellationToken::new(),
        }
    }

    /// Accepts connections until `stop` is cancelled.
    pub(super) async fn accept_until(&self, listener: &TcpListener, stop: &CancellationToken) {
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

    /// The per-connection service: every request through the router, or on the overflow lane
    /// only the probes and `/metrics`.
    fn service(
        &self,
        remote: SocketAddr,
        lane: Lane,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send + 'static,
    > + Send
    + 'static {
        let router = self.router.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move {
                let operational = request.method() == Method::GET
                    && OVERFLOW_PATHS.contains(&request.uri().path());
                if lane == Lane::Main || operational {
                    route(router, remote, request).await
                } else {
                    Ok(over_capacity())
                }
            }
        })
    }

    fn serve_main(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let activity = Activity::new();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let connection = self
            .main
            .serve_connection(io, self.service(remote, Lane::Main));
        let graceful = self.graceful.clone();
        let force = self.force.clone();
        let (idle_timeout, idle_tick) = (self.idle_timeout, self.idle_tick);
        let open = self.metrics.open();
        async move {
            let _slot = slot;
            let _open = open;
            let mut connection = pin!(connection);
            let mut draining = pin!(graceful.cancelled_owned());
            let mut idle = pin!(activity.idle_for(idle_timeout, idle_tick));
            let mut forced = pin!(force.cancelled_owned());
            let controls = Controls::new();
            let control_waker = Waker::from(Arc::clone(&controls));
            let mut closing = false;
            loop {
                let event = std::future::poll_fn(|cx| {
                    // The connection first: it is what wakes the task nearly every time.
                    if let Poll::Ready(served) = connection.as_mut().poll(cx) {
                        return Poll::Ready(Event::Served(served));
                    }
                    let mut poll_controls = |cx: &mut Context<'_>| {
                        if !closing && draining.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Drain);
                        }
                        if idle.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Idle);
                        }
                        if forced.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Forced);
                        }
                        Poll::Pending
                    };
                    if !controls.watches(cx.waker()) {
                        return poll_controls(cx);
                    }
                    if controls.woken.swap(false, Ordering::AcqRel) {
                        return poll_controls(&mut Context::from_waker(&control_waker));
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    Event::Served(served) => {
                        if let Err(err) = served {
                            tracing::debug!(%remote, error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    Event::Drain => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    Event::Idle => {
                        tracing::debug!(%remote, "connection idle; closing");
                        return;
                    }
                    Event::Forced => return,
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
        let connection = self
            .overflow
            .serve_connection(TokioIo::new(stream), self.service(remote, Lane::Overflow));
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

/// What ended one wait of a main-lane connection's loop.
enum Event {
    /// The connection finished, well or not.
    Served(hyper::Result<()>),
    /// The drain started: finish the request in progress, then close.
    Drain,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The drain timed out: close at once.
    Forced,
}

/// Wakes a connection's task for its rare events (drain, idle, force) and remembers that one
/// of them did, so that they are polled only then, not on every wake-up of the connection.
///
/// # Why
/// `select!` polls every branch on every wake-up: with two waits on cancellation tokens
/// (each taking the token's lock) and the idle timer, that was about a thousand
/// instructions per request on a busy connection (issue 17).
///
/// The three futures are polled with this waker, which sets `woken` and wakes the task.
/// The task's waker is kept from the first poll; should the task ever be polled with
/// another one, the loop polls the three with that one instead, every time, as `select!`
/// did.
struct Controls {
    woken: AtomicBool,
    task: OnceLock<Waker>,
}

impl Controls {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            // Set, so the first poll registers this waker with all three.
            woken: AtomicBool::new(true),
            task: OnceLock::new(),
        })
    }

    /// True when `waker` wakes the task this wakes.
    fn watches(&self, waker: &Waker) -> bool {
        self.task.get_or_init(|| waker.clone()).will_wake(waker)
    }
}

impl Wake for Controls {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

/// Which lane a connection was accepted onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Under the connection cap: every request is served.
    Main,
    /// Past the cap: probes and `/metrics` are served, the rest answered 503.
    Overflow,
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
    let mut response = respond_retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody::new(
            ErrorCode::TooManyConnections,
            "too many connections; retry later",
        ),
        1,
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_cap_the_answer_is_a_503_coded_too_many_connections_that_closes() {
        let response = over_capacity();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("a small body");
        let body: ErrorBody = serde_json::from_slice(&body).expect("an error body");
        assert_eq!(body.code, ErrorCode::TooManyConnections);
    }
}
