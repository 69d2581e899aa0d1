//! The exactly-once verdict: every acknowledged message present once, in its own book, under
//! the id it was acknowledged with, and ids unique and ascending. Pure, so it is tested on its
//! own.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// One message the run sent.
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// Its Idempotency-Key, when one was sent.
    pub key: Option<String>,
    /// The text, unique within the run.
    pub text: String,
    /// The id the backend acknowledged it with; `None` when no attempt was acknowledged.
    pub acked_id: Option<u64>,
    /// The book (0-based slot, see [`crate::books::Books`]) it was posted to.
    pub book: usize,
}

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    /// Its id.
    pub id: u64,
    /// Its text.
    pub text: String,
}

/// Most offending texts listed by name in a report.
const SAMPLE: usize = 10;

/// What the read-back showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Messages sent.
    pub sent: usize,
    /// Messages acknowledged (201, or 200 for a replay).
    pub acknowledged: usize,
    /// Messages of this run found in the guestbook (copies counted once).
    pub found: usize,
    /// Acknowledged but absent.
    pub lost: usize,
    /// Present more than once.
    pub duplicated: usize,
    /// Present once, but under another id than acknowledged.
    pub wrong_id: usize,
    /// Never acknowledged, yet present (possible when an answer was lost; not an error).
    pub unacknowledged_present: usize,
    /// Adjacent pairs in the read-back whose ids do not increase.
    pub out_of_order: usize,
    /// Up to ten texts of lost messages.
    pub lost_examples: Vec<String>,
    /// Up to ten texts of duplicated messages.
    pub duplicated_examples: Vec<String>,
    /// Messages found in a book they were not posted to (acknowledged or not): books must
    /// keep their writes apart. Always 0 with one book.
    pub misplaced: usize,
    /// Up to ten texts of misplaced messages.
    pub misplaced_examples: Vec<String>,
}

impl Verdict {
    /// True when every acknowledged message is present exactly once and ids ascend.
    pub fn passed(&self) -> bool {
        self.acknowledged > 0
            && self.lost == 0
            && self.duplicated == 0
            && self.wrong_id == 0
            && self.out_of_order == 0
            && self.misplaced == 0
    }

    /// Adds `other`'s counts (and examples, up to ten of each) to these.
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        self.found += other.found;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.wrong_id += other.wrong_id;
        self.unacknowledged_present += other.unacknowledged_present;
        self.out_of_order += other.out_of_order;
        self.misplaced += other.misplaced;
        for (mine, theirs) in [
            (&mut self.lost_examples, &other.lost_examples),
            (&mut self.duplicated_examples, &other.duplicated_examples),
            (&mut self.misplaced_examples, &other.misplaced_examples),
        ] {
            let room = SAMPLE.saturating_sub(mine.len());
            mine.extend(theirs.iter().take(room).cloned());
        }
    }
}

/// The verdict of a run over several books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BooksVerdict {
    /// The whole run: every book's counts added up, and the misplaced messages.
    pub total: Verdict,
    /// Each book's own verdict, in slot order (`misplaced` is only in the total).
    pub per_book: Vec<Verdict>,
}

/// Compares what was sent to each book with what each book holds: `read_back[slot]` is book
/// `slot` read back in full. Each book is judged on its own, as [`verify`] judges one book,
/// against the messages posted to it; a message of this run found in another book than its
/// own is counted as misplaced, once however many books hold it.
pub fn verify_books(sent: &[SentMessage], read_back: &[Vec<FoundMessage>]) -> BooksVerdict {
    let mut by_book: Vec<Vec<SentMessage>> = vec![Vec::new(); read_back.len()];
    for message in sent {
        if let Some(book) = by_book.get_mut(message.book) {
            book.push(message.clone());
        }
    }
    let per_book: Vec<Verdict> = by_book
        .iter()
        .zip(read_back)
        .map(|(sent, found)| verify(sent, found))
        .collect();
    let mut total = Verdict::default();
    for verdict in &per_book {
        total.add(verdict);
    }
    let home: HashMap<&str, usize> = sent.iter().map(|m| (m.text.as_str(), m.book)).collect();
    // A BTreeSet keeps the examples in a stable order from one run of the report to the next.
    let misplaced: BTreeSet<&str> = read_back
        .iter()
        .enumerate()
        .flat_map(|(slot, found)| found.iter().map(move |m| (slot, m.text.as_str())))
        .filter(|(slot, text)| home.get(text).is_some_and(|own| own != slot))
        .map(|(_, text)| text)
        .collect();
    total.misplaced = misplaced.len();
    total.misplaced_examples = misplaced
        .iter()
        .take(SAMPLE)
        .map(|&text| text.to_owned())
        .collect();
    BooksVerdict { total, per_book }
}

