//! `messages`: the verifier passes against a safe strategy and fails against `naive`.

use guestbook_backend::store::AppendStrategy;

use crate::helpers::{ADMIN_TOKEN, RedisServer, backend, json, loadtest};

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
    let redis = RedisServer::start().await;
    let naive = backend(&redis, AppendStrategy::Naive).await;

    let output = loadtest(&[
        "messages",
        "--target",
        &naive.base,
        "--count",
        "400",
        "--concurrency",
        "100",
        "--json",
    ])
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
    let redis = RedisServer::start().await;
    let lua = backend(&redis, AppendStrategy::Lua).await;

    let output = loadtest(&[
        "messages",
        "--target",
        &lua.base,
        "--count",
        "20",
        "--concurrency",
        "5",
    ])
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
