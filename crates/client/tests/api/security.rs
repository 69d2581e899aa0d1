//! Security defaults at the edge: per-browser write limits, the header size limit, closed
//! CORS, and no password from BACKEND_URL in `/status`.

use crate::helpers::{
    RedisServer, backend, backend_calls, client, client_settings, get_json, http,
};

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

    let status: serde_json::Value = get_json(&http(), client.url("/status")).await;

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
    assert!(large.headers().contains_key("content-security-policy"));
    // One layer order in both services (`guestbook_common::service::layers`): a 431 is counted
    // in the HTTP histogram like any other answer, as the backend's twin test checks.
    let metrics = crate::helpers::metrics_text(&http, &client).await;
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("http_request_duration_seconds_count{")
                && line.contains("route=\"/status\"")
                && line.contains("status=\"431\"")
                && line.ends_with(" 1")
        }),
        "{metrics}"
    );
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

/// POSTs an empty JSON object to `path` on `server` over a fresh connection from `source`
/// (any address of 127.0.0.0/8 is this machine); returns the status code.
async fn post_from(source: std::net::Ipv4Addr, server: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let mut stream = socket.connect(server).await.expect("connects");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("reads");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// One client that is being limited stays limited while another cycles through more source
/// addresses than the limiter tracks (65,536): only the least recently seen are dropped.
/// The rate is set low so that no bucket refills during the test and only a reset could let
/// the limited client through; the backend is a closed port, so no write goes anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_client_stays_limited_while_another_cycles_source_addresses() {
    use futures_util::StreamExt;
    use std::net::Ipv4Addr;

    let closed = guestbook_testkit::free_port();
    let mut settings = guestbook_client::Settings::for_tests(&format!("http://127.0.0.1:{closed}"));
    settings.rate_limit_writes_per_sec = 0.001;
    settings.rate_limit_writes_burst = 1;
    let client = client(settings).await;
    let server: std::net::SocketAddr = client.base["http://".len()..].parse().expect("addr");
    let limited = Ipv4Addr::new(127, 0, 0, 1);

    assert_ne!(post_from(limited, server, "/api/messages").await, 429);
    assert_eq!(post_from(limited, server, "/api/messages").await, 429);

    // The other client's addresses come in rounds; between rounds the limited client writes
    // again (and is refused), as one that keeps writing would.
    let round = 4_096;
    let rounds = guestbook_common::rate_limit::MAX_CLIENTS as u32 / round + 2;
    let first = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    for r in 0..rounds {
        let statuses: Vec<u16> = futures_util::stream::iter(r * round..(r + 1) * round)
            .map(|n| post_from(Ipv4Addr::from(first + n), server, "/api/messages"))
            .buffer_unordered(32)
            .collect()
            .await;
        assert!(
            statuses.iter().all(|status| *status != 429),
            "each cycled address is new, so none is limited"
        );
        assert_eq!(
            post_from(limited, server, "/api/messages").await,
            429,
            "the limited client was let through after {} other addresses",
            (r + 1) * round
        );
    }
}
