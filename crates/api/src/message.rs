//! Messages on the wire: what is posted, what is served, and the limits both sides apply.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest author name, in characters (Unicode scalar values), as sent and after trimming.
pub const MAX_AUTHOR_CHARS: usize = 64;
/// Longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000;
/// Largest page `GET /api/messages?limit=` accepts.
pub const MAX_PAGE_LIMIT: usize = 1_000;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: usize = 100;

/// A message as stored and served.
// The backend serves the stored JSON bytes as they are (it never re-encodes a message), so
// this type is the documented and parsed shape, and the field order is the stored order.
// (A plain comment: the schema's description must stay the one line both documents share.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Unique, ascending id.
    #[schema(minimum = 1)]
    pub id: u64,
    /// Who wrote it.
    pub author: String,
    /// What they wrote.
    pub text: String,
    /// When the backend accepted it, RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The body of `POST /api/messages`. Both fields are trimmed before the limits apply, and
/// neither may contain control characters (the text may contain newlines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageBody {
    /// Who writes: 1-64 characters after trimming.
    #[schema(min_length = 1, max_length = 64, example = "Mary")]
    pub author: String,
    /// What they write: 1-1000 characters after trimming.
    #[schema(
        min_length = 1,
        max_length = 1000,
        example = "Hello from the guestbook"
    )]
    pub text: String,
}

/// The body of `GET /api/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The page, in the order asked for.
    pub messages: Vec<Message>,
}

/// The body of a successful `DELETE /api/messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// How many messages were deleted.
    pub deleted: u64,
}

/// Oldest first (the default: how followers catch up) or newest first (how people read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_limits_are_the_constants() {
        // The `#[schema]` attributes need literals; this keeps them equal to the constants.
        let schema = serde_json::to_value(<NewMessageBody as utoipa::PartialSchema>::schema())
            .expect("a schema serialises");
        assert_eq!(
            schema["properties"]["author"]["maxLength"],
            MAX_AUTHOR_CHARS
        );
        assert_eq!(schema["properties"]["text"]["maxLength"], MAX_TEXT_CHARS);
    }

    #[test]
    fn a_served_message_reads_back_field_for_field() {
        let json = r#"{"id":7,"author":"Mary","text":"Hi","created_at":"2026-01-01T00:00:00Z"}"#;
        let message: Message = serde_json::from_str(json).expect("a served message parses");
        assert_eq!(message.id, 7);
        assert_eq!(serde_json::to_string(&message).expect("serialises"), json);
    }
}
