//! The breaker's state machine: Closed, Open, HalfOpen. No I/O and no clock of its own:
//! callers pass `now`, so tests drive it with paused tokio time.
//!
//! One `std::sync::Mutex` guards the state. Every critical section is a few comparisons and
//! counter updates (no allocation, no await, no callback), so an async-aware lock or a
//! lock-free design would buy nothing here. The transition listener and the log lines run
//! after the lock is released.
//!
//! # Generations
//! Each transition starts a new generation, and a [`Permit`] remembers the one it was issued
//! in. An outcome from an older generation is dropped: a call admitted while closed that
//! fails after the circuit has already opened must neither decide a half-open trial nor
//! count against the circuit once it has closed again.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::BreakerConfig;
use super::consecutive::ConsecutiveFailures;
use super::error::CircuitOpen;
use super::rate::RateWindow;

/// Called with `(from, to)` on every transition, outside the breaker's lock.
pub type Listener = Arc<dyn Fn(State, State) + Send + Sync>;

/// The breaker's state, as reported to metrics and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused at once until `open_for` has elapsed.
    Open,
    /// A limited number of trial calls pass; the rest are refused.
    HalfOpen,
}

impl State {
    /// The label used in metrics, logs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call went, as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend did its job.
    Success,
    /// The backend failed (5xx, 429, connect error, timeout).
    Failure,
    /// Says nothing about the backend's health (a 4xx that is the caller's fault, a call
    /// cancelled by the caller): counts neither way.
    Ignored,
}

/// A point-in-time view of the breaker, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The current state.
    pub state: State,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Calls in the rate window.
    pub window_calls: usize,
    /// Share of failures in the window (0 to 1).
    pub window_failure_rate: f64,
    /// Share of calls slower than `slow_call_duration` in the window (0 to 1).
    pub window_slow_rate: f64,
    /// Transitions since the breaker was created.
    pub transitions: u64,
    /// While open: milliseconds until trial calls are admitted (0 once due).
    pub opened_for_remaining_ms: Option<u64>,
}

/// Why the circuit opened, for the log line.
#[derive(Debug, Clone, Copy)]
enum Trip {
    ConsecutiveFailures(u32),
    FailureRate { rate: f64, calls: usize },
    SlowCallRate { rate: f64, calls: usize },
    TrialFailed,
    TrialSlow,
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConsecutiveFailures(count) => write!(f, "{count} consecutive failures"),
            Self::FailureRate { rate, calls } => {
                write!(f, "failure rate {:.0} % over {calls} calls", rate * 100.0)
            }
            Self::SlowCallRate { rate, calls } => {
                write!(f, "slow-call rate {:.0} % over {calls} calls", rate * 100.0)
            }
            Self::TrialFailed => f.write_str("a half-open trial call failed"),
            Self::TrialSlow => f.write_str("a half-open trial call was slow"),
        }
    }
}

/// A transition decided under the lock, announced after it is released.
#[derive(Debug, Clone, Copy)]
struct Transition {
    from: State,
    to: State,
    trip: Option<Trip>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// Invariant: `in_flight + succeeded <= half_open_calls`.
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
    },
}

