//! The client's own endpoints: the /api proxy (SSE included), the load generator, the stale
//! fallback, and its settings.

use std::time::Duration;

use crate::helpers::{
    Stack, backend_calls, fail, fetch, get_json, json_of, read_events_until, stack,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_proxied_both_ways_with_its_errors_intact() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;

    let created = http
        .post(client.url("/api/messages"))
        .header("Idempotency-Key", "via-client")
        .json(&serde_json::json!({"author": "Mary", "text": "through the client"}))
        .send()
        .await
        .expect("answers");
    let invalid = http
        .post(client.url("/api/messages"))
        .json(&serde_json::json!({"author": "", "text": "x"}))
        .send()
        .await
        .expect("answers");
    let listed: serde_json::Value = get_json(&http, client.url("/api/messages?after=0")).await;

    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(
        invalid.status().as_u16(),
        422,
        "the backend's validation answer passes through"
    );
    assert_eq!(listed["messages"][0]["text"], "through the client");
    assert_eq!(
        backend_calls(&http, &backend, "POST", "/api/messages").await,
        2,
        "no retry of a 4xx or a 201"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_stream_through_the_client_and_resume() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    for i in 0..3 {
        http.post(backend.url("/api/messages"))
            .json(&serde_json::json!({"author": "a", "text": format!("m{i}")}))
            .send()
            .await
            .expect("post");
    }

    let response = http
        .get(client.url("/api/messages/stream"))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("stream connects");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    read_events_until(&mut body, &mut text, |text| {
        text.matches("id: ").count() >= 2
    })
    .await;

    assert!(
        text.contains("id: 2") && text.contains("id: 3") && !text.contains("id: 1\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_bounded_and_stops_on_request() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;

    let started: serde_json::Value =
        json_of(http.post(client.url("/start-load")).body(r#"{"rate": 20}"#)).await;
    let again: serde_json::Value = json_of(http.post(client.url("/start-load"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped: serde_json::Value = json_of(http.post(client.url("/stop-load"))).await;
    let calls = backend_calls(&http, &backend, "GET", "/data").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = backend_calls(&http, &backend, "GET", "/data").await;
    let bad = http
        .post(client.url("/start-load"))
        .body(r#"{"rate": -1}"#)
        .send()
        .await
        .expect("answers");

    assert_eq!(started["status"], "started");
    assert_eq!(again["status"], "already-running");
    assert_eq!(stopped["status"], "stopped");
    assert!((5..=15).contains(&calls), "about 20/s for 0.5 s: {calls}");
    assert_eq!(later, calls, "nothing after stop");
    assert_eq!(bad.status().as_u16(), 422);
}

#[tokio::test]
async fn a_null_load_body_or_null_fields_take_the_defaults() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;
    for body in ["null", r#"{"rate": null, "duration_secs": 1}"#, ""] {
        let answer = http
            .post(client.url("/start-load"))
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status().as_u16(), 200, "{body}");
        let stopped = http
            .post(client.url("/stop-load"))
            .send()
            .await
            .expect("answers");
        assert_eq!(stopped.status().as_u16(), 200);
    }
    // A blank body is not JSON (schemathesis found it accepted), unlike no body at all.
    for body in ["[5, 1]", r#"{"duration_secs": 86401}"#, " ", "\n"] {
        let refused = http
            .post(client.url("/start-load"))
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status().as_u16(), 422, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fallback_cache_a_failed_fetch_answers_the_last_good_data_as_stale() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        settings.fallback_cache_secs = 60;
    })
    .await;
    assert_eq!(fetch(&http, &client).await.0, 200);

    fail(&http, &backend, 1.0, Some(500)).await;
    let (status, body) = fetch(&http, &client).await;

    assert_eq!(status, 200);
    assert_eq!(body["status"], "stale");
    assert_eq!(body["data"]["message"], "OK");
    assert_eq!(body["message"], "backend answered 500");
}

#[test]
fn bad_settings_exit_2_with_one_line() {
    for (name, value) in [
        ("BACKEND_URL", "ftp://x"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("BREAKER_FAILURE_RATE", "0"),
        ("BREAKER_MIN_CALLS", "50"),
        ("BACKEND_TIMEOUT_MS", "99999999"),
        ("MAX_STREAMS_PER_CLIENT", "0"),
        ("MAX_STREAMS_PER_CLIENT", "257"),
        ("MAX_STREAM_CLIENTS", "0"),
        ("HEADER_READ_TIMEOUT_SECS", "0"),
        ("IDLE_TIMEOUT_SECS", "0"),
        ("MAX_CONNECTIONS", "0"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_guestbook-client"))
            .env_clear()
            .env(name, value)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}={value}: {stderr:?}"
        );
    }
}
