//! Reading and clearing the message log (the Redis stream), for every strategy but `naive`,
//! which keeps one JSON array instead and reads and clears it in its own module.
//!
//! Reads go to the replica when there is one and fall back to the primary when it fails: a
//! replica may lag by a little, which a page tolerates; the live tail's catch-up asks for the
//! primary (see `Store::list_from_primary`).

use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::store::entry::{Page, RawMessage, entries_to_messages};
use crate::store::error::StoreError;
use crate::store::keys::Keys;
use crate::store::primary::PrimaryLinks;
use crate::store::strategy::Ctx;

/// The messages `page` selects, from `replica` when given, else (or when it fails) the primary.
pub(crate) async fn read(
    ctx: &Ctx,
    keys: &Keys,
    primary: impl FnOnce() -> Result<Arc<PrimaryLinks>, StoreError>,
    replica: Option<&ConnectionManager>,
    page: Page,
) -> Result<Vec<RawMessage>, StoreError> {
    let low = if page.after == 0 {
        "-".to_owned()
    } else {
        format!("({}-0", page.after)
    };
    let high = page
        .before
        .map_or_else(|| "+".to_owned(), |before| format!("({before}-0"));
    let (command, from, to) = if page.newest_first {
        ("XREVRANGE", high, low)
    } else {
        ("XRANGE", low, high)
    };
    let mut read = redis::cmd(command);
    read.arg(&keys.log)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(page.limit);
    if let Some(replica) = replica {
        let mut conn = replica.clone();
        match ctx
            .hop
            .call::<Vec<(String, Vec<String>)>, _, _>("xrange_replica", read.query_async(&mut conn))
            .await
        {
            Ok(entries) => return entries_to_messages(entries),
            // The replica is down or slow: the primary answers instead.
            Err(err) if err.is_transient() => {
                tracing::debug!(error = %err, "replica read failed; reading the primary");
                ctx.metrics.replica_fallbacks.inc();
            }
            Err(err) => return Err(err),
        }
    }
    let mut conn = primary()?.conn.clone();
    let entries = ctx.hop.call("xrange", read.query_async(&mut conn)).await?;
    entries_to_messages(entries)
}

/// Deletes the log in one step; returns how many messages it held.
pub(crate) async fn clear(ctx: &Ctx, keys: &Keys, links: &PrimaryLinks) -> Result<u64, StoreError> {
    let mut conn = links.conn.clone();
    let (len, _): (u64, u64) = ctx
        .hop
        .call(
            "clear",
            redis::pipe()
                .atomic()
                .cmd("XLEN")
                .arg(&keys.log)
                .cmd("DEL")
                .arg(&keys.log)
                .query_async(&mut conn),
        )
        .await?;
    Ok(len)
}

/// Deletes every idempotency record, a batch of `SCAN` at a time (whatever the strategy).
pub(crate) async fn forget_keys(
    ctx: &Ctx,
    keys: &Keys,
    links: &PrimaryLinks,
) -> Result<(), StoreError> {
    let mut conn = links.conn.clone();
    let pattern = keys.idempotency_pattern();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = ctx
            .hop
            .call(
                "scan",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut conn),
            )
            .await?;
        if !keys.is_empty() {
            let _: u64 = ctx
                .hop
                .call(
                    "unlink",
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut conn),
                )
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
