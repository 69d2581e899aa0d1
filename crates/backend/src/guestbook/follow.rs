//! Following the guestbook: the gap-free resume algorithm behind live updates.
//!
//! A follower first subscribes to the process's [`Feed`] of its book, then replays what it missed from
//! Redis, then forwards live messages, skipping any id it already sent: subscribing before
//! replaying leaves no gap, and the id check leaves no duplicate. A follower that falls behind
//! the feed's buffer catches up from Redis the same way.
//!
//! A catch-up reads no further than the feed's ceiling (what the tail has passed on): with
//! `REDIS_MIN_REPLICAS_ACK` that keeps unconfirmed appends out of every stream.
//!
//! A follower is a stream polled by the connection that writes it, not a task of its own:
//! with ten thousand followers, a message wakes ten thousand connections once each instead of
//! a pump and then its connection, and an idle follower costs no task and no channel. Live
//! messages arrive already encoded ([`Event`]), the same bytes for every follower.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::guestbook::{Guestbook, TooManyBooks};
use crate::store::feed::{Event, Feed};
use crate::store::{Book, MAX_PAGE, Page, Store};

/// The keep-alive comment: also keeps the connection under the server's idle timeout, and
/// finds a peer that went away while the stream was quiet.
const KEEP_ALIVE: &[u8] = b":\n\n";

impl Guestbook {
    /// Every message of `book` after `after` (or, without it, every message from now on),
    /// then each new one, as `text/event-stream` frames without a gap or a duplicate, with a
    /// keep-alive comment every `keep_alive`, until `stop` completes or the stream is dropped.
    ///
    /// The subscription is taken here, before this returns, so nothing appended from now on
    /// can be missed; `hold` (a stream slot) is kept until the stream is dropped.
    pub fn follow<S, H>(
        &self,
        book: &Arc<Book>,
        after: Option<u64>,
        stop: S,
        hold: H,
        keep_alive: Duration,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static, TooManyBooks>
    where
        S: Future<Output = ()> + Send + 'static,
        H: Send + 'static,
    {
        let (feed, live, newest) = self.feeds.subscribe(book)?;
        let mut ticks = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
        // A late tick is not made up for: one comment per quiet period is enough.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let follower = Follower {
            store: self.store.clone(),
            feed,
            live,
            // Without a resume point, start at what the feed had already passed on.
            last_sent: after.unwrap_or(newest),
            catching_up: after.is_some(),
            pending: VecDeque::new(),
            ticks,
            _hold: hold,
        };
        Ok(
            futures_util::stream::unfold(follower, |mut follower| async move {
                let frame = follower.next_frame().await?;
                Some((frame, follower))
            })
            .take_until(stop),
        )
    }
}

/// One follower's place in the log.
struct Follower<H> {
    store: Store,
    feed: Feed,
    live: broadcast::Receiver<Event>,
    /// The newest id sent (or queued in `pending`).
    last_sent: u64,
    /// True while messages after `last_sent` are to be read from Redis, not the feed.
    catching_up: bool,
    /// One page of a catch-up, encoded, not yet sent: at most [`MAX_PAGE`] frames.
    pending: VecDeque<Bytes>,
    ticks: Interval,
    /// Held for the follower's lifetime: bounds concurrent streams.
    _hold: H,
}

impl<H> Follower<H> {
    /// The next frame to write, or `None` when the stream ends (the feed closed, or a
    /// catch-up failed: the client reconnects with `Last-Event-ID`).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                if self.pending.is_empty() {
                    // Room for a page (up to MAX_PAGE frames) is not kept by an idle follower.
                    self.pending = VecDeque::new();
                }
                return Some(frame);
            }
            if self.catching_up {
                self.catch_up_one_page().await?;
                continue;
            }
            tokio::select! {
                biased;
                received = self.live.recv() => match received {
                    Ok(event) => {
                        if event.id > self.last_sent {
                            self.last_sent = event.id;
                            return Some(event.frame);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::debug!(
                            skipped,
                            "live-update subscriber lagged; catching up from Redis"
                        );
                        self.catching_up = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.ticks.tick() => return Some(Bytes::from_static(KEEP_ALIVE)),
            }
        }
    }

    /// Queues the next page of what the feed has passed on after `last_sent`, from Redis;
    /// clears `catching_up` once nothing is left below the feed's ceiling. `None` when Redis
    /// failed. Nothing beyond the ceiling: that arrives through the channel.
    async fn catch_up_one_page(&mut self) -> Option<()> {
        let ceiling = self.feed.ceiling().await;
        if self.last_sent >= ceiling {
            self.catching_up = false;
            return Some(());
        }
        let page = Page {
            before: Some(ceiling.saturating_add(1)),
            ..Page::after(self.last_sent, MAX_PAGE)
        };
        let page = match self.store.list_from_primary(self.feed.book(), page).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "live-update catch-up failed; ending the stream");
                return None;
            }
        };
        self.catching_up = page.len() == MAX_PAGE;
        for message in page {
            self.last_sent = message.id;
            self.pending.push_back(Event::encode(&message).frame);
        }
        Some(())
    }
}
