//! Backpressure: readiness driven by the windowed p99.9, shedding that keeps goodput, the
//! /slow bulkhead, and the metrics exposition checked by a real parser.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use guestbook_backend::Settings;
use guestbook_backend::store::AppendStrategy;

use crate::helpers::{ADMIN_TOKEN, RedisServer, TestApp, get_text, http, settings};

/// A short window so a test sees readiness fail and recover in seconds.
fn short_window(redis: &RedisServer) -> Settings {
    let mut settings = settings(redis, AppendStrategy::Lua);
    settings.pressure.latency_window_secs = 4;
    settings.pressure.latency_age_buckets = 2;
    settings.pressure.readiness_min_samples = 20;
    settings
}

async fn status(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Polls `url` until it answers `want`, for at most `limit`; checks liveness on the way.
async fn wait_for(
    client: &reqwest::Client,
    app: &TestApp,
    want: u16,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let (live, _) = status(client, &app.url("/liveness")).await;
        assert_eq!(live, 200, "liveness answers throughout");
        let (code, body) = status(client, &app.url("/readiness")).await;
        if code == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness did not become {want} within {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_under_a_slow_overload_and_recovers_without_traffic() {
    // Arrange: 2 workers × 100 ms = 20 calls/s; queueing of up to 1 s is allowed, so
    // accepted calls take up to ~1.1 s, well over the 400 ms readiness threshold.
    let redis = RedisServer::start().await;
    let mut settings = short_window(&redis);
    settings.slow_ms = 100;
    settings.slow_workers = 2;
    settings.slow_max_wait_ms = 1_000;
    let app = TestApp::spawn(settings).await;
    let client = http();
    wait_for(&client, &app, 200, Duration::from_secs(1)).await;

    // Act: 40 calls in flight for 3 s.
    let load_until = Instant::now() + Duration::from_secs(3);
    let loaders: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            let url = app.url("/slow");
            tokio::spawn(async move {
                while Instant::now() < load_until {
                    let _ = client.get(&url).send().await;
                }
            })
        })
        .collect();
    let unready = wait_for(&client, &app, 503, Duration::from_secs(3)).await;
    for loader in loaders {
        loader.await.expect("loader");
    }

    // Assert: the reason and the measured figure; then recovery as samples age out, with no
    // traffic but the probes (which the window does not record).
    assert_eq!(unready["reason"], "latency", "{unready}");
    assert!(
        unready["p999_ms"].as_f64().is_some_and(|p| p > 400.0),
        "{unready}"
    );
    let ready = wait_for(&client, &app, 200, Duration::from_secs(8)).await;
    assert_eq!(ready["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slow_bulkhead_sheds_at_once_with_retry_after_and_serves_the_rest() {
    let redis = RedisServer::start().await;
    let mut settings = settings(&redis, AppendStrategy::Lua);
    settings.slow_ms = 1_000;
    settings.slow_workers = 2;
    settings.slow_max_wait_ms = 1_000;
    let app = TestApp::spawn(settings).await;
    let client = http();

    let answers: Vec<(u16, bool, Duration)> = futures_util::stream::iter(0..30)
        .map(|_| {
            let client = client.clone();
            let url = app.url("/slow");
            async move {
                let started = Instant::now();
                let response = client.get(&url).send().await.expect("answers");
                let retry_after = response.headers().contains_key("retry-after");
                (response.status().as_u16(), retry_after, started.elapsed())
            }
        })
        .buffer_unordered(30)
        .collect()
        .await;

    let served: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .collect();
    let shed: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .collect();
    assert_eq!(served.len() + shed.len(), 30);
    // 2 running + 2 queued (predicted ≤ 1 s): four served, the rest refused.
    assert_eq!(served.len(), 4, "{answers:?}");
    assert!(
        shed.iter().all(|(_, retry_after, _)| *retry_after),
        "every refusal carries Retry-After"
    );
    // A refusal never waits for a worker: it returns before a single call could have finished.
    assert!(
        shed.iter()
            .all(|(_, _, took)| *took < Duration::from_millis(500)),
        "{shed:?}"
    );
    let metrics = get_text(&client, &app.url("/metrics")).await;
    assert!(
        metrics.contains("http_requests_shed_total{reason=\"queue\"} 26"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_shedding_refuses_only_the_excess() {
    // Arrange: every /data call takes 100 ms, over a 50 ms shedding threshold.
    let redis = RedisServer::start().await;
    let mut settings = short_window(&redis);
    settings.pressure.readiness_p999_ms = 40;
    settings.pressure.shed_p999_ms = 50;
    let app = TestApp::spawn(settings).await;
    let client = http();
    let configured = client
        .post(app.url("/config/latency"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"delay_ms": 100, "delay_rate": 1.0}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(configured.status().as_u16(), 200);

    // Act: 32 callers for 3 s.
    let until = Instant::now() + Duration::from_secs(3);
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            let url = app.url("/data");
            tokio::spawn(async move {
                let (mut ok, mut shed) = (0_u32, 0_u32);
                while Instant::now() < until {
                    match client.get(&url).send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok += 1,
                        Ok(503) => {
                            shed += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for caller in callers {
        let (o, s) = caller.await.expect("caller");
        ok += o;
        shed += s;
    }

    // Assert: some shed, and service went on for the rest (under-pressure would shed all).
    assert!(shed > 0, "some requests were shed");
    assert!(ok > 100, "goodput kept: {ok} served, {shed} shed");
    let metrics = get_text(&client, &app.url("/metrics")).await;
    assert!(
        metrics.contains("http_requests_shed_total{reason=\"latency\"}"),
        "{metrics}"
    );
    let (probe, _) = status(&client, &app.url("/liveness")).await;
    assert_eq!(probe, 200, "probes are never shed");
}

/// Every metric parses with Prometheus' own parser (promtool, Debian `prometheus`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_exposition_passes_promtool() {
    let redis = RedisServer::start().await;
    let app = TestApp::spawn(settings(&redis, AppendStrategy::Lua)).await;
    let client = http();
    // Touch every family: a request, an append, a shed-free refresh tick.
    crate::helpers::post(&client, &app.base, "a", "b", None)
        .await
        .expect("post");
    client.get(app.url("/slow")).send().await.expect("slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exposition = get_text(&client, &app.url("/metrics")).await;
    for family in [
        "http_request_duration_seconds_bucket",
        "http_request_duration_window_p999_seconds",
        "http_requests_in_flight",
        "server_connections_open",
        "readiness_ready 1",
        "redis_call_duration_seconds_bucket",
        "guestbook_appends_total",
        "tokio_scheduling_delay_seconds",
        "tokio_workers",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(exposition.contains(family), "{family} is exported");
    }

    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus)");
    let mut stdin = promtool.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, exposition.as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let output = promtool.wait_with_output().await.expect("promtool runs");
    // Exit 0 is clean, 3 means lint remarks; 1 would be a parse error.
    assert!(matches!(output.status.code(), Some(0 | 3)), "{output:?}");
    let remarks = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    for remark in remarks.lines().filter(|line| !line.trim().is_empty()) {
        // OpenMetrics (what prometheus-client writes) puts a counter's HELP on its family
        // name, without `_total`; promtool's text-format linter looks for it on the sample.
        let family = remark
            .strip_suffix("_total no help text")
            .unwrap_or_else(|| panic!("unexpected remark: {remark}"));
        assert!(
            exposition.contains(&format!("# HELP {family} ")),
            "{family} has its HELP on the family"
        );
    }
}
