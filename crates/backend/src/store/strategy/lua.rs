//! The `lua` strategy: the whole append is one script (`scripts/append.lua`, after the shared
//! `scripts/sequence.lua`).
//!
//! One round trip, no retries, no locks: Redis executes scripts one at a time, so there is
//! nothing to contend for. redis-rs sends `EVALSHA` and, on `NOSCRIPT` (after a restart,
//! failover or `SCRIPT FLUSH`), loads the script with `EVAL` and carries on.

use std::sync::LazyLock;

use redis::Script;

use crate::store::entry::created;
use crate::store::error::StoreError;
use crate::store::primary::PrimaryLinks;
use crate::store::sequence::script_with_sequence;
use crate::store::strategy::{AppendRequest, Ctx, Written, eval_sha, script_reply};

static APPEND: LazyLock<Script> = LazyLock::new(|| script_with_sequence!("append.lua"));

pub(crate) async fn append(
    ctx: &Ctx,
    links: &PrimaryLinks,
    request: &AppendRequest,
) -> Result<Written, StoreError> {
    let keys = request.book.keys();
    // Without a key, KEYS[3] names a key of the same hash tag the script never touches.
    let (record, suffix, has_key) = request.script_record(&keys.seq);
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha
        .arg(APPEND.get_hash())
        .arg(4)
        .arg(&keys.seq)
        .arg(&keys.log)
        .arg(record)
        .arg(&keys.term)
        .arg(&request.tail)
        .arg(ctx.limits.max_messages)
        .arg(ctx.limits.idempotency_ttl_secs)
        .arg(has_key)
        .arg(suffix)
        .arg(request.known);
    let mut conn = links.conn.clone();
    let reply = ctx
        .hop
        .call("append_script", eval_sha(&APPEND, &evalsha, &mut conn))
        .await?;
    match script_reply(reply)? {
        (1, Some(id)) => Ok(Written::Created(created(&id, &request.tail)?)),
        (0, Some(record)) => Ok(Written::Recorded(record)),
        other => Err(StoreError::Corrupt(format!(
            "append script replied {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestbook_testkit::RedisServer;

    const SEQ: &str = "{guestbook:t}:seq";
    const LOG: &str = "{guestbook:t}:log";
    const RECORD: &str = "{guestbook:t}:idem:k";
    const TERM: &str = "{guestbook:t}:term";

    async fn run(
        conn: &mut redis::aio::MultiplexedConnection,
        cap: &str,
        ttl: &str,
    ) -> redis::RedisResult<redis::Value> {
        APPEND
            .key(SEQ)
            .key(LOG)
            .key(RECORD)
            .key(TERM)
            .arg(r#""author":"a","text":"b","created_at":"2026-01-01T00:00:00Z"}"#)
            .arg(cap)
            .arg(ttl)
            .arg("1")
            .arg("2026-01-01T00:00:00Z 00112233445566778899aabbccddeeff")
            .arg(0)
            .invoke_async(conn)
            .await
    }

    async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async(conn)
            .await
            .expect("EXISTS")
    }

    #[tokio::test]
    async fn a_bad_argument_fails_the_script_before_anything_is_written() {
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        // An EX beyond Redis's range used to fail the record's SET after the message was
        // appended: a message without its record.
        for (cap, ttl) in [("10", "9223372036854775807"), ("0", "60"), ("x", "60")] {
            assert!(run(&mut conn, cap, ttl).await.is_err(), "{cap} {ttl}");
            for key in [SEQ, LOG, RECORD, TERM] {
                assert!(!exists(&mut conn, key).await, "{cap} {ttl} wrote {key}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_log_write_leaves_no_record_and_no_new_id() {
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let _: () = redis::cmd("SET")
            .arg(LOG)
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .expect("SET");
        assert!(run(&mut conn, "10", "60").await.is_err());
        for key in [SEQ, RECORD, TERM] {
            assert!(!exists(&mut conn, key).await, "wrote {key}");
        }
    }

    #[tokio::test]
    async fn an_append_writes_message_record_sequence_and_term() {
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let reply = run(&mut conn, "10", "60").await.expect("appends");
        assert_eq!(script_reply(reply).expect("a reply").0, 1, "a new message");
        let record: String = redis::cmd("GET")
            .arg(RECORD)
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(
            record,
            "1 2026-01-01T00:00:00Z 00112233445566778899aabbccddeeff"
        );
        for key in [SEQ, LOG, TERM] {
            assert!(exists(&mut conn, key).await, "{key}");
        }
    }
}
