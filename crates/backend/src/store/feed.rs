//! Live updates that work across backend replicas.
//!
//! Each backend process runs one *tail* per followed book: a task with a dedicated connection
//! that follows the book's log with `XREAD BLOCK`, and hands every new message to this
//! process's live-update subscribers of the book through a bounded broadcast channel. The
//! default book's tail runs for the process's life; another book's starts with its first
//! subscriber and ends within [`BLOCK`] of its last one leaving ([`Feeds`], bounded by
//! [`MAX_LIVE_BOOKS`]). Whichever replica a message was posted to,
//! every replica's tail reads it from Redis, so every subscriber sees it. While the default
//! book has no subscriber here, its tail only skims the log (the newest id, at most every
//! 50 ms: see `Feed::skim`) instead of reading every message to drop it.
//!
//! The tail encodes each message as its Server-Sent Event once ([`Event`]); every subscriber
//! is handed the same shared bytes, so ten thousand subscribers cost one serialisation, not
//! ten thousand.
//!
//! Why a stream and not Pub/Sub: Pub/Sub forgets what it published while a subscriber was
//! disconnected; the log remembers, so a subscriber that falls behind (or reconnects with
//! `Last-Event-ID`) catches up from Redis with `XRANGE` and misses nothing.
//!
//! With `REDIS_MIN_REPLICAS_ACK` the tail passes a message on only once replicas have
//! confirmed it (the same group-committed `WAIT` that acknowledges appends): an append that
//! answered 503 because replicas did not confirm it is not streamed, so a failover that loses
//! it takes nothing from a reader. Catch-ups read no further than what the tail has passed on
//! ([`Feed::ceiling`]); what lies beyond arrives through the channel.
//!
//! When Sentinel names another primary (or a cluster slot changes hands), the tail starts over
//! on it at once, after the last
//! message it passed on (ids on a new primary are above every earlier one: see
//! [`crate::store::sequence`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncConnectionConfig;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::book::Book;
use crate::store::entry::{RawMessage, log_entry};
use crate::store::error::StoreError;
use crate::store::primary::PrimaryLinks;

/// How many messages the broadcast channel holds for a slow subscriber before it lags (and
/// then catches up from Redis).
const CHANNEL_CAPACITY: usize = 1_024;
/// How long one XREAD blocks server-side.
const BLOCK: Duration = Duration::from_secs(5);
/// Messages per XREAD.
const BATCH: usize = 512;
/// First pause after losing Redis, doubled per failed session up to [`MAX_BACKOFF`], and back
/// to this once a session follows again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pause between confirmation attempts while replicas have not confirmed a batch.
const CONFIRM_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between two skims of a tail nobody subscribes to (see [`Feed::skim`]): how
/// far `last_id` may lag while nobody is watching. A subscriber ends the pause at once.
const SKIM_PAUSE: Duration = Duration::from_millis(50);
/// Books other than the default followed at once: each costs a task and a Redis connection.
/// A subscriber to one more gets 503 until another book's last subscriber leaves.
pub const MAX_LIVE_BOOKS: usize = 256;

/// One message as the `text/event-stream` frame every subscriber writes as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The message id.
    pub id: u64,
    /// `event: message`, `id:`, one `data:` line per line of the JSON, and the blank line.
    pub frame: Bytes,
}

impl Event {
    /// Encodes `message` once.
    pub fn encode(message: &RawMessage) -> Self {
        let id = message.id.to_string();
        let mut frame = Vec::with_capacity(message.json.len() + id.len() + 32);
        frame.extend_from_slice(b"event: message\nid: ");
        frame.extend_from_slice(id.as_bytes());
        frame.push(b'\n');
        // Serialised JSON holds no raw line break, but a `data:` line must never hold one.
        for line in message.json.split('\n') {
            frame.extend_from_slice(b"data: ");
            frame.extend_from_slice(line.trim_end_matches('\r').as_bytes());
            frame.push(b'\n');
        }
        frame.push(b'\n');
        Self {
            id: message.id,
            frame: Bytes::from(frame),
        }
    }
}

/// The process's view of one book's log tail.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<FeedInner>,
}

