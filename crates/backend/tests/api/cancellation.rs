//! A request dropped mid-append (its client went away) must not leave Redis state behind
//! that stalls everyone else: the `lock` strategy's lock, or a `watch` connection with a
//! WATCH still armed. The append finishes in a task of its own.

use std::time::Duration;

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{ADMIN_TOKEN, RedisServer, TestApp, get_text, http, post, read_all, settings};

/// Delays every Redis call of `app` by `delay_ms` (0: none).
async fn delay_redis(client: &reqwest::Client, app: &TestApp, delay_ms: u64) {
    let status = client
        .post(app.url("/config/redis"))
        .bearer_auth(ADMIN_TOKEN)
        .body(format!(r#"{{"delay_ms": {delay_ms}}}"#))
        .send()
        .await
        .expect("answers")
        .status();
    assert_eq!(status.as_u16(), 200);
}

/// Posts `text` with its own key and gives up after `after`: the client goes away mid-append.
async fn post_and_give_up(app: &TestApp, text: &str, after: Duration) {
    let impatient = reqwest::Client::builder()
        .timeout(after)
        .build()
        .expect("client builds");
    let outcome = post(&impatient, &app.base, "a", text, Some(text)).await;
    assert!(
        outcome.is_err(),
        "the request was meant to be cut off: {outcome:?}"
    );
}

async fn metric(client: &reqwest::Client, app: &TestApp, name: &str) -> f64 {
    get_text(client, &app.url("/metrics"))
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_holding_the_lock_releases_it_and_finishes_its_append() {
    // Arrange: a lock TTL far longer than the test waits, so only a release ends the lock.
    let redis = RedisServer::start().await;
    let mut config = settings(&redis, AppendStrategy::Lock);
    config.redis.lock_ttl_ms = 60_000;
    config.redis.lock_wait_ms = 60_000;
    let app = TestApp::spawn(config).await;
    let client = http();
    delay_redis(&client, &app, 200).await;

    // Act: the lock is taken at ~200 ms; the client leaves at 300 ms, mid critical section.
    post_and_give_up(&app, "cancelled", Duration::from_millis(300)).await;
    delay_redis(&client, &app, 0).await;

    // Assert: the lock goes away long before its TTL, and the append was made once.
    let mut conn = redis.connection().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held: bool = redis::cmd("EXISTS")
            .arg("{guestbook:default}:lock")
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if !held {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock is still held 10 s after its holder's request was cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = post(&client, &app.base, "a", "after", None)
        .await
        .expect("answers");
    assert_eq!(status, 201, "{body}");
    let stored = read_all(&client, &app.base).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["cancelled", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_mid_transaction_leaves_no_watch_armed_on_its_connection() {
    // Arrange: one pooled connection, so the next append reuses the cancelled one's; a second
    // backend writes in between, which a stale WATCH would turn into a conflict.
    let redis = RedisServer::start().await;
    let mut config = settings(&redis, AppendStrategy::Watch);
    config.redis.redis_pool_size = 1;
    let app = TestApp::spawn(config).await;
    let other = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    delay_redis(&client, &app, 200).await;

    // Act: WATCH and the reads go out at ~200 ms, EXEC would at ~400 ms; the client leaves at
    // 300 ms.
    post_and_give_up(&app, "cancelled", Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    delay_redis(&client, &app, 0).await;
    let (status, _, _) = post(&client, &other.base, "b", "other", None)
        .await
        .expect("answers");
    assert_eq!(status, 201);
    let (status, _, body) = post(&client, &app.base, "a", "after", None)
        .await
        .expect("answers");
    assert_eq!(status, 201, "{body}");

    // Assert: no transaction aborted (nobody else wrote during one), and the cancelled append
    // was made once.
    assert_eq!(
        metric(&client, &app, "guestbook_watch_conflicts_total").await,
        0.0
    );
    let stored = read_all(&client, &app.base).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["cancelled", "other", "after"]);
}
