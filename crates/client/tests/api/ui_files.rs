//! The built binary, started from a directory with no `frontend/` in it and with every
//! default, serves the UI (issue 15: it answered 404 at `/` unless started from the repository
//! root, which is where no container or package runs it from).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The child process, stopped when the test ends however it ends.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary in `dir` on a free loopback port and returns it with its address, read
/// from its "serving" log line.
fn start_in(dir: &std::path::Path) -> (Started, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guestbook-client"))
        .current_dir(dir)
        .env_remove("FRONTEND_DIR")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the client binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let started = Started(child);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("the client logs its address within 30 s");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = entry.pointer("/fields/addr").and_then(|a| a.as_str()) {
            return (started, format!("http://{addr}"));
        }
    }
}

#[tokio::test]
async fn the_binary_started_elsewhere_serves_the_ui() {
    let elsewhere = tempfile::tempdir().expect("an empty directory");
    let (_client, base) = start_in(elsewhere.path());
    let http = crate::helpers::http();

    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("/ answers");
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let body = page.text().await.expect("text");
    assert_eq!(body, include_str!("../../../../frontend/index.html"));

    let script = http
        .get(format!("{base}/js/main.js"))
        .send()
        .await
        .expect("answers");
    assert_eq!(script.status().as_u16(), 200);
    assert_eq!(
        script.text().await.expect("text"),
        include_str!("../../../../frontend/js/main.js")
    );
    let missing = http
        .get(format!("{base}/no-such-file.js"))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status().as_u16(), 404);
}

/// FRONTEND_DIR still serves a directory instead of the embedded copy (for editing the UI
/// without a rebuild).
#[tokio::test]
async fn frontend_dir_overrides_the_embedded_ui() {
    let redis = crate::helpers::RedisServer::start().await;
    let backend = crate::helpers::backend(&redis).await;
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(dir.path().join("index.html"), "<title>edited</title>").expect("written");
    let mut settings = crate::helpers::client_settings(&backend);
    settings.frontend_dir = Some(dir.path().to_path_buf());
    let client = crate::helpers::client(settings).await;
    let http = crate::helpers::http();

    let page = http.get(client.url("/")).send().await.expect("/ answers");
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.text().await.expect("text"), "<title>edited</title>");
    // Only that directory: the embedded files are not mixed in.
    let script = http
        .get(client.url("/js/main.js"))
        .send()
        .await
        .expect("answers");
    assert_eq!(script.status().as_u16(), 404);
}
