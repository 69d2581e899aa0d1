//! Caps on concurrent live-update streams: one for the whole service and a lower one per
//! client ([`ClientKey`]: an IPv4 address or an IPv6 /64), so that one address cannot take
//! every slot and lock everyone else out of live updates.
//!
//! A stream holds a [`StreamSlot`] for as long as it is open; dropping the slot (the stream's
//! task ends, or the connection's body is dropped when the peer goes away) gives it back.
//! Memory is bounded by construction: only clients with at least one open stream are tracked,
//! so there are never more entries than the global cap.
//!
//! Over a cap the answer is `{"error": "...", "code": "too-many-streams"}` with `Retry-After`: 429 when this client has
//! its share open (others are still served), 503 when the service is full. Both are counted in
//! `live_streams_refused_total{reason}`; `live_streams_open` shows the streams open now. Only
//! the 503 is the service's own capacity refusing, so only it counts towards the refused share
//! that fails readiness ([`crate::pressure`]).
//!
//! The global cap is also bounded by memory ([`fit_to_memory`]): under a cgroup memory limit
//! ([`memory_limit`]) a cap whose streams could not all fit beside the rest of the process is
//! lowered to one that does, with a log line, rather than letting the kernel kill the pod
//! with every stream in it once enough readers arrive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::client_addr::ClientKey;
use crate::error_body::{ErrorBody, ErrorCode, respond_retry_after};
use crate::pressure::Shed;

/// Seconds a refused client is told to wait: a slot frees only when some stream ends, so
/// asking again within a second is rarely worth it.
pub const RETRY_AFTER_SECS: u32 = 5;

/// A cgroup memory limit at or above this is no limit (cgroup v1 writes "unlimited" as a
/// page-rounded `i64::MAX`).
const NO_LIMIT: u64 = 1 << 60;

/// This process's cgroup memory limit in bytes, if it has one: cgroup v2 `memory.max`, else
/// v1 `memory.limit_in_bytes`, as a container sees its own cgroup at `/sys/fs/cgroup`.
pub fn memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| parse_memory_limit(&text))
}

/// A cgroup limit file's value: a byte count, or none for `max` or a v1 "unlimited".
fn parse_memory_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&bytes| bytes < NO_LIMIT)
}

/// A stream cap after [`fit_to_memory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The cap to enforce.
    pub cap: usize,
    /// Why it was lowered, as the one line to log; `None` when the asked cap fits.
    pub lowered: Option<String>,
}

/// `cap` streams of `bytes_each` resident bytes, lowered when they cannot fit in `limit` (the
/// cgroup memory limit, if any) beside `reserved` bytes for the rest of the process. At least
/// one stream is always allowed.
pub fn fit_to_memory(
    setting: &str,
    cap: usize,
    bytes_each: u64,
    reserved: u64,
    limit: Option<u64>,
) -> Fitted {
    let Some(limit) = limit else {
        return Fitted { cap, lowered: None };
    };
    let room = limit.saturating_sub(reserved) / bytes_each.max(1);
    let fits = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if cap <= fits {
        return Fitted { cap, lowered: None };
    }
    const MIB: u64 = 1024 * 1024;
    Fitted {
        cap: fits,
        lowered: Some(format!(
            "{setting}={cap} lowered to {fits}: {cap} streams of {bytes_each} bytes each do not fit \
             in the memory limit of {} MiB beside {} MiB for the rest of the process",
            limit / MIB,
            reserved / MIB
        )),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The service has its global cap of streams open: 503.
    #[error("too many live-update connections; retry later")]
    Full,
    /// This client has its share open: 429.
    #[error("too many live-update connections from this address; close one or retry later")]
    ClientFull,
}

impl StreamRefused {
    /// The status this refusal answers.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Full => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClientFull => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Full => "global",
            Self::ClientFull => "per_client",
        }
    }
}

impl IntoResponse for StreamRefused {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(ErrorCode::TooManyStreams, self.to_string());
        let mut response = respond_retry_after(self.status(), body, u64::from(RETRY_AFTER_SECS));
        if self == Self::Full {
            // The service's own capacity is what refused: readiness counts it as shedding. A
            // client over its share is that client's limit, not the pod's saturation.
            response.extensions_mut().insert(Shed("streams"));
        }
        response
    }
}

/// The two caps and the streams open under them.
#[derive(Debug)]
pub struct StreamLimit {
    global: usize,
    per_client: usize,
    open: Mutex<Open>,
    gauge: Gauge,
    refused: Family<ReasonLabel, Counter>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only clients with at least one open stream: at most `global` entries.
    by_client: HashMap<ClientKey, usize>,
}

impl StreamLimit {
    /// At most `global` streams in all and `per_client` per client, with the metrics registered
    /// in `registry`. A `per_client` above `global` is the same as `global`.
    pub fn new(global: usize, per_client: usize, registry: &mut Registry) -> Arc<Self> {
        let limit = Self {
            global,
            per_client: per_client.min(global),
            open: Mutex::new(Open::default()),
            gauge: Gauge::default(),
            refused: Family::default(),
        };
        registry.register(
            "live_streams_open",
            "Live-update (Server-Sent Events) streams open now",
            limit.gauge.clone(),
        );
        registry.register(
            "live_streams_refused",
            "Live-update streams refused: reason global (the service's cap) or per_client (one address's cap)",
            limit.refused.clone(),
        );
        Arc::new(limit)
    }

