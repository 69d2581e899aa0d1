//! The client's state changes that accept any body (`/start-load`, `/stop-load`) and the
//! admin `DELETE /api/messages` refuse cross-site requests (CSRF): a page elsewhere cannot
//! start seed 002's load generator against the backend through a visitor's browser.

use serde_json::Value;

use crate::helpers::{Stack, backend_calls, get_json, stack};

async fn load_running(http: &reqwest::Client, client: &crate::helpers::Running) -> bool {
    let status: Value = get_json(http, client.url("/status")).await;
    status["load"]["running"]
        .as_bool()
        .expect("/status shows the load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_start_load_is_refused_and_starts_nothing() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;

    let mut answers = Vec::new();
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let answer = http
            .post(client.url("/start-load"))
            .header("content-type", "text/plain")
            .header(name, value)
            .body(r#"{"rate": 1000}"#)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        answers.push((
            value,
            status,
            answer.json::<Value>().await.unwrap_or_default(),
        ));
    }
    let running = load_running(&http, &client).await;
    let calls = backend_calls(&http, &backend, "GET", "/data").await;

    assert!(!running, "no load was started");
    assert_eq!(calls, 0);
    for (sent, status, body) in answers {
        assert_eq!(status, 403, "{sent}: {body}");
        assert_eq!(body["error"], "cross-site request refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_stop_load_is_refused_and_same_origin_or_curl_is_not() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;

    let started = http
        .post(client.url("/start-load"))
        .header("origin", &client.base)
        .body(r#"{"rate": 1}"#)
        .send()
        .await
        .unwrap();
    let refused = http
        .post(client.url("/stop-load"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    let still_running = load_running(&http, &client).await;
    // curl style: no Origin at all.
    let stopped = http.post(client.url("/stop-load")).send().await.unwrap();

    assert_eq!(started.status().as_u16(), 200, "same-origin is accepted");
    assert_eq!(refused.status().as_u16(), 403);
    assert!(still_running, "the refused stop changed nothing");
    assert_eq!(stopped.status().as_u16(), 200);
    assert!(!load_running(&http, &client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_delete_of_the_guestbook_never_reaches_the_backend() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;

    let refused = http
        .delete(client.url("/api/messages"))
        .header("origin", "http://evil.example")
        .bearer_auth("a-token-the-page-somehow-has")
        .send()
        .await
        .unwrap();
    let refused_calls = backend_calls(&http, &backend, "DELETE", "/api/messages").await;
    let same_origin = http
        .delete(client.url("/api/messages"))
        .header("origin", &client.base)
        .send()
        .await
        .unwrap();

    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(refused_calls, 0);
    // Forwarded: this backend has no ADMIN_TOKEN, so its answer is its 404.
    assert_eq!(same_origin.status().as_u16(), 404);
    assert_eq!(
        backend_calls(&http, &backend, "DELETE", "/api/messages").await,
        1
    );
}
