//! Security defaults: per-client write limits, the header size limit, closed CORS.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, TestApp, http, post, read_all, settings};

#[tokio::test]
async fn writes_over_the_per_client_rate_get_429_and_write_nothing() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.rate_limit_writes_per_sec = 0.5;
    settings.rate_limit_writes_burst = 3;
    let app = TestApp::spawn(settings).await;
    let client = http();

    let mut statuses = Vec::new();
    for n in 0..5 {
        let (status, _, _) = post(&client, &app.base, "a", &format!("m{n}"), None)
            .await
            .unwrap();
        statuses.push(status);
    }
    let refused = client
        .post(app.url("/api/messages"))
        .json(&serde_json::json!({"author": "a", "text": "again"}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let refused_status = refused.status().as_u16();
    let body: serde_json::Value = refused.json().await.unwrap();
    let stored = read_all(&client, &app.base).await;

    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    assert_eq!(refused_status, 429);
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert!(body["error"].as_str().unwrap().contains("too many writes"));
    assert_eq!(
        stored.len(),
        3,
        "reads are not limited and refused writes wrote nothing"
    );
}

#[tokio::test]
async fn writes_are_not_limited_by_default() {
    let app = TestApp::with_lua().await;
    let client = http();

    for n in 0..60 {
        let (status, _, _) = post(&client, &app.base, "a", &format!("m{n}"), None)
            .await
            .unwrap();
        assert_eq!(status, 201, "write {n}");
    }
}

#[tokio::test]
async fn headers_over_16_kib_get_431() {
    let app = TestApp::with_lua().await;
    let client = http();

    let small = client
        .get(app.url("/api/messages"))
        .header("x-padding", "p".repeat(15 * 1024))
        .send()
        .await
        .unwrap();
    let large = client
        .get(app.url("/api/messages"))
        .header("x-padding", "p".repeat(8 * 1024))
        .header("x-more-padding", "p".repeat(9 * 1024))
        .send()
        .await
        .unwrap();

    assert_eq!(small.status().as_u16(), 200);
    assert_eq!(large.status().as_u16(), 431);
    let body: serde_json::Value = large.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("headers"));
    // One layer order in both services (`guestbook_common::service::layers`): a 431 is counted
    // in the HTTP histogram like any other answer, as the client's twin test checks.
    let metrics = app.metrics().await;
    assert!(counted_431(&metrics, "/api/messages"), "{metrics}");
}

/// Whether `metrics` counts exactly one 431 answer on `route`.
fn counted_431(metrics: &str, route: &str) -> bool {
    let route = format!("route=\"{route}\"");
    metrics.lines().any(|line| {
        line.starts_with("http_request_duration_seconds_count{")
            && line.contains(&route)
            && line.contains("status=\"431\"")
            && line.ends_with(" 1")
    })
}

#[tokio::test]
async fn cors_is_closed_no_origin_gets_an_allow_header() {
    let app = TestApp::with_lua().await;
    let client = http();

    let preflight = client
        .request(reqwest::Method::OPTIONS, app.url("/api/messages"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    let simple = client
        .get(app.url("/api/messages"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();

    assert!(!preflight.status().is_success(), "{}", preflight.status());
    for answer in [&preflight, &simple] {
        let cors: Vec<_> = answer
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "CORS headers: {cors:?}");
    }
}
