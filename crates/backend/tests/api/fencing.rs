//! The lock strategy's fencing token: a holder whose lock expired while it was slowed down
//! cannot write after a newer holder.

use std::time::Duration;

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{Load, RedisServer, TestApp, http, read_all, send_messages, settings, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lock_ttl_is_fenced_off_and_nothing_is_lost() {
    // Arrange: two backends share Redis; every Redis call of the first is delayed longer than
    // the lock lives, so its lock expires between its acquire and its read.
    let redis = RedisServer::start().await;
    let mut slow_settings = settings(&redis, AppendStrategy::Lock);
    slow_settings.lock_ttl_ms = 100;
    slow_settings.lock_wait_ms = 3_000;
    let mut fast_settings = slow_settings.clone();
    fast_settings.lock_ttl_ms = 1_000;
    let slow = TestApp::spawn(slow_settings).await;
    let fast = TestApp::spawn(fast_settings).await;
    let client = http();
    let configured = client
        .post(slow.url("/config/redis"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(r#"{"delay_ms": 150}"#)
        .send()
        .await
        .expect("config answers");
    assert_eq!(configured.status().as_u16(), 200);

    // Act: a few appends through the slow holder while the fast one appends steadily.
    let slow_load = Load {
        count: 6,
        in_flight: 6,
        attempts: 20,
        retry_pause: Duration::from_millis(50),
    };
    let fast_load = Load {
        count: 300,
        in_flight: 8,
        attempts: 50,
        retry_pause: Duration::from_millis(20),
    };
    let slow_bases = [slow.base.clone()];
    let fast_bases = [fast.base.clone()];
    let (slow_sent, fast_sent) = tokio::join!(
        send_messages(&client, &slow_bases, "slow", slow_load),
        send_messages(&client, &fast_bases, "fast", fast_load),
    );

    // Assert: fencing happened, and everything acknowledged is there exactly once.
    let metrics = client
        .get(slow.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let fenced: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("guestbook_fenced_writes_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the fenced-writes counter is exported");
    assert!(
        fenced >= 1.0,
        "the slow holder was fenced at least once:\n{metrics}"
    );

    let stored = read_all(&client, &fast.base).await;
    let sent: Vec<_> = slow_sent.into_iter().chain(fast_sent).collect();
    let verdict = verify(&sent, &stored);
    assert!(verdict.exactly_once(), "{verdict:?}");
    let unacknowledged_stored = stored.len() - verdict.acknowledged;
    assert_eq!(
        unacknowledged_stored, 0,
        "no fenced write slipped into the log"
    );
}
