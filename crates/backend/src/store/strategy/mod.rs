//! The four ways to make an append atomic, selected by `APPEND_STRATEGY`.
//!
//! | strategy | round trips | under contention | safe |
//! |---|---|---|---|
//! | [`lua`] | 1 (EVALSHA) | nothing to contend: Redis serialises scripts | yes |
//! | [`watch`] | 2 per attempt | every concurrent writer aborts all others; retries | yes |
//! | [`lock`] | 4 + waiting | one writer at a time, cluster-wide; fenced | yes |
//! | [`naive`] | 3–4 | last writer wins: messages vanish | **no** |
//!
//! # Why the id must be assigned inside the atomic step
//! Reserving an id first (a lone `INCR`) and writing later would let id 6 land before id 5;
//! a reader paging with `after=5`, or a live-update client, would then skip id 5 for ever.
//! So every safe strategy assigns the id in the same atomic step that appends it, and the
//! watch strategy must WATCH the sequence, which is what makes it collapse under load.

pub mod lock;
pub mod lua;
pub mod naive;
pub mod watch;

use std::time::Duration;

use crate::store::entry::RawMessage;
use crate::store::error::StoreError;

/// One append as the strategies see it. Everything is owned, so that a strategy which must
/// not be cancelled half-way (`lock`, `watch`) can run in a task of its own.
#[derive(Debug, Clone)]
pub(crate) struct AppendRequest {
    /// The message JSON after its id (`"author":...}`).
    pub tail: String,
    /// When an idempotency key was sent: the record's Redis key, and the record after its id.
    pub record: Option<(String, String)>,
    /// The highest id this backend has seen: a new term jumps past it (see `store::sequence`).
    pub known: u64,
}

/// What a strategy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// A new message.
    Created(RawMessage),
    /// Nothing: the key was used before, and this is its stored record.
    Recorded(String),
}

/// "Full jitter" backoff (AWS architecture blog): a uniform pick in
/// `[0, min(cap, base · 2^attempt)]`, so contenders spread out instead of colliding again.
pub(crate) fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1_u32 << attempt.min(16)).min(cap);
    ceiling.mul_f64(fastrand::f64())
}

/// Parses the reply `{status, payload}` that the strategy scripts return.
pub(crate) fn script_reply(value: redis::Value) -> Result<(i64, Option<String>), StoreError> {
    let redis::Value::Array(items) = value else {
        return Err(StoreError::Corrupt(format!(
            "unexpected script reply {value:?}"
        )));
    };
    let mut items = items.into_iter();
    let status = match items.next() {
        Some(redis::Value::Int(status)) => status,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected script status {other:?}"
            )));
        }
    };
    let payload = match items.next() {
        None => None,
        Some(value) => Some(
            redis::from_redis_value::<String>(value)
                .map_err(|err| StoreError::Corrupt(format!("script payload: {err}")))?,
        ),
    };
    Ok((status, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_never_exceeds_its_cap() {
        for attempt in 0..40 {
            let wait = full_jitter(attempt, Duration::from_millis(1), Duration::from_millis(20));
            assert!(wait <= Duration::from_millis(20));
        }
    }
}
