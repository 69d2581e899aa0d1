//! Retries, the circuit breaker, the budget and fallbacks, against a real backend.

use std::time::{Duration, Instant};

use crate::helpers::{
    self, Stack, backend_calls, circuit_state, default_stack, delay, fail, fetch, get_status,
    inject, open_loop, stack,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_passes_the_backend_answer_through() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;

    let (status, body) = fetch(&http, &client).await;

    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(
        body["data"],
        serde_json::json!({"message": "OK", "note": "BackendService healthy"})
    );
    let state = helpers::status(&http, &client).await;
    assert_eq!(state["circuit_state"], "closed");
    assert_eq!(state["backend_url"], backend.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_failure_opens_the_circuit_and_open_answers_never_reach_the_backend() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        settings.breaker_reset_secs = 60;
    })
    .await;
    fail(&http, &backend, 1.0, Some(503)).await;

    // Three failed calls (each retried) trip the seed's 3-consecutive-failures rule.
    for _ in 0..3 {
        let (status, body) = fetch(&http, &client).await;
        assert_eq!((status, body["status"].as_str()), (503, Some("fallback")));
        assert_eq!(body["message"], "backend answered 503");
    }
    let before = backend_calls(&http, &backend, "GET", "/data").await;
    for _ in 0..10 {
        let (status, body) = fetch(&http, &client).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (503, Some("circuit-open"))
        );
    }

    assert_eq!(
        backend_calls(&http, &backend, "GET", "/data").await,
        before,
        "an open circuit sends nothing"
    );
    assert_eq!(circuit_state(&http, &client).await, "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_reset_wait_a_trial_call_closes_the_circuit() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    fail(&http, &backend, 1.0, Some(500)).await;
    for _ in 0..3 {
        fetch(&http, &client).await;
    }
    assert_eq!(fetch(&http, &client).await.1["message"], "circuit-open");

    fail(&http, &backend, 0.0, None).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = fetch(&http, &client).await;

    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert_eq!(circuit_state(&http, &client).await, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_carry_at_least_95_percent_of_fetches_through_a_50_percent_failure_rate() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        // Six attempts: a call fails only when all six do (1.6 %), so 95 % holds with a wide
        // margin over 200 calls; the budget is widened so this test measures retries alone.
        settings.retry_max_attempts = 6;
        settings.retry_budget_min_per_sec = 1_000;
    })
    .await;
    fail(&http, &backend, 0.5, Some(503)).await;

    let mut ok = 0;
    for _ in 0..200 {
        if fetch(&http, &client).await.0 == 200 {
            ok += 1;
        }
    }

    assert!(ok >= 190, "{ok} of 200 succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_never_retried() {
    let Stack(_redis, backend, client, http) = stack(|_| {}).await;
    fail(&http, &backend, 1.0, Some(404)).await;

    let (status, body) = fetch(&http, &client).await;

    assert_eq!(
        (status, body["message"].as_str()),
        (503, Some("backend answered 404"))
    );
    assert_eq!(backend_calls(&http, &backend, "GET", "/data").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_with_an_idempotency_key_and_retry_after_is_honoured() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        settings.retry_max_attempts = 2;
        settings.retry_max_ms = 2_000;
    })
    .await;
    // Every Redis call fails: appends answer 503 with Retry-After: 1.
    inject(&http, &backend, "/config/redis", r#"{"failure_rate": 1.0}"#).await;
    let body = serde_json::json!({"author": "a", "text": "b"});

    let bare = http
        .post(client.url("/api/messages"))
        .json(&body)
        .send()
        .await
        .expect("answers");
    let after_bare = backend_calls(&http, &backend, "POST", "/api/messages").await;
    let started = Instant::now();
    let keyed = http
        .post(client.url("/api/messages"))
        .header("Idempotency-Key", "retry-me")
        .json(&body)
        .send()
        .await
        .expect("answers");
    let waited = started.elapsed();
    let after_keyed = backend_calls(&http, &backend, "POST", "/api/messages").await;

    assert_eq!(bare.status().as_u16(), 503);
    assert_eq!(after_bare, 1, "a POST without a key is sent once");
    assert_eq!(keyed.status().as_u16(), 503);
    assert_eq!(after_keyed - after_bare, 2, "a keyed POST is retried");
    assert!(
        waited >= Duration::from_millis(900),
        "the backend's Retry-After: 1 was waited out: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_total_failure_the_budget_bounds_extra_backend_calls() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        // The breaker out of the way (no consecutive rule, rates never evaluated): the budget
        // alone must stop retries from multiplying the load.
        settings.breaker_failure_threshold = 0;
        settings.breaker_failure_rate = 1.0;
        settings.retry_max_attempts = 5;
        settings.retry_budget_min_per_sec = 0;
        settings.retry_budget_percent = 20.0;
    })
    .await;
    fail(&http, &backend, 1.0, Some(503)).await;

    for _ in 0..100 {
        fetch(&http, &client).await;
    }

    let calls = backend_calls(&http, &backend, "GET", "/data").await;
    assert!(
        (100..=125).contains(&calls),
        "{calls} backend calls for 100 fetches (5 attempts each would be 500)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gives_prompt_fallbacks_and_a_live_client() {
    let Stack(_redis, mut backend, client, http) = stack(|_| {}).await;
    assert_eq!(fetch(&http, &client).await.0, 200);

    backend.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = fetch(&http, &client).await;
    let live = get_status(&http, client.url("/liveness")).await;
    let ready = get_status(&http, client.url("/readiness")).await;

    assert_eq!((status, body["status"].as_str()), (503, Some("fallback")));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable") || m == "circuit-open"),
        "{body}"
    );
    assert_eq!(
        (live, ready),
        (200, 200),
        "the client's probes never look at the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_opens_the_circuit_like_a_failing_one() {
    let Stack(_redis, backend, client, http) = stack(|settings| {
        settings.backend_timeout_ms = 100;
        settings.request_deadline_ms = 250;
        settings.breaker_reset_secs = 60;
    })
    .await;
    delay(&http, &backend, 5000).await;

    // Each call ends at the deadline: a failure for the breaker.
    for _ in 0..3 {
        let (status, body) = fetch(&http, &client).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (503, Some("fallback")),
            "{body}"
        );
    }
    let started = Instant::now();
    let (status, body) = fetch(&http, &client).await;

    assert_eq!(
        (status, body["message"].as_str()),
        (503, Some("circuit-open"))
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered without waiting for the backend"
    );
}

