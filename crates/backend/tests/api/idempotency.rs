//! `Idempotency-Key`: one logical write, however often and wherever it is sent.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, SAFE_STRATEGIES, TestApp, http, post, read_all, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_concurrently_to_two_instances_yields_one_message() {
    for strategy in SAFE_STRATEGIES {
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
    let app = TestApp::with_lua().await;
    let client = http();
    let (status, _, _) = post(&client, &app.base, "John", "Hello", Some("k-1"))
        .await
        .expect("post");
    assert_eq!(status, 201);

    let (status, _, body) = post(&client, &app.base, "John", "Goodbye", Some("k-1"))
        .await
        .expect("post");

    assert_eq!(status, 422);
    assert_eq!(body["code"], "idempotency-conflict", "{body}");
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
    let app = TestApp::with_lua().await;
    let client = http();
    post(&client, &app.base, "John", "Hello", Some("k-2"))
        .await
        .expect("post");

    let (status, replayed, _) = post(&client, &app.base, " John ", "Hello\n", Some("k-2"))
        .await
        .expect("post");

    assert_eq!((status, replayed), (200, true));
}

/// POSTs and returns the status and the exact body bytes.
async fn post_raw(client: &reqwest::Client, base: &str, text: &str, key: &str) -> (u16, String) {
    let response = client
        .post(format!("{base}/api/messages"))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"author": "Mary", "text": text}))
        .send()
        .await
        .expect("answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_the_first_bytes_even_after_retention_trimmed_the_message() {
    for strategy in SAFE_STRATEGIES {
        // Arrange: keep two messages; the keyed one is trimmed by the next three.
        let redis = RedisServer::start().await;
        let mut config = settings(&redis, strategy);
        config.redis.max_messages = 2;
        let app = TestApp::spawn(config).await;
        let client = http();
        let (status, first) = post_raw(&client, &app.base, "Hello \"there\"\nJohn", "k").await;
        assert_eq!(status, 201, "{strategy:?}: {first}");
        for i in 0..3 {
            post(&client, &app.base, "a", &format!("later {i}"), None)
                .await
                .expect("post");
        }
        assert!(
            read_all(&client, &app.base)
                .await
                .iter()
                .all(|m| m.text.starts_with("later")),
            "{strategy:?}: the first message was trimmed"
        );

        // Act
        let (status, replayed) = post_raw(&client, &app.base, "Hello \"there\"\nJohn", "k").await;

        // Assert: the first answer, byte for byte.
        assert_eq!(
            (status, replayed.as_str()),
            (200, first.as_str()),
            "{strategy:?}"
        );
    }
}

#[tokio::test]
async fn an_idempotency_record_keeps_no_message_and_costs_at_most_300_bytes() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let text = "x".repeat(1_000);
    let key = "0b6c1f9e-7c1a-4b8e-9f3a-1c2d3e4f5a6b";
    let (status, _) = post_raw(&client, &app.base, &text, key).await;
    assert_eq!(status, 201);

    let record_key = format!("{{guestbook:default}}:idem:{key}");
    let mut conn = redis.connection().await;
    let record: String = redis::cmd("GET")
        .arg(&record_key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&record_key)
        .query_async(&mut conn)
        .await
        .expect("MEMORY USAGE");

    assert!(
        !record.contains("xxxx"),
        "the record holds the text: {record}"
    );
    assert!(bytes <= 300, "the record costs {bytes} bytes: {record}");
}

#[tokio::test]
async fn a_record_written_by_an_earlier_version_still_replays() {
    // Records used to hold the whole message JSON; those written before an upgrade live on
    // for their TTL and must keep answering replays.
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let old = r#"{"id":7,"author":"Mary","text":"Hello","created_at":"2026-01-01T00:00:00Z"}"#;
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("{guestbook:default}:idem:old-key")
        .arg(old)
        .query_async(&mut conn)
        .await
        .expect("SET");

    let (status, body) = post_raw(&client, &app.base, "Hello", "old-key").await;
    assert_eq!((status, body.as_str()), (200, old));
    let (status, _) = post_raw(&client, &app.base, "Goodbye", "old-key").await;
    assert_eq!(status, 422);
}
