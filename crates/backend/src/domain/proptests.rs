//! Property tests of request parsing and validation: message bodies and idempotency keys.
//!
//! Each property states the rule independently of the code (an oracle) and checks the code
//! against it on generated input, including arbitrary bytes. Run length: `PROPTEST_CASES`
//! cases per property (default [`DEFAULT_CASES`]); a failure is shrunk to a minimal input.

use proptest::prelude::*;
use time::OffsetDateTime;

use super::idempotency::{IdempotencyKey, MAX_KEY_LEN};
use super::message::{InputError, MAX_AUTHOR_CHARS, MAX_TEXT_CHARS, NewMessage, stored_json};

/// Cases per property unless `PROPTEST_CASES` says otherwise: about a second each in a debug
/// build, so `cargo test` stays quick while CI still covers thousands of inputs.
const DEFAULT_CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        // No regression files in the source tree: a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that reach every branch: whitespace and control characters, CRLF, non-ASCII,
/// lengths on both sides of each limit.
fn field(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,8}",
        1 => Just("\r\n".to_owned()),
        1 => Just("\n".to_owned()),
        1 => prop::sample::select(vec![" ", "\t", "\u{7}", "\u{0}", "\u{b}", "\u{85}", "\u{2028}"])
            .prop_map(str::to_owned),
        1 => "\\PC{1,4}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat()),
        // Around the limit: `max - 2 ..= max + 2` characters, padded or not.
        (max.saturating_sub(2)..=max + 2, any::<bool>()).prop_map(|(n, pad)| {
            let core = "é".repeat(n);
            if pad { format!(" {core} ") } else { core }
        }),
    ]
}

/// Bytes as a client might put them between a field's quotes, valid JSON or not.
fn raw_field() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => "[a-zA-Z0-9 ]{1,8}".prop_map(String::into_bytes),
        1 => prop::sample::select(vec![
            &b"\\\""[..], b"\\n", b"\\u0041", b"\\", b"\"", b"\n", b"\t", b"\x7f", b"\x00",
            b"\xc3\xa9", b"\xe5\xad\x97", b"\xff", b"\xc3", b"\xc2\x85", b"\xe2\x80\xa8",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => any::<u8>().prop_map(|byte| vec![byte]),
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat()),
        (MAX_TEXT_CHARS - 1..=MAX_TEXT_CHARS + 1).prop_map(|n| "é".repeat(n).into_bytes()),
    ]
}

/// The rule, written from the README: at most `max` characters as sent, 1..=`max` after
/// trimming (CRLF counted as one), no control characters (the text may contain newlines).
fn oracle(author: &str, text: &str) -> Option<(String, String)> {
    let within = |value: &str, max: usize| (1..=max).contains(&value.chars().count());
    if author.chars().count() > MAX_AUTHOR_CHARS || text.chars().count() > MAX_TEXT_CHARS {
        return None;
    }
    let author = author.trim().to_owned();
    let text = text.trim().replace("\r\n", "\n");
    let clean_author = !author.chars().any(char::is_control);
    let clean_text = !text.chars().any(|c| c.is_control() && c != '\n');
    (within(&author, MAX_AUTHOR_CHARS)
        && within(&text, MAX_TEXT_CHARS)
        && clean_author
        && clean_text)
        .then_some((author, text))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_or_are_refused_without_panicking(body in prop::collection::vec(any::<u8>(), 0..256)) {
        match NewMessage::from_json(&body) {
            Ok(message) => {
                prop_assert!(!message.author().is_empty() && !message.text().is_empty());
            }
            Err(InputError::Malformed(reason) | InputError::Invalid(reason)) => {
                prop_assert!(!reason.is_empty());
            }
        }
    }

    #[test]
    fn a_message_is_accepted_exactly_when_the_rule_allows_it(author in field(MAX_AUTHOR_CHARS), text in field(MAX_TEXT_CHARS)) {
        let body = serde_json::json!({"author": author, "text": text}).to_string();
        let parsed = NewMessage::from_json(body.as_bytes());
        match (oracle(&author, &text), parsed) {
            (Some((author, text)), Ok(message)) => {
                prop_assert_eq!(message.author(), author.as_str());
                prop_assert_eq!(message.text(), text.as_str());
                // What is stored reads back as the same message.
                let created = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid");
                let stored = crate::domain::message::parse_stored(&stored_json(7, &message.json_tail(created)))
                    .expect("the stored JSON parses");
                prop_assert!(message.same_content_as(&stored));
                prop_assert_eq!(stored.id, 7);
            }
            (None, Err(InputError::Invalid(_))) => {}
            (expected, got) => {
                prop_assert!(false, "rule says {:?}, code says {:?}", expected, got);
            }
        }
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_invalid_not_malformed(author in field(8), extra in "[a-z]{1,8}") {
        // Valid JSON of the wrong shape is 422, never 400 and never accepted.
        let shapes = [
            serde_json::json!([author, "text"]),
            serde_json::json!({"author": author}),
            serde_json::json!({"author": author, "text": "x", extra.clone(): 1}),
            serde_json::json!({"author": 1, "text": author}),
            serde_json::json!(author),
            serde_json::Value::Null,
        ];
        for shape in shapes {
            let body = shape.to_string();
            let outcome = NewMessage::from_json(body.as_bytes());
            // An `extra` named `author` or `text` replaces that field with a number: still invalid.
            prop_assert!(matches!(outcome, Err(InputError::Invalid(_))), "{} gave {:?}", body, outcome);
        }
    }

    /// The one-pass reader of bodies in the usual shape must answer exactly as serde_json
    /// alone: the same message, or the same refusal in the same words. The raw field bytes mix
    /// what the reader must hand on (quotes, backslashes, control bytes, invalid UTF-8) with
    /// what it takes itself (ASCII, multi-byte characters).
    #[test]
    fn a_plain_body_is_read_as_serde_json_reads_it(
        author in raw_field(),
        text in raw_field(),
        prefix in prop::sample::select(vec!["{\"author\":\"", "{ \"author\":\"", "{\"author\": \""]),
        suffix in prop::sample::select(vec!["\"}", "\" }", "\"}x", "\"", "\",\"extra\":1}"]),
    ) {
        let mut body = prefix.as_bytes().to_vec();
        body.extend_from_slice(&author);
        body.extend_from_slice(b"\",\"text\":\"");
        body.extend_from_slice(&text);
        body.extend_from_slice(suffix.as_bytes());
        prop_assert_eq!(NewMessage::from_json(&body), NewMessage::from_json_by_serde(&body));
    }

    #[test]
    fn an_idempotency_key_is_accepted_exactly_when_visible_ascii_of_bounded_length(raw in prop_oneof![
        prop::collection::vec(0x21u8..=0x7e, 0..=MAX_KEY_LEN + 2),
        prop::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN + 2),
    ]) {
        let allowed = (1..=MAX_KEY_LEN).contains(&raw.len())
            && raw.iter().all(|byte| (0x21..=0x7e).contains(byte));
        match IdempotencyKey::parse(&raw) {
            Ok(key) => {
                prop_assert!(allowed);
                prop_assert_eq!(key.as_str().as_bytes(), raw.as_slice());
            }
            Err(reason) => {
                prop_assert!(!allowed);
                prop_assert!(reason.contains("Idempotency-Key"));
            }
        }
    }
}
