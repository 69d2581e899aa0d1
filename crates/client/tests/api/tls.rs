//! `BACKEND_URL=https://...`: the real backend behind a TLS-terminating proxy whose
//! certificate a test CA signed. The client runs as its own process so that `SSL_CERT_FILE`
//! (where it finds the roots it trusts) is set for it alone.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestbook_testkit::{TestCertificates, TlsProxy, free_port};

use crate::helpers::{
    RedisServer, backend, backend_calls, get_json, get_status, http, read_events_until,
};

/// A client process, killed on drop.
struct ClientProcess {
    child: Child,
    base: String,
}

impl ClientProcess {
    async fn spawn(backend_url: &str, trusted_roots: &Path) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_guestbook-client"))
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("BACKEND_URL", backend_url)
            .env("SSL_CERT_FILE", trusted_roots)
            .env("SHUTDOWN_DELAY_SECS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the client binary runs");
        let base = format!("http://127.0.0.1:{port}");
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/liveness")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the client never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_serves_fetch_the_api_proxy_and_the_stream() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let proxy = TlsProxy::start(addr(&backend.base)).await;
    let client = ClientProcess::spawn(&proxy.url(), proxy.ca_file()).await;
    let http = http();

    let fetched = http
        .get(client.url("/fetch"))
        .send()
        .await
        .expect("answers");
    assert_eq!(fetched.status().as_u16(), 200);
    let body: serde_json::Value = fetched.json().await.expect("json");
    assert_eq!(body["data"]["message"], "OK", "{body}");

    let stream = http
        .get(client.url("/api/messages/stream"))
        .send()
        .await
        .expect("connects");
    assert_eq!(stream.status().as_u16(), 200);
    let mut events = stream.bytes_stream();

    let posted = http
        .post(client.url("/api/messages"))
        .header("Idempotency-Key", "tls-1")
        .json(&serde_json::json!({"author": "a", "text": "over https"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(posted.status().as_u16(), 201);
    let listed: serde_json::Value = get_json(&http, client.url("/api/messages")).await;
    assert_eq!(listed["messages"][0]["text"], "over https", "{listed}");

    let mut seen = String::new();
    read_events_until(&mut events, &mut seen, |seen| seen.contains("over https")).await;
    assert!(proxy.handshakes() >= 2, "the calls went through TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_backend_certificate_fails_closed() {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let proxy = TlsProxy::start(addr(&backend.base)).await;
    let foreign = TestCertificates::create();
    let client = ClientProcess::spawn(&proxy.url(), &foreign.ca_file).await;
    let http = http();

    for path in ["/fetch", "/api/messages", "/api/messages/stream"] {
        assert_eq!(get_status(&http, client.url(path)).await, 503, "{path}");
    }

    assert_eq!(
        proxy.handshakes(),
        0,
        "no handshake with an untrusted server"
    );
    let reached = backend_calls(&http, &backend, "GET", "/data").await
        + backend_calls(&http, &backend, "GET", "/api/messages").await;
    assert_eq!(reached, 0, "nothing reached the backend");
}

/// Runs the client with `env` until it exits (killed after 20 s if it starts serving instead);
/// returns its exit code and stderr.
fn exit_of(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guestbook-client"));
    command
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("waits").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_backend_url_of_another_scheme_or_without_a_host_is_refused_at_start() {
    for url in [
        "ftp://backend:21",
        "backend:8080",
        "127.0.0.1:8080",
        "http://",
        "https://",
    ] {
        let (code, stderr) = exit_of(&[("BACKEND_URL", url)]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{url}: {stderr:?}");
    }
}

#[test]
fn an_https_backend_without_a_loadable_root_is_refused_at_start() {
    let (code, stderr) = exit_of(&[
        ("BACKEND_URL", "https://127.0.0.1:8443"),
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
}
