//! The `naive` strategy: seed 000's bug, kept on purpose.
//!
//! The whole guestbook is one JSON array under one key. An append GETs it, pushes the new
//! message in the application, and SETs it back. Two appends that overlap both read the same
//! array and the second SET erases the first's message. Refused at start unless
//! `ALLOW_UNSAFE=true`; it exists so the test suite can prove its lost-write check can fail.
//! It keeps none of the other strategies' promises: ids may repeat after a failover too.

use crate::domain::message::{Message, parse_stored};
use crate::store::entry::{Page, RawMessage, stored_json};
use crate::store::error::StoreError;
use crate::store::keys::Keys;
use crate::store::primary::PrimaryLinks;
use crate::store::strategy::{AppendRequest, Ctx, Written};

async fn read_all(
    ctx: &Ctx,
    keys: &Keys,
    links: &PrimaryLinks,
) -> Result<Vec<Message>, StoreError> {
    let mut conn = links.conn.clone();
    let blob: Option<String> = ctx
        .hop
        .call(
            "naive_get",
            redis::cmd("GET").arg(&keys.naive).query_async(&mut conn),
        )
        .await?;
    match blob {
        None => Ok(Vec::new()),
        Some(blob) => serde_json::from_str(&blob)
            .map_err(|err| StoreError::Corrupt(format!("naive guestbook value: {err}"))),
    }
}

pub(crate) async fn append(
    ctx: &Ctx,
    links: &PrimaryLinks,
    request: &AppendRequest,
) -> Result<Written, StoreError> {
    let mut conn = links.conn.clone();
    if let Some((record, _)) = &request.record {
        let existing: Option<String> = ctx
            .hop
            .call(
                "naive_get",
                redis::cmd("GET").arg(record).query_async(&mut conn),
            )
            .await?;
        if let Some(existing) = existing {
            return Ok(Written::Recorded(existing));
        }
    }
    let keys = request.book.keys();
    let mut messages = read_all(ctx, keys, links).await?;
    let id = messages.last().map_or(0, |last| last.id) + 1;
    let json = stored_json(id, &request.tail);
    let message =
        parse_stored(&json).map_err(|err| StoreError::Corrupt(format!("new message: {err}")))?;
    messages.push(message);
    let excess = messages
        .len()
        .saturating_sub(usize::try_from(ctx.limits.max_messages).unwrap_or(usize::MAX));
    messages.drain(..excess);
    let blob = serde_json::to_string(&messages)
        .map_err(|err| StoreError::Corrupt(format!("encoding the guestbook: {err}")))?;
    let _: () = ctx
        .hop
        .call(
            "naive_set",
            redis::cmd("SET")
                .arg(&keys.naive)
                .arg(blob)
                .query_async(&mut conn),
        )
        .await?;
    if let Some((record, suffix)) = &request.record {
        let _: () = ctx
            .hop
            .call(
                "naive_set",
                redis::cmd("SET")
                    .arg(record)
                    .arg(format!("{id} {suffix}"))
                    .arg("EX")
                    .arg(ctx.limits.idempotency_ttl_secs)
                    .query_async(&mut conn),
            )
            .await?;
    }
    Ok(Written::Created(RawMessage { id, json }))
}

/// A page of the one JSON array, re-encoded per message (the log's reads copy bytes).
pub(crate) async fn list(
    ctx: &Ctx,
    keys: &Keys,
    links: &PrimaryLinks,
    page: Page,
) -> Result<Vec<RawMessage>, StoreError> {
    let mut messages: Vec<_> = read_all(ctx, keys, links)
        .await?
        .into_iter()
        .filter(|message| page.contains(message.id))
        .collect();
    if page.newest_first {
        messages.reverse();
    }
    messages
        .into_iter()
        .take(page.limit)
        .map(|message| {
            let json = serde_json::to_string(&message)
                .map_err(|err| StoreError::Corrupt(format!("encoding a message: {err}")))?;
            Ok(RawMessage {
                id: message.id,
                json,
            })
        })
        .collect()
}

/// Deletes the one JSON array; returns how many messages it held.
pub(crate) async fn clear(ctx: &Ctx, keys: &Keys, links: &PrimaryLinks) -> Result<u64, StoreError> {
    let count = u64::try_from(read_all(ctx, keys, links).await?.len()).unwrap_or(u64::MAX);
    let mut conn = links.conn.clone();
    let _: u64 = ctx
        .hop
        .call(
            "naive_del",
            redis::cmd("DEL").arg(&keys.naive).query_async(&mut conn),
        )
        .await?;
    Ok(count)
}
