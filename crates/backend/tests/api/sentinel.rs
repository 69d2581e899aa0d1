//! `REDIS_SENTINELS`: the primary found through Sentinel, and a failover followed without a
//! restart. Real processes: a primary, two replicas, three sentinels (quorum 2). With
//! `REDIS_MIN_REPLICAS_ACK=1` every acknowledged append is on a replica before the primary
//! dies, so the promoted one has them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    RedisServer, SentinelServer, TestApp, behind_sentinels, get_json, http, post, read_all,
    settings,
};

/// A primary, two replicas and three sentinels (quorum 2) that agree: ready for a failover.
pub(crate) async fn sentinel_cluster()
-> (RedisServer, RedisServer, RedisServer, Vec<SentinelServer>) {
    let primary = RedisServer::start().await;
    let first = RedisServer::start_replica_of(&primary).await;
    let second = RedisServer::start_replica_of(&primary).await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(SentinelServer::start(&primary, 2).await);
    }
    wait_until_sentinels_agree(&sentinels).await;
    (primary, first, second, sentinels)
}

/// Waits until every sentinel knows both replicas and the other sentinels: before that a
/// failover cannot be elected.
pub(crate) async fn wait_until_sentinels_agree(sentinels: &[SentinelServer]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = 0;
        for sentinel in sentinels {
            let client =
                redis::Client::open(format!("redis://{}", sentinel.address())).expect("valid URL");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("sentinel answers");
            let fields: Vec<String> = redis::cmd("SENTINEL")
                .arg("master")
                .arg("mymaster")
                .query_async(&mut conn)
                .await
                .expect("SENTINEL master answers");
            let fields: BTreeMap<_, _> = fields
                .chunks(2)
                .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
                .collect();
            if fields.get("num-slaves").map(String::as_str) == Some("2")
                && fields.get("num-other-sentinels").map(String::as_str) == Some("2")
            {
                ready += 1;
            }
        }
        if ready == sentinels.len() {
            return;
        }
        assert!(Instant::now() < deadline, "the sentinels never agreed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts with a key until it is acknowledged (201, or 200 for a replay), within 30 s.
pub(crate) async fn post_until_acknowledged(
    client: &reqwest::Client,
    base: &str,
    text: &str,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((status, _, body)) = post(client, base, "a", text, Some(text)).await
            && (status == 201 || status == 200)
        {
            return body["id"].as_u64().expect("an id");
        }
        assert!(Instant::now() < deadline, "{text} was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn primary_port(client: &reqwest::Client, app: &TestApp) -> Option<u16> {
    let health = get_json(client, &app.url("/health/dependencies")).await;
    if health["redis_primary"]["status"] != "up" {
        return None;
    }
    health["redis_primary"]["address"]
        .as_str()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

#[tokio::test]
async fn a_failover_is_followed_without_a_restart_and_loses_no_acknowledged_append() {
    let (mut primary, first, second, sentinels) = sentinel_cluster().await;

    // The primary can only have come from the sentinels.
    let app = TestApp::spawn(behind_sentinels(&primary, AppendStrategy::Lua, &sentinels)).await;
    let client = http();

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        acknowledged
            .push(post_until_acknowledged(&client, &app.base, &format!("before-{i}")).await);
    }
    assert_eq!(primary_port(&client, &app).await, Some(primary.port()));

    primary.kill();
    for i in 0..20 {
        acknowledged.push(post_until_acknowledged(&client, &app.base, &format!("after-{i}")).await);
    }
    let promoted = primary_port(&client, &app).await.expect("a primary is up");
    assert!(
        promoted == first.port() || promoted == second.port(),
        "the backend follows a promoted replica, not {promoted}"
    );

    let stored = read_all(&client, &app.base).await;
    let mut ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    acknowledged.sort_unstable();
    assert_eq!(ids, acknowledged, "every acknowledged append, exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_sentinel_names_by_ipv6_address_is_followed() {
    // Arrange: Sentinel answers `::1` bare; a URL needs `[::1]`.
    let primary = RedisServer::start_on_ipv6().await;
    let sentinel = SentinelServer::start(&primary, 1).await;
    let mut config = settings(&primary, AppendStrategy::Lua);
    config.redis.redis_url = "redis://127.0.0.1:1".to_owned();
    config.redis.redis_sentinels = Some(sentinel.address());
    let app = TestApp::spawn(config).await;
    let client = http();

    // Act
    let id = post_until_acknowledged(&client, &app.base, "over-IPv6").await;

    // Assert
    assert_eq!(primary_port(&client, &app).await, Some(primary.port()));
    let stored = read_all(&client, &app.base).await;
    assert_eq!(stored.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
}
