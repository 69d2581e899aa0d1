//! Many guestbooks: `/api/books/{book}/messages` (and its stream), each book its own ids,
//! retention, idempotency keys and hash tag; `/api/messages` is the default book.

use std::collections::BTreeSet;
use std::time::Duration;

use guestbook_backend::store::AppendStrategy;
use guestbook_testkit::RedisCluster;
use serde_json::{Value, json};

use crate::cluster::in_cluster;
use crate::helpers::{EventTap, RedisServer, TestApp, get_json, http, post, settings};

/// Posts to `url` (a messages route); returns the status and the body.
async fn post_to(
    client: &reqwest::Client,
    url: &str,
    text: &str,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = client
        .post(url)
        .json(&json!({"author": "books", "text": text}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `(id, text)` of every message of the page at `url`.
async fn listed(client: &reqwest::Client, url: &str) -> Vec<(u64, String)> {
    let page = get_json(client, url).await;
    page["messages"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().expect("id"),
                m["text"].as_str().expect("text").to_owned(),
            )
        })
        .collect()
}

async fn db_size(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_book_has_its_own_messages_ids_and_idempotency_keys() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let book = |name: &str| app.url(&format!("/api/books/{name}/messages"));

    // The same key in two books names two writes; in one book, one.
    assert_eq!(
        post_to(&client, &book("party"), "p1", Some("k1")).await.0,
        201
    );
    assert_eq!(post_to(&client, &book("party"), "p2", None).await.0, 201);
    assert_eq!(
        post_to(&client, &book("work"), "w1", Some("k1")).await.0,
        201
    );
    let (status, replay) = post_to(&client, &book("party"), "p1", Some("k1")).await;
    assert_eq!((status, replay["id"].as_u64()), (200, Some(1)));
    assert_eq!(
        post_to(&client, &book("work"), "other", Some("k1")).await.0,
        422
    );
    post(&client, &app.base, "a", "d1", None)
        .await
        .expect("default post");

    assert_eq!(
        listed(&client, &book("party")).await,
        [(1, "p1".into()), (2, "p2".into())]
    );
    assert_eq!(listed(&client, &book("work")).await, [(1, "w1".into())]);
    assert_eq!(
        listed(&client, &app.url("/api/messages")).await,
        [(1, "d1".into())]
    );
    // The default book by name is the same book.
    assert_eq!(listed(&client, &book("default")).await, [(1, "d1".into())]);
    assert!(listed(&client, &book("never-written")).await.is_empty());
    // Each book under its own hash tag.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let tags: BTreeSet<&str> = keys
        .iter()
        .filter_map(|key| key.split_once('}').map(|(tag, _)| tag))
        .collect();
    let expected: BTreeSet<&str> =
        ["{guestbook:default", "{guestbook:party", "{guestbook:work"].into();
    assert_eq!(tags, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_book_name_is_refused_before_redis_is_touched() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let long = "x".repeat(65);
    for name in [
        "a:b",
        "%7Bx%7D",
        "a*",
        "a%20b",
        "%C3%A9",
        long.as_str(),
        "a.b",
    ] {
        for (method, suffix) in [("POST", ""), ("GET", ""), ("GET", "/stream")] {
            let url = app.url(&format!("/api/books/{name}/messages{suffix}"));
            let request = match method {
                "POST" => client.post(&url).json(&json!({"author": "a", "text": "b"})),
                _ => client.get(&url),
            };
            let response = request.send().await.expect("answers");
            assert_eq!(response.status().as_u16(), 400, "{method} {name}{suffix}");
            let body: Value = response.json().await.expect("an error body");
            assert_eq!(body["code"], "bad-request", "{name}");
            assert_eq!(body["error"], guestbook_api::BOOK_NAME_RULE);
        }
    }
    assert_eq!(db_size(&redis).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_clearing_are_per_book() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.redis.max_messages = 2;
    settings.admin_token = Some("books-admin-token-0123456789".into());
    let app = TestApp::spawn(settings).await;
    let client = http();
    let book = |name: &str| app.url(&format!("/api/books/{name}/messages"));
    for text in ["a1", "a2", "a3"] {
        assert_eq!(post_to(&client, &book("a"), text, None).await.0, 201);
    }
    assert_eq!(post_to(&client, &book("b"), "b1", None).await.0, 201);
    assert_eq!(
        listed(&client, &book("a")).await,
        [(2, "a2".into()), (3, "a3".into())]
    );
    assert_eq!(listed(&client, &book("b")).await, [(1, "b1".into())]);

    let cleared = client
        .delete(book("a"))
        .bearer_auth("books-admin-token-0123456789")
        .send()
        .await
        .expect("answers");
    assert_eq!(cleared.status().as_u16(), 200);
    assert_eq!(cleared.json::<Value>().await.expect("json")["deleted"], 2);
    assert!(listed(&client, &book("a")).await.is_empty());
    assert_eq!(listed(&client, &book("b")).await, [(1, "b1".into())]);
    // Ids are not reused after a clear.
    let (_, next) = post_to(&client, &book("a"), "a4", None).await;
    assert_eq!(next["id"], 4);
    let refused = client.delete(book("b")).send().await.expect("answers");
    assert_eq!(refused.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_books_stream_carries_that_book_only_and_its_tail_ends_with_its_last_reader() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let book = |name: &str| app.url(&format!("/api/books/{name}/messages"));
    let tap = EventTap::open(&client, &app.url("/api/books/live/messages/stream"), None).await;
    let health = get_json(&client, &app.url("/health/dependencies")).await;
    assert_eq!(health["live_updates"]["other_books"], 1);

    post_to(&client, &book("elsewhere"), "not here", None).await;
    post(&client, &app.base, "a", "nor here", None)
        .await
        .expect("default post");
    post_to(&client, &book("live"), "here", None).await;
    let events = tap.wait_for_texts(&["here"], Duration::from_secs(10)).await;
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|(_, m)| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["here"]);
    assert_eq!(events[0].0, 1, "the book's own ids");

    // The tail of a book nobody reads any more ends (within one 5 s XREAD block).
    drop(tap);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health = get_json(&client, &app.url("/health/dependencies")).await;
        if health["live_updates"]["other_books"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle tail still runs: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And a new reader starts it again, without a gap.
    let tap = EventTap::open(
        &client,
        &app.url("/api/books/live/messages/stream"),
        Some(0),
    )
    .await;
    post_to(&client, &book("live"), "again", None).await;
    let events = tap
        .wait_for_texts(&["here", "again"], Duration::from_secs(10))
        .await;
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_spread_over_a_clusters_primaries_and_each_is_served_by_its_own() {
    let cluster = RedisCluster::start(3, 0).await;
    let app = TestApp::spawn(in_cluster(&cluster.address(0), AppendStrategy::Lua)).await;
    let client = http();
    let books: Vec<String> = (0..30).map(|i| format!("spread-{i}")).collect();
    let mut owners = BTreeSet::new();
    for name in &books {
        owners.insert(
            cluster
                .owner_of_slot(cluster.slot_of(&format!("{{guestbook:{name}}}")).await)
                .await,
        );
    }
    assert_eq!(owners.len(), 3, "30 books land on every primary");
    for name in &books {
        let url = app.url(&format!("/api/books/{name}/messages"));
        let mut status = 0;
        // The first appends may race the first description of the cluster.
        for _ in 0..50 {
            status = post_to(&client, &url, name, Some(name)).await.0;
            if status == 201 || status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(status == 201 || status == 200, "{name}: {status}");
    }
    for name in &books {
        let url = app.url(&format!("/api/books/{name}/messages"));
        assert_eq!(listed(&client, &url).await, [(1, name.clone())], "{name}");
    }
    let health = get_json(&client, &app.url("/health/dependencies")).await;
    let slots: u64 = health["redis_cluster"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|node| node["slots"].as_u64())
        .sum();
    assert_eq!(slots, 16_384, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_lock_append_exactly_once_to_books_on_every_node_at_once() {
    let cluster = RedisCluster::start(3, 0).await;
    let client = http();
    for strategy in [AppendStrategy::Watch, AppendStrategy::Lock] {
        let app = TestApp::spawn(in_cluster(&cluster.address(0), strategy)).await;
        // Six books over the three primaries, written concurrently: each strategy's pool or
        // lock must be the book's own node's, whichever book came first.
        let books: Vec<String> = (0..6).map(|i| format!("{strategy:?}-{i}")).collect();
        let mut nodes = BTreeSet::new();
        for name in &books {
            let slot = cluster.slot_of(&format!("{{guestbook:{name}}}")).await;
            nodes.insert(cluster.owner_of_slot(slot).await);
        }
        assert!(
            nodes.len() >= 2,
            "{strategy:?}: the books span nodes: {nodes:?}"
        );
        let mut sends = tokio::task::JoinSet::new();
        for (index, name) in books.iter().cycle().take(60).enumerate() {
            let (client, url) = (
                client.clone(),
                app.url(&format!("/api/books/{name}/messages")),
            );
            sends.spawn(async move {
                let key = format!("k{index}");
                for _ in 0..100 {
                    let (status, _) =
                        post_to(&client, &url, &format!("m{index}"), Some(&key)).await;
                    if status == 201 || status == 200 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("m{index} never acknowledged");
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("every message acknowledged");
        }
        for (offset, name) in books.iter().enumerate() {
            let url = app.url(&format!("/api/books/{name}/messages?limit=1000"));
            let stored = listed(&client, &url).await;
            let texts: BTreeSet<String> = stored.iter().map(|(_, text)| text.clone()).collect();
            let expected: BTreeSet<String> = (0..10)
                .map(|round| format!("m{}", round * 6 + offset))
                .collect();
            assert_eq!(stored.len(), 10, "{strategy:?} {name}: {stored:?}");
            assert_eq!(texts, expected, "{strategy:?} {name}");
            let ids: Vec<u64> = stored.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "{strategy:?} {name}");
        }
    }
}
