//! New backend replicas get their share of the client's calls, behind a per-connection L4
//! balancer that picks a backend at random for each new connection, as kube-proxy does.

use guestbook_client::Settings as ClientSettings;
use guestbook_testkit::balancer::TcpBalancer;

use crate::helpers::{RedisServer, backend, backend_calls, client, http, open_loop};

/// Issue 14's load: 100 `/fetch` a second.
const RATE: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_under_load_serves_a_fifth_of_the_calls_within_30_s() {
    let redis = RedisServer::start().await;
    let first = backend(&redis).await;
    let second = backend(&redis).await;
    let third = backend(&redis).await;
    let balancer = TcpBalancer::start(&[first.addr(), second.addr()], None).await;
    // Every default: only the addresses are set.
    let client = client(ClientSettings::for_tests(&balancer.url())).await;
    let http = http();

    let warm = open_loop(&http, &client, RATE, 5).await;
    let before = [
        backend_calls(&http, &first, "GET", "/data").await,
        backend_calls(&http, &second, "GET", "/data").await,
    ];
    balancer.add(third.addr());
    let loaded = open_loop(&http, &client, RATE, 30).await;
    let after = [
        backend_calls(&http, &first, "GET", "/data").await,
        backend_calls(&http, &second, "GET", "/data").await,
        backend_calls(&http, &third, "GET", "/data").await,
    ];

    assert!(
        warm.iter()
            .chain(&loaded)
            .all(|answer| answer.status == 200),
        "every /fetch succeeds"
    );
    assert!(
        before.iter().all(|&calls| calls > 0),
        "both original backends get calls: {before:?}"
    );
    let since_added = (after[0] - before[0]) + (after[1] - before[1]) + after[2];
    eprintln!("calls before the add {before:?}, after {after:?}");
    assert!(
        after[2] * 5 >= since_added,
        "the added backend served {} of the {since_added} calls made in the 30 s after it was added",
        after[2]
    );
}