impl Phase {
    fn state(self) -> State {
        match self {
            Self::Closed => State::Closed,
            Self::Open { .. } => State::Open,
            Self::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    generation: u64,
    transitions: u64,
    consecutive: ConsecutiveFailures,
    window: RateWindow,
}

impl Inner {
    fn enter(&mut self, phase: Phase, trip: Option<Trip>) -> Transition {
        let from = self.phase.state();
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.transitions = self.transitions.saturating_add(1);
        Transition {
            from,
            to: phase.state(),
            trip,
        }
    }
}

/// A circuit breaker's shared state; wrap it in an `Arc` and hand it to every service clone.
pub struct Breaker {
    config: BreakerConfig,
    /// `config.half_open_calls`, at least 1 so that the circuit can always close.
    half_open_calls: u32,
    inner: Mutex<Inner>,
    listener: Option<Listener>,
    /// The state, for those that must react at once when the circuit opens (retries asleep
    /// in their backoff) rather than find out at their next call.
    watched: watch::Sender<State>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.config)
            .field("inner", &self.lock())
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker. `config` should have passed [`BreakerConfig::validate`]; values it
    /// would refuse do not panic here but may leave a rule that never trips.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            half_open_calls: config.half_open_calls.max(1),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                transitions: 0,
                consecutive: ConsecutiveFailures::default(),
                window: RateWindow::new(config.window),
            }),
            config,
            listener: None,
            watched: watch::Sender::new(State::Closed),
        }
    }

    /// A closed breaker that calls `listener` on every transition (metrics, logs).
    pub fn with_listener(config: BreakerConfig, listener: Listener) -> Self {
        Self {
            listener: Some(listener),
            ..Self::new(config)
        }
    }

    /// The settings this breaker runs with.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make one call at `now`.
    ///
    /// Closed: always admitted. Open: refused until `open_for` has elapsed, then the circuit
    /// turns half-open. HalfOpen: admitted while trials in flight plus trials already
    /// succeeded are fewer than `half_open_calls` (no more trials than needed to close).
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<Permit, CircuitOpen> {
        let mut transition = None;
        let admitted = {
            let mut inner = self.lock();
            if let Phase::Open { until } = inner.phase
                && now >= until
            {
                let half_open = Phase::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                };
                transition = Some(inner.enter(half_open, None));
            }
            let generation = inner.generation;
            match &mut inner.phase {
                Phase::Closed => Some(generation),
                Phase::Open { .. } => None,
                Phase::HalfOpen {
                    in_flight,
                    succeeded,
                } => {
                    if *in_flight + *succeeded < self.half_open_calls {
                        *in_flight += 1;
                        Some(generation)
                    } else {
                        None
                    }
                }
            }
        };
        self.announce(transition);
        admitted
            .map(|generation| Permit {
                breaker: Some(Arc::clone(self)),
                generation,
            })
            .ok_or(CircuitOpen)
    }

    /// A receiver of every state change (it may skip states that did not last).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.watched.subscribe()
    }

    /// The current state. Open stays Open after `open_for` until the next call asks to go
    /// through (resilience4j's default): nothing changes without traffic.
    pub fn state(&self) -> State {
        self.lock().phase.state()
    }

    /// A point-in-time view for `/status`.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let inner = self.lock();
        let opened_for_remaining_ms = match inner.phase {
            Phase::Open { until } => Some(
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
            ),
            Phase::Closed | Phase::HalfOpen { .. } => None,
        };
        BreakerSnapshot {
            state: inner.phase.state(),
            consecutive_failures: inner.consecutive.count(),
            window_calls: inner.window.calls(),
            window_failure_rate: inner.window.failure_rate(),
            window_slow_rate: inner.window.slow_rate(),
            transitions: inner.transitions,
            opened_for_remaining_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock cannot leave the counters half-updated in a way that
        // matters more than losing the breaker altogether.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one call's outcome.
    fn finish(&self, generation: u64, outcome: Outcome, elapsed: Duration, now: Instant) {
        let transition = {
            let mut inner = self.lock();
            if generation != inner.generation {
                return; // Admitted before the last transition: see "Generations".
            }
            self.apply(&mut inner, outcome, elapsed, now)
        };
        self.announce(transition);
    }

    fn apply(
        &self,
        inner: &mut Inner,
        outcome: Outcome,
        elapsed: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let config = &self.config;
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                // Counts neither way; a trial only gives its slot back.
                if let Phase::HalfOpen { in_flight, .. } = &mut inner.phase {
                    *in_flight = in_flight.saturating_sub(1);
                }
                return None;
            }
        };
        let slow = elapsed > config.slow_call_duration;
        let reopen = Phase::Open {
            until: now + config.open_for,
        };
        match &mut inner.phase {
            Phase::Closed => {
                // 1. Feed both strategies.
                inner.consecutive.record(failed);
                inner.window.record(failed, slow);
                // 2. The consecutive rule first: it needs no minimum.
                let trip = if inner.consecutive.tripped(config.failure_threshold) {
                    Some(Trip::ConsecutiveFailures(inner.consecutive.count()))
                } else {
                    self.rate_trip(&inner.window)
                };
                // 3. Trip: counters are kept, so the snapshot shows why it opened.
                trip.map(|trip| inner.enter(reopen, Some(trip)))
            }
            // Permits are only issued while closed or half-open, and every transition
            // starts a new generation: a current permit cannot meet an open circuit.
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    Some(inner.enter(reopen, Some(Trip::TrialFailed)))
                } else if slow && config.slow_call_rate_enabled() {
                    Some(inner.enter(reopen, Some(Trip::TrialSlow)))
                } else {
                    *succeeded += 1;
                    (*succeeded >= self.half_open_calls).then(|| {
                        inner.consecutive.reset();
                        inner.window.reset();
                        inner.enter(Phase::Closed, None)
                    })
                }
            }
        }
    }

    /// The rate rules, once the window holds `min_calls` calls.
    fn rate_trip(&self, window: &RateWindow) -> Option<Trip> {
        let config = &self.config;
        let calls = window.calls();
        if calls == 0 || calls < config.min_calls {
            return None;
        }
        let failure_rate = window.failure_rate();
        let slow_rate = window.slow_rate();
        if config.failure_rate_enabled() && failure_rate >= config.failure_rate {
            Some(Trip::FailureRate {
                rate: failure_rate,
                calls,
            })
        } else if config.slow_call_rate_enabled() && slow_rate >= config.slow_call_rate {
            Some(Trip::SlowCallRate {
                rate: slow_rate,
                calls,
            })
        } else {
            None
        }
    }

    /// Logs a transition and calls the listener; never under the lock.
    fn announce(&self, transition: Option<Transition>) {
        let Some(Transition { from, to, trip }) = transition else {
            return;
        };
        // The state read now, not `to`: two transitions announced out of order must still
        // leave the latest state published.
        let latest = self.state();
        self.watched.send_if_modified(|published| {
            let changed = *published != latest;
            *published = latest;
            changed
        });
        match (to, trip) {
            (State::Open, Some(trip)) => tracing::warn!(
                from = from.as_str(),
                to = to.as_str(),
                reason = %trip,
                open_for_ms = u64::try_from(self.config.open_for.as_millis()).unwrap_or(u64::MAX),
                "circuit opened"
            ),
            _ => tracing::info!(from = from.as_str(), to = to.as_str(), "circuit changed"),
        }
        if let Some(listener) = &self.listener {
            listener(from, to);
        }
    }
}

