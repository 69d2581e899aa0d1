//! The exactly-once verdict: every acknowledged message present once, under the id it was
//! acknowledged with, and ids unique and ascending. Pure, so it is tested on its own.

use std::collections::HashMap;

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
}

impl Verdict {
    /// True when every acknowledged message is present exactly once and ids ascend.
    pub fn passed(&self) -> bool {
        self.acknowledged > 0
            && self.lost == 0
            && self.duplicated == 0
            && self.wrong_id == 0
            && self.out_of_order == 0
    }
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
}
