//! The log entry format: one contract between the Lua scripts, the strategies, the reads and
//! the live tail. A leaf: the store's children import it, never the store's `mod.rs`.
//!
//! A message is stored as the exact JSON the API serves, `{"id":N,"author":...,"text":...,
//! "created_at":...}`, in the log (a Redis stream) under entry id `N-0` and field `m`. These
//! pieces must agree, and this module's tests check that they do:
//!
//! - writing: [`crate::domain::NewMessage::json_tail_at`] builds everything after the id (the
//!   *tail*); the id is only known inside the atomic append, which prepends `{"id":N,`:
//!   [`stored_json`] in Rust (the `watch`, `lock` and `naive` strategies, a replay), and
//!   `'{"id":' .. id .. ',' .. ARGV[1]` in `scripts/append.lua`; both write entry `N-0`, `m`;
//! - reading: `log_entry` decodes a stream entry (`XRANGE`, and the live tail's `XREAD`), and
//!   `created` rebuilds with [`stored_json`] the message a script wrote from the id it
//!   answered. The id must stay the first field, which is why the JSON is built by hand and
//!   never re-encoded (listing and streaming copy these bytes as they are).

pub use crate::domain::message::stored_json;

use crate::store::error::StoreError;

/// Largest page a single read returns (the API's `limit` maximum).
pub const MAX_PAGE: usize = guestbook_api::MAX_PAGE_LIMIT;

/// Which messages a read returns: ids strictly between `after` and `before`, oldest or newest
/// first, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only ids above this (0: from the first).
    pub after: u64,
    /// Only ids below this (`None`: up to the last).
    pub before: Option<u64>,
    /// At most this many (clamped to 1..=[`MAX_PAGE`]).
    pub limit: usize,
    /// Newest first (a UI's first page and its "older" pages) instead of oldest first.
    pub newest_first: bool,
}

impl Page {
    /// Oldest first after `after`: how a follower catches up.
    pub fn after(after: u64, limit: usize) -> Self {
        Self {
            after,
            before: None,
            limit,
            newest_first: false,
        }
    }

    /// Whether no id can lie strictly between the bounds.
    pub(crate) fn is_empty(&self) -> bool {
        self.before
            .is_some_and(|before| before <= self.after.saturating_add(1))
    }

    /// Whether `id` lies strictly between the bounds.
    pub fn contains(&self, id: u64) -> bool {
        id > self.after && self.before.is_none_or(|before| id < before)
    }
}

/// A message as stored: its id and its exact JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The message id.
    pub id: u64,
    /// The message as the API serves it.
    pub json: String,
}

/// The messages of an `XRANGE`/`XREVRANGE` answer.
pub(crate) fn entries_to_messages(
    entries: Vec<(String, Vec<String>)>,
) -> Result<Vec<RawMessage>, StoreError> {
    entries
        .into_iter()
        .map(|(id, fields)| log_entry(&id, fields))
        .collect()
}

/// Decodes one stream entry (`"<id>-0"`, `["m", json]`).
pub(crate) fn log_entry(entry_id: &str, fields: Vec<String>) -> Result<RawMessage, StoreError> {
    let id = entry_id
        .strip_suffix("-0")
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("log entry id {entry_id:?}")))?;
    let mut fields = fields.into_iter();
    match (fields.next().as_deref(), fields.next()) {
        (Some("m"), Some(json)) => Ok(RawMessage { id, json }),
        _ => Err(StoreError::Corrupt(format!(
            "log entry {entry_id} has no message field"
        ))),
    }
}

/// The message a script appended: the id it answered, and the tail it was given (the script
/// wrote `stored_json(id, tail)`, byte for byte).
pub(crate) fn created(id: &str, tail: &str) -> Result<RawMessage, StoreError> {
    let id = id
        .parse::<u64>()
        .map_err(|_| StoreError::Corrupt(format!("an append answered the id {id:?}")))?;
    Ok(RawMessage {
        id,
        json: stored_json(id, tail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_decode_and_bad_ones_are_corrupt() {
        let ok = log_entry("42-0", vec!["m".into(), "{\"id\":42}".into()]).unwrap();
        assert_eq!(ok.id, 42);
        assert!(matches!(
            log_entry("42-1", vec!["m".into(), "{}".into()]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            log_entry("42-0", vec!["x".into()]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn the_script_and_rust_build_the_same_entry() {
        let script = include_str!("scripts/append.lua");
        assert!(
            script.contains(r#"local message = '{"id":' .. id .. ',' .. ARGV[1]"#),
            "append.lua builds the JSON as stored_json does"
        );
        assert!(
            script.contains("id .. '-0', 'm', message"),
            "entry id and field"
        );
        let tail = r#""author":"a","text":"b","created_at":"2026-01-01T00:00:00Z"}"#;
        let json = stored_json(9, tail);
        assert_eq!(json, format!("{{\"id\":9,{tail}"));
        let read = log_entry("9-0", vec!["m".into(), json]).expect("decodes");
        assert_eq!(read, created("9", tail).expect("an id"));
    }

    #[test]
    fn a_new_message_tail_follows_the_id_as_a_served_message() {
        let message = crate::domain::NewMessage::new("Mary", "Hi").expect("valid");
        let json = stored_json(3, &message.json_tail_at("2026-01-01T00:00:00Z"));
        let served: guestbook_api::Message = serde_json::from_str(&json).expect("parses");
        assert_eq!(served.id, 3);
        assert_eq!(
            created("3", &message.json_tail_at("2026-01-01T00:00:00Z"))
                .expect("an id")
                .json,
            json
        );
    }

    #[test]
    fn a_created_message_needs_a_numeric_id() {
        assert_eq!(created("7", "\"author\":\"a\"}").unwrap().id, 7);
        assert!(created("{\"author\":\"a\"}", "").is_err());
        assert!(created("-1", "").is_err());
    }
}
