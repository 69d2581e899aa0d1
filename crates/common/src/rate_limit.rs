//! Per-client rate limiting of writes: a token bucket per client IP address.
//!
//! Each address may make `burst` writes at once and then `per_sec` a second; beyond that a
//! write answers 429 with `Retry-After` and reaches nothing. Only POST is limited: reads,
//! probes and metrics never are. The address is the TCP peer's: behind a proxy every client
//! shares the proxy's bucket (`X-Forwarded-For` is not trusted, since any client can forge it).
//!
//! Memory is bounded: past [`MAX_CLIENTS`] addresses, buckets that have refilled (which
//! limit nothing) are dropped, and if that is not enough, all of them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

/// Addresses tracked at once before refilled buckets are dropped: 65,536 buckets of about
/// 40 bytes, a few MiB at most.
pub const MAX_CLIENTS: usize = 65_536;

/// Token buckets keyed by client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter of `per_sec` writes a second after a burst of `burst`; `None` (no limit)
    /// when `per_sec` is 0.
    pub fn new(per_sec: f64, burst: u32) -> Option<Arc<Self>> {
        (per_sec > 0.0).then(|| {
            Arc::new(Self {
                per_sec,
                burst: f64::from(burst.max(1)),
                buckets: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes one token for `client`, or says how long until one is available.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, bucket| refill(bucket, now, per_sec, burst) < burst);
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.per_sec, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }
}

/// Tokens in `bucket` at `now`, capped at `burst`.
fn refill(bucket: &Bucket, now: Instant, per_sec: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_sec).min(burst)
}

/// Middleware: refuses a POST over its client's rate with 429 and `Retry-After`.
///
/// Without `ConnectInfo` (a router driven by `oneshot` in tests) every request counts as one
/// client.
pub async fn guard(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    match limiter.check(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let body = json!({"error": "too many writes from this address; retry later"});
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(2.0, 3).expect("on");
        for _ in 0..3 {
            assert!(limiter.check(A).is_ok());
        }
        let wait = limiter.check(A).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check(A).is_ok());
        assert!(limiter.check(A).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(1.0, 1).expect("on");
        assert!(limiter.check(A).is_ok());
        assert!(limiter.check(A).is_err());
        assert!(limiter.check(B).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_do_not_postpone_the_next_token() {
        let limiter = RateLimiter::new(1.0, 1).expect("on");
        assert!(limiter.check(A).is_ok());
        for _ in 0..10 {
            assert!(limiter.check(A).is_err());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check(A).is_ok());
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(RateLimiter::new(0.0, 10).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_dropping_refilled_buckets() {
        let limiter = RateLimiter::new(1.0, 1).expect("on");
        for n in 0..MAX_CLIENTS as u32 {
            assert!(limiter.check(IpAddr::V4(Ipv4Addr::from(n))).is_ok());
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(limiter.check(A).is_ok());
        let tracked = limiter.buckets.lock().expect("not poisoned").len();
        assert_eq!(tracked, 1);
    }
}
