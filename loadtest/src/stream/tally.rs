//! The `stream` mode's accounting, a pure function: which acknowledged message each open
//! subscriber should have read, which it did read (once, twice, never), and how late.
//!
//! Every subscriber was open before the first message was posted, so it owes every
//! acknowledged message: one it never read is a miss, one it read twice a duplicate.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats::histogram;

/// Misses named in the report, at most.
const EXAMPLES: usize = 5;

/// One acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    /// The id the backend answered.
    pub id: u64,
    /// When its POST left, since the run's start.
    pub sent: Duration,
    /// When its POST was answered, since the run's start.
    pub acknowledged: Duration,
}

/// What one open subscriber read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Each `message` event's id and when it was read, since the run's start, in arrival order.
    pub events: Vec<(u64, Duration)>,
    /// Why the stream ended before the run did (`closed`, `io`, `read-timeout`), if it did.
    pub ended_early: Option<&'static str>,
}

/// The counts and delays over every subscriber.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Open subscribers × acknowledged messages.
    pub expected: u64,
    /// Distinct (subscriber, message) pairs read.
    pub made: u64,
    /// Pairs never read.
    pub misses: u64,
    /// Reads of a pair already read.
    pub duplicates: u64,
    /// Events whose id was not one of this run's acknowledged messages (another writer's, or a
    /// POST that failed after storing).
    pub unexpected: u64,
    /// Subscribers that missed at least one message.
    pub subscribers_with_misses: u64,
    /// Delay from the POST's answer to the read, microseconds (0 when read first).
    pub from_acknowledged: Histogram<u64>,
    /// Delay from the POST leaving to the read, microseconds.
    pub from_sent: Histogram<u64>,
    /// A few misses as `subscriber #i: message id`.
    pub miss_examples: Vec<String>,
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Counts deliveries, misses and duplicates of `posted` over `subscribers`.
pub fn tally(posted: &[Posted], subscribers: &[Received]) -> Tally {
    let index: HashMap<u64, usize> = posted
        .iter()
        .enumerate()
        .map(|(at, message)| (message.id, at))
        .collect();
    let mut tally = Tally {
        expected: (posted.len() as u64).saturating_mul(subscribers.len() as u64),
        made: 0,
        misses: 0,
        duplicates: 0,
        unexpected: 0,
        subscribers_with_misses: 0,
        from_acknowledged: histogram(3),
        from_sent: histogram(3),
        miss_examples: Vec::new(),
    };
    for (number, subscriber) in subscribers.iter().enumerate() {
        let mut seen = vec![false; posted.len()];
        for &(id, read) in &subscriber.events {
            let Some(&at) = index.get(&id) else {
                tally.unexpected += 1;
                continue;
            };
            if seen[at] {
                tally.duplicates += 1;
                continue;
            }
            seen[at] = true;
            tally.made += 1;
            let message = posted[at];
            tally
                .from_sent
                .saturating_record(micros(read.saturating_sub(message.sent)));
            tally
                .from_acknowledged
                .saturating_record(micros(read.saturating_sub(message.acknowledged)));
        }
        let missed: Vec<u64> = posted
            .iter()
            .zip(&seen)
            .filter(|(_, seen)| !**seen)
            .map(|(message, _)| message.id)
            .collect();
        if !missed.is_empty() {
            tally.misses += missed.len() as u64;
            tally.subscribers_with_misses += 1;
            for id in missed {
                if tally.miss_examples.len() < EXAMPLES {
                    tally
                        .miss_examples
                        .push(format!("subscriber #{number}: message {id}"));
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn posted() -> Vec<Posted> {
        (1..=3)
            .map(|id| Posted {
                id,
                sent: ms(100 * id),
                acknowledged: ms(100 * id + 5),
            })
            .collect()
    }

    fn read_all(delay: u64) -> Received {
        Received {
            events: (1..=3).map(|id| (id, ms(100 * id + delay))).collect(),
            ended_early: None,
        }
    }

    #[test]
    fn subscribers_that_read_everything_once_make_every_delivery() {
        let tally = tally(&posted(), &[read_all(10), read_all(20)]);
        assert_eq!((tally.expected, tally.made, tally.misses), (6, 6, 0));
        assert_eq!((tally.duplicates, tally.unexpected), (0, 0));
        assert_eq!(tally.from_sent.len(), 6);
        assert_eq!(
            tally.from_sent.max(),
            tally.from_sent.highest_equivalent(20_000)
        );
        assert_eq!(
            tally.from_acknowledged.max(),
            tally.from_acknowledged.highest_equivalent(15_000)
        );
    }

    #[test]
    fn a_subscriber_whose_connection_dropped_mid_run_is_counted_as_missing_the_rest() {
        let dropped = Received {
            events: vec![(1, ms(110))],
            ended_early: Some("io"),
        };
        let tally = tally(&posted(), &[read_all(10), dropped]);
        assert_eq!((tally.expected, tally.made, tally.misses), (6, 4, 2));
        assert_eq!(tally.subscribers_with_misses, 1);
        assert_eq!(
            tally.miss_examples,
            vec!["subscriber #1: message 2", "subscriber #1: message 3"]
        );
    }

    #[test]
    fn a_message_read_twice_is_a_duplicate_not_a_second_delivery() {
        let mut twice = read_all(10);
        twice.events.push((2, ms(400)));
        let tally = tally(&posted(), &[twice]);
        assert_eq!((tally.made, tally.duplicates, tally.misses), (3, 1, 0));
    }

    #[test]
    fn another_writers_message_is_unexpected_and_an_event_before_the_answer_counts_as_zero() {
        let mut early = read_all(1);
        early.events.push((99, ms(500)));
        let tally = tally(&posted(), &[early]);
        assert_eq!((tally.made, tally.unexpected), (3, 1));
        assert_eq!(tally.from_acknowledged.max(), 1);
    }

    #[test]
    fn with_no_subscriber_nothing_is_expected_or_missed() {
        let tally = tally(&posted(), &[]);
        assert_eq!((tally.expected, tally.misses), (0, 0));
    }
}
