//! `DELETE /api/messages` and `/health/dependencies`.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{ADMIN_TOKEN, RedisServer, TestApp, get_json, http, post, read_all, settings};

#[tokio::test]
async fn clearing_needs_the_token_and_does_not_exist_without_one() {
    let redis = RedisServer::start().await;
    let mut without = settings(&redis, AppendStrategy::Lua);
    without.admin_token = None;
    let open = TestApp::spawn(without).await;
    let guarded = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    post(&client, &guarded.base, "a", "keep me", Some("k"))
        .await
        .expect("post");

    let no_admin = client
        .delete(open.url("/api/messages"))
        .send()
        .await
        .expect("answers");
    let no_token = client
        .delete(guarded.url("/api/messages"))
        .send()
        .await
        .expect("answers");
    let bad_token = client
        .delete(guarded.url("/api/messages"))
        .bearer_auth("x".repeat(27))
        .send()
        .await
        .expect("answers");

    assert_eq!(no_admin.status().as_u16(), 404);
    assert_eq!(no_token.status().as_u16(), 401);
    assert_eq!(bad_token.status().as_u16(), 401);
    assert_eq!(read_all(&client, &guarded.base).await.len(), 1);
}

#[tokio::test]
async fn clearing_removes_messages_and_keys_but_never_reuses_ids() {
    for strategy in [AppendStrategy::Lua, AppendStrategy::Naive] {
        let redis = RedisServer::start().await;
        let app = TestApp::spawn(settings(&redis, strategy)).await;
        let client = http();
        for i in 0..3 {
            post(
                &client,
                &app.base,
                "a",
                &format!("m{i}"),
                Some(&format!("key-{i}")),
            )
            .await
            .expect("post");
        }

        let cleared = client
            .delete(app.url("/api/messages"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answers");

        assert_eq!(cleared.status().as_u16(), 200, "{strategy:?}");
        let body: serde_json::Value = cleared.json().await.expect("json");
        assert_eq!(body["deleted"], 3, "{strategy:?}");
        assert!(
            read_all(&client, &app.base).await.is_empty(),
            "{strategy:?}"
        );
        let (status, replayed, body) = post(&client, &app.base, "a", "m0", Some("key-0"))
            .await
            .expect("post");
        assert_eq!(
            (status, replayed),
            (201, false),
            "{strategy:?}: the key was forgotten too"
        );
        if strategy == AppendStrategy::Lua {
            assert_eq!(body["id"], 4, "ids continue after a clear");
        }
    }
}

#[tokio::test]
async fn dependency_health_reports_redis_without_failing_readiness() {
    let mut redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.redis.redis_timeout_ms = 200;
    let app = TestApp::spawn(settings).await;
    let client = http();
    let up: serde_json::Value = get_json(&client, &app.url("/health/dependencies")).await;
    assert_eq!(up["redis_primary"]["status"], "up");
    assert_eq!(up["append_strategy"], "lua");

    redis.kill();
    let down = client
        .get(app.url("/health/dependencies"))
        .send()
        .await
        .expect("answers");
    let ready = client
        .get(app.url("/readiness"))
        .send()
        .await
        .expect("answers");

    assert_eq!(down.status().as_u16(), 200, "diagnostics always answer");
    let down: serde_json::Value = down.json().await.expect("json");
    assert_eq!(down["redis_primary"]["status"], "down");
    assert_eq!(
        ready.status().as_u16(),
        200,
        "seed 004: readiness never looks at Redis"
    );
}
