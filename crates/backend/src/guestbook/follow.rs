//! Following the guestbook: the gap-free resume algorithm behind live updates.
//!
//! A follower first subscribes to the process's [`Feed`], then replays what it missed from
//! Redis, then forwards live messages, skipping any id it already sent: subscribing before
//! replaying leaves no gap, and the id check leaves no duplicate. A follower that falls behind
//! the feed's buffer catches up from Redis the same way.
//!
//! A catch-up reads no further than the feed's ceiling (what the tail has passed on): with
//! `REDIS_MIN_REPLICAS_ACK` that keeps unconfirmed appends out of every stream.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::guestbook::Guestbook;
use crate::store::feed::Feed;
use crate::store::{MAX_PAGE, Page, RawMessage, Store};

/// Messages buffered per follower before back-pressure reaches the pump.
const FOLLOWER_BUFFER: usize = 64;

impl Guestbook {
    /// Every message after `after` (or, without it, every message from now on), then each
    /// new one, without a gap or a duplicate, until `stop` completes or the stream is dropped.
    ///
    /// The subscription is taken here, before this returns, so nothing appended from now on
    /// can be missed; `hold` (a stream slot) is kept until the follower's task ends.
    pub fn follow<S, H>(
        &self,
        after: Option<u64>,
        stop: S,
        hold: H,
    ) -> ReceiverStream<Arc<RawMessage>>
    where
        S: Future<Output = ()> + Send + 'static,
        H: Send + 'static,
    {
        start(self.store.clone(), self.feed.clone(), after, stop, hold)
    }
}

/// Subscribes now, and starts the pump that feeds the returned stream.
fn start(
    store: Store,
    feed: Feed,
    after: Option<u64>,
    stop: impl Future<Output = ()> + Send + 'static,
    hold: impl Send + 'static,
) -> ReceiverStream<Arc<RawMessage>> {
    let (live, newest) = feed.subscribe();
    let (sender, receiver) = mpsc::channel(FOLLOWER_BUFFER);
    let gone = sender.clone();
    let pump = Pump {
        store,
        feed,
        sender,
    };
    tokio::spawn(async move {
        // Held for the follower's lifetime: bounds concurrent streams.
        let _hold = hold;
        tokio::select! {
            () = stop => {}
            () = gone.closed() => {}
            () = pump.run(live, after, newest) => {}
        }
    });
    ReceiverStream::new(receiver)
}

/// Moves messages from Redis and the feed to one follower.
struct Pump {
    store: Store,
    feed: Feed,
    sender: mpsc::Sender<Arc<RawMessage>>,
}

impl Pump {
    async fn run(
        self,
        mut feed: broadcast::Receiver<Arc<RawMessage>>,
        resume_after: Option<u64>,
        newest: u64,
    ) {
        // Without a resume point, start at what the feed had already passed on.
        let mut last_sent = match resume_after {
            Some(after) => match self.catch_up(after).await {
                Some(last) => last,
                None => return,
            },
            None => newest,
        };
        loop {
            match feed.recv().await {
                Ok(message) => {
                    if message.id > last_sent {
                        let id = message.id;
                        if !self.send(message).await {
                            return;
                        }
                        last_sent = id;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(
                        skipped,
                        "live-update subscriber lagged; catching up from Redis"
                    );
                    match self.catch_up(last_sent).await {
                        Some(last) => last_sent = last,
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends what the feed has passed on after `after`, from Redis; returns the last id sent,
    /// or `None` when the follower is gone or Redis failed (the client reconnects with
    /// `Last-Event-ID`). Nothing beyond the feed's ceiling: that arrives through the channel.
    async fn catch_up(&self, mut after: u64) -> Option<u64> {
        let ceiling = self.feed.ceiling().await;
        loop {
            if after >= ceiling {
                return Some(after);
            }
            let page = Page {
                before: Some(ceiling.saturating_add(1)),
                ..Page::after(after, MAX_PAGE)
            };
            let page = match self.store.list_from_primary(page).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "live-update catch-up failed; ending the stream");
                    return None;
                }
            };
            let full = page.len() == MAX_PAGE;
            for message in page {
                let id = message.id;
                if !self.send(Arc::new(message)).await {
                    return None;
                }
                after = id;
            }
            if !full {
                return Some(after);
            }
        }
    }

    async fn send(&self, message: Arc<RawMessage>) -> bool {
        self.sender.send(message).await.is_ok()
    }
}
