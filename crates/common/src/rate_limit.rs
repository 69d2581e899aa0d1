//! Per-client rate limiting of writes: a token bucket per client.
//!
//! Each client may make `burst` writes at once and then `per_sec` a second; beyond that a
//! write answers 429 with `Retry-After` and reaches nothing. Only POST is limited: reads,
//! probes and metrics never are. A client is a [`ClientKey`] of the TCP peer: an IPv4 address
//! or an IPv6 /64 (one subscriber's allocation, whose 2^64 addresses would otherwise each get
//! a fresh bucket). Behind a proxy every client shares the proxy's bucket (`X-Forwarded-For`
//! is not trusted, since any client can forge it).
//!
//! Memory is bounded: at [`MAX_CLIENTS`] clients, the least recently seen client's bucket is
//! dropped to make room for a new one. Never all of them: a client that keeps writing keeps
//! its bucket however many addresses an attacker cycles through, so it stays limited.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

use crate::client_addr::ClientKey;
use crate::error_body::{ErrorBody, ErrorCode, respond_retry_after};

/// Clients tracked at once: 65,536 buckets of about 40 bytes plus up to twice as many
/// 24-byte entries in the recency log, under 8 MiB in all.
pub const MAX_CLIENTS: usize = 65_536;

/// Token buckets keyed by client.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The stamp of this client's newest entry in [`Buckets::recency`].
    seen: u64,
}

/// The buckets and the order their clients were last seen in.
///
/// The recency log is a queue of (client, stamp), appended on every check; an entry is
/// current only while its stamp is still the bucket's `seen`, older ones are skipped when
/// they reach the front. Eviction pops from the front, so it is O(1) amortised; the log is
/// compacted to its current entries whenever it grows past twice [`MAX_CLIENTS`], which is
/// O(1) amortised too (at least `MAX_CLIENTS` appends between two compactions).
#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<ClientKey, Bucket>,
    recency: VecDeque<(ClientKey, u64)>,
    next_stamp: u64,
    capacity: usize,
}

impl Buckets {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The bucket of `client`, created full when new, now marked as the most recently seen.
    fn touch(&mut self, client: ClientKey, full: f64, now: Instant) -> &mut Bucket {
        if !self.map.contains_key(&client) {
            while self.map.len() >= self.capacity && self.evict_stalest() {}
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.recency.push_back((client, stamp));
        if self.recency.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.recency
                .retain(|(key, stamp)| map.get(key).is_some_and(|bucket| bucket.seen == *stamp));
        }
        let bucket = self.map.entry(client).or_insert(Bucket {
            tokens: full,
            at: now,
            seen: stamp,
        });
        bucket.seen = stamp;
        bucket
    }

    /// Drops the least recently seen bucket; false when there is none.
    fn evict_stalest(&mut self) -> bool {
        while let Some((client, stamp)) = self.recency.pop_front() {
            if self
                .map
                .get(&client)
                .is_some_and(|bucket| bucket.seen == stamp)
            {
                self.map.remove(&client);
                return true;
            }
        }
        false
    }
}

impl RateLimiter {
    /// A limiter of `per_sec` writes a second after a burst of `burst`; `None` (no limit)
    /// when `per_sec` is 0.
    pub fn new(per_sec: f64, burst: u32) -> Option<Arc<Self>> {
        Self::with_capacity(per_sec, burst, MAX_CLIENTS)
    }

    fn with_capacity(per_sec: f64, burst: u32, capacity: usize) -> Option<Arc<Self>> {
        (per_sec > 0.0).then(|| {
            Arc::new(Self {
                per_sec,
                burst: f64::from(burst.max(1)),
                buckets: Mutex::new(Buckets::with_capacity(capacity)),
            })
        })
    }

    /// Takes one token for `client`, or says how long until one is available.
    pub fn check(&self, client: impl Into<ClientKey>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.touch(client.into(), self.burst, now);
        let tokens = refill(bucket, now, self.per_sec, self.burst);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }

    /// Buckets and recency-log entries held now.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let buckets = self.buckets.lock().expect("not poisoned");
        (buckets.map.len(), buckets.recency.len())
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
        Err(wait) => too_many(wait),
    }
}

