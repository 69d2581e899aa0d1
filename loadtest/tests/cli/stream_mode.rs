//! `stream`: every subscriber reads every message once, and a refusal by a stream cap is
//! reported as a refusal by that cap, never as a miss.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, backend_with, json, loadtest};

/// Runs `stream` with `args` against a fresh backend whose caps are `in_all` streams and
/// `per_address` per client address; the exit code and the JSON report.
async fn stream_against(
    in_all: usize,
    per_address: usize,
    args: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let redis = RedisServer::start().await;
    let backend = backend_with(&redis, AppendStrategy::Lua, |settings| {
        settings.max_stream_clients = in_all;
        settings.max_streams_per_client = per_address;
    })
    .await;
    let mut command = vec!["stream", "--url", backend.base.as_str(), "--json"];
    command.extend(args);
    let output = loadtest(&command).await;
    (output.status.code(), json(&output))
}

/// The count refused by `cap` in a report.
fn refused_by(report: &serde_json::Value, cap: &str) -> u64 {
    report["refused"][cap].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_subscribers_over_two_source_addresses_read_every_message_once() {
    // 25 streams per address: the per-address cap would refuse 50 from one address.
    let (code, report) = stream_against(
        64,
        25,
        &[
            "--subscribers",
            "50",
            "--source-addrs",
            "127.0.0.1-127.0.0.2",
            "--rate",
            "20/s",
            "--duration",
            "1s",
        ],
    )
    .await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["opened"], 50);
    assert_eq!(report["messages_acknowledged"], 20);
    assert_eq!(report["deliveries_expected"], 1_000);
    assert_eq!(report["deliveries_made"], 1_000);
    assert_eq!(report["misses"], 0);
    assert_eq!(report["duplicates"], 0);
    assert!(
        report["memory"]["rss_after_bytes"].as_u64().is_some(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_over_the_backends_caps_are_refusals_by_cap_not_misses() {
    // Two addresses, 4 streams each at most, 6 in all: 10 subscribers leave 4 refused, some
    // of them by the cap in all.
    let (code, report) = stream_against(
        6,
        4,
        &[
            "--subscribers",
            "10",
            "--source-addrs",
            "127.0.0.1,127.0.0.2",
            "--duration",
            "0.5s",
            "--connect-concurrency",
            "1",
        ],
    )
    .await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["opened"], 6, "{report}");
    let in_all = refused_by(&report, "MAX_STREAM_CLIENTS");
    assert_eq!(
        in_all + refused_by(&report, "MAX_STREAMS_PER_CLIENT"),
        4,
        "{report}"
    );
    assert!(in_all > 0, "{report}");
    assert_eq!(report["misses"], 0);
    assert_eq!(report["deliveries_made"], report["deliveries_expected"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_the_per_address_cap_is_refused_by_that_cap() {
    let (code, report) = stream_against(20, 3, &["--subscribers", "5", "--duration", "0.3s"]).await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["opened"], 3);
    assert_eq!(refused_by(&report, "MAX_STREAMS_PER_CLIENT"), 2, "{report}");
    assert_eq!(report["misses"], 0);
}

#[tokio::test]
async fn a_target_off_loopback_is_refused_before_anything_is_sent() {
    let output = loadtest(&["stream", "--url", "http://192.0.2.1:8080", "--json"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
