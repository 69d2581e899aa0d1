//! `/api/*` forwards only the guestbook operations, by exact route: paths that a browser or
//! reqwest would normalise (`..`, `%2e%2e`, `//`), sent raw, never reach another backend route,
//! and never tie up the buffered stack or open the circuit.

use serde_json::Value;

use crate::helpers::{Stack, backend_calls, backend_requests, get_json, raw_request, stack};

/// Whether `body` is the client's `{"error": "..."}`.
fn is_error_json(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|value| value["error"].is_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_under_api_never_reach_the_backends_fault_controls() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    let injection = r#"{"failure_rate": 1.0, "status_code": 500}"#;

    let mut answers = Vec::new();
    for target in [
        "/api/../config/failure",
        "/api/%2e%2e/config/failure",
        "/api/%2E%2E/config/failure",
        "/api/.%2e/config/failure",
        "/api/messages/../../config/failure",
        "/api/%2e%2e%2fconfig%2ffailure",
        "/api/..%5cconfig%5cfailure",
    ] {
        answers.push((
            target,
            raw_request(&client, "POST", target, injection).await,
        ));
    }
    let faults: Value = get_json(&http, backend.url("/config/get")).await;

    for (target, (status, body)) in &answers {
        assert!(
            [400, 404].contains(status) && is_error_json(body),
            "{target}: {status} {body}"
        );
    }
    assert_eq!(faults["failure_rate"], 0.0, "{faults}");
    assert_eq!(
        backend_calls(&http, &backend, "POST", "/config/failure").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_paths_to_the_stream_or_slow_never_reach_the_stack_or_open_the_circuit() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    let before = backend_requests(&http, &backend).await;

    // Concurrently, as an attacker would: each of these used to hold a buffered call until the
    // deadline (the stream never ends) and three such failures opened the circuit for everyone.
    let targets = [
        "/api/./messages/stream",
        "/api/messages/./stream",
        "/api/%2e/messages/stream",
        "/api//messages/stream",
        "/api/../slow",
        "/api/%2E%2E/slow",
    ];
    let answers = futures_util::future::join_all(
        targets
            .iter()
            .map(|target| raw_request(&client, "GET", target, "")),
    )
    .await;
    let status: Value = get_json(&http, client.url("/status")).await;
    let after = backend_requests(&http, &backend).await;

    for (target, (code, body)) in targets.iter().zip(&answers) {
        assert!(
            [400, 404].contains(code) && is_error_json(body),
            "{target}: {code} {body}"
        );
    }
    assert_eq!(status["circuit_state"], "closed", "{status}");
    assert_eq!(after, before, "the backend saw none of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_path_under_api_is_a_404_that_reaches_nothing() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    let before = backend_requests(&http, &backend).await;

    let mut answers = Vec::new();
    for (method, target) in [
        ("GET", "/api/data"),
        ("GET", "/api/slow"),
        ("GET", "/api/health/dependencies"),
        ("GET", "/api/messages/"),
        ("GET", "/api/messages/1"),
        ("GET", "/api/messages/stream/"),
        ("POST", "/api/config/failure"),
        ("GET", "/api/"),
        ("GET", "/api"),
    ] {
        answers.push((
            method,
            target,
            raw_request(&client, method, target, "").await,
        ));
    }
    let after = backend_requests(&http, &backend).await;

    assert_eq!(after, before, "the backend saw none of them");
    for (method, target, (status, body)) in &answers {
        assert!(
            *status == 404 && is_error_json(body),
            "{method} {target}: {status} {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_query_reaches_the_backend_re_encoded() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;
    for n in 0..3 {
        let created = http
            .post(client.url("/api/messages"))
            .json(&serde_json::json!({"author": "a", "text": format!("m{n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
    }

    // `%31` is `1` however it is spelled; a stray `#`-free oddity such as `%26` stays data.
    let (status, body) =
        raw_request(&client, "GET", "/api/messages?limit=%31&order=desc", "").await;
    let (bad, bad_body) =
        raw_request(&client, "GET", "/api/messages?limit=1%26after%3D0", "").await;

    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["messages"][0]["text"], "m2");
    assert_eq!(
        bad, 400,
        "an encoded `&` is part of the value, not a new parameter: {bad_body}"
    );
}
