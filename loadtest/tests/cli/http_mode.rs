//! `http`: bounded smoke runs of both loops, coordinated omission, and the plots.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, backend, json, loadtest, run_against};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_stops_at_its_request_count() {
    let output = run_against(
        AppendStrategy::Lua,
        &[
            "http",
            "--preset",
            "data",
            "--connections",
            "8",
            "--requests",
            "500",
            "--json",
        ],
    )
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["requests"], 500);
    assert_eq!(report["statuses"]["200"], 500);
    assert!(
        report["latency_ms"]["p50"]
            .as_f64()
            .is_some_and(|p50| p50 > 0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_rate_times_duration_requests() {
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;

    let output = loadtest(&[
        "http",
        "--url",
        &format!("{}/api/messages", lua.base),
        "--method",
        "POST",
        "-H",
        "content-type: application/json",
        "--body",
        r#"{"author":"a","text":"b"}"#,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--connections",
        "8",
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["mode"], "open");
    assert_eq!(report["requests"], 200, "due times 0 s .. 0.995 s at 200/s");
    assert_eq!(report["statuses"]["201"], 200);
}

/// A server that answers at once except for one request at t ≈ 0.5 s, which it holds 1 s.
async fn stalling_server() -> String {
    let started = std::time::Instant::now();
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = Router::new().route(
        "/",
        get(move || {
            let stalled = std::sync::Arc::clone(&stalled);
            async move {
                if started.elapsed() > Duration::from_millis(500)
                    && !stalled.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// One connection at 100 requests/s for 2 s against a 1 s stall: the open loop counts the
/// ~100 requests that queued behind the stall; the closed loop sees one slow request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_does_not_omit_the_requests_a_stall_delayed() {
    let open_url = stalling_server().await;
    let closed_url = stalling_server().await;

    let open = loadtest(&[
        "http",
        "--url",
        &open_url,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--connections",
        "1",
        "--json",
    ])
    .await;
    let closed = loadtest(&[
        "http",
        "--url",
        &closed_url,
        "--duration",
        "2s",
        "--connections",
        "1",
        "--json",
    ])
    .await;

    let (open, closed) = (json(&open), json(&closed));
    let open_p90 = open["latency_ms"]["p90"].as_f64().expect("p90");
    let closed_p90 = closed["latency_ms"]["p90"].as_f64().expect("p90");
    let closed_max = closed["latency_ms"]["max"].as_f64().expect("max");
    assert!(
        open_p90 > 300.0,
        "open loop p90 {open_p90} ms includes the queueing"
    );
    assert!(
        closed_p90 < 100.0,
        "closed loop p90 {closed_p90} ms hides it"
    );
    assert!(
        closed_max > 900.0,
        "the closed loop still saw the one stalled request: {closed_max} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plots_are_written_as_svg_and_png() {
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("run.svg");
    let png = dir.path().join("run.png");

    for path in [&svg, &png] {
        let output = loadtest(&[
            "http",
            "--preset",
            "liveness",
            "--target",
            &lua.base,
            "--duration",
            "1500ms",
            "--connections",
            "2",
            "--plot",
            path.to_str().expect("utf-8 path"),
        ])
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        svg.contains("<svg") && svg.contains("latency per second"),
        "an SVG with its captions"
    );
    let png = std::fs::read(&png).expect("png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn an_unknown_plot_extension_is_refused() {
    let output = run_against(
        AppendStrategy::Lua,
        &[
            "http",
            "--preset",
            "liveness",
            "--requests",
            "5",
            "--plot",
            "/tmp/x.gif",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains(".svg or .png"));
}

/// A server that answers 200 and counts the connections it accepted.
async fn connection_counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/"), accepted)
}

/// The chaos matrix lines every request up with its faults through `--trace`, and needs
/// `--fresh-connections` so that a per-connection balancer picks a backend per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_lists_every_request_and_fresh_connections_open_one_each() {
    let (url, accepted) = connection_counting_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    let output = loadtest(&[
        "http",
        "--url",
        &url,
        "--requests",
        "30",
        "--connections",
        "2",
        "--fresh-connections",
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--json",
    ])
    .await;
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 30);
    assert!(report["started_unix_ms"].as_u64().is_some_and(|ms| ms > 0));
    let csv = std::fs::read_to_string(&trace).expect("the trace was written");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|row| row.ends_with(",200")), "{csv}");

    let (url, accepted) = connection_counting_server().await;
    let output = loadtest(&[
        "http",
        "--url",
        &url,
        "--requests",
        "30",
        "--connections",
        "2",
        "--json",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "keep-alive by default"
    );
}
