//! The `messages` mode's books: which guestbook each message goes to, under which path, and
//! the per-book figures of the report. One book (the default) is the tool's behaviour from
//! before books existed, through `/api/messages`; with `--books N` the messages are dealt
//! round-robin over N named books, so a run checks that books keep their writes apart.

use guestbook_api::{BOOK_NAME_RULE, MAX_BOOK_NAME, is_valid_book_name};
use serde::Serialize;

use crate::verify::Verdict;

/// Most books in one run: each book costs at least one read-back request and one report row,
/// and a thousand already spreads any sensible `--count` thinly.
pub const MAX_BOOKS: usize = 1_000;

/// The path of the default book, as the API served it before books.
const DEFAULT_BOOK_PATH: &str = "/api/messages";

/// Prefix used when the run id has nothing usable in a book name.
const FALLBACK_PREFIX: &str = "loadtest";

/// Where a run's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Books {
    /// The backend's default book, through `/api/messages`.
    Default,
    /// `count` books named `<prefix>-0` .. `<prefix>-<count - 1>`, through
    /// `/api/books/{book}/messages`.
    Named {
        /// The names' common start.
        prefix: String,
        /// How many books.
        count: usize,
    },
}

impl Books {
    /// The books `--books` and `--book-prefix` describe. One book without a prefix is the
    /// default book; otherwise the prefix defaults to one derived from `run_id`, so that
    /// reruns write to fresh books. Every name is checked against the API's rule here, so a
    /// bad prefix stops the tool before it sends anything.
    pub fn from_flags(count: usize, prefix: Option<&str>, run_id: &str) -> Result<Self, String> {
        if !(1..=MAX_BOOKS).contains(&count) {
            return Err(format!("--books must be between 1 and {MAX_BOOKS}"));
        }
        let prefix = match prefix {
            None if count == 1 => return Ok(Self::Default),
            None => prefix_from_run_id(run_id, count),
            Some(prefix) => prefix.to_owned(),
        };
        let books = Self::Named { prefix, count };
        // The longest name is the last one; the alphabet is the same for all.
        let last = books.name(count - 1).unwrap_or_default();
        if !is_valid_book_name(&last) {
            return Err(format!(
                "--book-prefix: {last:?} is not a book name ({BOOK_NAME_RULE})"
            ));
        }
        Ok(books)
    }

    /// How many books.
    pub fn len(&self) -> usize {
        match self {
            Self::Default => 1,
            Self::Named { count, .. } => *count,
        }
    }

    /// Never true: there is always at least one book. Here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The book (0-based slot) message `index` goes to: round-robin, so books get equal
    /// shares, give or take one.
    pub fn of(&self, index: usize) -> usize {
        index % self.len()
    }

    /// The name of book `slot`; `None` for the default book, whose name is the backend's
    /// `GUESTBOOK_NAME` and unknown here.
    pub fn name(&self, slot: usize) -> Option<String> {
        match self {
            Self::Default => None,
            Self::Named { prefix, .. } => Some(format!("{prefix}-{slot}")),
        }
    }

    /// The messages path of book `slot`, to append to a base URL.
    pub fn path(&self, slot: usize) -> String {
        self.name(slot).map_or_else(
            || DEFAULT_BOOK_PATH.to_owned(),
            |name| format!("/api/books/{name}/messages"),
        )
    }

    /// The prefix, when the books are named.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Self::Default => None,
            Self::Named { prefix, .. } => Some(prefix),
        }
    }
}

/// A book-name prefix from the run id: characters a book name cannot hold become `_`, and the
/// end is cut so that `<prefix>-<count - 1>` fits. Two run ids cut to the same prefix share books,
/// which the verdict tolerates: it only looks at this run's texts.
fn prefix_from_run_id(run_id: &str, count: usize) -> String {
    let room = MAX_BOOK_NAME - 1 - count.saturating_sub(1).to_string().len();
    let prefix: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    if prefix.is_empty() {
        FALLBACK_PREFIX.to_owned()
    } else {
        prefix
    }
}

/// One book's figures in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookFigures {
    /// Its name; `null` for the default book.
    pub book: Option<String>,
    /// Messages sent to it.
    pub sent: usize,
    /// Of those, acknowledged.
    pub acknowledged: usize,
    /// Of those, found in it.
    pub found: usize,
    /// Acknowledged but absent from it.
    pub lost: usize,
    /// Present in it more than once.
    pub duplicated: usize,
    /// Present once, under another id than acknowledged.
    pub wrong_id: usize,
    /// Adjacent pairs in its read-back whose ids do not increase.
    pub out_of_order: usize,
}

impl BookFigures {
    /// Whether anything is wrong in this book.
    pub fn troubled(&self) -> bool {
        self.lost + self.duplicated + self.wrong_id + self.out_of_order > 0
    }
}

