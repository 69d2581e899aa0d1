//! Unit tests of [`BackendOutcome`]: one table per question the stack asks of it.

use super::*;

fn status(code: u16) -> BackendOutcome {
    answer(code, None)
}

fn answer(code: u16, retry_after: Option<&str>) -> BackendOutcome {
    let mut builder = http::Response::builder().status(code);
    if let Some(wait) = retry_after {
        builder = builder.header(http::header::RETRY_AFTER, wait);
    }
    let response = builder.body(()).expect("valid status");
    BackendOutcome::of(Ok(&response))
}

fn error(error: impl Into<BoxError>) -> BackendOutcome {
    BackendOutcome::of::<()>(Err(&error.into()))
}

#[test]
fn a_live_backend_asking_to_come_back_later_is_neither_failure_nor_success() {
    for code in [503, 429] {
        let busy = answer(code, Some("1"));
        assert_eq!(busy.breaker_outcome(), Outcome::Ignored, "{code}");
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(1)));
        assert!(busy.is_retryable(), "{code}");
    }
    assert_eq!(answer(500, Some("1")).breaker_outcome(), Outcome::Failure);
    assert_eq!(
        answer(500, Some("2")).retry_after(),
        Some(Duration::from_secs(2)),
        "a retried 500 honours the wait it asks for"
    );
}

#[test]
fn server_errors_and_too_many_requests_are_failures() {
    for code in [500, 501, 502, 503, 504, 429] {
        assert_eq!(status(code).breaker_outcome(), Outcome::Failure, "{code}");
    }
}

#[test]
fn other_client_errors_are_ignored() {
    for code in [400, 401, 404, 409, 422] {
        assert_eq!(status(code).breaker_outcome(), Outcome::Ignored, "{code}");
    }
}

#[test]
fn other_answers_are_successes() {
    for code in [200, 201, 204, 304] {
        assert_eq!(status(code).breaker_outcome(), Outcome::Success, "{code}");
    }
}

#[test]
fn errors_are_failures_except_an_open_circuit() {
    assert_eq!(
        error("connection refused").breaker_outcome(),
        Outcome::Failure
    );
    assert_eq!(
        error(tower::timeout::error::Elapsed::new()).breaker_outcome(),
        Outcome::Failure
    );
    assert_eq!(error(CircuitOpen).breaker_outcome(), Outcome::Ignored);
}

// Which statuses are retried is the retry policy's test (a table through `Policy::retry`).
#[test]
fn transient_errors_are_retryable_and_an_open_circuit_is_not() {
    assert!(error("reset").is_retryable());
    assert!(error(tower::timeout::error::Elapsed::new()).is_retryable());
    assert!(!error(CircuitOpen).is_retryable());
    assert!(!status(501).is_retryable());
}

#[test]
fn labels_keep_the_metric_values() {
    assert_eq!(status(503).label(), "status_503");
    assert_eq!(answer(429, Some("1")).label(), "status_429");
    assert_eq!(status(404).label(), "status_4xx");
    assert_eq!(error("reset").label(), "transport");
    assert_eq!(
        error(tower::timeout::error::Elapsed::new()).label(),
        "timeout"
    );
    assert_eq!(error(CircuitOpen).fallback_label(), "circuit_open");
    assert_eq!(status(503).fallback_label(), "failed");
}

#[test]
fn fetch_keeps_seed_002_wording_and_error_bodies_get_human_text_and_a_code() {
    let open = error(CircuitOpen);
    assert_eq!(open.fetch_message(), "circuit-open");
    assert_eq!(open.error_code(), ErrorCode::CircuitOpen);
    assert!(open.message().contains("circuit to the backend is open"));
    let late = error(tower::timeout::error::Elapsed::new());
    assert_eq!(late.fetch_message(), "timeout");
    assert_eq!(late.error_code(), ErrorCode::Deadline);
    assert_eq!(status(503).fetch_message(), "backend answered 503");
    assert_eq!(status(503).error_code(), ErrorCode::Unavailable);
    let gone = error("connection refused");
    assert_eq!(
        gone.fetch_message(),
        "backend unreachable: connection refused"
    );
    assert_eq!(gone.error_code(), ErrorCode::BackendUnreachable);
    assert_eq!(gone.message(), "the backend could not be reached");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure_and_its_cause_is_in_the_message() {
    // A port that was just free: nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.local_addr().expect("bound").port()
    };
    let client = crate::backend::Transport::for_url("http://127.0.0.1:1")
        .expect("plain transport")
        .client(Duration::from_secs(1), 1);
    let mut request = http::Request::new(http_body_util::Full::new(bytes::Bytes::new()));
    *request.uri_mut() = format!("http://127.0.0.1:{port}/data")
        .parse()
        .expect("a URI");
    let refused = client
        .request(request)
        .await
        .expect_err("nothing listens there");

    let outcome = error(refused);
    assert_eq!(outcome.label(), "connect");
    assert!(outcome.is_retryable() && outcome.is_failure());
    // hyper-util's own text is only "client error (Connect)"; the cause says what happened.
    let message = outcome.fetch_message();
    assert!(message.contains("Connection refused"), "{message}");
}