struct FeedInner {
    book: Arc<Book>,
    sender: broadcast::Sender<Event>,
    last_id: AtomicU64,
    following: AtomicBool,
    /// True once the tail has fixed where it starts: before that, `last_id` means nothing.
    started: watch::Sender<bool>,
    /// Held by a subscriber while it subscribes and reads `last_id`, and by a skim while it
    /// checks that nobody subscribes and moves `last_id` past messages it never sent.
    jump: Mutex<()>,
    /// Told of each new subscriber, so a skimming tail starts delivering at once.
    subscribed: tokio::sync::Notify,
}

/// How a tail session ended without an error.
enum Ended {
    /// Sentinel named another primary, or a cluster slot changed hands.
    PrimaryChanged,
    /// The book's last subscriber left (not the default book's tail).
    Idle,
}

impl Feed {
    /// A feed of `book` with no tail running yet.
    pub fn new(book: Arc<Book>) -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(FeedInner {
                book,
                sender,
                last_id: AtomicU64::new(0),
                following: AtomicBool::new(false),
                started: watch::Sender::new(false),
                jump: Mutex::new(()),
                subscribed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Subscribes to new messages, and returns the id of the last message already passed on:
    /// everything after it will arrive through the receiver (or, after lagging, from Redis).
    pub fn subscribe(&self) -> (broadcast::Receiver<Event>, u64) {
        let subscribed = {
            let _jump = lock(&self.inner.jump);
            let receiver = self.inner.sender.subscribe();
            (receiver, self.inner.last_id.load(Ordering::Acquire))
        };
        self.inner.subscribed.notify_one();
        subscribed
    }

    /// True while the tail is connected and following.
    pub fn is_following(&self) -> bool {
        self.inner.following.load(Ordering::Relaxed)
    }

    /// The id of the newest message passed on by the tail.
    pub fn last_id(&self) -> u64 {
        self.inner.last_id.load(Ordering::Acquire)
    }

    /// How far a subscriber's catch-up from Redis may read: the newest message passed on, once
    /// the tail has started. A subscriber that subscribed before asking receives everything
    /// above it through the channel, so reading no further leaves no gap, and never serves a
    /// message the tail has held back (one replicas have not confirmed).
    pub async fn ceiling(&self) -> u64 {
        let mut started = self.inner.started.subscribe();
        // The sender lives as long as the feed, which this `&self` keeps alive.
        let _ = started.wait_for(|started| *started).await;
        self.last_id()
    }

    /// The book this feed follows.
    pub fn book(&self) -> &Arc<Book> {
        &self.inner.book
    }

    /// Follows the log until `stop` is cancelled, reconnecting with backoff after errors and
    /// at once when the primary changes.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        self.run_while(store, stop, || false).await;
    }

    /// The same, and ends once `idle` says so (it is asked whenever a read returns, at least
    /// every [`BLOCK`], and between reconnections).
    async fn run_while(self, store: Store, stop: CancellationToken, idle: impl Fn() -> bool) {
        let mut backoff = FIRST_BACKOFF;
        let mut start: Option<u64> = None;
        let mut changes = store.primary_changes();
        while !stop.is_cancelled() && !idle() {
            changes.borrow_and_update();
            let session = self.follow(&store, &mut start, &idle);
            let ended = tokio::select! {
                () = stop.cancelled() => break,
                ended = session => ended,
                Ok(()) = changes.changed() => Ok(Ended::PrimaryChanged),
            };
            let was_following = self.inner.following.swap(false, Ordering::Relaxed);
            if was_following {
                backoff = FIRST_BACKOFF;
            }
            match ended {
                Ok(Ended::PrimaryChanged) => {
                    tracing::info!(after = ?start, "the Redis primary changed; the live tail starts over on it");
                    continue;
                }
                Ok(Ended::Idle) => break,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis(), "live-update tail lost Redis");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.inner.following.store(false, Ordering::Relaxed);
    }

    async fn follow(
        &self,
        store: &Store,
        start: &mut Option<u64>,
        idle: impl Fn() -> bool,
    ) -> Result<Ended, StoreError> {
        let limit = store.call_timeout();
        // No response timeout: XREAD BLOCK legitimately waits; we bound it ourselves below.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(None);
        // Asked again on every session: with Sentinel, the primary may have moved. The same
        // links serve the reads and their confirmation.
        let book = &self.inner.book;
        let links = store.links_for(book)?;
        let mut conn = links
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let log = &book.keys().log;
        let after = match *start {
            Some(after) => after,
            None => {
                // Begin at the current end: earlier messages are served by XRANGE on request.
                let newest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
                    .arg(log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                let newest = newest
                    .first()
                    .and_then(|(id, _)| id.strip_suffix("-0"))
                    .and_then(|id| id.parse().ok())
                    .unwrap_or(0);
                book.observe(newest);
                self.confirmed(&links).await?;
                newest
            }
        };
        *start = Some(after);
        // The raw entry id we have read up to; kept apart from `after` so that an entry this
        // program did not write is stepped over instead of re-read for ever.
        let mut cursor = format!("{after}-0");
        self.inner.last_id.fetch_max(after, Ordering::AcqRel);
        self.inner.started.send_replace(true);
        self.inner.following.store(true, Ordering::Relaxed);
        tracing::info!(
            after,
            book = book.name(),
            "live-update tail following the log"
        );
        loop {
            if idle() {
                return Ok(Ended::Idle);
            }
            if self.inner.sender.receiver_count() == 0 {
                self.skim(&mut conn, &links, &mut cursor, start, limit)
                    .await?;
                continue;
            }
            let mut command = redis::cmd("XREAD");
            command
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(5_000))
                .arg("STREAMS")
                .arg(log)
                .arg(&cursor);
            let read =
                command.query_async::<Option<Vec<(String, Vec<(String, Vec<String>)>)>>>(&mut conn);
            let reply = match tokio::time::timeout(BLOCK + limit, read).await {
                Ok(reply) => reply?,
                Err(_) => return Err(StoreError::Timeout(BLOCK + limit)),
            };
            let mut batch = Vec::new();
            for (_stream, entries) in reply.into_iter().flatten() {
                for (entry_id, fields) in entries {
                    let decoded = log_entry(&entry_id, fields);
                    cursor = entry_id;
                    match decoded {
                        Ok(message) => {
                            // Handed out, confirmed or not: a new term must jump past it.
                            book.observe(message.id);
                            batch.push(message);
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "skipping an unreadable log entry")
                        }
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            self.confirmed(&links).await?;
            for message in batch {
                *start = Some(message.id);
                self.inner.last_id.fetch_max(message.id, Ordering::AcqRel);
                // No subscribers is fine: nothing to deliver. Encoded here, once for all.
                let _ = self.inner.sender.send(Event::encode(&message));
            }
        }
    }

    /// Keeps up with the log while nobody subscribes: the tail has nothing to deliver, only
    /// `last_id` (and the ids seen) to move on. Reading every message only to drop it cost
    /// Redis and this process each message's bytes once more per backend (the default book's
    /// tail runs whether anyone watches or not); a skim costs two one-entry replies per
    /// [`SKIM_PAUSE`] whatever the rate of appends.
    ///
    /// 1. Wait (`XREAD BLOCK`, one entry) for anything after the cursor.
    /// 2. Read the newest entry's id (`XREVRANGE ... COUNT 1`), and have replicas confirm it as
    ///    a read batch would be.
    /// 3. Under `jump`, and only if nobody subscribed meanwhile, move the cursor and `last_id`
    ///    to it: a subscriber either came before (then nothing moves, and the next full read
    ///    delivers from the cursor) or reads `last_id` after (then it catches up past it from
    ///    Redis). Either way no message falls between its catch-up and its live feed.
    /// 4. Pause up to [`SKIM_PAUSE`], less if someone subscribes.
    async fn skim(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        links: &PrimaryLinks,
        cursor: &mut String,
        start: &mut Option<u64>,
        call_timeout: Duration,
    ) -> Result<(), StoreError> {
        // This connection has no response timeout (see `follow`): each call is bounded here.
        let limit = BLOCK + call_timeout;
        let book = &self.inner.book;
        let log = &book.keys().log;
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(5_000))
            .arg("STREAMS")
            .arg(log)
            .arg(&*cursor);
        let read = command.query_async::<Option<redis::Value>>(conn);
        let next = match tokio::time::timeout(limit, read).await {
            Ok(reply) => reply?,
            Err(_) => return Err(StoreError::Timeout(limit)),
        };
        if next.is_none() {
            return Ok(());
        }
        let mut command = redis::cmd("XREVRANGE");
        command.arg(log).arg("+").arg("-").arg("COUNT").arg(1);
        let read = command.query_async::<Vec<(String, redis::Value)>>(conn);
        let newest = match tokio::time::timeout(call_timeout, read).await {
            Ok(reply) => reply?,
            Err(_) => return Err(StoreError::Timeout(call_timeout)),
        };
        // Cleared meanwhile: the next read starts from the same cursor, as a full read would.
        let Some((entry_id, _)) = newest.into_iter().next() else {
            return Ok(());
        };
        let id = entry_id
            .strip_suffix("-0")
            .and_then(|id| id.parse::<u64>().ok());
        if let Some(id) = id {
            book.observe(id);
        }
        self.confirmed(links).await?;
        if !self.jump_if_unwatched(cursor, entry_id, id, start) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(SKIM_PAUSE) => {}
            () = self.inner.subscribed.notified() => {}
        }
        Ok(())
    }

    /// Step 3 of [`Self::skim`]: moves the cursor to `entry_id` (and `last_id` and `start` to
    /// `id`, when it is one of ours) unless someone subscribed; returns whether it moved.
    fn jump_if_unwatched(
        &self,
        cursor: &mut String,
        entry_id: String,
        id: Option<u64>,
        start: &mut Option<u64>,
    ) -> bool {
        let _jump = lock(&self.inner.jump);
        if self.inner.sender.receiver_count() > 0 {
            return false;
        }
        // An entry this program did not write is stepped over, as a full read does.
        *cursor = entry_id;
        if let Some(id) = id {
            *start = Some(id);
            self.inner.last_id.fetch_max(id, Ordering::AcqRel);
        }
        true
    }

    /// Returns once replicas have confirmed everything read so far (at once without
    /// `REDIS_MIN_REPLICAS_ACK`). Replicas that lag are waited for; any other failure ends the
    /// session, which starts again after the last message passed on.
    async fn confirmed(&self, links: &PrimaryLinks) -> Result<(), StoreError> {
        let Some(replication) = &links.replication else {
            return Ok(());
        };
        loop {
            match replication
                .confirm(&self.inner.book.keys().replication_fence)
                .await
            {
                Ok(()) => return Ok(()),
                Err(StoreError::NotReplicated { acked, wanted, .. }) => {
                    tracing::debug!(acked, wanted, "live-update tail waiting for replicas");
                    tokio::time::sleep(CONFIRM_PAUSE).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Every book's feed in this process: the default book's, always, and the others' while
/// they have subscribers (at most [`MAX_LIVE_BOOKS`]).
#[derive(Clone)]
pub struct Feeds {
    inner: Arc<FeedsInner>,
}

struct FeedsInner {
    store: Store,
    default: Feed,
    others: Mutex<HashMap<String, Feed>>,
    /// Ends every tail (the default one's too) at shutdown.
    stop: CancellationToken,
}

/// A subscriber to one book more than [`MAX_LIVE_BOOKS`] allows.
#[derive(Debug, thiserror::Error)]
#[error("live updates are being followed on {MAX_LIVE_BOOKS} books already; retry later")]
pub struct TooManyBooks;

impl Feeds {
    /// The feeds of `store`'s books; no tail runs before [`Feeds::run`].
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(FeedsInner {
                default: Feed::new(store.default_book()),
                store,
                others: Mutex::default(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// The default book's feed.
    pub fn default_feed(&self) -> &Feed {
        &self.inner.default
    }

    /// Runs the default book's tail until `stop`, then ends every other book's tail too.
    pub async fn run(self, stop: CancellationToken) {
        let inner = &self.inner;
        let default = inner
            .default
            .clone()
            .run(inner.store.clone(), inner.stop.clone());
        tokio::select! {
            () = default => {}
            () = stop.cancelled() => {}
        }
        inner.stop.cancel();
    }

    /// Subscribes to `book`'s new messages (see [`Feed::subscribe`]), starting its tail when
    /// it has none.
    pub fn subscribe(
        &self,
        book: &Arc<Book>,
    ) -> Result<(Feed, broadcast::Receiver<Event>, u64), TooManyBooks> {
        let inner = &self.inner;
        if book.name() == inner.default.book().name() {
            let (live, newest) = inner.default.subscribe();
            return Ok((inner.default.clone(), live, newest));
        }
        let mut others = lock(&inner.others);
        if let Some(feed) = others.get(book.name()) {
            // Subscribed under the lock: its tail cannot find itself idle and end meanwhile.
            let (live, newest) = feed.subscribe();
            return Ok((feed.clone(), live, newest));
        }
        if others.len() >= MAX_LIVE_BOOKS {
            return Err(TooManyBooks);
        }
        let feed = Feed::new(Arc::clone(book));
        let (live, newest) = feed.subscribe();
        others.insert(book.name().to_owned(), feed.clone());
        drop(others);
        let registry = Arc::clone(inner);
        let tail = feed.clone();
        tokio::spawn(async move {
            let idle = || registry.retire_if_idle(&tail);
            tail.clone()
                .run_while(registry.store.clone(), registry.stop.clone(), idle)
                .await;
            // Stopped for shutdown: nobody subscribes any more, nothing to keep.
            registry.retire(&tail);
        });
        Ok((feed, live, newest))
    }

    /// How many books other than the default have a tail.
    pub fn live_books(&self) -> usize {
        lock(&self.inner.others).len()
    }
}

impl FeedsInner {
    /// True (and forgotten) when `feed` has no subscriber left: checked under the registry's
    /// lock, so no subscriber can join a tail that is ending.
    fn retire_if_idle(&self, feed: &Feed) -> bool {
        let mut others = lock(&self.others);
        if feed.inner.sender.receiver_count() > 0 {
            return false;
        }
        remove_if_same(&mut others, feed);
        true
    }

    fn retire(&self, feed: &Feed) {
        remove_if_same(&mut lock(&self.others), feed);
    }
}

fn remove_if_same(others: &mut HashMap<String, Feed>, feed: &Feed) {
    let name = feed.book().name();
    if others
        .get(name)
        .is_some_and(|known| Arc::ptr_eq(&known.inner, &feed.inner))
    {
        others.remove(name);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skim_jumps_only_while_nobody_subscribes() {
        let feed = Feed::new(Arc::new(Book::new("skim")));
        let (mut cursor, mut start) = ("3-0".to_owned(), Some(3));
        feed.inner.last_id.store(3, Ordering::Release);

        // Nobody watches: the cursor and `last_id` move past messages never sent.
        assert!(feed.jump_if_unwatched(&mut cursor, "9-0".into(), Some(9), &mut start));
        assert_eq!(
            (cursor.as_str(), start, feed.last_id()),
            ("9-0", Some(9), 9)
        );

        // A subscriber took `last_id` (9): the tail must deliver what follows, so it stays.
        let (_live, newest) = feed.subscribe();
        assert_eq!(newest, 9);
        assert!(!feed.jump_if_unwatched(&mut cursor, "12-0".into(), Some(12), &mut start));
        assert_eq!(
            (cursor.as_str(), start, feed.last_id()),
            ("9-0", Some(9), 9)
        );
    }

    #[test]
    fn a_message_is_encoded_as_one_complete_message_event() {
        let message = RawMessage {
            id: 42,
            json: r#"{"id":42,"text":"hi"}"#.to_owned(),
        };
        let event = Event::encode(&message);
        assert_eq!(event.id, 42);
        assert_eq!(
            event.frame,
            "event: message\nid: 42\ndata: {\"id\":42,\"text\":\"hi\"}\n\n"
        );
    }

    #[test]
    fn a_line_break_in_the_data_starts_another_data_line() {
        let message = RawMessage {
            id: 1,
            json: "a\r\nb".to_owned(),
        };
        assert_eq!(
            Event::encode(&message).frame,
            "event: message\nid: 1\ndata: a\ndata: b\n\n"
        );
    }
}
