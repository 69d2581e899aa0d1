//! `/config/*` refuses cross-site requests (CSRF): a web page on any site can make a browser
//! POST `text/plain` or a form there, and with `FAULT_INJECTION=true` and no `ADMIN_TOKEN` (as
//! `make run`, compose and the minikube overlay ship) nothing else would stop it. Requests
//! without browser headers (seed 002's curl) still work.

use guestbook_backend::store::AppendStrategy;
use serde_json::Value;

use crate::helpers::{RedisServer, TestApp, get_json, http, settings};

const INJECTION: &str = r#"{"failure_rate": 1.0, "status_code": 500}"#;

/// A backend as `make run` starts it: fault injection on, no admin token.
async fn open_backend(redis: &RedisServer) -> TestApp {
    let mut settings = settings(redis, AppendStrategy::Lua);
    settings.admin_token = None;
    TestApp::spawn(settings).await
}

#[tokio::test]
async fn a_cross_site_post_to_config_is_refused_and_changes_nothing() {
    let redis = RedisServer::start().await;
    let app = open_backend(&redis).await;
    let client = http();
    let before: Value = get_json(&client, &app.url("/config/get")).await;
    let other_port = app.base.rsplit_once(':').unwrap().1.parse::<u16>().unwrap() ^ 1;

    let mut answers = Vec::new();
    for path in ["/config/failure", "/config/latency", "/config/redis"] {
        for (content_type, origin) in [
            ("text/plain", "http://evil.example".to_owned()),
            (
                "application/x-www-form-urlencoded",
                "https://evil.example".to_owned(),
            ),
            ("text/plain", "null".to_owned()),
            ("text/plain", format!("http://127.0.0.1:{other_port}")),
        ] {
            let body = if path == "/config/failure" {
                INJECTION
            } else {
                r#"{"delay_ms": 600000}"#
            };
            let answer = client
                .post(app.url(path))
                .header("content-type", content_type)
                .header("origin", &origin)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            answers.push((path, origin, status, body));
        }
    }
    let after: Value = get_json(&client, &app.url("/config/get")).await;

    assert_eq!(after, before, "no fault changed");
    for (path, origin, status, body) in answers {
        assert_eq!(status, 403, "{path} from {origin}: {body}");
        assert_eq!(body["error"], "cross-site request refused");
    }
}

#[tokio::test]
async fn a_post_marked_sec_fetch_site_cross_site_is_refused() {
    let redis = RedisServer::start().await;
    let app = open_backend(&redis).await;
    let client = http();

    let answer = client
        .post(app.url("/config/failure"))
        .header("content-type", "text/plain")
        .header("sec-fetch-site", "cross-site")
        .body(INJECTION)
        .send()
        .await
        .unwrap();
    let after: Value = get_json(&client, &app.url("/config/get")).await;

    assert_eq!(answer.status().as_u16(), 403);
    assert_eq!(after["failure_rate"], 0.0, "{after}");
}

#[tokio::test]
async fn same_origin_and_curl_style_posts_still_change_faults() {
    let redis = RedisServer::start().await;
    let app = open_backend(&redis).await;
    let client = http();

    // The backend's own page would send its own origin (and Sec-Fetch-Site: same-origin).
    let same_origin = client
        .post(app.url("/config/latency"))
        .header("origin", &app.base)
        .header("sec-fetch-site", "same-origin")
        .body(r#"{"delay_ms": 5, "delay_rate": 0.5}"#)
        .send()
        .await
        .unwrap();
    // Seed 002: curl -X POST http://localhost:8080/config/failure -d '{...}'
    let curl = client
        .post(app.url("/config/failure"))
        .body(INJECTION)
        .send()
        .await
        .unwrap();
    let after: Value = get_json(&client, &app.url("/config/get")).await;

    assert_eq!(same_origin.status().as_u16(), 200);
    assert_eq!(curl.status().as_u16(), 200);
    assert_eq!(after["delay_ms"], 5, "{after}");
    assert_eq!(after["failure_rate"], 1.0, "{after}");
}
