//! How long a connection has been silent: a byte counter bumped on every read and write
//! ([`Tracked`]) and a clock that checks it twice per idle timeout ([`Activity::idle_for`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Whether a connection moved a byte lately: a count of the reads and writes that did.
///
/// A count rather than a timestamp, because it is bumped on every read and write of every
/// connection: a store is cheaper than reading the clock. The idle check looks at it twice per
/// timeout instead (see [`Activity::idle_for`]).
#[derive(Debug, Default)]
pub(super) struct Activity {
    moves: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn touch(&self) {
        // Only the connection's own task writes it, so a load and a store (no locked
        // read-modify-write) lose nothing; Relaxed, as the idle check needs no ordering.
        let moves = self.moves.load(Ordering::Relaxed);
        self.moves.store(moves.wrapping_add(1), Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`: checked every `tick` (at most half
    /// `timeout`), so the connection is closed between `timeout` and 1.5 `timeout` after its
    /// last byte. One timer wake-up per tick, however busy the connection is.
    pub(super) async fn idle_for(self: Arc<Self>, timeout: Duration, tick: Duration) {
        let period = tick.min(timeout / 2).max(Duration::from_millis(1));
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
pub(super) struct Tracked<T> {
    pub(super) inner: T,
    pub(super) activity: Arc<Activity>,
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

    #[tokio::test(start_paused = true)]
    async fn idleness_is_measured_from_the_last_byte() {
        let activity = Activity::new();
        let idle = tokio::spawn(
            Arc::clone(&activity).idle_for(Duration::from_secs(10), Duration::from_secs(5)),
        );
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
        let idle = tokio::spawn(
            Arc::clone(&activity).idle_for(Duration::from_secs(10), Duration::from_secs(5)),
        );
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            activity.touch();
        }
        assert!(!idle.is_finished(), "a byte every 3 s for a minute");
    }
}
