//! The process lifecycle: serving, then shutting down.
//!
//! Kubernetes keeps sending traffic to a pod for a few seconds after SIGTERM, until every
//! node has removed it from the Service's endpoints. So shutdown is three steps:
//! 1. readiness fails at once (new traffic is steered away);
//! 2. the service keeps serving for `SHUTDOWN_DELAY_SECS`;
//! 3. the listener closes and in-flight requests drain for at most `DRAIN_TIMEOUT_SECS`.
//!
//! Long-lived responses (Server-Sent Events) watch [`Lifecycle::draining`] and end in step 3,
//! otherwise they would hold the drain open until its timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Shutdown timing, shared by both services' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// Seconds to keep serving after SIGTERM while readiness already fails, so load balancers
    /// stop routing here before the listener closes.
    #[arg(long, env = "SHUTDOWN_DELAY_SECS", default_value_t = 5)]
    pub shutdown_delay_secs: u64,
    /// Seconds to wait for in-flight requests once the listener has closed.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,
}

impl ShutdownArgs {
    /// The delay between failing readiness and closing the listener.
    pub fn delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }

    /// The longest the drain may take.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

/// Shared, cloneable view of where the process is in its life.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shutting_down: AtomicBool,
    draining: CancellationToken,
}

impl Lifecycle {
    /// A process that is serving.
    pub fn new() -> Self {
        Self::default()
    }

    /// True from the moment shutdown starts; readiness fails from then on.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Step 1: fail readiness.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    /// Step 3: long-lived responses should finish.
    pub fn begin_drain(&self) {
        self.begin_shutdown();
        self.inner.draining.cancel();
    }

    /// Completes when the drain starts.
    pub fn draining(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.draining.clone().cancelled_owned()
    }

    /// True once the drain has started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a handler we can only wait for the other signal.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_implies_shutting_down() {
        let lifecycle = Lifecycle::new();
        assert!(!lifecycle.is_shutting_down());
        lifecycle.begin_drain();
        assert!(lifecycle.is_shutting_down());
        assert!(lifecycle.is_draining());
    }
}
