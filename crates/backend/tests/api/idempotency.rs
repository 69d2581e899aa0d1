//! `Idempotency-Key`: one logical write, however often and wherever it is sent.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, TestApp, http, post, read_all, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_concurrently_to_two_instances_yields_one_message() {
    for strategy in [
        AppendStrategy::Lua,
        AppendStrategy::Watch,
        AppendStrategy::Lock,
    ] {
        // Arrange
        let redis = RedisServer::start().await;
        let first = TestApp::spawn(settings(&redis, strategy)).await;
        let second = TestApp::spawn(settings(&redis, strategy)).await;
        let client = http();

        // Act: 20 rounds, each racing one key against both instances.
        for round in 0..20 {
            let key = format!("race-{round}");
            let text = format!("raced {round}");
            let (a, b) = tokio::join!(
                post(&client, &first.base, "racer", &text, Some(&key)),
                post(&client, &second.base, "racer", &text, Some(&key)),
            );
            let (a, b) = (a.expect("first answers"), b.expect("second answers"));

            // Assert: one created, one replayed, both naming the same message.
            let mut statuses = [a.0, b.0];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 201], "{strategy:?} round {round}");
            assert_eq!(a.2["id"], b.2["id"], "{strategy:?} round {round}");
        }
        assert_eq!(
            read_all(&client, &first.base).await.len(),
            20,
            "{strategy:?}"
        );
    }
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_writes_nothing() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let (status, _, _) = post(&client, &app.base, "John", "Hello", Some("k-1"))
        .await
        .expect("post");
    assert_eq!(status, 201);

    let (status, _, body) = post(&client, &app.base, "John", "Goodbye", Some("k-1"))
        .await
        .expect("post");

    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Idempotency-Key")),
        "{body}"
    );
    assert_eq!(read_all(&client, &app.base).await.len(), 1);
}

#[tokio::test]
async fn a_replay_is_recognised_after_trimming_normalises_the_body() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    post(&client, &app.base, "John", "Hello", Some("k-2"))
        .await
        .expect("post");

    let (status, replayed, _) = post(&client, &app.base, " John ", "Hello\n", Some("k-2"))
        .await
        .expect("post");

    assert_eq!((status, replayed), (200, true));
}
