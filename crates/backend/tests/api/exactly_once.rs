//! The heart of the product: under 200 appends in flight spread over three backends sharing
//! one Redis, every acknowledged message is stored exactly once, and the check can fail.

use std::time::Duration;

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    Load, RedisServer, SAFE_STRATEGIES, TestApp, http, post, post_status, read_all, send_messages,
    settings, verify,
};

const LOAD: Load = Load {
    count: 2_000,
    in_flight: 200,
    attempts: 50,
    retry_pause: Duration::from_millis(20),
};

async fn three_backends(redis: &RedisServer, strategy: AppendStrategy) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..3 {
        let mut settings = settings(redis, strategy);
        // At 200 in flight the contended strategies' latency (debug build) passes
        // SHED_P999_MS, and shedding would answer 503s the client must outlast. Shedding has
        // tests of its own (overload.rs); these are about exactly-once.
        settings.service.pressure.shedding = false;
        apps.push(TestApp::spawn(settings).await);
    }
    apps
}

async fn every_acknowledged_message_is_stored_once(strategy: AppendStrategy) {
    // Arrange
    let redis = RedisServer::start().await;
    let apps = three_backends(&redis, strategy).await;
    let bases: Vec<String> = apps.iter().map(|app| app.base.clone()).collect();
    let client = http();

    // Act
    let sent = send_messages(&client, &bases, strategy.as_str(), LOAD).await;
    let stored = read_all(&client, &bases[0]).await;

    // Assert
    let verdict = verify(&sent, &stored);
    assert!(verdict.exactly_once(), "{strategy:?}: {verdict:?}");
    assert_eq!(
        verdict.acknowledged, LOAD.count,
        "{strategy:?}: every message is acknowledged after retries"
    );
    assert_eq!(
        stored.len(),
        LOAD.count,
        "{strategy:?}: nothing unacknowledged slipped in"
    );

    // A replayed key answers with the original message, marked as a replay.
    for item in sent.iter().step_by(97) {
        let (status, replayed, body) =
            post(&client, &bases[1], "loadtest", &item.text, Some(&item.key))
                .await
                .expect("replay answers");
        assert_eq!(
            (status, replayed),
            (200, true),
            "{strategy:?}: replay of {}",
            item.key
        );
        assert_eq!(
            body["id"].as_u64(),
            item.acked_id,
            "{strategy:?}: replay of {}",
            item.key
        );
    }
    assert_eq!(
        read_all(&client, &bases[2]).await.len(),
        LOAD.count,
        "replays add nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_appends_are_exactly_once() {
    every_acknowledged_message_is_stored_once(AppendStrategy::Lua).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_appends_are_exactly_once() {
    every_acknowledged_message_is_stored_once(AppendStrategy::Watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_appends_are_exactly_once() {
    every_acknowledged_message_is_stored_once(AppendStrategy::Lock).await;
}

/// The proof that the check above can fail: seed 000's read-modify-write loses messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_detects_the_naive_strategy_losing_messages() {
    let redis = RedisServer::start().await;
    let apps = three_backends(&redis, AppendStrategy::Naive).await;
    let bases: Vec<String> = apps.iter().map(|app| app.base.clone()).collect();
    let client = http();

    let sent = send_messages(&client, &bases, "naive", LOAD).await;
    let stored = read_all(&client, &bases[0]).await;

    let verdict = verify(&sent, &stored);
    eprintln!(
        "naive: {} acknowledged, {} stored, {} lost, {} duplicated",
        verdict.acknowledged,
        stored.len(),
        verdict.lost.len(),
        verdict.duplicated.len()
    );
    assert!(!verdict.exactly_once(), "naive must be caught: {verdict:?}");
    assert!(
        !verdict.lost.is_empty(),
        "naive loses acknowledged messages: {verdict:?}"
    );
}

/// Ids are assigned inside the atomic step, so every strategy's ids are gap-free here.
#[tokio::test]
async fn sequential_appends_get_consecutive_ids_with_every_safe_strategy() {
    for strategy in SAFE_STRATEGIES {
        let redis = RedisServer::start().await;
        let app = TestApp::spawn(settings(&redis, strategy)).await;
        let client = http();
        for expected in 1..=5_u64 {
            let (status, _, body) = post(&client, &app.base, "a", "b", None)
                .await
                .expect("post");
            assert_eq!(status, 201, "{strategy:?}");
            assert_eq!(body["id"].as_u64(), Some(expected), "{strategy:?}");
        }
    }
}

/// `MAX_MESSAGES` trims the oldest.
#[tokio::test]
async fn the_retention_cap_trims_the_oldest_messages() {
    for strategy in [
        AppendStrategy::Lua,
        AppendStrategy::Watch,
        AppendStrategy::Lock,
        AppendStrategy::Naive,
    ] {
        let redis = RedisServer::start().await;
        let mut settings = settings(&redis, strategy);
        settings.redis.max_messages = 5;
        let app = TestApp::spawn(settings).await;
        let client = http();
        for i in 1..=8 {
            post(&client, &app.base, "a", &format!("m{i}"), None)
                .await
                .expect("post");
        }
        let stored = read_all(&client, &app.base).await;
        let ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![4, 5, 6, 7, 8], "{strategy:?}");
    }
}

/// After `SCRIPT FLUSH` (as after a Redis restart or failover) EVALSHA answers NOSCRIPT and
/// the script is loaded again transparently.
#[tokio::test]
async fn appends_survive_a_script_cache_flush() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    assert_eq!(
        post_status(&client, &app.base, "a", "before", None).await,
        201
    );

    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");

    assert_eq!(
        post_status(&client, &app.base, "a", "after", None).await,
        201
    );
    assert_eq!(read_all(&client, &app.base).await.len(), 2);
}
