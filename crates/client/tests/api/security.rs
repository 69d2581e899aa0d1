//! Security defaults at the edge: per-browser write limits, the header size limit, closed
//! CORS, and no password from BACKEND_URL in `/status`.

use crate::helpers::{RedisServer, backend, backend_calls, client, client_settings, http};

#[tokio::test]
async fn writes_over_the_per_client_rate_get_429_without_reaching_the_backend() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let mut settings = client_settings(&backend);
    settings.rate_limit_writes_per_sec = 0.5;
    settings.rate_limit_writes_burst = 2;
    let client = client(settings).await;
    let http = http();

    let mut statuses = Vec::new();
    for n in 0..4 {
        let answer = http
            .post(client.url("/api/messages"))
            .json(&serde_json::json!({"author": "a", "text": format!("m{n}")}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    let read = http.get(client.url("/api/messages")).send().await.unwrap();
    let posts = backend_calls(&http, &backend, "POST", "/api/messages").await;

    assert_eq!(statuses, [201, 201, 429, 429]);
    assert_eq!(read.status().as_u16(), 200, "reads are not limited");
    assert_eq!(posts, 2, "refused writes never reach the backend");
}

#[test]
fn the_client_limits_writes_by_default() {
    let settings = guestbook_client::Settings::for_tests("http://127.0.0.1:1");
    assert!(settings.rate_limit_writes_per_sec > 0.0);
}

#[tokio::test]
async fn status_shows_no_password_from_the_backend_url() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let mut settings = client_settings(&backend);
    settings.backend_url = backend.base.replace("http://", "http://ops:hunter2@");
    let client = client(settings).await;

    let status: serde_json::Value = http()
        .get(client.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let shown = status["backend_url"].as_str().unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.starts_with("http://ops:***@127.0.0.1:"), "{shown}");
}

#[tokio::test]
async fn headers_over_16_kib_get_431_and_cors_is_closed() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let client = client(client_settings(&backend)).await;
    let http = http();

    let large = http
        .get(client.url("/status"))
        .header("x-padding", "p".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    let preflight = http
        .request(reqwest::Method::OPTIONS, client.url("/api/messages"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();

    assert_eq!(large.status().as_u16(), 431);
    let cors: Vec<_> = preflight
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "CORS headers: {cors:?}");
}

#[test]
fn help_shows_no_password_from_the_backend_url() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_guestbook-client"))
        .arg("--help")
        .env_clear()
        .env("BACKEND_URL", "https://ops:hunter2@backend.invalid:8443")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("BACKEND_URL"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
