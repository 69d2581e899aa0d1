//! Replicas: `REDIS_MIN_REPLICAS_ACK` (an append is acknowledged only once `WAIT` confirms it
//! on enough replicas) and `REDIS_REPLICA_URL` (reads from a replica, the primary when it is
//! down). Real primaries and replicas, on free loopback ports.

use std::time::{Duration, Instant};

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    RedisServer, SAFE_STRATEGIES, TestApp, get_text, http, post, read_all, settings,
};

const LOG: &str = "{guestbook:default}:log";

async fn log_len(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("XLEN")
        .arg(LOG)
        .query_async(&mut conn)
        .await
        .expect("XLEN answers")
}

#[tokio::test]
async fn an_append_is_acknowledged_only_once_a_replica_has_it() {
    for strategy in SAFE_STRATEGIES {
        let primary = RedisServer::start().await;
        let replica = RedisServer::start_replica_of(&primary).await;
        let mut config = settings(&primary, strategy);
        config.redis.redis_min_replicas_ack = 1;
        config.redis.redis_wait_timeout_ms = 300;
        let app = TestApp::spawn(config).await;
        let client = http();

        let (status, _, first) = post(&client, &app.base, "a", "confirmed", Some("k1"))
            .await
            .expect("answers");
        assert_eq!(status, 201, "{strategy:?}: {first}");
        // WAIT returned, so the replica has applied it: no polling here.
        assert_eq!(log_len(&replica).await, 1, "{strategy:?}");

        // A replica that answers nothing: the append reaches the primary but is not
        // acknowledged.
        replica.pause();
        let response = client
            .post(format!("{}/api/messages", app.base))
            .header("idempotency-key", "k2")
            .json(&serde_json::json!({"author": "a", "text": "unconfirmed"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 503, "{strategy:?}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: serde_json::Value = response.json().await.expect("JSON");
        // It is on the primary: the answer says a retry must reuse the key.
        assert_eq!(body["code"], "outcome-unknown", "{body}");
        assert_eq!(
            body["error"],
            "temporarily unavailable: not_replicated; the message may have been written: \
             retry only with the same Idempotency-Key"
        );
        assert_eq!(log_len(&primary).await, 2);

        // Once the replica is back, the retry with the same key confirms the same message.
        replica.resume();
        let (status, replayed, second) = post(&client, &app.base, "a", "unconfirmed", Some("k2"))
            .await
            .expect("answers");
        assert_eq!((status, replayed), (200, true), "{strategy:?}: {second}");
        assert_eq!(second["id"], 2);
        assert_eq!(log_len(&replica).await, 2);
        assert_eq!(read_all(&client, &app.base).await.len(), 2);
    }
}

#[tokio::test]
async fn more_replicas_than_exist_never_acknowledge_and_zero_never_waits() {
    let primary = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let mut two = settings(&primary, AppendStrategy::Lua);
    two.redis.redis_min_replicas_ack = 2;
    two.redis.redis_wait_timeout_ms = 100;
    let strict = TestApp::spawn(two).await;
    let relaxed = TestApp::spawn(settings(&primary, AppendStrategy::Lua)).await;
    let client = http();

    let (status, _, _) = post(&client, &strict.base, "a", "needs two", Some("k"))
        .await
        .expect("answers");
    assert_eq!(status, 503);

    replica.pause();
    let (status, _, _) = post(&client, &relaxed.base, "a", "needs none", None)
        .await
        .expect("answers");
    assert_eq!(status, 201, "REDIS_MIN_REPLICAS_ACK=0 does not wait");
    replica.resume();
}

#[tokio::test]
async fn reads_go_to_the_replica_and_to_the_primary_when_it_is_down() {
    let primary = RedisServer::start().await;
    let mut replica = RedisServer::start_replica_of(&primary).await;
    let mut config = settings(&primary, AppendStrategy::Lua);
    config.redis.redis_replica_url = Some(replica.url());
    let app = TestApp::spawn(config).await;
    let client = http();
    for i in 0..3 {
        post(&client, &app.base, "a", &format!("m{i}"), None)
            .await
            .expect("post");
    }
    // The replica may lag by a moment; the primary's answers stay the source of truth.
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_all(&client, &app.base).await.len() < 3 {
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = replica.connection().await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO answers");
    assert!(stats.contains("cmdstat_xrange:calls="), "{stats}");

    replica.kill();
    assert_eq!(read_all(&client, &app.base).await.len(), 3);
    let metrics = get_text(&client, &app.url("/metrics")).await;
    let fallbacks = metrics
        .lines()
        .find(|line| line.starts_with("redis_replica_read_fallbacks_total "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .expect("the fallback counter is exported");
    assert!(fallbacks >= 1.0, "{fallbacks}");
}

/// Group commit: concurrent appends share fence-and-WAIT rounds. A round's confirmation must
/// never answer an append that finished after its fence: once the replica stops, every
/// append is refused, none rides on an earlier round's success; after it resumes, the keyed
/// retries answer the same messages.
#[tokio::test]
async fn appends_sharing_wait_rounds_are_acknowledged_only_when_their_own_round_confirms() {
    let primary = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let mut config = settings(&primary, AppendStrategy::Lua);
    config.redis.redis_min_replicas_ack = 1;
    config.redis.redis_wait_timeout_ms = 300;
    let app = TestApp::spawn(config).await;
    let client = http();

    let burst = async |prefix: &str| {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let client = client.clone();
            let base = app.base.clone();
            let key = format!("{prefix}-{i}");
            tasks.spawn(async move {
                let (status, replayed, _) = post(&client, &base, "a", &key, Some(&key))
                    .await
                    .expect("answers");
                (status, replayed)
            });
        }
        let mut outcomes = std::collections::BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            *outcomes.entry(done.expect("task")).or_insert(0) += 1;
        }
        outcomes
    };

    assert_eq!(burst("before").await, [((201, false), 100)].into());
    assert_eq!(log_len(&replica).await, 100);
    replica.pause();
    assert_eq!(burst("during").await, [((503, false), 100)].into());
    replica.resume();
    assert_eq!(burst("during").await, [((200, true), 100)].into());
    assert_eq!(log_len(&replica).await, 200);
}
