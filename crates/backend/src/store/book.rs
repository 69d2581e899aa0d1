//! Books: the guestbooks one backend serves. `/api/messages` is the default book
//! (`GUESTBOOK_NAME`); `/api/books/{book}/...` names any other.
//!
//! Each book is its own set of keys under its own hash tag, so its own log, id sequence,
//! retention cap and idempotency records, and its own Redis Cluster slot. What this process
//! remembers of a book is its key names and the highest id it has seen (a new term's ids
//! start past it, see [`super::sequence`]); that memory is bounded ([`MAX_REMEMBERED`]), as
//! book names come from the public side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::cluster::slot_of;
use crate::store::keys::Keys;

/// Books other than the default whose ids this process remembers. Forgetting one costs
/// nothing but the memory of its highest id, which matters only when a failover loses its
/// unreplicated appends and the new primary's sequence is not already half an epoch past them.
pub(crate) const MAX_REMEMBERED: usize = 4_096;

/// One book as this process knows it.
#[derive(Debug)]
pub struct Book {
    name: String,
    keys: Keys,
    slot: u16,
    /// The highest message id this process has seen in the book (appended, replayed or read
    /// by a live tail).
    highest_seen: AtomicU64,
    /// The `watch` and `lock` strategies' local queue: this process's appends to the book,
    /// one at a time (see each strategy's module).
    pub(crate) local: tokio::sync::Mutex<()>,
}

impl Book {
    /// The book called `name` (already valid: see `guestbook_api::is_valid_book_name`).
    pub(crate) fn new(name: &str) -> Self {
        let keys = Keys::new(name);
        Self {
            name: name.to_owned(),
            slot: slot_of(&keys.seq),
            keys,
            highest_seen: AtomicU64::new(0),
            local: tokio::sync::Mutex::new(()),
        }
    }

    /// The book's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The book's Redis keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The Redis Cluster slot of every key of the book.
    pub(crate) fn slot(&self) -> u16 {
        self.slot
    }

    /// Notes a message id seen in this book.
    pub(crate) fn observe(&self, id: u64) {
        self.highest_seen.fetch_max(id, Ordering::AcqRel);
    }

    /// The highest id seen in this book.
    pub(crate) fn known(&self) -> u64 {
        self.highest_seen.load(Ordering::Acquire)
    }
}

/// The default book, and the others met so far (at most [`MAX_REMEMBERED`]).
pub(crate) struct Books {
    default: Arc<Book>,
    others: Mutex<HashMap<String, Arc<Book>>>,
}

impl Books {
    pub(crate) fn new(default: &str) -> Self {
        Self {
            default: Arc::new(Book::new(default)),
            others: Mutex::default(),
        }
    }

    pub(crate) fn default_book(&self) -> &Arc<Book> {
        &self.default
    }

    /// The book called `name` (valid), remembered from now on.
    pub(crate) fn get(&self, name: &str) -> Arc<Book> {
        if name == self.default.name {
            return Arc::clone(&self.default);
        }
        let mut others = self
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(book) = others.get(name) {
            return Arc::clone(book);
        }
        if others.len() >= MAX_REMEMBERED {
            // Any one will do: see MAX_REMEMBERED for what forgetting costs.
            if let Some(victim) = others.keys().next().cloned() {
                others.remove(&victim);
            }
        }
        let book = Arc::new(Book::new(name));
        others.insert(name.to_owned(), Arc::clone(&book));
        book
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_is_remembered_and_the_memory_is_bounded() {
        let books = Books::new("default");
        assert!(Arc::ptr_eq(&books.get("default"), books.default_book()));
        let party = books.get("party");
        party.observe(7);
        assert_eq!(books.get("party").known(), 7);
        for index in 0..MAX_REMEMBERED + 10 {
            books.get(&format!("b{index}"));
        }
        let remembered = books.others.lock().map(|others| others.len()).unwrap_or(0);
        assert_eq!(remembered, MAX_REMEMBERED);
    }

    #[test]
    fn books_have_their_own_keys_and_slots() {
        let (a, b) = (Book::new("a"), Book::new("b"));
        assert_ne!(a.keys().log, b.keys().log);
        assert_eq!(a.slot(), slot_of("{guestbook:a}:log"));
        assert_ne!(a.slot(), b.slot());
    }
}
