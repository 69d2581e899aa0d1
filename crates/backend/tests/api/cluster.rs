//! `REDIS_CLUSTER_NODES`: a real Redis Cluster (3 primaries, `redis-server --cluster-enabled`),
//! the backend given only its first node, as in issue 18's reproduction (which answered every
//! append with 503 and logged `Moved: 7398`). Defaults everywhere but the setting itself.

use std::time::Duration;

use guestbook_backend::Settings;
use guestbook_backend::store::AppendStrategy;
use guestbook_testkit::RedisCluster;

use crate::helpers::{EventTap, TestApp, get_json, http, post, read_all};
use crate::sentinel::post_until_acknowledged;

/// Settings for a backend that knows the cluster only by `seeds` (nothing listens at
/// REDIS_URL's port 1: only its scheme and credentials are used).
pub(crate) fn in_cluster(seeds: &str, strategy: AppendStrategy) -> Settings {
    let mut settings = Settings::for_tests("redis://127.0.0.1:1");
    settings.redis.redis_cluster_nodes = Some(seeds.to_owned());
    settings.redis.append_strategy = strategy;
    settings.redis.allow_unsafe = strategy == AppendStrategy::Naive;
    settings
}

/// The port of the node `/health/dependencies` says serves the guestbook.
pub(crate) async fn serving_port(client: &reqwest::Client, app: &TestApp) -> Option<u16> {
    let health = get_json(client, &app.url("/health/dependencies")).await;
    let nodes = health["redis_cluster"].as_array()?.clone();
    let serving = nodes.iter().find(|node| node["serves_guestbook"] == true)?;
    serving["address"]
        .as_str()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_reproduction_appends_reads_and_streams_with_every_strategy() {
    // Arrange: the default guestbook's slot (7398) is not on the first node.
    let cluster = RedisCluster::start(3, 0).await;
    let slot = cluster.slot_of("{guestbook:default}").await;
    assert_ne!(
        cluster.owner_of_slot(slot).await,
        Some(0),
        "the issue's setup"
    );
    let client = http();
    let strategies = [
        AppendStrategy::Lua,
        AppendStrategy::Watch,
        AppendStrategy::Lock,
        AppendStrategy::Naive,
    ];
    for (book, strategy) in strategies.into_iter().enumerate() {
        let mut settings = in_cluster(&cluster.address(0), strategy);
        if book > 0 {
            // Another book, another slot: lua runs on the issue's default book.
            settings.redis.guestbook_name = format!("book-{book}");
        }
        let app = TestApp::spawn(settings).await;
        let live = EventTap::open(&client, &app.url("/api/messages/stream?after=0"), None).await;

        // Act
        let mut ids = Vec::new();
        for i in 0..5 {
            let text = format!("{strategy:?}-{i}");
            ids.push(post_until_acknowledged(&client, &app.base, &text).await);
        }

        // Assert: stored once each, in order, and streamed live.
        let stored = read_all(&client, &app.base).await;
        let stored_ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
        assert_eq!(stored_ids, ids, "{strategy:?}");
        let texts: Vec<String> = (0..5).map(|i| format!("{strategy:?}-{i}")).collect();
        let wanted: Vec<&str> = texts.iter().map(String::as_str).collect();
        if strategy != AppendStrategy::Naive {
            // Naive keeps one serialized value, not the log the live tail follows.
            let streamed = live.wait_for_texts(&wanted, Duration::from_secs(15)).await;
            assert_eq!(streamed.len(), 5, "{strategy:?}: {streamed:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_pointing_at_a_cluster_node_is_named_in_the_answer() {
    // Arrange: the issue's misconfiguration: REDIS_URL names a node that redirects the book.
    let cluster = RedisCluster::start(3, 0).await;
    let slot = cluster.slot_of("{guestbook:default}").await;
    let owner = cluster.owner_of_slot(slot).await.expect("an owner");
    let other = (owner + 1) % 3;
    let app = TestApp::spawn(Settings::for_tests(&cluster.url(other))).await;
    let client = http();

    // Act
    let (status, _, body) = post(&client, &app.base, "a", "b", Some("k1"))
        .await
        .expect("the backend answers");

    // Assert
    assert_eq!(status, 503, "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("REDIS_URL points at a Redis Cluster node; set REDIS_CLUSTER_NODES"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_to_another_node_is_followed_without_a_restart() {
    // Arrange
    let cluster = RedisCluster::start(3, 0).await;
    let app = TestApp::spawn(in_cluster(&cluster.address(0), AppendStrategy::Lua)).await;
    let client = http();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post_until_acknowledged(&client, &app.base, &format!("before-{i}")).await);
    }
    let slot = cluster.slot_of("{guestbook:default}").await;
    let owner = cluster.owner_of_slot(slot).await.expect("an owner");
    let target = (owner + 1) % 3;

    // Act: reshard the book's slot, with its keys, to another primary.
    cluster.move_slot(slot, owner, target).await;
    for i in 0..3 {
        ids.push(post_until_acknowledged(&client, &app.base, &format!("after-{i}")).await);
    }

    // Assert: every message once, on the new node, which the backend now names.
    let stored: Vec<u64> = read_all(&client, &app.base)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(stored, ids);
    assert_eq!(
        serving_port(&client, &app).await,
        Some(cluster.ports()[target])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dependencies_endpoint_lists_every_node_with_its_role() {
    // Arrange
    let cluster = RedisCluster::start(3, 1).await;
    let app = TestApp::spawn(in_cluster(&cluster.address(0), AppendStrategy::Lua)).await;
    let client = http();
    post_until_acknowledged(&client, &app.base, "m1").await;
    let slot = cluster.slot_of("{guestbook:default}").await;
    let owner = cluster.owner_of_slot(slot).await.expect("an owner");

    // Act
    let health = get_json(&client, &app.url("/health/dependencies")).await;

    // Assert
    let nodes = health["redis_cluster"].as_array().expect("a node list");
    assert_eq!(nodes.len(), 6, "{health}");
    for role in ["primary", "replica"] {
        let count = nodes.iter().filter(|node| node["role"] == role).count();
        assert_eq!(count, 3, "{role}: {health}");
    }
    assert!(
        nodes.iter().all(|node| node["reachable"] == true),
        "{health}"
    );
    assert_eq!(
        serving_port(&client, &app).await,
        Some(cluster.ports()[owner])
    );
    assert_eq!(health["redis_primary"]["status"], "up", "{health}");
}