/// Leave to make one call. Record its outcome with [`Permit::record`]; dropping it
/// unrecorded (a cancelled call) counts as [`Outcome::Ignored`] and frees a half-open slot.
#[derive(Debug)]
#[must_use = "a permit decides nothing until its outcome is recorded"]
pub struct Permit {
    /// `None` once recorded, so that `Drop` does not record twice.
    breaker: Option<Arc<Breaker>>,
    generation: u64,
}

impl Permit {
    /// Records how the call went and how long it took, at `now`.
    pub fn record(mut self, outcome: Outcome, elapsed: Duration, now: Instant) {
        if let Some(breaker) = self.breaker.take() {
            breaker.finish(self.generation, outcome, elapsed, now);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.finish(
                self.generation,
                Outcome::Ignored,
                Duration::ZERO,
                Instant::now(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_secs(3);

    /// Only the consecutive rule, as the seed.
    fn consecutive_only() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 1.0,
            ..BreakerConfig::default()
        }
    }

    /// Only the failure-rate rule.
    fn rate_only() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        }
    }

    fn breaker(config: BreakerConfig) -> Arc<Breaker> {
        Arc::new(Breaker::new(config))
    }

    fn call(breaker: &Arc<Breaker>, outcome: Outcome, elapsed: Duration) {
        let now = Instant::now();
        breaker
            .try_acquire(now)
            .expect("admitted")
            .record(outcome, elapsed, now);
    }

    /// Opens the circuit with the consecutive rule and waits out `open_for`.
    async fn open_then_wait(breaker: &Arc<Breaker>) {
        for _ in 0..breaker.config().failure_threshold {
            call(breaker, Outcome::Failure, FAST);
        }
        assert_eq!(breaker.state(), State::Open);
        tokio::time::advance(breaker.config().open_for).await;
    }

