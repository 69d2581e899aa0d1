//! The client's own caps on live-update streams, with every default: one browser address
//! gets at most `MAX_STREAMS_PER_CLIENT` (8), the client at most `MAX_STREAM_CLIENTS` (256),
//! and those 256 all fit under the backend's per-address cap (256), since the backend sees
//! every one of them coming from the client's address.

use crate::helpers::{Running, Stack, stack};

/// The client's defaults, as the README documents them.
const DEFAULT_STREAMS_PER_CLIENT: usize = 8;
const DEFAULT_STREAM_CLIENTS: usize = 256;

/// A client whose connections come from `ip` (any of 127/8 is loopback on Linux), with no
/// overall timeout, so its streams stay open as long as the test holds them.
fn browser_at(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("an address"))
        .connect_timeout(std::time::Duration::from_secs(5))
        .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
        .build()
        .expect("client builds")
}

/// Opens a stream through the client and returns the answer, whatever its status.
async fn open(browser: &reqwest::Client, client: &Running) -> reqwest::Response {
    browser
        .get(client.url("/api/messages/stream"))
        .send()
        .await
        .expect("the client answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_streams_and_a_closed_one_frees_its_slot() {
    let Stack(_redis, _backend, client, http) = stack(|_| {}).await;
    let first = browser_at("127.0.0.1");
    let second = browser_at("127.0.0.2");

    let mut held = Vec::new();
    for n in 0..DEFAULT_STREAMS_PER_CLIENT {
        let stream = open(&first, &client).await;
        assert_eq!(stream.status().as_u16(), 200, "stream {n}");
        held.push(stream);
    }
    let over = open(&first, &client).await;
    let over_status = over.status().as_u16();
    let retry_after = over.headers().get("retry-after").cloned();
    // A 200 here would be a stream whose body never ends: read only a refusal's body.
    let over_body: serde_json::Value = if over_status == 200 {
        serde_json::Value::Null
    } else {
        over.json().await.unwrap_or_default()
    };
    let other = open(&second, &client).await;
    let other_status = other.status().as_u16();
    drop(held.pop());
    // A hang guard, not a latency assertion.
    let mut reopened = 0;
    for _ in 0..400 {
        let again = open(&first, &client).await;
        reopened = again.status().as_u16();
        if reopened == 200 {
            held.push(again);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = http
        .get(client.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(over_status, 429, "{over_body}");
    assert!(over_body["error"].is_string(), "{over_body}");
    assert!(retry_after.is_some(), "Retry-After is sent");
    assert_eq!(other_status, 200, "another address still gets a stream");
    assert_eq!(reopened, 200, "a closed stream frees its slot");
    assert!(
        metrics.contains("live_streams_refused_total{reason=\"per_client\"}"),
        "the refusal is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_stream_cap_holds_and_every_stream_under_it_reaches_the_backend() {
    let Stack(_redis, _backend, client, _http) = stack(|_| {}).await;
    let addresses = DEFAULT_STREAM_CLIENTS.div_ceil(DEFAULT_STREAMS_PER_CLIENT);

    // 32 addresses with 8 streams each: the client's whole cap, every one passed through as
    // a backend stream from the client's one address.
    let mut held = Vec::new();
    for a in 0..addresses {
        let browser = browser_at(&format!("127.0.1.{}", a + 1));
        for n in 0..DEFAULT_STREAMS_PER_CLIENT {
            let stream = open(&browser, &client).await;
            assert_eq!(
                stream.status().as_u16(),
                200,
                "address {a}, stream {n}: the backend must take all the client passes through"
            );
            held.push(stream);
        }
    }
    let over = open(&browser_at("127.0.2.1"), &client).await;

    assert_eq!(held.len(), DEFAULT_STREAM_CLIENTS);
    assert_eq!(over.status().as_u16(), 503);
    assert!(over.headers().contains_key("retry-after"));
}