/// The 429 answer for a client that may write again in `wait` (rounded up to whole seconds,
/// at least one).
fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = ErrorBody::new(
        ErrorCode::RateLimited,
        "too many writes from this address; retry later",
    );
    respond_retry_after(StatusCode::TOO_MANY_REQUESTS, body, seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    /// One write a second per client, with no burst: the second write at once is refused.
    fn one_a_second() -> Arc<RateLimiter> {
        RateLimiter::new(1.0, 1).expect("on")
    }

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
        let limiter = one_a_second();
        assert!(limiter.check(A).is_ok());
        assert!(limiter.check(A).is_err());
        assert!(limiter.check(B).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_do_not_postpone_the_next_token() {
        let limiter = one_a_second();
        assert!(limiter.check(A).is_ok());
        for _ in 0..10 {
            assert!(limiter.check(A).is_err());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check(A).is_ok());
    }

    #[tokio::test]
    async fn a_refusal_says_when_to_come_back_and_its_code() {
        let response = too_many(Duration::from_millis(1_200));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        let body = crate::error_body::read(response).await;
        assert_eq!(body.code, ErrorCode::RateLimited);
        assert_eq!(
            too_many(Duration::ZERO).headers()[axum::http::header::RETRY_AFTER],
            "1"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(RateLimiter::new(0.0, 10).is_none());
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    fn v6(addr: &str) -> IpAddr {
        addr.parse().expect("a literal address")
    }

    #[tokio::test(start_paused = true)]
    async fn every_address_of_an_ipv6_64_shares_one_bucket() {
        let limiter = RateLimiter::new(1.0, 2).expect("on");
        assert!(limiter.check(v6("2001:db8:1:2::1")).is_ok());
        assert!(limiter.check(v6("2001:db8:1:2::2")).is_ok());
        for host in ["::3", ":ffff:ffff:ffff:ffff", ":dead:beef:0:1"] {
            let addr = v6(&format!("2001:db8:1:2{host}"));
            assert!(limiter.check(addr).is_err(), "{addr} is the same /64");
        }
        assert!(
            limiter.check(v6("2001:db8:1:3::1")).is_ok(),
            "the next /64 is another client"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv4_mapped_address_shares_the_ipv4_bucket() {
        let limiter = one_a_second();
        assert!(limiter.check(v6("::ffff:192.0.2.1")).is_ok());
        assert!(limiter.check(A).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_client_stays_limited_while_an_attacker_cycles_addresses() {
        let limiter = one_a_second();
        assert!(limiter.check(A).is_ok());
        // Time stands still: no bucket refills, so only eviction could let A through.
        for n in 0..3 * MAX_CLIENTS as u32 {
            let _ = limiter.check(v4(0x0a00_0000 + n));
            if n % 1_000 == 0 {
                assert!(limiter.check(A).is_err(), "A was let through after {n}");
            }
        }
        assert!(limiter.check(A).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_drops_the_least_recently_seen_client() {
        let limiter = RateLimiter::with_capacity(1.0, 1, 4).expect("on");
        for n in 1..=4 {
            assert!(limiter.check(v4(n)).is_ok());
        }
        // 1 is seen again, so 2 is now the stalest.
        assert!(limiter.check(v4(1)).is_err());
        assert!(limiter.check(v4(5)).is_ok());
        assert!(limiter.check(v4(1)).is_err(), "1 kept its empty bucket");
        assert!(limiter.check(v4(3)).is_err(), "3 kept its empty bucket");
        assert!(
            limiter.check(v4(2)).is_ok(),
            "2 was dropped: a fresh bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded() {
        let limiter = one_a_second();
        for n in 0..3 * MAX_CLIENTS as u32 {
            let _ = limiter.check(v4(n));
            let _ = limiter.check(A);
        }
        let (buckets, log) = limiter.tracked();
        assert_eq!(buckets, MAX_CLIENTS);
        assert!(log <= 2 * MAX_CLIENTS, "{log} log entries");
    }
}