    #[tokio::test(start_paused = true)]
    async fn three_consecutive_failures_open_the_circuit() {
        let breaker = breaker(consecutive_only());
        call(&breaker, Outcome::Failure, FAST);
        call(&breaker, Outcome::Failure, FAST);
        assert_eq!(breaker.state(), State::Closed);
        call(&breaker, Outcome::Failure, FAST);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.snapshot().consecutive_failures, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_in_between_resets_the_consecutive_count() {
        let breaker = breaker(consecutive_only());
        for outcome in [
            Outcome::Failure,
            Outcome::Failure,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Failure,
        ] {
            call(&breaker, outcome, FAST);
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_trips_only_once_the_window_holds_min_calls() {
        // Defaults: 50 % over a window of 20, evaluated from 10 calls on.
        let breaker = breaker(rate_only());
        for _ in 0..5 {
            call(&breaker, Outcome::Failure, FAST);
        }
        for _ in 0..4 {
            call(&breaker, Outcome::Success, FAST);
        }
        assert_eq!(breaker.state(), State::Closed, "9 calls, 56 % failed");
        call(&breaker, Outcome::Success, FAST);
        assert_eq!(breaker.state(), State::Open, "10 calls, 50 % failed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_under_the_threshold_keeps_the_circuit_closed() {
        let breaker = breaker(rate_only());
        for call_number in 0..100 {
            // One call in three fails: 33 % < 50 %.
            let outcome = if call_number % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            call(&breaker, outcome, FAST);
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().window_calls, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_rate_trips_the_circuit_even_when_calls_succeed() {
        let breaker = breaker(BreakerConfig {
            failure_threshold: 0,
            slow_call_rate: 0.8,
            ..BreakerConfig::default()
        });
        for _ in 0..2 {
            call(&breaker, Outcome::Success, FAST);
        }
        for _ in 0..7 {
            call(&breaker, Outcome::Success, SLOW);
        }
        assert_eq!(breaker.state(), State::Closed, "under min_calls");
        call(&breaker, Outcome::Success, SLOW);
        assert_eq!(breaker.state(), State::Open, "8 slow of 10");
        assert_eq!(breaker.snapshot().window_failure_rate, 0.0);
        assert_eq!(breaker.snapshot().window_slow_rate, 0.8);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_do_not_trip_while_the_slow_rule_is_off() {
        let breaker = breaker(BreakerConfig::default());
        for _ in 0..50 {
            call(&breaker, Outcome::Success, SLOW);
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().window_slow_rate, 1.0, "still measured");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_refuses_until_open_for_has_elapsed() {
        let breaker = breaker(consecutive_only());
        for _ in 0..3 {
            call(&breaker, Outcome::Failure, FAST);
        }
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(breaker.try_acquire(Instant::now()).err(), Some(CircuitOpen));
        assert_eq!(breaker.snapshot().opened_for_remaining_ms, Some(1_000));

        tokio::time::advance(Duration::from_secs(1)).await;
        let trial = breaker.try_acquire(Instant::now());
        assert!(trial.is_ok(), "open_for elapsed: a trial call goes through");
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_circuit_admits_exactly_half_open_calls_concurrent_trials() {
        let breaker = breaker(BreakerConfig {
            half_open_calls: 2,
            ..consecutive_only()
        });
        open_then_wait(&breaker).await;
        let now = Instant::now();
        let first = breaker.try_acquire(now).expect("first trial");
        let second = breaker.try_acquire(now).expect("second trial");
        assert_eq!(breaker.try_acquire(now).err(), Some(CircuitOpen));
        first.record(Outcome::Success, FAST, now);
        assert_eq!(
            breaker.try_acquire(now).err(),
            Some(CircuitOpen),
            "one success and one in flight already make the two trials"
        );
        assert_eq!(breaker.state(), State::HalfOpen);
        second.record(Outcome::Success, FAST, now);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_the_circuit_for_a_new_open_for() {
        let breaker = breaker(consecutive_only());
        open_then_wait(&breaker).await;
        call(&breaker, Outcome::Failure, FAST);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.snapshot().opened_for_remaining_ms, Some(15_000));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(breaker.try_acquire(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_trial_reopens_the_circuit_when_the_slow_rule_is_on() {
        let breaker = breaker(BreakerConfig {
            slow_call_rate: 0.5,
            ..consecutive_only()
        });
        open_then_wait(&breaker).await;
        call(&breaker, Outcome::Success, SLOW);
        assert_eq!(breaker.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_trial_closes_the_circuit_and_empties_the_window() {
        let breaker = breaker(BreakerConfig::default());
        open_then_wait(&breaker).await;
        call(&breaker, Outcome::Success, FAST);
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.state, State::Closed);
        assert_eq!(snapshot.consecutive_failures, 0);
        assert_eq!(snapshot.window_calls, 0);
        // A fresh start: two failures are not enough to reopen.
        call(&breaker, Outcome::Failure, FAST);
        call(&breaker, Outcome::Failure, FAST);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_outcomes_count_neither_way() {
        let breaker = breaker(BreakerConfig::default());
        call(&breaker, Outcome::Failure, FAST);
        call(&breaker, Outcome::Failure, FAST);
        for _ in 0..20 {
            call(&breaker, Outcome::Ignored, SLOW);
        }
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.consecutive_failures, 2, "no reset");
        assert_eq!(snapshot.window_calls, 2, "not in the window");
        call(&breaker, Outcome::Failure, FAST);
        assert_eq!(breaker.state(), State::Open, "and no dilution");

        tokio::time::advance(Duration::from_secs(15)).await;
        call(&breaker, Outcome::Ignored, FAST);
        assert_eq!(
            breaker.state(),
            State::HalfOpen,
            "an ignored trial decides nothing"
        );
        call(&breaker, Outcome::Success, FAST);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_permit_releases_its_half_open_slot() {
        let breaker = breaker(BreakerConfig::default());
        open_then_wait(&breaker).await;
        let trial = breaker.try_acquire(Instant::now()).expect("trial");
        assert!(breaker.try_acquire(Instant::now()).is_err(), "slot taken");
        drop(trial);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(
            breaker.try_acquire(Instant::now()).is_ok(),
            "slot free again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_admitted_before_the_trip_does_not_decide_the_trial() {
        let breaker = breaker(BreakerConfig::default());
        let straggler = breaker.try_acquire(Instant::now()).expect("closed");
        open_then_wait(&breaker).await;
        let trial = breaker.try_acquire(Instant::now()).expect("trial");

        straggler.record(Outcome::Failure, FAST, Instant::now());
        assert_eq!(breaker.state(), State::HalfOpen, "the straggler is stale");
        trial.record(Outcome::Success, FAST, Instant::now());
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_sees_closed_open_half_open_closed() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener: Listener = {
            let seen = Arc::clone(&seen);
            Arc::new(move |from, to| seen.lock().expect("lock").push((from, to)))
        };
        let breaker = Arc::new(Breaker::with_listener(BreakerConfig::default(), listener));
        open_then_wait(&breaker).await;
        call(&breaker, Outcome::Success, FAST);

        assert_eq!(
            *seen.lock().expect("lock"),
            [
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed),
            ]
        );
        assert_eq!(breaker.snapshot().transitions, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_may_read_the_breaker_without_deadlocking() {
        let slot: Arc<Mutex<Option<std::sync::Weak<Breaker>>>> = Arc::default();
        let listener: Listener = {
            let slot = Arc::clone(&slot);
            Arc::new(move |_, to| {
                let breaker = slot
                    .lock()
                    .expect("lock")
                    .as_ref()
                    .and_then(|b| b.upgrade());
                if let Some(breaker) = breaker {
                    assert_eq!(breaker.state(), to);
                }
            })
        };
        let breaker = Arc::new(Breaker::with_listener(BreakerConfig::default(), listener));
        *slot.lock().expect("lock") = Some(Arc::downgrade(&breaker));
        open_then_wait(&breaker).await;
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn states_are_named_in_snake_case() {
        assert_eq!(State::HalfOpen.as_str(), "half_open");
        assert_eq!(State::Closed.to_string(), "closed");
        assert_eq!(
            serde_json::to_string(&State::HalfOpen).expect("serialize"),
            "\"half_open\""
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_serializes_for_status() {
        let breaker = breaker(BreakerConfig::default());
        call(&breaker, Outcome::Failure, FAST);
        call(&breaker, Outcome::Success, FAST);
        let json = serde_json::to_value(breaker.snapshot()).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "state": "closed",
                "consecutive_failures": 0,
                "window_calls": 2,
                "window_failure_rate": 0.5,
                "window_slow_rate": 0.0,
                "transitions": 0,
                "opened_for_remaining_ms": null,
            })
        );
    }
}
