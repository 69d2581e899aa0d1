//! The lock strategy's fencing token: a holder whose lock expired while it was slowed down
//! cannot write after a newer holder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    ADMIN_TOKEN, Load, RedisServer, Sent, TestApp, get_text, http, post, read_all, send_messages,
    settings, verify,
};

async fn fenced_writes(client: &reqwest::Client, app: &TestApp) -> f64 {
    let metrics = get_text(client, &app.url("/metrics")).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("guestbook_fenced_writes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the fenced-writes counter is exported")
}

/// Appends through `base` until `stop` is set, each message retried with its key until acked.
async fn keep_appending(
    client: reqwest::Client,
    base: String,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("fast-{writer}-{i}");
        let text = format!("fast message {writer}/{i}");
        let mut acked_id = None;
        for _ in 0..100 {
            match post(&client, &base, "fast", &text, Some(&key)).await {
                Ok((200 | 201, _, body)) => {
                    acked_id = body["id"].as_u64();
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        sent.push(Sent {
            key,
            text,
            acked_id,
        });
        i += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lock_ttl_is_fenced_off_and_nothing_is_lost() {
    // Arrange: two backends share Redis. Every Redis call of the slow one is delayed 400 ms,
    // four times its 100 ms lock TTL: its lock always expires between its acquire and its read.
    let redis = RedisServer::start().await;
    let mut slow_settings = settings(&redis, AppendStrategy::Lock);
    slow_settings.redis.lock_ttl_ms = 100;
    slow_settings.redis.lock_wait_ms = 3_000;
    let mut fast_settings = slow_settings.clone();
    fast_settings.redis.lock_ttl_ms = 1_000;
    let slow = TestApp::spawn(slow_settings).await;
    let fast = TestApp::spawn(fast_settings).await;
    let client = http();
    let configured = client
        .post(slow.url("/config/redis"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"delay_ms": 400}"#)
        .send()
        .await
        .expect("config answers");
    assert_eq!(configured.status().as_u16(), 200);

    // Act: the fast backend appends without pause (so it takes the lock as soon as the slow
    // holder's expires) until the slow holder has been fenced, at most 30 s; meanwhile a few
    // appends go through the slow holder, retried with their keys until acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            tokio::spawn(keep_appending(
                client.clone(),
                fast.base.clone(),
                writer,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let slow_load = Load {
        count: 3,
        in_flight: 3,
        attempts: 60,
        retry_pause: Duration::from_millis(100),
    };
    let slow_bases = [slow.base.clone()];
    let slow_sending = tokio::spawn({
        let client = client.clone();
        async move { send_messages(&client, &slow_bases, "slow", slow_load).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while fenced_writes(&client, &slow).await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = slow_sending.await.expect("slow load");
    for writer in writers {
        sent.extend(writer.await.expect("fast writer"));
    }

    // Assert: fencing happened, and everything acknowledged is there exactly once.
    let fenced = fenced_writes(&client, &slow).await;
    assert!(fenced >= 1.0, "the slow holder was fenced at least once");
    let stored = read_all(&client, &fast.base).await;
    let verdict = verify(&sent, &stored);
    assert!(verdict.exactly_once(), "{verdict:?}");
    assert_eq!(
        sent.iter()
            .filter(|s| s.key.starts_with("slow"))
            .filter(|s| s.acked_id.is_some())
            .count(),
        3,
        "the slow holder's appends succeed once it is alone"
    );
    assert_eq!(
        stored.len(),
        verdict.acknowledged,
        "no fenced write slipped into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lock_append_has_released_the_lock_by_the_time_it_answers() {
    // Arrange: the default lock TTL and wait, so a lock left behind would still be there when
    // each answer comes back (the release rides on the commit's round trip, and a replay's on
    // the read's).
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lock)).await;
    let client = http();
    let mut conn = redis.connection().await;

    for (text, key, expected) in [
        ("plain", None, (201, false)),
        ("keyed", Some("release-1"), (201, false)),
        ("keyed", Some("release-1"), (200, true)),
    ] {
        // Act
        let (status, replayed, body) = post(&client, &app.base, "a", text, key)
            .await
            .expect("answers");

        // Assert
        assert_eq!((status, replayed), expected, "{text} {key:?}: {body}");
        let held: bool = redis::cmd("EXISTS")
            .arg("{guestbook:default}:lock")
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert!(
            !held,
            "{text} {key:?}: the lock outlived the append's answer"
        );
    }
    let stored = read_all(&client, &app.base).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["plain", "keyed"]);
}