    /// A slot for one more stream of `client`, or why not.
    pub fn try_acquire(self: &Arc<Self>, client: ClientKey) -> Result<StreamSlot, StreamRefused> {
        let admitted = {
            let mut open = self.lock();
            let mine = open.by_client.get(&client).copied().unwrap_or(0);
            if mine >= self.per_client {
                Err(StreamRefused::ClientFull)
            } else if open.total >= self.global {
                Err(StreamRefused::Full)
            } else {
                open.total += 1;
                open.by_client.insert(client, mine + 1);
                Ok(open.total)
            }
        };
        match admitted {
            Ok(total) => {
                self.gauge.set(i64::try_from(total).unwrap_or(i64::MAX));
                Ok(StreamSlot {
                    limit: Arc::clone(self),
                    client,
                })
            }
            Err(refused) => {
                self.refused
                    .get_or_create(&ReasonLabel {
                        reason: refused.label(),
                    })
                    .inc();
                tracing::debug!(%client, reason = refused.label(), "live-update stream refused");
                Err(refused)
            }
        }
    }

    /// Streams open now, in all and for `client`.
    pub fn open(&self, client: ClientKey) -> (usize, usize) {
        let open = self.lock();
        (
            open.total,
            open.by_client.get(&client).copied().unwrap_or(0),
        )
    }

    fn release(&self, client: ClientKey) {
        let total = {
            let mut open = self.lock();
            open.total = open.total.saturating_sub(1);
            if let Some(mine) = open.by_client.get_mut(&client) {
                *mine = mine.saturating_sub(1);
                if *mine == 0 {
                    open.by_client.remove(&client);
                }
            }
            open.total
        };
        self.gauge.set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open stream's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct StreamSlot {
    limit: Arc<StreamLimit>,
    client: ClientKey,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.limit.release(self.client);
    }
}

/// Extractor: the [`ClientKey`] of the TCP peer (`ConnectInfo`). `X-Forwarded-For` is not
/// trusted, since any client can forge it. Without `ConnectInfo` (a router driven by
/// `oneshot` in tests) every request is one client.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub ClientKey);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Ok(Self(ClientKey::from(addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    fn limit(global: usize, per_client: usize) -> Arc<StreamLimit> {
        StreamLimit::new(global, per_client, &mut Registry::default())
    }

    #[test]
    fn a_client_gets_its_share_and_others_still_get_theirs() {
        let limit = limit(10, 2);
        let _a1 = limit.try_acquire(key(1)).expect("first");
        let _a2 = limit.try_acquire(key(1)).expect("second");
        assert_eq!(
            limit.try_acquire(key(1)).err(),
            Some(StreamRefused::ClientFull)
        );
        assert!(limit.try_acquire(key(2)).is_ok());
    }

    #[test]
    fn the_global_cap_holds_across_clients() {
        let limit = limit(3, 2);
        let _slots: Vec<_> = (1..=3)
            .map(|n| limit.try_acquire(key(n)).expect("under the cap"))
            .collect();
        assert_eq!(limit.try_acquire(key(4)).err(), Some(StreamRefused::Full));
    }

    #[test]
    fn dropping_a_slot_frees_it_and_forgets_an_idle_client() {
        let limit = limit(10, 1);
        let slot = limit.try_acquire(key(1)).expect("first");
        assert!(limit.try_acquire(key(1)).is_err());
        drop(slot);
        assert_eq!(limit.open(key(1)), (0, 0));
        assert!(limit.lock().by_client.is_empty(), "no entry kept for it");
        assert!(limit.try_acquire(key(1)).is_ok());
    }

    #[test]
    fn cgroup_limits_read_as_bytes_and_unlimited_as_none() {
        assert_eq!(parse_memory_limit("268435456\n"), Some(268_435_456));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn a_cap_that_fits_the_memory_limit_or_no_limit_is_kept() {
        const MIB: u64 = 1024 * 1024;
        let kept = Fitted {
            cap: 10_000,
            lowered: None,
        };
        assert_eq!(fit_to_memory("CAP", 10_000, 16_384, 32 * MIB, None), kept);
        assert_eq!(
            fit_to_memory("CAP", 10_000, 16_384, 32 * MIB, Some(256 * MIB)),
            kept
        );
    }

    #[test]
    fn a_cap_that_cannot_fit_is_lowered_to_what_fits_with_the_reason() {
        const MIB: u64 = 1024 * 1024;
        let fitted = fit_to_memory("CAP", 10_000, 16_384, 32 * MIB, Some(64 * MIB));
        assert_eq!(fitted.cap, 2_048);
        assert_eq!(
            fitted.lowered.as_deref(),
            Some(
                "CAP=10000 lowered to 2048: 10000 streams of 16384 bytes each do not fit in the \
                 memory limit of 64 MiB beside 32 MiB for the rest of the process"
            )
        );
        assert_eq!(
            fit_to_memory("CAP", 10, 16_384, 32 * MIB, Some(16 * MIB)).cap,
            1,
            "one stream is always allowed"
        );
    }

    #[tokio::test]
    async fn refusals_are_answered_with_retry_after_and_their_code() {
        for (refused, status) in [(StreamRefused::Full, 503), (StreamRefused::ClientFull, 429)] {
            let response = refused.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "5");
            assert_eq!(
                response.extensions().get::<Shed>().is_some(),
                refused == StreamRefused::Full,
                "only the service's own cap counts as shedding"
            );
            let body = crate::error_body::read(response).await;
            assert_eq!(body.code, ErrorCode::TooManyStreams);
            assert_eq!(body.error, refused.to_string());
        }
    }
}
