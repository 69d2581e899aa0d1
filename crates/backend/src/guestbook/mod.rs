//! The use cases of the guestbook, free of HTTP: post a message exactly once, read a page,
//! follow new messages without a gap.
//!
//! Handlers extract and validate the request, call one method here and map its answer to
//! HTTP; the decisions in between live here: whether a failed append may have been stored all
//! the same (a retry must then reuse the key), whether a reused key is a replay or a conflict,
//! and how a follower resumes (`Guestbook::follow`, in `follow`).

mod follow;

use std::sync::Arc;

pub use crate::store::feed::TooManyBooks;

use crate::domain::{IdempotencyKey, NewMessage};
use crate::store::feed::Feeds;
use crate::store::{AppendOutcome, Book, Page, RawMessage, Store, StoreError};

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

/// The guestbook's use cases over its store and this process's tails of the books' logs.
/// Every use case takes the book it is about (see [`Store::book`]).
#[derive(Clone)]
pub struct Guestbook {
    store: Store,
    feeds: Feeds,
}

impl Guestbook {
    /// Use cases over `store`, following new messages through `feeds`.
    pub fn new(store: Store, feeds: Feeds) -> Self {
        Self { store, feeds }
    }

    /// The default book (`/api/messages`).
    pub fn default_book(&self) -> Arc<Book> {
        self.store.default_book()
    }

    /// The book called `name`, or `None` when the name is not a valid book name.
    pub fn book(&self, name: &str) -> Option<Arc<Book>> {
        guestbook_api::is_valid_book_name(name).then(|| self.store.book(name))
    }

    /// Posts `new` to `book`, exactly once per idempotency `key` (keys are the book's own).
    pub async fn post(
        &self,
        book: &Arc<Book>,
        new: &NewMessage,
        key: Option<&IdempotencyKey>,
    ) -> Result<Posted, PostError> {
        match self.store.append(book, new, key).await {
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
    pub async fn clear(&self, book: &Book) -> Result<u64, StoreError> {
        self.store.clear(book).await
    }

    /// The messages of `book` that `page` selects, as stored.
    pub async fn page(&self, book: &Book, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        self.store.list(book, page).await
    }
}
