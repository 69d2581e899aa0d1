//! The live-update stream passthrough answers to the stack's guards: the circuit breaker
//! admits it, and it holds a `BACKEND_CONCURRENCY` slot while connecting and open.

use std::time::Duration;

use crate::helpers::{
    Running, Stack, backend_requests, default_stack, delay, fetch, inject, metric, stack, status,
};

/// Opens a stream through the client; the answer whatever its status.
async fn open_stream(http: &reqwest::Client, client: &Running) -> reqwest::Response {
    http.get(client.url("/api/messages/stream"))
        .send()
        .await
        .expect("the client answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_refuses_the_stream_at_once_without_asking_the_backend() {
    let Stack(_redis, backend, client, http) = default_stack().await;
    inject(
        &http,
        &backend,
        "/config/failure",
        r#"{"failure_rate": 1.0, "status_code": 503}"#,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(fetch(&http, &client).await.0, 503);
    }
    assert_eq!(status(&http, &client).await["circuit_state"], "open");
    let asked_before = backend_requests(&http, &backend).await;

    let refused = open_stream(&http, &client).await;
    let code = refused.status().as_u16();
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let streams_at_backend = metric(&http, &backend, "live_streams_open").await;
    // A 200 would be a stream whose body never ends: read only a refusal's body.
    let body: serde_json::Value = if code == 200 {
        serde_json::Value::Null
    } else {
        refused.json().await.unwrap_or_default()
    };

    assert_eq!((code, body["code"].as_str()), (503, Some("circuit-open")));
    assert!(body["error"].is_string(), "{body}");
    assert!(
        (1..=15).contains(&retry_after),
        "Retry-After is the time left open (BREAKER_RESET_SECS at most): {retry_after}"
    );
    assert_eq!(streams_at_backend, 0.0, "no stream at the backend");
    assert_eq!(
        backend_requests(&http, &backend).await,
        asked_before,
        "the backend was not asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_holds_a_backend_slot_until_it_ends() {
    let Stack(_redis, _backend, client, http) = default_stack().await;
    assert_eq!(status(&http, &client).await["backend_slots"]["in_use"], 0);

    let stream = open_stream(&http, &client).await;
    assert_eq!(stream.status().as_u16(), 200);
    let while_open = status(&http, &client).await["backend_slots"].clone();
    drop(stream);
    // A hang guard, not a latency assertion: the slot is freed when hyper drops the body.
    let mut after = serde_json::Value::Null;
    for _ in 0..200 {
        after = status(&http, &client).await["backend_slots"]["in_use"].clone();
        if after == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    assert_eq!(while_open["in_use"], 1, "{while_open}");
    assert_eq!(while_open["limit"], 512, "BACKEND_CONCURRENCY's default");
    assert_eq!(after, 0, "freed once the stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_finding_every_backend_slot_taken_is_refused_without_asking_the_backend() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        settings.backend_concurrency = 2;
        settings.max_stream_clients = 1;
        settings.max_streams_per_client = 1;
    })
    .await;
    // Two slow calls hold both slots (the delay is the backend's, under every timeout).
    delay(&http, &backend, 2000).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), client.url("/fetch"));
            tokio::spawn(async move { http.get(url).send().await.map(|answer| answer.status()) })
        })
        .collect();
    // A hang guard, not a latency assertion: both calls reach the backend well within it.
    for _ in 0..150 {
        if status(&http, &client).await["backend_slots"]["in_use"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let refused = open_stream(&http, &client).await;
    let code = refused.status().as_u16();
    let streams_at_backend = metric(&http, &backend, "live_streams_open").await;
    let body: serde_json::Value = if code == 200 {
        serde_json::Value::Null
    } else {
        refused.json().await.unwrap_or_default()
    };
    for call in slow {
        let answered = call.await.expect("the call ends");
        assert_eq!(answered.ok().map(|s| s.as_u16()), Some(200));
    }

    assert_eq!(
        (code, body["error"].as_str(), body["code"].as_str()),
        (
            503,
            Some("backend concurrency limit reached"),
            Some("unavailable")
        )
    );
    assert_eq!(streams_at_backend, 0.0, "no stream at the backend");
}
