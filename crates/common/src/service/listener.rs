//! A service's bound listening socket: bound at build time (so tests learn the port before
//! serving), served later with [`crate::server`] until the shutdown future completes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use super::ServiceArgs;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::server;

/// A service between build and run: its bound socket, its state and its settings. Each
/// service's `Application` wraps one.
#[derive(Debug)]
pub struct Bound<State, Settings> {
    /// The bound, not yet serving socket.
    pub listener: Listener,
    /// What the service's handlers reach.
    pub state: State,
    /// The settings it was built from.
    pub settings: Settings,
}

impl<State, Settings> Bound<State, Settings> {
    /// Binds `addr` (port 0 picks a free port) for a service with `state` and `settings`.
    pub async fn bind(addr: SocketAddr, state: State, settings: Settings) -> io::Result<Self> {
        Ok(Self {
            listener: Listener::bind(addr).await?,
            state,
            settings,
        })
    }
}

/// A bound, not yet serving socket.
#[derive(Debug)]
pub struct Listener(TcpListener);

impl Listener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        TcpListener::bind(addr).await.map(Self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// The bound port (0 if the socket cannot tell, which a bound TCP socket always can).
    pub fn port(&self) -> u16 {
        self.local_addr().map_or(0, |addr| addr.port())
    }

    /// Serves `router` until `shutdown` completes: readiness fails at once, serving goes on
    /// for the shutdown delay, then the listener closes and connections drain.
    pub async fn serve<F>(
        self,
        router: Router,
        lifecycle: Lifecycle,
        args: &ServiceArgs,
        metrics: &Metrics,
        shutdown: F,
    ) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        server::serve(
            self.0,
            router,
            lifecycle,
            &args.shutdown,
            &args.connections,
            metrics.connections(),
            shutdown,
        )
        .await
    }
}
