//! Messages: validating what a person sent, and the stored form.
//!
//! A stored message is kept in Redis as the exact JSON the API returns, so listing and
//! streaming copy bytes instead of re-encoding every message.

use std::borrow::Cow;

use serde::Deserialize;
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
pub fn from_json_object<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, InputError> {
    let value: T = serde_json::from_slice(body).map_err(|err| InputError::from_json(&err))?;
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'{') {
        Ok(value)
    } else {
        Err(InputError::Invalid("the body must be a JSON object".into()))
    }
}

/// [`NewMessageBody`] borrowing its strings from the request where they hold no escape, so
/// a body costs no allocation before validation.
mod borrowed {
    use super::{Cow, Deserialize};

    /// Named as the API's type, with the same fields, so that serde words every refusal as it
    /// does for that type (its messages name the struct).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct NewMessageBody<'a> {
        #[serde(borrow)]
        pub(super) author: Cow<'a, str>,
        #[serde(borrow)]
        pub(super) text: Cow<'a, str>,
    }
}

/// The author and text of a body in the shape clients send, `{"author":"…","text":"…"}`,
/// without whitespace, escapes or control characters: read in one pass, without serde_json
/// (about a thousand instructions a post). Anything else is `None` and goes through
/// serde_json, which accepts the same values from this shape and words every refusal.
fn plain_body(body: &[u8]) -> Option<(&str, &str)> {
    let rest = body.strip_prefix(b"{\"author\":\"")?;
    let (author, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(b",\"text\":\"")?;
    let (text, rest) = plain_string(rest)?;
    (rest == b"}").then_some((author, text))
}

/// The contents of a JSON string up to its closing quote, when they hold no escape and no
/// control character (which JSON forbids raw) and are UTF-8; and what follows the quote.
fn plain_string(input: &[u8]) -> Option<(&str, &[u8])> {
    let end = input
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
    if input[end] != b'"' {
        return None;
    }
    let contents = std::str::from_utf8(&input[..end]).ok()?;
    Some((contents, &input[end + 1..]))
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
        if let Some((author, text)) = plain_body(body) {
            return Self::new(author, text);
        }
        Self::from_json_by_serde(body)
    }

    /// [`Self::from_json`] without the one-pass reader: the reference it must agree with.
    pub(crate) fn from_json_by_serde(body: &[u8]) -> Result<Self, InputError> {
        let body: borrowed::NewMessageBody<'_> = from_json_object(body)?;
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
        let text = text.trim();
        let text = if text.contains('\r') {
            text.replace("\r\n", "\n")
        } else {
            text.to_owned()
        };
        check_length("author", author, MAX_AUTHOR_CHARS)?;
        check_length("text", &text, MAX_TEXT_CHARS)?;
        if has_control(author, None) {
            return Err(InputError::Invalid(
                "author must not contain control characters".into(),
            ));
        }
        if has_control(&text, Some(b'\n')) {
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
        // Written straight into one buffer of about the right size: each field as
        // `serde_json` escapes a string, in the order of [`Message`]'s fields after `id`.
        let mut tail =
            Vec::with_capacity(48 + self.author.len() + self.text.len() + created_at.len());
        for (name, value) in [
            ("\"author\":", self.author.as_str()),
            (",\"text\":", self.text.as_str()),
            (",\"created_at\":", created_at),
        ] {
            tail.extend_from_slice(name.as_bytes());
            serde_json::to_writer(&mut tail, value)
                .expect("writing a string as JSON to a Vec cannot fail");
        }
        tail.push(b'}');
        String::from_utf8(tail).expect("JSON written from strings is UTF-8")
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(32);
        for byte in &digest.as_ref()[..16] {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
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
    // One allocation of the final size (`format!` grows its buffer as it goes), and the id's
    // digits written by hand (`write!` goes through the formatting machinery).
    let mut json = String::with_capacity(tail.len() + 28);
    json.push_str("{\"id\":");
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = id;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    json.extend(digits[start..].iter().map(|&digit| char::from(digit)));
    json.push(',');
    json.push_str(tail);
    json
}

/// True when `value` holds a control character (`char::is_control`) other than `allowed`.
fn has_control(value: &str, allowed: Option<u8>) -> bool {
    // ASCII text (nearly every message) is checked byte by byte, without decoding characters,
    // and without stopping at the first hit: a loop with no early exit is vectorised, several
    // times faster on the text that has none (the common case), issue 17.
    if value.is_ascii() {
        // Never equal to an ASCII byte when nothing is allowed.
        let allowed = allowed.unwrap_or(0x80);
        value.bytes().fold(false, |found, byte| {
            found | ((byte < 0x20) & (byte != allowed)) | (byte == 0x7f)
        })
    } else {
        value
            .chars()
            .any(|c| c.is_control() && Some(c) != allowed.map(char::from))
    }
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), InputError> {
    // In ASCII, characters are bytes: no need to count them.
    let chars = if value.is_ascii() {
        value.len()
    } else {
        value.chars().count()
    };
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
        assert_eq!(stored_json(0, "}"), "{\"id\":0,}");
        assert_eq!(
            stored_json(u64::MAX, "}"),
            format!("{{\"id\":{},}}", u64::MAX)
        );
        let json = stored_json(42, &message.json_tail(created));
        let stored = parse_stored(&json).unwrap();
        assert_eq!(stored.id, 42);
        assert!(message.same_content_as(&stored));
        assert_eq!(stored.created_at, "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_stored_json_is_what_serde_writes_for_the_served_message() {
        for (author, text) in [
            ("Mary", "Hi"),
            ("<b>\"M\"</b>", "line\nbreak \\ tab é 字 \u{2028} 😀"),
        ] {
            let message = NewMessage::new(author, text).unwrap();
            let served = Message {
                id: 12,
                author: message.author().to_owned(),
                text: message.text().to_owned(),
                created_at: "2026-01-01T00:00:00.5Z".to_owned(),
            };
            assert_eq!(
                stored_json(12, &message.json_tail_at(&served.created_at)),
                serde_json::to_string(&served).unwrap()
            );
        }
    }

    #[test]
    fn plain_bodies_are_read_as_serde_json_reads_them() {
        for body in [
            &br#"{"author":"Mary","text":"Hello"}"#[..],
            "{\"author\":\" Mary \",\"text\":\"café 字\"}".as_bytes(),
            br#"{"author":"","text":""}"#,
        ] {
            let (author, text) = plain_body(body).expect("a plain body");
            let serde: NewMessageBody = serde_json::from_slice(body).unwrap();
            assert_eq!((author, text), (serde.author.as_str(), serde.text.as_str()));
        }
    }

    #[test]
    fn other_bodies_are_left_to_serde_json() {
        for body in [
            &br#"{"author":"M\"ary","text":"Hello"}"#[..],
            br#"{"author":"M\u0061ry","text":"Hello"}"#,
            br#"{"author":"Mary","text":"Hel\nlo"}"#,
            b"{\"author\":\"Mary\",\"text\":\"a\tb\"}",
            br#"{ "author":"Mary","text":"Hello"}"#,
            br#"{"author":"Mary","text":"Hello"} "#,
            br#"{"text":"Hello","author":"Mary"}"#,
            br#"{"author":"Mary","text":"Hello","admin":true}"#,
            br#"{"author":"Mary","text":"Hello"#,
            b"{\"author\":\"M\xffry\",\"text\":\"Hello\"}",
        ] {
            assert_eq!(plain_body(body), None, "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(
            NewMessage::from_json(b"{\"author\":\"M\xffry\",\"text\":\"Hello\"}"),
            Err(InputError::Malformed(_))
        ));
        assert!(matches!(
            NewMessage::from_json(br#"{"author":"Mary","text":"Hello"} x"#),
            Err(InputError::Malformed(_))
        ));
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        assert!(has_control("a\u{7f}", None));
        assert!(has_control("é\u{85}", None));
        assert!(has_control("é\n", None));
        assert!(!has_control("é\n", Some(b'\n')));
        assert!(!has_control("plain text", None));
        // ASCII only, where bytes are checked without decoding.
        assert!(!has_control("one\ntwo", Some(b'\n')));
        assert!(has_control("one\ntwo", None));
        assert!(has_control("one\ttwo", Some(b'\n')));
        assert!(has_control(&format!("{}\u{1}", "x".repeat(100)), None));
        assert!(has_control(
            &format!("\u{1b}{}", "x".repeat(100)),
            Some(b'\n')
        ));
        assert!(!has_control(&"x ~".repeat(100), None));
    }

    #[test]
    fn a_fingerprint_is_the_hex_of_the_truncated_digest() {
        // Records outlive a deploy: the format must not change.
        let message = NewMessage::new("Mary", "Hello").unwrap();
        assert_eq!(message.fingerprint(), "3e45a80d86ad4b053e46a52605c30b0b");
    }

    #[test]
    fn refusals_are_worded_as_for_the_api_type() {
        let borrowed = |body: &[u8]| NewMessage::from_json(body).unwrap_err();
        let owned = |body: &[u8]| {
            from_json_object::<NewMessageBody>(body)
                .map(|_| ())
                .unwrap_err()
        };
        for body in [
            &br#"{"author":"a"}"#[..],
            br#"{"author":1,"text":"x"}"#,
            br#"{"author":"a","text":"x","admin":true}"#,
            br#"["Mary"]"#,
            br#"{"author":"a","text":"x"#,
            b"nope",
        ] {
            assert_eq!(
                borrowed(body),
                owned(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
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
