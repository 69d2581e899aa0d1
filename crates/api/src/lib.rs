//! `guestbook-api`: the wire types of the guestbook, defined once.
//!
//! The backend validates against these limits and documents these shapes, the client's OpenAPI
//! document describes the proxied routes with them, the load tool reads pages with them, and
//! every error answer of both services is an [`ErrorBody`] whose [`ErrorCode`] programs (the
//! browser UI among them) can match on without parsing the human text.
//!
//! - [`book`]: guestbook names, for `/api/books/{book}/...` and `GUESTBOOK_NAME`.
//! - [`message`]: a message as served, the body of a post, a page, the limits.
//! - [`error`]: `{"error": "...", "code": "..."}` and the closed set of codes.
//! - [`connection`]: how long either side keeps an idle keep-alive connection.
//!
//! This crate has no HTTP framework in it on purpose: the load tool depends on it too, and a
//! wire type should not pull a server into a client.

pub mod book;
pub mod connection;
pub mod error;
pub mod message;

pub use book::{BOOK_NAME_RULE, MAX_BOOK_NAME, is_valid_book_name};
pub use connection::{DEFAULT_HEADER_READ_TIMEOUT_SECS, POOL_IDLE_TIMEOUT};
pub use error::{ErrorBody, ErrorCode};
pub use message::{
    DEFAULT_PAGE_LIMIT, Deleted, MAX_AUTHOR_CHARS, MAX_PAGE_LIMIT, MAX_TEXT_CHARS, Message,
    MessagePage, NewMessageBody, Order,
};
