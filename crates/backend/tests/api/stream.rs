//! Live updates over Server-Sent Events, across replicas, resumable without loss.

use guestbook_backend::store::AppendStrategy;
use tokio::sync::oneshot;

use crate::helpers::{RedisServer, TestApp, http, post, read_events, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_to_one_instance_reaches_a_stream_on_another() {
    // Arrange
    let redis = RedisServer::start().await;
    let writer = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let reader = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let (ready, connected) = oneshot::channel();
    let url = reader.url("/api/messages/stream");
    let listening = {
        let client = client.clone();
        tokio::spawn(async move { read_events(&client, &url, None, 30, Some(ready)).await })
    };
    connected.await.expect("stream connected");

    // Act
    for i in 0..30 {
        let (status, _, _) = post(&client, &writer.base, "a", &format!("live {i}"), None)
            .await
            .expect("post");
        assert_eq!(status, 201);
    }
    let events = listening.await.expect("reader task");

    // Assert: all 30, in order, no gap, no duplicate.
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    let first: serde_json::Value =
        serde_json::from_str(&events[0].1).expect("data is the message JSON");
    assert_eq!(first["text"], "live 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_from_last_event_id_without_loss() {
    let app = TestApp::with_lua().await;
    let client = http();
    for i in 0..1_500 {
        post(&client, &app.base, "a", &format!("m{i}"), None)
            .await
            .expect("post");
    }

    // Resume after 10: everything from 11 on, across more than one catch-up page.
    let events = read_events(
        &client,
        &app.url("/api/messages/stream"),
        Some(10),
        1_490,
        None,
    )
    .await;

    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (11..=1_500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_from_the_after_query_for_first_connections() {
    let app = TestApp::with_lua().await;
    let client = http();
    for i in 0..5 {
        post(&client, &app.base, "a", &format!("m{i}"), None)
            .await
            .expect("post");
    }

    let events = read_events(
        &client,
        &app.url("/api/messages/stream?after=0"),
        None,
        5,
        None,
    )
    .await;

    assert_eq!(
        events.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn a_bad_last_event_id_is_refused() {
    let app = TestApp::with_lua().await;
    let response = http()
        .get(app.url("/api/messages/stream"))
        .header("Last-Event-ID", "not-a-number")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_the_server_drains_so_shutdown_does_not_hang() {
    let app = TestApp::with_lua().await;
    let client = http();
    let response = client
        .get(app.url("/api/messages/stream"))
        .send()
        .await
        .expect("connects");
    assert_eq!(response.status().as_u16(), 200);

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(4), app.shutdown()).await;

    assert!(
        matches!(stopped, Ok(Ok(()))),
        "shutdown finished before the 5 s drain timeout: {stopped:?}"
    );
    let rest = tokio::time::timeout(std::time::Duration::from_secs(4), response.bytes()).await;
    assert!(rest.is_ok(), "the stream ended");
}

/// Polls `/health/dependencies` until the live-update tail follows the log again; returns how
/// long that took, at most `within`.
async fn until_following(
    client: &reqwest::Client,
    app: &TestApp,
    within: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        let health = crate::helpers::get_json(client, &app.url("/health/dependencies")).await;
        if health["live_updates"]["status"] == "following" {
            return started.elapsed();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_the_next_short_one_is_followed_again_at_once() {
    // Arrange: a long outage drives the tail's reconnect backoff to its 5 s ceiling.
    let mut redis = RedisServer::start_durable().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    until_following(&client, &app, std::time::Duration::from_secs(10)).await;
    redis.kill();
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    redis.restart().await;
    until_following(&client, &app, std::time::Duration::from_secs(15)).await;

    let live =
        crate::helpers::EventTap::open(&client, &app.url("/api/messages/stream"), None).await;

    // Act: a blip, then a message.
    redis.restart().await;
    let posted = loop {
        if let Ok((201, _, _)) = post(&client, &app.base, "a", "after the blip", None).await {
            break std::time::Instant::now();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    // Assert: the backoff started again from its first step once the tail had followed, so
    // the message is streamed well before the 5 s ceiling would have let it.
    live.wait_for_texts(&["after the blip"], std::time::Duration::from_secs(10))
        .await;
    let took = posted.elapsed();
    assert!(
        live.texts() == ["after the blip"] && took < std::time::Duration::from_secs(3),
        "streamed {:?} only {took:?} after it was acknowledged",
        live.texts()
    );
}

/// `MAX_STREAMS_PER_CLIENT`'s default, as the README documents it: what one client instance
/// may pass through (its own global cap, 256).
const DEFAULT_STREAMS_PER_CLIENT: usize = 256;

/// A client whose connections come from `ip` (any of 127/8 is loopback on Linux), with no
/// overall timeout, so its streams stay open as long as the test holds them.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("an address"))
        .connect_timeout(std::time::Duration::from_secs(5))
        .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
        .build()
        .expect("client builds")
}

/// Opens a stream and returns the answer, whatever its status.
async fn open(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    client
        .get(app.url("/api/messages/stream"))
        .send()
        .await
        .expect("the backend answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_stream_slot_and_a_closed_stream_frees_its_own() {
    // Every default: MAX_STREAM_CLIENTS 1024, MAX_STREAMS_PER_CLIENT 256.
    let app = TestApp::with_lua().await;
    let first = client_from("127.0.0.1");
    let second = client_from("127.0.0.2");

    let mut held = Vec::new();
    for n in 0..DEFAULT_STREAMS_PER_CLIENT {
        let stream = open(&first, &app).await;
        assert_eq!(
            stream.status().as_u16(),
            200,
            "stream {n} of the first address"
        );
        held.push(stream);
    }
    let over = open(&first, &app).await;
    let over_status = over.status().as_u16();
    let retry_after = over.headers().get("retry-after").cloned();
    // A 200 here would be a stream whose body never ends: read only a refusal's body.
    let over_body: serde_json::Value = if over_status == 200 {
        serde_json::Value::Null
    } else {
        over.json().await.unwrap_or_default()
    };
    let other = open(&second, &app).await;
    let other_status = other.status().as_u16();
    drop(held.pop());
    // A hang guard, not a latency assertion: the slot comes back once the backend notices
    // the closed connection (at the latest at the next keep-alive, 15 s).
    let mut reopened = 0;
    for _ in 0..400 {
        let again = open(&first, &app).await;
        reopened = again.status().as_u16();
        if reopened == 200 {
            held.push(again);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = app.metrics().await;

    assert_eq!(over_status, 429, "{over_body}");
    assert!(over_body["error"].is_string(), "{over_body}");
    assert!(retry_after.is_some(), "Retry-After is sent");
    assert_eq!(other_status, 200, "another address still gets a stream");
    assert_eq!(reopened, 200, "a closed stream frees its slot");
    assert!(
        metrics.contains("live_streams_refused_total{reason=\"per_client\"}"),
        "the refusal is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_while_nobody_watches_and_posts_pour_in_misses_nothing_after_its_first() {
    // Arrange: with no subscriber the tail only skims the log (no messages read); each round
    // subscribes anew from that state, in the middle of a burst of posts.
    let app = TestApp::with_lua().await;
    let client = http();
    for round in 0..5 {
        let burst = {
            let (client, base) = (client.clone(), app.base.clone());
            tokio::spawn(async move {
                let posts = (0..4).map(|writer| {
                    let (client, base) = (client.clone(), base.clone());
                    tokio::spawn(async move {
                        let mut ids = Vec::new();
                        for i in 0..40 {
                            let text = format!("r{round} w{writer} m{i}");
                            let (status, _, body) =
                                post(&client, &base, "a", &text, None).await.expect("post");
                            assert_eq!(status, 201);
                            ids.push(body["id"].as_u64().expect("an id"));
                        }
                        ids
                    })
                });
                let mut last = 0;
                for writer in posts {
                    last = last.max(*writer.await.expect("writer").iter().max().expect("ids"));
                }
                last
            })
        };

        // Act: subscribe while the burst runs, then read until its last message.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let tap =
            crate::helpers::EventTap::open(&client, &app.url("/api/messages/stream"), None).await;
        let last = burst.await.expect("burst");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tap.events().last().is_none_or(|(id, _)| *id < last)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        // Assert: every id from the first received to the burst's last, once, in order.
        let ids: Vec<u64> = tap.events().iter().map(|(id, _)| *id).collect();
        let first = *ids.first().expect("events");
        assert_eq!(ids, (first..=last).collect::<Vec<_>>(), "round {round}");
        drop(tap);
        // Let the tail see the subscriber leave and go back to skimming.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
