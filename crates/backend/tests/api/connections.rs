//! The server's connection handling over raw TCP: slow or silent clients are closed by the
//! header-read and idle timeouts while others are served, the connection cap answers the
//! probes and refuses the rest until a place frees, live-update streams outlive the idle
//! timeout, and HTTP/1.1 keep-alive and pipelining still work.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use guestbook_backend::store::AppendStrategy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{RedisServer, TestApp, http, post, settings};

/// The generous bound within which a stalled connection must be closed: a correctness
/// property (it is closed at all), never a speed measurement.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(&app.base["http://".len()..])
        .await
        .expect("connects")
}

/// Reads until the server closes the connection (EOF or reset), at most `within`; returns
/// what it sent, or `None` if the connection was still open then.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    outcome.ok().map(|()| received)
}

/// Sends `GET /liveness` on `stream`, asserts a 200, and returns the body.
async fn liveness_answers(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("sends");
    let (head, body) = read_response(stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// Reads one response with a `Content-Length` body; returns its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            while received.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.expect("reads");
                assert!(n > 0, "closed mid-body");
                received.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]).into_owned();
            return (head, body);
        }
        let n = tokio::time::timeout(CLOSED_WITHIN, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("reads");
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buf[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A client that opens a fresh connection per request, as a probe does.
fn fresh() -> reqwest::Client {
    guestbook_testkit::install_ring_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(CLOSED_WITHIN)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_line_is_closed_while_other_connections_are_served() {
    let app = TestApp::with_lua().await;
    let mut stalled = connect(&app).await;
    stalled.write_all(b"GET /liven").await.expect("sends");

    let others = {
        let url = app.url("/liveness");
        tokio::spawn(async move {
            let client = fresh();
            let mut statuses = Vec::new();
            for _ in 0..10 {
                let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                statuses.push(status.map_err(|err| err.to_string()));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            statuses
        })
    };
    let closed = read_until_closed(&mut stalled, CLOSED_WITHIN).await;

    assert!(
        closed.is_some(),
        "a half-sent request line was still open after {CLOSED_WITHIN:?}"
    );
    let statuses = others.await.expect("task");
    assert!(
        statuses.iter().all(|status| status == &Ok(200)),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_one_byte_a_second_are_cut_by_the_header_read_timeout() {
    let app = TestApp::with_lua().await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    // Longer than the header timeout at a byte a second, so only the timeout can end it.
    let head = format!(
        "GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent
    });
    let started = Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(CLOSED_WITHIN, reader.read_to_end(&mut received)).await;
    trickle.abort();

    assert!(
        closed.is_ok(),
        "a trickled header was still open after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&received);
    assert!(!answer.contains(" 200 "), "never answered: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.service.connections.idle_timeout_secs = 2;
    // The header timeout also ends a keep-alive wait; at its maximum it cannot be what closes
    // the connection within the bound below.
    settings.service.connections.header_read_timeout_secs = 30;
    let app = TestApp::spawn(settings).await;
    let mut stream = connect(&app).await;
    liveness_answers(&mut stream).await;

    let closed = read_until_closed(&mut stream, Duration::from_secs(20)).await;

    assert_eq!(closed, Some(Vec::new()), "closed, with nothing more sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_closed_after_the_idle_timeout() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.service.connections.idle_timeout_secs = 2;
    let app = TestApp::spawn(settings).await;
    let mut stream = connect(&app).await;
    // The headers are complete (so the header timeout is over); the body never is.
    stream
        .write_all(
            b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"author\":",
        )
        .await
        .expect("sends");

    let closed = read_until_closed(&mut stream, CLOSED_WITHIN).await;

    assert!(
        closed.is_some(),
        "a stalled body was still open after {CLOSED_WITHIN:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_only_probes_are_answered_until_a_connection_closes() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.service.connections.max_connections = 4;
    let app = TestApp::spawn(settings).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&app).await;
        liveness_answers(&mut stream).await;
        held.push(stream);
    }
    let client = fresh();

    let refused = client
        .get(app.url("/api/messages"))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    for probe in ["/liveness", "/readiness"] {
        let answer = client.get(app.url(probe)).send().await.expect("answers");
        assert_eq!(answer.status().as_u16(), 200, "{probe} at the cap");
    }
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    let refusals: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("server_connections_refused_total{how=\"overflow\"} "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refusals >= 4,
        "every refusal counted: {refusals}\n{metrics}"
    );

    drop(held.pop());
    let deadline = Instant::now() + CLOSED_WITHIN;
    loop {
        let status = client
            .get(app.url("/api/messages"))
            .send()
            .await
            .expect("answers")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again after a close"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_update_stream_outlives_the_idle_timeout_on_its_keep_alive_comments() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.service.connections.idle_timeout_secs = 2;
    settings.stream_keep_alive_secs = 1;
    let app = TestApp::spawn(settings).await;
    let client = http();
    let response = client
        .get(app.url("/api/messages/stream"))
        .send()
        .await
        .expect("connects");
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();

    // Three idle timeouts without an event: only the keep-alive comments flow.
    let quiet_until = Instant::now() + Duration::from_secs(6);
    let mut comments = 0;
    while Instant::now() < quiet_until {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a keep-alive within 5 s")
            .expect("stream still open")
            .expect("readable");
        comments += usize::from(chunk.starts_with(b":"));
    }
    assert!(comments >= 3, "{comments} keep-alive comments");

    let (status, _, _) = post(&client, &app.base, "a", "after the quiet", None)
        .await
        .expect("posts");
    assert_eq!(status, 201);
    let mut seen = String::new();
    while !seen.contains("after the quiet") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the event arrives")
            .expect("stream still open")
            .expect("readable");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_pipelining_still_work() {
    let app = TestApp::with_lua().await;
    let mut stream = connect(&app).await;

    assert_eq!(liveness_answers(&mut stream).await, "OK");

    // Two requests in one write, on the same kept-alive connection.
    stream
        .write_all(
            b"GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
              GET /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("sends");
    let (first, body) = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(body, "OK");
    let (second, body) = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(body.contains("\"messages\""), "{body}");
    let rest = read_until_closed(&mut stream, CLOSED_WITHIN).await;
    assert_eq!(rest, Some(Vec::new()), "closed as asked");
}
