//! Messages: validating what a person sent, and the stored form.
//!
//! A stored message is kept in Redis as the exact JSON the API returns, so listing and
//! streaming copy bytes instead of re-encoding every message.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use guestbook_api::{MAX_AUTHOR_CHARS, MAX_TEXT_CHARS, Message, NewMessageBody};

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not JSON at all: 400.
    #[error("{0}")]
    Malformed(String),
    /// JSON of the wrong shape or with invalid values: 422.
    #[error("{0}")]
    Invalid(String),
}

impl InputError {
    /// Classifies a serde_json error: syntax problems are malformed, shape problems invalid.
    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => Self::Invalid(format!("invalid body: {err}")),
            Category::Syntax | Category::Eof | Category::Io => {
                Self::Malformed(format!("malformed JSON: {err}"))
            }
        }
    }
}

/// Parses a JSON object body into `T`.
///
/// serde's derived `Deserialize` also accepts a struct written as a JSON array of its
/// fields in order (`["Mary", "Hi"]`), a shape no document or client uses; schemathesis found
/// that it slipped past validation. Only objects are accepted here.
pub fn from_json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, InputError> {
    let value: T = serde_json::from_slice(body).map_err(|err| InputError::from_json(&err))?;
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'{') {
        Ok(value)
    } else {
        Err(InputError::Invalid("the body must be a JSON object".into()))
    }
}

/// A message that passed validation: trimmed, within limits, free of control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    author: String,
    text: String,
}

impl NewMessage {
    /// Parses and validates a request body.
    pub fn from_json(body: &[u8]) -> Result<Self, InputError> {
        let body: NewMessageBody = from_json_object(body)?;
        Self::new(&body.author, &body.text)
    }

    /// Validates an author and a text.
    pub fn new(author: &str, text: &str) -> Result<Self, InputError> {
        // 1. The limits apply to the values as sent, as the OpenAPI document's `maxLength`
        //    says (schemathesis found that trimming first let longer values through).
        check_length("author", author, MAX_AUTHOR_CHARS)?;
        check_length("text", text, MAX_TEXT_CHARS)?;
        // 2. Then trimmed (Windows line endings stored as `\n`), nothing may be left blank.
        let author = author.trim();
        let text = text.trim().replace("\r\n", "\n");
        check_length("author", author, MAX_AUTHOR_CHARS)?;
        check_length("text", &text, MAX_TEXT_CHARS)?;
        if author.chars().any(char::is_control) {
            return Err(InputError::Invalid(
                "author must not contain control characters".into(),
            ));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(InputError::Invalid(
                "text must not contain control characters other than newline".into(),
            ));
        }
        Ok(Self {
            author: author.to_owned(),
            text,
        })
    }

    /// The validated author.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// The validated text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The stored JSON without its id: everything after `{"id":N,`. The id is only known
    /// inside the atomic append, which prepends it.
    pub fn json_tail(&self, created_at: OffsetDateTime) -> String {
        self.json_tail_at(&format_created_at(created_at))
    }

