//! [`RotatingPools`]: connections to the backend with a bounded lifetime.
//!
//! A Kubernetes Service (kube-proxy) balances connections, not requests: each new connection
//! goes to one ready pod and stays there. A client that keeps its keep-alive connections for
//! ever therefore never sends anything to a replica added after it connected, and at a
//! modest rate one pooled connection carries every call, so even the second of two original
//! replicas may get nothing (issue 14 measured exactly that).
//!
//! hyper-util's pool has no maximum connection age, and `pool_max_idle_per_host(0)`
//! (a connection per call) would pay a TCP, and for `https://` a TLS, handshake on every
//! call. So the client keeps [`POOLS`] independent clients, each with its own pool,
//! takes them in turn, and replaces a client once it is `max_age` old. A replaced client
//! takes no new call; its connections finish the calls they carry and are closed when its
//! last clone goes, so nothing in flight is cut. The next calls open fresh connections, which
//! the Service spreads over the pods ready at that moment.
//!
//! Why several pools: with one, every connection would be replaced at the same instant (a
//! burst of handshakes) and, at a low rate, the calls would still ride one connection to one
//! pod. Taking [`POOLS`] pools in turn spreads even a low rate over at least that many
//! connections, staggers their replacement over `max_age`, and sends a retry over another
//! connection than the attempt it repeats, often to another pod.
//!
//! Why 16 pools and 2 s: the balancer's picks are random, so a new pod's share of the calls
//! is the share of the recent picks that landed on it. 16 pools renewed every 2 s make 240
//! picks in 30 s (a new pod of three gets 33 % ± 3 %); with 8 pools, one run of
//! `scripts/bench_resilience.py` gave the new pod 26.5 % over 30 s and 12–47 % per 5 s. The
//! price is 8 pool renewals a second, each opening as many connections as its calls in flight
//! need (and as many TLS handshakes on `https://`): at 64 calls in flight, about 40 new
//! connections a second (counted with strace), nothing next to a pod's capacity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::http::BackendClient;

/// Independent pools taken in turn.
pub const POOLS: usize = 16;

/// Builds one client (each has a pool of its own).
pub type MakeClient = Box<dyn Fn() -> BackendClient + Send + Sync>;

struct Slot {
    client: BackendClient,
    /// When this client stops taking new calls; `None` never.
    retire_at: Option<Instant>,
}

/// [`POOLS`] clients, each replaced once `max_age` old.
pub struct RotatingPools {
    make: MakeClient,
    max_age: Option<Duration>,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for RotatingPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingPools")
            .field("pools", &self.slots.len())
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl RotatingPools {
    /// [`POOLS`] clients from `make`; `max_age` of `None` keeps each for ever (as one plain
    /// client would). The first lifetimes are staggered over `max_age` so that the pools
    /// are never all replaced at once.
    pub fn new(make: MakeClient, max_age: Option<Duration>) -> Self {
        let now = Instant::now();
        let slots = (0..POOLS)
            .map(|index| {
                let retire_at =
                    max_age.map(|age| now + age.mul_f64((index + 1) as f64 / POOLS as f64));
                Mutex::new(Slot {
                    client: make(),
                    retire_at,
                })
            })
            .collect();
        Self {
            make,
            max_age,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// The client for the next call: the pools in turn, an old one replaced first.
    pub fn pick(&self) -> BackendClient {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let (Some(retire_at), Some(max_age)) = (slot.retire_at, self.max_age)
            && now >= retire_at
        {
            // Building a client is a few microseconds (its TLS configuration is cloned,
            // not loaded), cheap enough under this slot's lock.
            slot.client = (self.make)();
            slot.retire_at = Some(next_retirement(retire_at, max_age, now));
        }
        slot.client.clone()
    }
}

/// The slot's next retirement after `now`, on its own schedule: `retire_at` plus whole
/// multiples of `max_age`. Counting from `now` instead would lose the stagger: after an idle
/// spell longer than `max_age` every slot is due, and all would be renewed together from then
/// on, every `max_age`, a burst of handshakes each time.
fn next_retirement(retire_at: Instant, max_age: Duration, now: Instant) -> Instant {
    let late = now.saturating_duration_since(retire_at).as_nanos();
    // How far `now` is into the slot's current period: below max_age, so it fits a u64 of
    // nanoseconds whatever the idle spell (max_age is at least 100 ms by the settings' bounds).
    let into_period = late % max_age.as_nanos().max(1);
    now + max_age - Duration::from_nanos(u64::try_from(into_period).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn counting(built: &Arc<AtomicUsize>) -> MakeClient {
        let built = Arc::clone(built);
        let transport =
            crate::backend::Transport::for_url("http://127.0.0.1:8080").expect("plain transport");
        Box::new(move || {
            built.fetch_add(1, Ordering::SeqCst);
            transport.client(Duration::from_secs(1), 4)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn each_pool_is_replaced_once_max_age_old_and_not_before() {
        let built = Arc::new(AtomicUsize::new(0));
        let pools = RotatingPools::new(counting(&built), Some(Duration::from_secs(2)));
        assert_eq!(built.load(Ordering::SeqCst), POOLS);
        for _ in 0..POOLS {
            let _ = pools.pick();
        }
        assert_eq!(built.load(Ordering::SeqCst), POOLS, "all young");

        // Staggered: after a quarter of max_age, the first quarter of the pools is due.
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..POOLS {
            let _ = pools.pick();
        }
        assert_eq!(built.load(Ordering::SeqCst), POOLS + POOLS / 4);

        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..POOLS {
            let _ = pools.pick();
        }
        assert_eq!(built.load(Ordering::SeqCst), 2 * POOLS + POOLS / 4);
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_idle_spell_the_pools_are_still_replaced_in_turn() {
        let built = Arc::new(AtomicUsize::new(0));
        let pools = RotatingPools::new(counting(&built), Some(Duration::from_secs(2)));
        // Longer than max_age without a call: every pool is due, and the next round renews
        // them all at once (nothing can be done about that round).
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..POOLS {
            let _ = pools.pick();
        }
        assert_eq!(built.load(Ordering::SeqCst), 2 * POOLS);

        // From then on, as at the start: a quarter of max_age later, a quarter of them.
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..POOLS {
            let _ = pools.pick();
        }
        assert_eq!(
            built.load(Ordering::SeqCst),
            2 * POOLS + POOLS / 4,
            "the renewals kept their stagger"
        );
    }

    #[test]
    fn the_next_retirement_keeps_the_slots_phase() {
        let start = Instant::now();
        let age = Duration::from_secs(2);
        let due = start + Duration::from_millis(250);
        // On time: one period on.
        assert_eq!(next_retirement(due, age, due), due + age);
        // 7.1 s late: the first whole period after now, at the same phase.
        let now = due + Duration::from_millis(7_100);
        assert_eq!(next_retirement(due, age, now), due + Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_max_age_no_pool_is_ever_replaced() {
        let built = Arc::new(AtomicUsize::new(0));
        let pools = RotatingPools::new(counting(&built), None);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        for _ in 0..100 {
            let _ = pools.pick();
        }
        assert_eq!(built.load(Ordering::SeqCst), POOLS);
    }
}
