//! `messages`: the verifier passes against a safe strategy and fails against `naive`.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{
    ADMIN_TOKEN, RedisServer, backend, backend_with, json, loadtest, run_against,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_passes_against_lua_across_three_replicas() {
    let redis = RedisServer::start().await;
    let backends = [
        backend(&redis, AppendStrategy::Lua).await,
        backend(&redis, AppendStrategy::Lua).await,
        backend(&redis, AppendStrategy::Lua).await,
    ];
    let replicas = backends
        .iter()
        .map(|b| b.base.as_str())
        .collect::<Vec<_>>()
        .join(",");

    let output = loadtest(&[
        "messages",
        "--target",
        &backends[0].base,
        "--replicas",
        &replicas,
        "--count",
        "600",
        "--concurrency",
        "100",
        "--idempotent-retries",
        "--clear",
        "--admin-token",
        ADMIN_TOKEN,
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["verdict"]["acknowledged"], 600);
    assert_eq!(report["verdict"]["found"], 600);
    assert_eq!(report["verdict"]["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_fails_against_the_naive_strategy() {
    let output = run_against(
        AppendStrategy::Naive,
        &[
            "messages",
            "--count",
            "400",
            "--concurrency",
            "100",
            "--json",
        ],
    )
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["passed"], false);
    assert!(
        report["verdict"]["lost"]
            .as_u64()
            .is_some_and(|lost| lost > 0),
        "{report}"
    );
}

#[tokio::test]
async fn the_table_names_the_verdict() {
    let output = run_against(
        AppendStrategy::Lua,
        &["messages", "--count", "20", "--concurrency", "5"],
    )
    .await;

    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{table}");
    assert!(table.contains("PASSED"), "{table}");
    assert!(table.contains("acknowledged         20"), "{table}");
}

#[tokio::test]
async fn bad_usage_exits_2_and_an_unreachable_target_exits_3() {
    let port = guestbook_testkit::free_port();
    let nowhere = format!("http://127.0.0.1:{port}");

    let no_token = loadtest(&["messages", "--target", &nowhere, "--clear"]).await;
    let unreachable = loadtest(&[
        "messages",
        "--target",
        &nowhere,
        "--count",
        "3",
        "--timeout-ms",
        "500",
    ])
    .await;
    let not_a_url = loadtest(&["messages", "--target", "ftp://x"]).await;

    assert_eq!(
        no_token.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&no_token.stderr)
    );
    assert_eq!(not_a_url.status.code(), Some(2));
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_paces_the_messages_and_the_timeline_and_trace_record_them() {
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");

    let output = loadtest(&[
        "messages",
        "--target",
        &lua.base,
        "--count",
        "60",
        "--rate",
        "40",
        "--concurrency",
        "16",
        "--idempotent-retries",
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--json",
    ])
    .await;

    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    // 60 messages at 40/s: the last is due at 1.475 s.
    let send_seconds = report["send_seconds"].as_f64().expect("send_seconds");
    assert!(
        (1.4..5.0).contains(&send_seconds),
        "sent in {send_seconds} s"
    );
    assert_eq!(report["rate"], 40.0);
    assert!(report["started_unix_ms"].as_u64().is_some_and(|ms| ms > 0));
    let series = report["series"].as_array().expect("series");
    assert!(series.len() >= 2, "{series:?}");
    let sum = |field: &str| -> u64 { series.iter().filter_map(|s| s[field].as_u64()).sum() };
    assert_eq!(sum("acknowledged"), 60);
    assert_eq!(sum("attempts_ok"), 60);
    assert_eq!(sum("attempts_failed") + sum("gave_up"), 0);
    // Paced: no second holds more than its share (40, plus one at the edge).
    assert!(
        series
            .iter()
            .all(|s| s["acknowledged"].as_u64().unwrap_or(0) <= 41),
        "{series:?}"
    );

    let csv = std::fs::read_to_string(&trace).expect("trace written");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("message,attempt,replica,due_s,sent_s,done_s,latency_ms,outcome")
    );
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|row| row.len() == 8 && row[7] == "201"));
    // Message 39 was due at 0.975 s.
    let due: f64 = rows.iter().find(|row| row[0] == "39").expect("message 39")[3]
        .parse()
        .expect("a number");
    assert!((due - 0.975).abs() < 1e-6, "{due}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_post_is_retried_only_with_its_idempotency_key() {
    // The backend waits for a replica that does not exist: every append is stored on the
    // primary and still answers 503 (not replicated). Such a 503 may mean "stored", so a
    // message without a key is sent once; with keys, retries are safe and store nothing twice.
    let redis = RedisServer::start().await;
    let unconfirmed = backend_with(&redis, AppendStrategy::Lua, |settings| {
        settings.redis.redis_min_replicas_ack = 1;
        settings.redis.redis_wait_timeout_ms = 20;
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");

    for keyed in [false, true] {
        let trace = dir.path().join(format!("trace-{keyed}.csv"));
        let mut args = vec![
            "messages",
            "--target",
            &unconfirmed.base,
            "--count",
            "40",
            "--concurrency",
            "8",
            "--trace",
            trace.to_str().expect("utf-8 path"),
            "--json",
        ];
        if keyed {
            args.extend(["--idempotent-retries", "--max-attempts", "3"]);
        }
        let output = loadtest(&args).await;
        let report = json(&output);
        let csv = std::fs::read_to_string(&trace).expect("trace written");
        let retried = csv
            .lines()
            .skip(1)
            .any(|row| row.split(',').nth(1) != Some("0"));
        assert_eq!(retried, keyed, "retried only with keys:\n{csv}");
        let verdict = &report["verdict"];
        assert_eq!(verdict["acknowledged"], 0, "{report}");
        assert_eq!(verdict["unacknowledged_present"], 40, "{report}");
        assert_eq!(verdict["duplicated"], 0, "{report}");
    }
}
