//! `rediss://` with an ACL user, against a real TLS-only `redis-server` whose certificate a
//! test CA signed. The backend runs as its own process so that `SSL_CERT_FILE` (where rustls
//! finds the roots it trusts) is set for it alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestbook_testkit::free_port;

use crate::helpers::{RedisServer, get_json, http, post};

/// A backend process, killed on drop.
struct BackendProcess {
    child: Child,
    base: String,
}

impl BackendProcess {
    async fn spawn(redis_url: &str, trusted_roots: &Path) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_guestbook-backend"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url)
            .env("SSL_CERT_FILE", trusted_roots)
            .env("REDIS_TIMEOUT_MS", "500")
            .env("SHUTDOWN_DELAY_SECS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the backend binary runs");
        let base = format!("http://127.0.0.1:{port}");
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/liveness")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the backend never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_with_an_acl_user_works_and_anything_less_is_refused() {
    let redis = RedisServer::start_tls_with_user("guestbook", "tls-test-password-1").await;
    let other = RedisServer::start_tls_with_user("guestbook", "unused").await;
    let ca = redis.ca_file().expect("a TLS server has a CA");
    let foreign_ca = other.ca_file().expect("a TLS server has a CA");
    let client = http();

    let good = BackendProcess::spawn(&redis.url(), ca).await;
    let (status, _, body) = post(&client, &good.base, "a", "over TLS", Some("k"))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{body}");
    let listed = get_json(&client, &format!("{}/api/messages", good.base)).await;
    assert_eq!(listed["messages"][0]["text"], "over TLS");
    let health = get_json(&client, &format!("{}/health/dependencies", good.base)).await;
    assert_eq!(health["redis_primary"]["status"], "up", "{health}");

    let port = redis.port();
    let refused = [
        (
            "a wrong password",
            format!("rediss://guestbook:wrong@127.0.0.1:{port}"),
            ca,
        ),
        ("the default user", format!("rediss://127.0.0.1:{port}"), ca),
        (
            "plaintext",
            format!("redis://guestbook:tls-test-password-1@127.0.0.1:{port}"),
            ca,
        ),
        ("an untrusted certificate", redis.url(), foreign_ca),
    ];
    for (what, url, roots) in refused {
        let backend = BackendProcess::spawn(&url, roots).await;
        let (status, _, body) = post(&client, &backend.base, "a", "refused", None)
            .await
            .expect("answers");
        assert_eq!(status, 503, "{what}: {body}");
        // Still live: Redis trouble never takes the process down (seed 004).
        let live = client
            .get(format!("{}/liveness", backend.base))
            .send()
            .await
            .expect("answers");
        assert_eq!(live.status().as_u16(), 200, "{what}");
    }
    let listed = get_json(&client, &format!("{}/api/messages", good.base)).await;
    assert_eq!(listed["messages"].as_array().map(Vec::len), Some(1));
}
