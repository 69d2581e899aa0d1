//! The pressure state end to end on tokio's paused clock: readiness, its hysteresis and
//! recovery, own time against dependency waits, and the shedding limit.

use super::layer::InFlight;
use super::settings::tests::args;
use super::*;

fn pressure() -> Arc<Pressure> {
    Pressure::new(args(), Lifecycle::new(), &mut Registry::default())
}

/// 100 requests of 500 ms (over the 400 ms threshold), then one refresh.
fn slow_for_a_tick() -> Arc<Pressure> {
    let pressure = pressure();
    served(&pressure, 100, 500);
    pressure.tick();
    pressure
}

/// No traffic for the last `READINESS_RECENT_SECS` (and a tick), then one refresh.
async fn quiet_for_the_recent_seconds(pressure: &Pressure) {
    tokio::time::advance(Duration::from_millis(5_250)).await;
    pressure.tick();
}

fn served(pressure: &Pressure, n: usize, ms: u64) {
    for _ in 0..n {
        pressure.record(Duration::from_millis(ms), Duration::ZERO);
    }
}

fn refused(pressure: &Pressure, n: usize) {
    for _ in 0..n {
        pressure.record_refused();
    }
}

#[tokio::test(start_paused = true)]
async fn three_slow_requests_do_not_flip_readiness() {
    let pressure = pressure();
    served(&pressure, 3, 2_000);
    pressure.tick();
    assert!(pressure.readiness().is_ok());
}

#[tokio::test(start_paused = true)]
async fn readiness_fails_above_the_threshold_and_recovers_as_samples_age_out() {
    let pressure = slow_for_a_tick();
    let unready = pressure.readiness().expect_err("unready");
    assert_eq!(unready["reason"], "latency");
    assert!(
        unready["p999_ms"].as_f64().is_some_and(|p| p > 400.0),
        "{unready}"
    );

    tokio::time::advance(Duration::from_secs(11)).await;
    pressure.tick();
    assert!(pressure.readiness().is_ok(), "recovered with no traffic");
}

#[tokio::test(start_paused = true)]
async fn readiness_recovers_only_well_below_the_threshold() {
    let pressure = slow_for_a_tick();
    // Then steady traffic at 380 ms: once the slow bucket ages out of the window, p99.9 is
    // 380 ms, under 400 but above the 360 ms recovery point, and the recent seconds are
    // still full of such requests.
    for _ in 0..40 {
        tokio::time::advance(TICK).await;
        served(&pressure, 30, 380);
        pressure.tick();
    }
    assert!(pressure.snapshot().p999 < 0.4, "{:?}", pressure.snapshot());
    assert!(pressure.readiness().is_err(), "hysteresis holds it unready");
}

#[tokio::test(start_paused = true)]
async fn latency_readiness_returns_once_the_pressure_has_passed() {
    let pressure = slow_for_a_tick();
    assert!(pressure.readiness().is_err());

    // No traffic for the recent seconds: the window still holds the slow samples, but
    // nothing says the pod is still overloaded (and an unready pod gets no traffic to say
    // otherwise).
    quiet_for_the_recent_seconds(&pressure).await;
    assert!(pressure.snapshot().p999 > 0.4, "{:?}", pressure.snapshot());
    assert!(
        pressure.readiness().is_ok(),
        "ready long before the window clears"
    );

    // Fast traffic keeps it ready although the window's p99.9 is still high.
    served(&pressure, 100, 10);
    pressure.tick();
    assert!(pressure.readiness().is_ok());
}

#[tokio::test(start_paused = true)]
async fn time_waiting_on_a_dependency_does_not_count() {
    // Every request took 2 s, 1.95 s of it waiting on Redis.
    let pressure = pressure();
    for _ in 0..1_000 {
        pressure.record(Duration::from_secs(2), Duration::from_millis(1_950));
    }
    pressure.tick();
    assert!(pressure.readiness().is_ok());
    assert_eq!(pressure.reason(), Reason::None, "nothing to shed");
    assert!(pressure.snapshot().p999 < 0.06, "{:?}", pressure.snapshot());
    assert!(
        (pressure.dependency_waits().p999 - 1.95).abs() < 0.02,
        "{:?}",
        pressure.dependency_waits()
    );
    // The full figure is still there for people.
    let full = pressure.window.snapshot();
    assert!((full.p999 - 2.0).abs() < 0.02, "{full:?}");
}

#[tokio::test(start_paused = true)]
async fn a_high_refused_share_fails_readiness_and_time_brings_it_back() {
    let pressure = pressure();
    served(&pressure, 100, 10);
    refused(&pressure, 50);
    pressure.tick();
    let unready = pressure.readiness().expect_err("unready");
    assert_eq!(unready["reason"], "shedding", "{unready}");
    assert!(
        unready["shed_ratio"]
            .as_f64()
            .is_some_and(|r| (r - 1.0 / 3.0).abs() < 1e-9),
        "{unready}"
    );

    // No traffic: the buckets age out.
    quiet_for_the_recent_seconds(&pressure).await;
    let ready = pressure.readiness().expect("ready again");
    assert_eq!(ready["shed_ratio"], 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_refused_share_has_hysteresis_and_needs_enough_requests() {
    let pressure = pressure();
    served(&pressure, 3, 10);
    refused(&pressure, 5);
    pressure.tick();
    assert!(pressure.readiness().is_ok(), "8 requests are not enough");

    served(&pressure, 80, 10);
    refused(&pressure, 15);
    pressure.tick();
    assert!(pressure.readiness().is_err(), "20 of 103 refused");

    // 7 % refused: under the 10 % threshold, above the 5 % recovery point.
    tokio::time::advance(Duration::from_millis(5_250)).await;
    served(&pressure, 93, 10);
    refused(&pressure, 7);
    pressure.tick();
    assert!(pressure.readiness().is_err(), "hysteresis holds it unready");

    tokio::time::advance(Duration::from_millis(5_250)).await;
    served(&pressure, 97, 10);
    refused(&pressure, 3);
    pressure.tick();
    assert!(
        pressure.readiness().is_ok(),
        "3 % is under the recovery point"
    );
}

#[tokio::test(start_paused = true)]
async fn shutting_down_is_unready() {
    let lifecycle = Lifecycle::new();
    let pressure = Pressure::new(args(), lifecycle.clone(), &mut Registry::default());
    lifecycle.begin_shutdown();
    assert_eq!(
        pressure.readiness().expect_err("unready")["reason"],
        "shutting_down"
    );
}

#[tokio::test(start_paused = true)]
async fn overload_sheds_only_beyond_a_shrinking_limit() {
    let pressure = pressure();
    served(&pressure, 100, 1_000);
    let held: Vec<_> = (0..10).map(|_| InFlight::enter(&pressure)).collect();
    pressure.tick();
    assert_eq!(pressure.reason(), Reason::Latency);
    // 10 were in flight and recent latency is high: the limit is 8.
    assert_eq!(pressure.limit.load(Ordering::Relaxed), 8);
    assert_eq!(pressure.admit(), Some(Reason::Latency), "10 in flight ≥ 8");
    drop(held);
    assert_eq!(
        pressure.admit(),
        None,
        "below the limit, requests are served"
    );
}

#[tokio::test(start_paused = true)]
async fn no_overload_means_no_limit() {
    let pressure = pressure();
    pressure.tick();
    assert_eq!(pressure.reason(), Reason::None);
    let _held: Vec<_> = (0..10_000).map(|_| InFlight::enter(&pressure)).collect();
    assert_eq!(pressure.admit(), None);
}
