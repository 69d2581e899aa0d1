//! Bad days: Redis paused or killed mid-load. Requests answer 503 with Retry-After within the
//! Redis timeout, the process stays live and ready, nothing acknowledged is lost, and nothing
//! is half-written.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::{
    Load, RedisServer, SAFE_STRATEGIES, TestApp, http, idempotency_records, post_status, read_all,
    send_messages, settings, verify,
};

async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_gives_prompt_503s_and_the_process_stays_live() {
    for strategy in SAFE_STRATEGIES {
        // Arrange
        let redis = RedisServer::start().await;
        let mut settings = settings(&redis, strategy);
        settings.redis.redis_timeout_ms = 300;
        settings.redis.lock_wait_ms = 300;
        let app = TestApp::spawn(settings).await;
        let client = http();
        assert_eq!(
            post_status(&client, &app.base, "a", "before", None).await,
            201
        );

        // Act
        redis.pause();
        let response = client
            .post(app.url("/api/messages"))
            .json(&serde_json::json!({"author": "a", "text": "during"}))
            .send()
            .await
            .expect("an answer, not a hang");
        let listed = status_of(&client, &app.url("/api/messages")).await;
        let live = status_of(&client, &app.url("/liveness")).await;
        let ready = status_of(&client, &app.url("/readiness")).await;
        redis.resume();

        // Assert
        assert_eq!(response.status().as_u16(), 503, "{strategy:?}");
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(listed, 503, "{strategy:?}");
        assert_eq!(
            (live, ready),
            (200, 200),
            "{strategy:?}: probes never look at Redis"
        );
        let mut recovered = false;
        for _ in 0..50 {
            if post_status(&client, &app.base, "a", "after", None).await == 201 {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "{strategy:?}: appends work again after SIGCONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_restarted_from_its_append_only_file_keeps_every_acknowledged_message() {
    for strategy in SAFE_STRATEGIES {
        // Arrange
        let mut redis = RedisServer::start_durable().await;
        let mut settings = settings(&redis, strategy);
        settings.redis.redis_timeout_ms = 300;
        settings.redis.lock_wait_ms = 500;
        let app = TestApp::spawn(settings).await;
        let client = http();
        let bases = [app.base.clone()];
        let load = Load {
            count: 400,
            in_flight: 16,
            attempts: 200,
            retry_pause: Duration::from_millis(25),
        };

        // Act: kill -9 Redis while the load runs, check the answers during the outage, restart.
        let run = format!("outage-{}", strategy.as_str());
        let sending = send_messages(&client, &bases, &run, load);
        let outage = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            redis.kill();
            let during = client
                .post(app.url("/api/messages"))
                .json(&serde_json::json!({"author": "a", "text": "during the outage"}))
                .send()
                .await
                .expect("an answer, not a hang");
            let live = status_of(&client, &app.url("/liveness")).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.restart().await;
            (
                during.status().as_u16(),
                during.headers().contains_key("retry-after"),
                live,
            )
        };
        let (sent, (during, retry_after, live)) = tokio::join!(sending, outage);

        // Assert
        assert_eq!(
            (during, retry_after, live),
            (503, true, 200),
            "{strategy:?}"
        );
        let stored = read_all(&client, &app.base).await;
        let verdict = verify(&sent, &stored);
        assert!(verdict.exactly_once(), "{strategy:?}: {verdict:?}");
        assert_eq!(
            verdict.acknowledged, load.count,
            "{strategy:?}: every message acknowledged after retries"
        );

        let present: HashSet<u64> = stored.iter().map(|m| m.id).collect();
        let records = idempotency_records(&redis).await;
        assert!(
            records.len() >= load.count,
            "{strategy:?}: a record per acknowledged key"
        );
        for (key, id) in &records {
            assert!(
                present.contains(id),
                "{strategy:?}: record {key} points at missing message {id}"
            );
        }
    }
}
