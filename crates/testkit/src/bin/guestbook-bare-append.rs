//! The yardstick for `POST /api/messages` (issue 17): the least an axum handler can do per
//! append, so `scripts/bench-appends.sh` can say what the backend's append path costs.
//!
//! `guestbook-bare-append --listen 127.0.0.1:PORT --redis redis://127.0.0.1:PORT` answers
//! `POST /` (and `POST /api/messages`, so the backend's wrk script drives it unchanged) by one
//! `RPUSH` of the request body to the list `bare:log` on one multiplexed
//! connection, and `201 {"id":N}` (N, the list's length). No validation, no ids, no
//! idempotency, no metrics, no logging. Bounded: bodies up to 16 KiB, each Redis call within
//! 2 s (else 503); the list grows by one entry a request, so a benchmark flushes Redis between
//! runs. Loopback addresses only: it is a benchmark tool, never a service.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use redis::aio::MultiplexedConnection;

/// Longest accepted body: a guestbook message is far smaller.
const MAX_BODY: usize = 16 * 1024;
/// Time limit of the one Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The list every append goes to.
const LIST: &str = "bare:log";

// mimalloc rather than glibc's malloc, whose arena lock the tokio workers contended for under
// load; why, and what it measured: docs/design.md, "the allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, redis_url) = match parse(std::env::args().skip(1)) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("guestbook-bare-append: {why}");
            eprintln!(
                "usage: guestbook-bare-append --listen 127.0.0.1:PORT --redis redis://127.0.0.1:PORT"
            );
            return ExitCode::from(2);
        }
    };
    let conn = match connect(&redis_url).await {
        Ok(conn) => conn,
        Err(why) => {
            eprintln!("guestbook-bare-append: {why}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/", post(append))
        .route("/api/messages", post(append))
        .route("/liveness", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(conn);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("guestbook-bare-append: bind {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // On stderr: stdout is for nothing, and the house lints keep print! out of binaries.
    eprintln!("guestbook-bare-append: listening {listen}");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("guestbook-bare-append: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|err| format!("--redis {url:?}: {err}"))?;
    match tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(format!("connect {url}: {err}")),
        Err(_) => Err(format!("connect {url}: no answer within {REDIS_TIMEOUT:?}")),
    }
}

/// `--listen` and `--redis`, both required to be on loopback.
fn parse(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, String), String> {
    let (mut listen, mut redis_url) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} takes a value"))?;
        match flag.as_str() {
            "--listen" => {
                let addr: SocketAddr = value
                    .parse()
                    .map_err(|err| format!("--listen {value:?}: {err}"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!("--listen {addr} is not a loopback address"));
                }
                listen = Some(addr);
            }
            "--redis" => {
                if !is_loopback_redis(&value) {
                    return Err(format!("--redis {value} is not a loopback redis:// URL"));
                }
                redis_url = Some(value);
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        redis_url.ok_or("--redis is required")?,
    ))
}

/// True for `redis://` to 127.0.0.0/8 or `[::1]`, with a port.
fn is_loopback_redis(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("redis://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

/// One RPUSH; 201 with the list's length, or 503 when Redis fails or is slow.
async fn append(State(mut conn): State<MultiplexedConnection>, body: Bytes) -> Response {
    let mut rpush = redis::cmd("RPUSH");
    rpush.arg(LIST).arg(body.as_ref());
    let pushed = rpush.query_async::<u64>(&mut conn);
    let status_body = match tokio::time::timeout(REDIS_TIMEOUT, pushed).await {
        Ok(Ok(length)) => (StatusCode::CREATED, format!("{{\"id\":{length}}}")),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"error\":\"redis_unavailable\",\"detail\":{}}}",
                serde_json::Value::String(err.to_string())
            ),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"redis_timeout\"}".to_owned(),
        ),
    };
    (
        status_body.0,
        [(header::CONTENT_TYPE, "application/json")],
        status_body.1,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redis_urls_are_accepted() {
        assert!(is_loopback_redis("redis://127.0.0.1:6391"));
        assert!(is_loopback_redis("redis://[::1]:6391/0"));
        assert!(!is_loopback_redis("redis://10.0.0.1:6379"));
        assert!(!is_loopback_redis("rediss://127.0.0.1:6391"));
        assert!(!is_loopback_redis("redis://localhost"));
    }
}