/// The books part of a `messages` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BooksReport {
    /// How many books the run wrote to.
    pub count: usize,
    /// The names' prefix; `null` for the default book.
    pub prefix: Option<String>,
    /// Fewest acknowledged messages in one book.
    pub acknowledged_min: usize,
    /// Most acknowledged messages in one book.
    pub acknowledged_max: usize,
    /// Every book, in name order.
    pub per_book: Vec<BookFigures>,
}

impl BooksReport {
    /// The report of `books` from their verdicts (one per book, in slot order).
    pub fn new(books: &Books, verdicts: &[Verdict]) -> Self {
        let per_book: Vec<BookFigures> = verdicts
            .iter()
            .enumerate()
            .map(|(slot, v)| BookFigures {
                book: books.name(slot),
                sent: v.sent,
                acknowledged: v.acknowledged,
                found: v.found,
                lost: v.lost,
                duplicated: v.duplicated,
                wrong_id: v.wrong_id,
                out_of_order: v.out_of_order,
            })
            .collect();
        let acknowledged = || per_book.iter().map(|b| b.acknowledged);
        Self {
            count: books.len(),
            prefix: books.prefix().map(str::to_owned),
            acknowledged_min: acknowledged().min().unwrap_or(0),
            acknowledged_max: acknowledged().max().unwrap_or(0),
            per_book,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_book_without_a_prefix_is_the_default_book_at_the_old_path() {
        let books = Books::from_flags(1, None, "run-1234abcd").expect("valid");
        assert_eq!(books, Books::Default);
        assert_eq!(books.path(books.of(7)), "/api/messages");
        assert_eq!(books.name(0), None);
    }

    #[test]
    fn messages_are_dealt_round_robin_over_named_books() {
        let books = Books::from_flags(3, Some("party"), "run-x").expect("valid");
        let slots: Vec<usize> = (0..7).map(|i| books.of(i)).collect();
        assert_eq!(slots, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(books.path(0), "/api/books/party-0/messages");
        assert_eq!(books.path(2), "/api/books/party-2/messages");
    }

    #[test]
    fn the_default_prefix_comes_from_the_run_id_so_reruns_do_not_collide() {
        let first = Books::from_flags(5, None, "run-1234abcd").expect("valid");
        let second = Books::from_flags(5, None, "run-99999999").expect("valid");
        assert_eq!(first.name(0).as_deref(), Some("run-1234abcd-0"));
        assert_ne!(first.name(0), second.name(0));
    }

    #[test]
    fn a_run_id_a_book_name_cannot_hold_is_cleaned_and_cut_to_fit() {
        let long = format!("my run/{}", "x".repeat(100));
        let books = Books::from_flags(1_000, None, &long).expect("valid");
        let last = books.name(999).expect("named");
        assert!(is_valid_book_name(&last), "{last}");
        assert_eq!(last.len(), MAX_BOOK_NAME);
        assert!(last.starts_with("my_run_x"), "{last}");
        let odd = Books::from_flags(2, None, "!!").expect("valid");
        assert_eq!(odd.name(0).as_deref(), Some("__-0"));
        let empty = Books::from_flags(2, None, "").expect("valid");
        assert_eq!(empty.name(1).as_deref(), Some("loadtest-1"));
    }

    #[test]
    fn a_prefix_that_makes_a_bad_name_is_refused() {
        let longest_fitting = "p".repeat(MAX_BOOK_NAME - "-9".len());
        assert!(Books::from_flags(10, Some(&longest_fitting), "r").is_ok());
        for prefix in [format!("{longest_fitting}p"), "a b".into(), "a/b".into()] {
            let err = Books::from_flags(10, Some(&prefix), "r").expect_err(&prefix);
            assert!(err.contains(BOOK_NAME_RULE), "{err}");
        }
    }

    #[test]
    fn the_number_of_books_is_bounded() {
        assert!(Books::from_flags(0, None, "r").is_err());
        assert!(Books::from_flags(MAX_BOOKS + 1, None, "r").is_err());
        assert!(Books::from_flags(MAX_BOOKS, None, "r").is_ok());
    }

    #[test]
    fn one_named_book_takes_the_books_path() {
        let books = Books::from_flags(1, Some("solo"), "r").expect("valid");
        assert_eq!(books.path(books.of(3)), "/api/books/solo-0/messages");
    }

    #[test]
    fn the_report_gives_the_fewest_and_most_acknowledged_per_book() {
        let books = Books::from_flags(2, Some("b"), "r").expect("valid");
        let verdict = |acknowledged, lost| Verdict {
            sent: acknowledged,
            acknowledged,
            found: acknowledged - lost,
            lost,
            ..Verdict::default()
        };
        let report = BooksReport::new(&books, &[verdict(4, 0), verdict(3, 1)]);
        assert_eq!((report.acknowledged_min, report.acknowledged_max), (3, 4));
        assert_eq!(report.per_book[1].book.as_deref(), Some("b-1"));
        assert!(!report.per_book[0].troubled());
        assert!(report.per_book[1].troubled());
    }
}