/// Compares what was sent and acknowledged with everything read back.
pub fn verify(sent: &[SentMessage], read_back: &[FoundMessage]) -> Verdict {
    let mut copies: HashMap<&str, Vec<u64>> = HashMap::new();
    for message in read_back {
        copies
            .entry(message.text.as_str())
            .or_default()
            .push(message.id);
    }
    let mut verdict = Verdict {
        sent: sent.len(),
        out_of_order: read_back
            .windows(2)
            .filter(|pair| pair[0].id >= pair[1].id)
            .count(),
        ..Verdict::default()
    };
    for message in sent {
        let ids = copies
            .get(message.text.as_str())
            .map_or(&[][..], Vec::as_slice);
        if !ids.is_empty() {
            verdict.found += 1;
        }
        if ids.len() > 1 {
            verdict.duplicated += 1;
            if verdict.duplicated_examples.len() < SAMPLE {
                verdict.duplicated_examples.push(message.text.clone());
            }
        }
        match (message.acked_id, ids) {
            (Some(_), []) => {
                verdict.acknowledged += 1;
                verdict.lost += 1;
                if verdict.lost_examples.len() < SAMPLE {
                    verdict.lost_examples.push(message.text.clone());
                }
            }
            (Some(acked), [id]) => {
                verdict.acknowledged += 1;
                if acked != *id {
                    verdict.wrong_id += 1;
                }
            }
            (Some(_), _) => verdict.acknowledged += 1,
            (None, []) => {}
            (None, _) => verdict.unacknowledged_present += 1,
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(text: &str, acked_id: Option<u64>) -> SentMessage {
        SentMessage {
            key: None,
            text: text.into(),
            acked_id,
            book: 0,
        }
    }

    fn sent_to(book: usize, text: &str, acked_id: Option<u64>) -> SentMessage {
        SentMessage {
            book,
            ..sent(text, acked_id)
        }
    }

    fn found(id: u64, text: &str) -> FoundMessage {
        FoundMessage {
            id,
            text: text.into(),
        }
    }

    #[test]
    fn every_message_once_under_its_id_passes() {
        let verdict = verify(
            &[sent("a", Some(1)), sent("b", Some(2))],
            &[found(1, "a"), found(2, "b")],
        );
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!((verdict.acknowledged, verdict.found), (2, 2));
    }

    #[test]
    fn a_missing_acknowledged_message_is_lost() {
        let verdict = verify(&[sent("a", Some(1)), sent("b", Some(2))], &[found(1, "a")]);
        assert!(!verdict.passed());
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.lost_examples, vec!["b".to_owned()]);
    }

    #[test]
    fn two_copies_are_a_duplicate() {
        let verdict = verify(&[sent("a", Some(1))], &[found(1, "a"), found(2, "a")]);
        assert!(!verdict.passed());
        assert_eq!(verdict.duplicated, 1);
    }

    #[test]
    fn another_id_than_acknowledged_fails() {
        let verdict = verify(&[sent("a", Some(1))], &[found(7, "a")]);
        assert_eq!(verdict.wrong_id, 1);
        assert!(!verdict.passed());
    }

    #[test]
    fn descending_or_repeated_ids_are_out_of_order() {
        let verdict = verify(
            &[sent("a", Some(2)), sent("b", Some(1))],
            &[found(2, "a"), found(1, "b")],
        );
        assert_eq!(verdict.out_of_order, 1);
        assert!(!verdict.passed());
    }

    #[test]
    fn an_unacknowledged_message_may_be_present_or_absent() {
        let verdict = verify(
            &[sent("a", Some(1)), sent("b", None), sent("c", None)],
            &[found(1, "a"), found(2, "b")],
        );
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.unacknowledged_present, 1);
    }

    #[test]
    fn nothing_acknowledged_is_not_a_pass() {
        assert!(!verify(&[sent("a", None)], &[]).passed());
    }

    #[test]
    fn books_holding_their_own_messages_pass_with_ids_per_book() {
        let verdict = verify_books(
            &[
                sent_to(0, "a", Some(1)),
                sent_to(1, "b", Some(1)),
                sent_to(0, "c", Some(2)),
            ],
            &[vec![found(1, "a"), found(2, "c")], vec![found(1, "b")]],
        );
        assert!(verdict.total.passed(), "{verdict:?}");
        assert_eq!((verdict.total.acknowledged, verdict.total.found), (3, 3));
        assert_eq!(verdict.per_book[0].found, 2);
        assert_eq!(verdict.per_book[1].found, 1);
    }

    #[test]
    fn a_message_in_the_wrong_book_is_misplaced_and_lost_from_its_own() {
        let verdict = verify_books(
            &[sent_to(0, "a", Some(1)), sent_to(1, "b", Some(1))],
            &[vec![found(1, "a"), found(2, "b")], vec![]],
        );
        assert!(!verdict.total.passed());
        assert_eq!(verdict.total.misplaced, 1);
        assert_eq!(verdict.total.misplaced_examples, vec!["b".to_owned()]);
        assert_eq!(verdict.total.lost, 1);
        assert_eq!((verdict.per_book[0].lost, verdict.per_book[1].lost), (0, 1));
    }

    #[test]
    fn a_copy_in_another_book_fails_even_when_its_own_book_holds_it() {
        let verdict = verify_books(
            &[sent_to(0, "a", Some(1)), sent_to(1, "b", None)],
            &[vec![found(1, "a"), found(2, "b")], vec![found(1, "b")]],
        );
        assert_eq!(verdict.total.lost, 0);
        assert_eq!(verdict.total.misplaced, 1, "{verdict:?}");
        assert!(!verdict.total.passed());
    }

    #[test]
    fn another_runs_messages_in_a_book_are_ignored() {
        let verdict = verify_books(
            &[sent_to(0, "a", Some(2)), sent_to(1, "b", Some(1))],
            &[
                vec![found(1, "other run"), found(2, "a")],
                vec![found(1, "b")],
            ],
        );
        assert!(verdict.total.passed(), "{verdict:?}");
    }

    #[test]
    fn the_total_adds_up_the_books_and_keeps_ten_examples() {
        let sent: Vec<SentMessage> = (0..30)
            .map(|i| sent_to(i % 3, &format!("m{i}"), Some(1)))
            .collect();
        let verdict = verify_books(&sent, &[vec![], vec![], vec![]]);
        assert_eq!(verdict.total.lost, 30);
        assert_eq!(verdict.per_book.iter().map(|v| v.lost).sum::<usize>(), 30);
        assert_eq!(verdict.total.lost_examples.len(), SAMPLE);
    }
}
