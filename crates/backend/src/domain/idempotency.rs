//! The `Idempotency-Key` header: a client's name for one logical write, so a retried POST
//! returns the first answer instead of writing twice; and the record kept under each key.
//!
//! # Why the record is not the message
//! A record lives for `IDEMPOTENCY_TTL_SECS` (a day by default) whatever the retention cap
//! trims, so its size times a day of keyed posts is memory Redis must have. Keeping the whole
//! message (up to ~5 KB of JSON) let keyed posts fill a `maxmemory` Redis for a day. A replay
//! needs much less: the id and creation time of the first answer, and a fingerprint of its
//! author and text. The request being replayed carries the same author and text (that is what
//! the fingerprint checks), so the first answer's exact bytes can be rebuilt from it.

use crate::domain::NewMessage;
use crate::domain::message::{parse_stored, stored_json};

/// Longest key accepted, in bytes (Stripe's limit is 255 too).
pub const MAX_KEY_LEN: usize = 255;

/// A syntactically valid idempotency key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a header value.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!(
                "Idempotency-Key must be 1-{MAX_KEY_LEN} characters"
            ));
        }
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err("Idempotency-Key must be visible ASCII without spaces".into());
        }
        // Checked above: every byte is ASCII, hence valid UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What Redis keeps under an idempotency key: `"<id> <created_at> <fingerprint>"`, about
/// 75 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The id of the message the key created.
    pub id: u64,
    /// Its `created_at`, exactly as stored in the message.
    pub created_at: String,
    /// [`NewMessage::fingerprint`] of its author and text.
    pub fingerprint: String,
}

/// What a record says about a request that reuses its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The same author and text: the first answer, id and bytes, rebuilt.
    Same {
        /// The message id.
        id: u64,
        /// The message JSON exactly as first answered.
        json: String,
    },
    /// The key was first used with another body.
    OtherBody,
}

impl IdempotencyRecord {
    /// The part of the record after the id, which the atomic append completes with the id it
    /// assigns (`"<id> " + suffix`).
    pub fn suffix(created_at: &str, message: &NewMessage) -> String {
        format!("{created_at} {}", message.fingerprint())
    }

    /// Parses a stored record.
    pub fn decode(stored: &str) -> Option<Self> {
        let mut parts = stored.split(' ');
        let id = parts.next()?.parse().ok()?;
        let created_at = parts.next()?.to_owned();
        let fingerprint = parts.next()?.to_owned();
        if parts.next().is_some() || fingerprint.len() != 32 {
            return None;
        }
        Some(Self {
            id,
            created_at,
            fingerprint,
        })
    }

    /// Whether `message` replays the write this record remembers.
    pub fn replay(&self, message: &NewMessage) -> Replay {
        if message.fingerprint() == self.fingerprint {
            Replay::Same {
                id: self.id,
                json: stored_json(self.id, &message.json_tail_at(&self.created_at)),
            }
        } else {
            Replay::OtherBody
        }
    }
}

/// What a stored record says about `message`, the request that reused its key: a replay of
/// the first answer, or another body. `Err` names what in the record this program never writes.
pub fn judge(record: &str, message: &NewMessage) -> Result<Replay, String> {
    // Records written before records held only a fingerprint hold the whole message.
    if record.starts_with('{') {
        let stored = parse_stored(record).map_err(|err| format!("idempotency record: {err}"))?;
        return Ok(if message.same_content_as(&stored) {
            Replay::Same {
                id: stored.id,
                json: record.to_owned(),
            }
        } else {
            Replay::OtherBody
        });
    }
    let decoded = IdempotencyRecord::decode(record)
        .ok_or_else(|| format!("idempotency record {record:?}"))?;
    Ok(decoded.replay(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_rebuilds_the_first_answer_byte_for_byte() {
        let message = NewMessage::new("Mary", "Hello \"there\"\nJohn").unwrap();
        let created_at = "2026-11-29T13:32:43.123456789Z";
        let first = stored_json(1_000_000_001, &message.json_tail_at(created_at));
        let stored = format!(
            "1000000001 {}",
            IdempotencyRecord::suffix(created_at, &message)
        );
        let record = IdempotencyRecord::decode(&stored).expect("a record");
        assert_eq!(
            record.replay(&message),
            Replay::Same {
                id: 1_000_000_001,
                json: first
            }
        );
        let other = NewMessage::new("Mary", "Hello").unwrap();
        assert_eq!(record.replay(&other), Replay::OtherBody);
        assert!(stored.len() < 80, "{} bytes", stored.len());
    }

    #[test]
    fn malformed_records_do_not_decode() {
        for bad in ["", "x 2026 0123", "7 2026", "7 2026 short", "{\"id\":7}"] {
            assert_eq!(IdempotencyRecord::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse(b"0b6c1f9e-7c1a-4b8e-9f3a-1c2d3e4f5a6b").is_ok());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"has space").is_err());
        assert!(IdempotencyKey::parse("é".as_bytes()).is_err());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }

    #[test]
    fn a_record_of_either_form_tells_a_replay_from_another_body() {
        let message = NewMessage::new("Mary", "Hello").unwrap();
        let old = stored_json(4, &message.json_tail_at("2026-01-01T00:00:00Z"));
        assert_eq!(
            judge(&old, &message),
            Ok(Replay::Same {
                id: 4,
                json: old.clone()
            })
        );
        let other = NewMessage::new("Mary", "Bye").unwrap();
        assert_eq!(judge(&old, &other), Ok(Replay::OtherBody));
        let new = format!(
            "4 {}",
            IdempotencyRecord::suffix("2026-01-01T00:00:00Z", &message)
        );
        assert!(matches!(
            judge(&new, &message),
            Ok(Replay::Same { id: 4, .. })
        ));
        assert!(judge("{not json", &message).is_err());
        assert!(judge("nonsense", &message).is_err());
    }
}
