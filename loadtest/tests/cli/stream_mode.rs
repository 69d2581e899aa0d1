//! `stream`: every subscriber reads every message once, and a refusal by a stream cap is
//! reported as a refusal by that cap, never as a miss.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{RedisServer, backend_with, json, loadtest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_subscribers_over_two_source_addresses_read_every_message_once() {
    let redis = RedisServer::start().await;
    // 25 streams per address: the per-address cap would refuse 50 from one address.
    let backend = backend_with(&redis, AppendStrategy::Lua, |settings| {
        settings.max_stream_clients = 64;
        settings.max_streams_per_client = 25;
    })
    .await;

    let output = loadtest(&[
        "stream",
        "--url",
        &backend.base,
        "--subscribers",
        "50",
        "--source-addrs",
        "127.0.0.1-127.0.0.2",
        "--rate",
        "20/s",
        "--duration",
        "1s",
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
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
    let redis = RedisServer::start().await;
    let backend = backend_with(&redis, AppendStrategy::Lua, |settings| {
        settings.max_stream_clients = 6;
        settings.max_streams_per_client = 4;
    })
    .await;

    // Two addresses: 4 open from the first, then the global cap leaves room for 2 more.
    let output = loadtest(&[
        "stream",
        "--url",
        &backend.base,
        "--subscribers",
        "10",
        "--source-addrs",
        "127.0.0.1,127.0.0.2",
        "--rate",
        "10/s",
        "--duration",
        "0.5s",
        "--connect-concurrency",
        "1",
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["opened"], 6, "{report}");
    let refused = &report["refused"];
    let by_cap = |cap: &str| refused[cap].as_u64().unwrap_or(0);
    assert_eq!(
        by_cap("MAX_STREAM_CLIENTS") + by_cap("MAX_STREAMS_PER_CLIENT"),
        4,
        "{report}"
    );
    assert!(by_cap("MAX_STREAM_CLIENTS") > 0, "{report}");
    assert_eq!(report["misses"], 0);
    assert_eq!(report["deliveries_made"], report["deliveries_expected"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_the_per_address_cap_is_refused_by_that_cap() {
    let redis = RedisServer::start().await;
    let backend = backend_with(&redis, AppendStrategy::Lua, |settings| {
        settings.max_stream_clients = 20;
        settings.max_streams_per_client = 3;
    })
    .await;

    let output = loadtest(&[
        "stream",
        "--url",
        &backend.base,
        "--subscribers",
        "5",
        "--rate",
        "10/s",
        "--duration",
        "0.3s",
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["opened"], 3);
    assert_eq!(report["refused"]["MAX_STREAMS_PER_CLIENT"], 2, "{report}");
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