/// Issue 14's rate: what a modest production client sends.
const RATE: u32 = 100;
/// Long enough for 1,000 requests, short of the default BREAKER_RESET_SECS (15 s).
const SECONDS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_defaults_at_half_failure_95_percent_succeed_with_at_most_2_2_backend_calls_each() {
    let Stack(_redis, backend, client, http) = default_stack().await;
    // Seed 002's injection as users send it: no status code, so the backend's default 500.
    fail(&http, &backend, 0.5, None).await;

    let answers = open_loop(&http, &client, RATE, SECONDS).await;
    let calls = backend_calls(&http, &backend, "GET", "/data").await;

    let ok = answers.iter().filter(|answer| answer.status == 200).count();
    let requests = answers.len();
    assert!(
        ok * 100 >= requests * 95,
        "{ok} of {requests} succeeded; the circuit is {}",
        circuit_state(&http, &client).await
    );
    assert!(
        calls as f64 <= 2.2 * requests as f64,
        "{calls} backend calls for {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_defaults_under_total_failure_the_backend_sees_a_tenth_of_the_requests_and_each_answers_within_1_s()
 {
    let Stack(_redis, backend, client, http) = default_stack().await;
    fail(&http, &backend, 1.0, Some(503)).await;

    let answers = open_loop(&http, &client, RATE, SECONDS).await;
    let calls = backend_calls(&http, &backend, "GET", "/data").await;

    let requests = answers.len();
    assert!(
        calls as f64 <= 0.1 * requests as f64,
        "{calls} backend calls for {requests} requests"
    );
    assert!(
        answers.iter().all(|answer| answer.status == 503),
        "every answer is a fallback"
    );
    // A correctness bound (issue 14: "every answer within 1 s"), not a speed measurement:
    // retries must end when the circuit opens instead of backing off into the caller's time.
    let slowest = answers
        .iter()
        .map(|answer| answer.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest <= Duration::from_secs(1),
        "slowest answer {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_asleep_in_their_backoff_stop_when_the_circuit_opens() {
    let Stack(_redis, backend, client, http) = default_stack().await;
    // Every Redis call fails: reads and appends answer 503 with Retry-After: 1, so a read's
    // retry sleeps exactly 1 s (RETRY_MAX_MS caps it there), with no jitter to race against.
    inject(&http, &backend, "/config/redis", r#"{"failure_rate": 1.0}"#).await;

    // Ten reads fail their first attempt and go to sleep; none has finished, so the circuit
    // is still closed.
    let sleepers: Vec<_> = (0..10)
        .map(|_| {
            let (http, url) = (http.clone(), client.url("/api/messages"));
            tokio::spawn(async move {
                let answer = http.get(url).send().await.expect("answers");
                let status = answer.status().as_u16();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                (status, body)
            })
        })
        .collect();
    while backend_calls(&http, &backend, "GET", "/api/messages").await < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Three /fetch calls meet a 501, which is never retried (the backend's 503 + Retry-After
    // does not count against it): three failed calls open the circuit (seed 002's rule)
    // while the reads sleep.
    fail(&http, &backend, 1.0, Some(501)).await;
    for _ in 0..3 {
        assert_eq!(fetch(&http, &client).await.0, 503);
    }
    assert_eq!(circuit_state(&http, &client).await, "open");

    let mut answers = Vec::new();
    for sleeper in sleepers {
        answers.push(sleeper.await.expect("the read ends"));
    }

    assert_eq!(
        backend_calls(&http, &backend, "GET", "/api/messages").await,
        10,
        "no retry reached the backend once the circuit was open"
    );
    for (status, body) in answers {
        assert_eq!(status, 503, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_behind_a_live_backend_leaves_the_circuit_closed_and_fetch_answering() {
    let Stack(_redis, backend, client, http) = default_stack().await;
    // The backend is up, its Redis is not: appends and reads answer 503 with Retry-After at once.
    inject(&http, &backend, "/config/redis", r#"{"failure_rate": 1.0}"#).await;
    let post = || {
        http.post(client.url("/api/messages"))
            .json(&serde_json::json!({"author": "a", "text": "b"}))
            .send()
    };
    for _ in 0..10 {
        let answer = post().await.expect("answers");
        assert_eq!(answer.status().as_u16(), 503);
        assert!(
            answer.headers().contains_key("retry-after"),
            "the backend's Retry-After reaches the caller"
        );
    }

    // /data needs no Redis: /fetch goes on answering, and the circuit stays closed.
    let (code, body) = fetch(&http, &client).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")), "{body}");
    assert_eq!(circuit_state(&http, &client).await, "closed");

    // Redis heals: the very next append is served, not refused for BREAKER_RESET_SECS.
    inject(&http, &backend, "/config/redis", r#"{"failure_rate": 0.0}"#).await;
    let answer = post().await.expect("answers");
    assert_eq!(answer.status().as_u16(), 201);
}
