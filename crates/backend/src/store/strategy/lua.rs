//! The `lua` strategy: the whole append is one script (`scripts/append.lua`).
//!
//! One round trip, no retries, no locks: Redis executes scripts one at a time, so there is
//! nothing to contend for. redis-rs sends `EVALSHA` and, on `NOSCRIPT` (after a restart,
//! failover or `SCRIPT FLUSH`), loads the script with `EVAL` and carries on.

use std::sync::LazyLock;

use redis::Script;

use crate::domain::IdempotencyKey;
use crate::store::strategy::script_reply;
use crate::store::{AppendOutcome, Inner, StoreError, raw_message};

static APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/append.lua")));

pub(crate) async fn append(
    store: &Inner,
    tail: &str,
    key: Option<&IdempotencyKey>,
) -> Result<AppendOutcome, StoreError> {
    let keys = &store.keys;
    // Without a key, KEYS[3] names a key of the same hash tag the script never touches.
    let record = key.map_or_else(|| keys.seq.clone(), |key| keys.idempotency(key.as_str()));
    let mut invocation = APPEND.prepare_invoke();
    invocation
        .key(&keys.seq)
        .key(&keys.log)
        .key(record)
        .arg(tail)
        .arg(store.limits.max_messages)
        .arg(store.limits.idempotency_ttl_secs)
        .arg(if key.is_some() { "1" } else { "0" });
    let mut conn = store.conn()?;
    let reply: redis::Value = store
        .hop
        .call("append_script", invocation.invoke_async(&mut conn))
        .await?;
    match script_reply(reply)? {
        (1, Some(json)) => Ok(AppendOutcome::Created(raw_message(json)?)),
        (0, Some(json)) => Ok(AppendOutcome::Existing(raw_message(json)?)),
        other => Err(StoreError::Corrupt(format!(
            "append script replied {other:?}"
        ))),
    }
}