    /// The same with `created_at` already formatted: how a replay rebuilds the exact bytes of
    /// the first answer from an idempotency record.
    pub fn json_tail_at(&self, created_at: &str) -> String {
        #[derive(Serialize)]
        struct Tail<'a> {
            author: &'a str,
            text: &'a str,
            created_at: &'a str,
        }
        let object = serde_json::to_string(&Tail {
            author: &self.author,
            text: &self.text,
            created_at,
        })
        .expect("serialising strings to JSON cannot fail");
        // `{"author":...}` → `"author":...}`
        object[1..].to_owned()
    }

    /// A digest of the author and text: what an idempotency record keeps instead of the
    /// message, enough to tell a replay (same digest) from a key reused with another body.
    ///
    /// SHA-256 over the length-prefixed fields, so no two (author, text) pairs share an input;
    /// truncated to 128 bits, which keeps accidental collisions out of reach and the record
    /// small.
    pub fn fingerprint(&self) -> String {
        let mut input = Vec::with_capacity(8 + self.author.len() + self.text.len());
        input.extend_from_slice(&(self.author.len() as u64).to_le_bytes());
        input.extend_from_slice(self.author.as_bytes());
        input.extend_from_slice(self.text.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        digest.as_ref()[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// True when `stored` holds the same author and text: an idempotent replay.
    pub fn same_content_as(&self, stored: &Message) -> bool {
        self.author == stored.author && self.text == stored.text
    }
}

/// `created_at` as stored: RFC 3339 in UTC.
pub fn format_created_at(created_at: OffsetDateTime) -> String {
    created_at
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Builds the full stored JSON from an id and a [`NewMessage::json_tail`].
pub fn stored_json(id: u64, tail: &str) -> String {
    format!("{{\"id\":{id},{tail}")
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), InputError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(InputError::Invalid(format!("{field} must not be empty")));
    }
    if chars > max {
        return Err(InputError::Invalid(format!(
            "{field} must be at most {max} characters, got {chars}"
        )));
    }
    Ok(())
}

/// Parses stored JSON into the served shape (the idempotency records of old, the naive
/// strategy's array).
pub fn parse_stored(json: &str) -> Result<Message, serde_json::Error> {
    serde_json::from_str(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_message_is_trimmed() {
        let message = NewMessage::new("  Mary ", " Hello\r\nJohn ").unwrap();
        assert_eq!(message.author(), "Mary");
        assert_eq!(message.text(), "Hello\nJohn");
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        assert!(NewMessage::new(&"é".repeat(64), "x").is_ok());
        assert!(NewMessage::new(&"é".repeat(65), "x").is_err());
        assert!(NewMessage::new("a", &"字".repeat(1000)).is_ok());
        assert!(NewMessage::new("a", &"字".repeat(1001)).is_err());
    }

    #[test]
    fn limits_apply_to_the_value_as_sent_not_only_after_trimming() {
        let padded = format!(" {} ", "a".repeat(999));
        assert!(NewMessage::new("a", &padded).is_err());
        assert!(NewMessage::new("a", &format!(" {}", "a".repeat(998))).is_ok());
    }

    #[test]
    fn blank_fields_are_invalid() {
        assert!(matches!(
            NewMessage::new("   ", "x"),
            Err(InputError::Invalid(_))
        ));
        assert!(matches!(
            NewMessage::new("a", "\n \n"),
            Err(InputError::Invalid(_))
        ));
    }

    #[test]
    fn control_characters_are_refused_except_newline_in_text() {
        assert!(NewMessage::new("a\u{7}", "x").is_err());
        assert!(NewMessage::new("a\nb", "x").is_err());
        assert!(NewMessage::new("a", "x\ty").is_err());
        assert!(NewMessage::new("a", "x\u{0}y").is_err());
        assert!(NewMessage::new("a", "x\ny").is_ok());
    }

    #[test]
    fn malformed_json_and_wrong_shapes_are_told_apart() {
        assert!(matches!(
            NewMessage::from_json(b"{"),
            Err(InputError::Malformed(_))
        ));
        assert!(matches!(
            NewMessage::from_json(b"nope"),
            Err(InputError::Malformed(_))
        ));
        assert!(matches!(
            NewMessage::from_json(br#"{"author":"a"}"#),
            Err(InputError::Invalid(_))
        ));
        assert!(matches!(
            NewMessage::from_json(br#"{"author":1,"text":"x"}"#),
            Err(InputError::Invalid(_))
        ));
        assert!(matches!(
            NewMessage::from_json(br#"{"author":"a","text":"x","admin":true}"#),
            Err(InputError::Invalid(_))
        ));
    }

    #[test]
    fn a_body_that_is_an_array_of_the_fields_is_refused() {
        assert!(matches!(
            NewMessage::from_json(br#"["Mary","Hello"]"#),
            Err(InputError::Invalid(_))
        ));
        assert!(NewMessage::from_json(br#" {"author":"Mary","text":"Hello"}"#).is_ok());
    }

    #[test]
    fn the_stored_json_round_trips_with_escapes() {
        let message = NewMessage::new("<b>\"Mary\"</b>", "line\nbreak \\ done").unwrap();
        let created = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let json = stored_json(42, &message.json_tail(created));
        let stored = parse_stored(&json).unwrap();
        assert_eq!(stored.id, 42);
        assert!(message.same_content_as(&stored));
        assert_eq!(stored.created_at, "2023-11-14T22:13:20Z");
    }

    #[test]
    fn fingerprints_tell_bodies_apart_and_ignore_what_trimming_removes() {
        let one = NewMessage::new("Mary", "Hello").unwrap();
        assert_eq!(
            one.fingerprint(),
            NewMessage::new(" Mary ", "Hello\n").unwrap().fingerprint()
        );
        assert_ne!(
            one.fingerprint(),
            NewMessage::new("Mary", "Hello!").unwrap().fingerprint()
        );
        // The length prefix keeps the boundary between the fields.
        assert_ne!(
            NewMessage::new("ab", "c").unwrap().fingerprint(),
            NewMessage::new("a", "bc").unwrap().fingerprint()
        );
        assert_eq!(one.fingerprint().len(), 32);
    }
}
