//! The use cases of the guestbook, free of HTTP: post a message exactly once, read a page,
//! follow new messages without a gap.
//!
//! Handlers extract and validate the request, call one method here and map its answer to
//! HTTP; the decisions in between live here: whether a failed append may have been stored all
//! the same (a retry must then reuse the key), whether a reused key is a replay or a conflict,
//! and how a follower resumes (`Guestbook::follow`, in `follow`).

mod follow;

use crate::domain::{IdempotencyKey, NewMessage};
use crate::store::feed::Feed;
use crate::store::{AppendOutcome, Page, RawMessage, Store, StoreError};

/// What posting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A new message.
    Created(RawMessage),
    /// The key was used before with the same author and text: the message it created.
    Replayed(RawMessage),
    /// The key was used before with another body; nothing was written.
    Conflict,
}

/// Why a post failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The append may have been stored all the same (its answer was lost or came too late, or
    /// replicas did not confirm it in time): only a retry with the same key is safe.
    #[error(transparent)]
    OutcomeUnknown(StoreError),
    /// Nothing was stored.
    #[error(transparent)]
    Failed(StoreError),
}

/// The guestbook's use cases over its store and this process's tail of the log.
#[derive(Clone)]
pub struct Guestbook {
    store: Store,
    feed: Feed,
}

impl Guestbook {
    /// Use cases over `store`, following new messages through `feed`.
    pub fn new(store: Store, feed: Feed) -> Self {
        Self { store, feed }
    }

    /// Posts `new`, exactly once per idempotency `key`.
    pub async fn post(
        &self,
        new: &NewMessage,
        key: Option<&IdempotencyKey>,
    ) -> Result<Posted, PostError> {
        match self.store.append(new, key).await {
            Ok(AppendOutcome::Created(created)) => Ok(Posted::Created(created)),
            Ok(AppendOutcome::Replayed(first)) => Ok(Posted::Replayed(first)),
            Ok(AppendOutcome::KeyReused) => Ok(Posted::Conflict),
            Err(err) if err.is_transient() && err.may_have_written() => {
                Err(PostError::OutcomeUnknown(err))
            }
            Err(err) => Err(PostError::Failed(err)),
        }
    }

    /// Deletes every message and idempotency record (ids are never reused); returns how many
    /// messages were removed.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        self.store.clear().await
    }

    /// The messages `page` selects, as stored.
    pub async fn page(&self, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        self.store.list(page).await
    }
}
