//! The client's readiness measures the client, not the backend (issue 14; seed 004: a shallow
//! readiness that never fails because a dependency is slow). Answers held up to the deadline by
//! a slow backend must not take the client out of its Service.

use std::time::{Duration, Instant};

use guestbook_client::Settings as ClientSettings;

use crate::helpers::{RedisServer, backend, client, delay, fetch, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_leaves_the_client_ready() {
    // Arrange: the client's defaults (for_tests only binds to loopback and drops the shutdown
    // delay), and a window holding enough fast samples for latency to count at all.
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let settings = ClientSettings::for_tests(&backend.base);
    let attempt_timeout = Duration::from_millis(settings.backend_timeout_ms);
    let warm = usize::try_from(settings.service.pressure.readiness_min_samples * 2).unwrap_or(200);
    let client = client(settings).await;
    let http = http();
    for _ in 0..warm {
        assert_eq!(fetch(&http, &client).await.0, 200);
    }

    // Act: /data now outlasts every attempt; 20 callers at once, readiness polled throughout
    // and for 2 s after their answers (the window is refreshed every 250 ms).
    delay(&http, &backend, 20000).await;
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let http = http.clone();
            let url = client.url("/fetch");
            tokio::spawn(async move {
                let started = Instant::now();
                let status = http
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (status, started.elapsed())
            })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let http = http.clone();
        let url = client.url("/readiness");
        let done = std::sync::Arc::clone(&done);
        tokio::spawn(async move {
            let mut polls = Vec::new();
            let mut finished: Option<Instant> = None;
            loop {
                let response = http.get(&url).send().await.expect("readiness answers");
                let code = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                polls.push((code, body));
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = *finished.get_or_insert_with(Instant::now);
                    if at.elapsed() >= Duration::from_secs(2) {
                        return polls;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut answers = Vec::new();
    for caller in callers {
        answers.push(caller.await.expect("caller"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let polls = probe.await.expect("probe");

    // Assert: the callers really waited on the backend and failed; the client stayed ready.
    assert!(
        answers
            .iter()
            .all(|(status, took)| *status == 503 && *took >= attempt_timeout),
        "{answers:?}"
    );
    let unready: Vec<_> = polls.iter().filter(|(code, _)| *code != 200).collect();
    assert!(
        unready.is_empty(),
        "{} of {} readiness polls failed, first {:?}",
        unready.len(),
        polls.len(),
        unready.first()
    );
}
