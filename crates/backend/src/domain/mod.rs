//! The guestbook's own rules, free of HTTP and Redis: what a valid message and a valid
//! idempotency key are, and how a stored message looks.

pub mod idempotency;
pub mod message;

#[cfg(test)]
mod proptests;

pub use idempotency::{IdempotencyKey, IdempotencyRecord, Replay, judge};
pub use message::{InputError, NewMessage};
