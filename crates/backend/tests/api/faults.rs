//! Fault injection: seed 002's `/config/*` and `/data`, plus faults on the Redis hop.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{ADMIN_TOKEN, RedisServer, TestApp, get_json, http, post, settings};

#[tokio::test]
async fn fault_endpoints_do_not_exist_unless_enabled() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.fault_injection = false;
    let app = TestApp::spawn(settings).await;
    let client = http();
    for path in ["/config/failure", "/config/latency", "/config/redis"] {
        let response = client
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .body("{}")
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
    let response = client
        .get(app.url("/config/get"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn fault_endpoints_require_the_admin_token_when_one_is_set() {
    let app = TestApp::with_lua().await;
    let client = http();

    let anonymous = client
        .post(app.url("/config/failure"))
        .body(r#"{"failure_rate": 1}"#)
        .send()
        .await
        .expect("answers");
    let wrong = client
        .post(app.url("/config/failure"))
        .bearer_auth("wrong-token-wrong-token")
        .body(r#"{"failure_rate": 1}"#)
        .send()
        .await
        .expect("answers");

    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(wrong.status().as_u16(), 401);
    let data = client.get(app.url("/data")).send().await.expect("answers");
    assert_eq!(data.status().as_u16(), 200, "nothing changed");
}

#[tokio::test]
async fn seed_002s_curl_without_a_content_type_injects_failures_into_data() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.admin_token = None;
    let app = TestApp::spawn(settings).await;
    let client = http();
    let healthy: serde_json::Value = get_json(&client, &app.url("/data")).await;
    assert_eq!(
        healthy,
        serde_json::json!({"message": "OK", "note": "BackendService healthy"})
    );

    // Exactly what seed 002 runs: curl -X POST .../config/failure -d '{...}' (no JSON type).
    let configured = client
        .post(app.url("/config/failure"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"failure_rate": 1.0, "status_code": 503}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(configured.status().as_u16(), 200);
    let body: serde_json::Value = configured.json().await.expect("json");
    assert_eq!(body["config"]["failure_rate"], 1.0);

    let failed = client.get(app.url("/data")).send().await.expect("answers");
    assert_eq!(failed.status().as_u16(), 503);
    let failed: serde_json::Value = failed.json().await.expect("an error body");
    assert_eq!(failed["code"], "injected-failure", "{failed}");
    let current: serde_json::Value = get_json(&client, &app.url("/config/get")).await;
    assert_eq!(current["status_code"], 503);
}

#[tokio::test]
async fn out_of_range_fault_values_are_refused() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    for (path, body, expected) in [
        ("/config/failure", r#"{"failure_rate": 1.5}"#, 422),
        ("/config/failure", r#"{"status_code": 200}"#, 422),
        ("/config/failure", r#"{"failure_rat": 0.5}"#, 422),
        ("/config/latency", r#"{"delay_rate": -0.1}"#, 422),
        ("/config/latency", r#"{"delay_ms": 999999999}"#, 422),
        ("/config/redis", r#"{"failure_rate": 2}"#, 422),
        ("/config/redis", r#"{"delay_ms": "#, 400),
    ] {
        let response = client
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), expected, "{path} {body}");
    }
}

#[tokio::test]
async fn redis_hop_failures_turn_appends_into_503s_and_write_nothing() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    let set = |body: &'static str| {
        client
            .post(app.url("/config/redis"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
    };
    assert_eq!(
        set(r#"{"failure_rate": 1.0}"#)
            .await
            .expect("answers")
            .status()
            .as_u16(),
        200
    );

    let (status, _, _) = post(&client, &app.base, "a", "b", None)
        .await
        .expect("answers");

    assert_eq!(status, 503);
    assert_eq!(
        set(r#"{"failure_rate": 0.0}"#)
            .await
            .expect("answers")
            .status()
            .as_u16(),
        200
    );
    let page: serde_json::Value = get_json(&client, &app.url("/api/messages")).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_redis_delay_beyond_the_timeout_answers_503_instead_of_hanging() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.redis.redis_timeout_ms = 200;
    let app = TestApp::spawn(settings).await;
    let client = http();
    let configured = client
        .post(app.url("/config/redis"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"delay_ms": 1000}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(configured.status().as_u16(), 200);

    let (status, _, body) = post(&client, &app.base, "a", "b", None)
        .await
        .expect("answers");

    assert_eq!(status, 503, "{body}");
    // The call may have reached Redis before its answer was given up on: only a retry with
    // the same Idempotency-Key is safe, and the answer says so.
    assert_eq!(body["code"], "outcome-unknown", "{body}");
    assert_eq!(
        body["error"],
        "temporarily unavailable: timeout; the message may have been written: \
         retry only with the same Idempotency-Key"
    );
}
