//! The cost of recording one latency in the sliding window: it sits on every request's path.
//! Measured alone, and with a second thread recording at the same time (the contended case on
//! a 2-core pod).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use guestbook_common::window::LatencyWindow;

fn record(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let window = Arc::new(LatencyWindow::new(Duration::from_secs(60), 5));
    let mut group = c.benchmark_group("latency_window");
    group.bench_function("record", |b| {
        let mut micros = 0_u64;
        b.iter(|| {
            micros = (micros + 7_919) % 2_000_000;
            window.record(Duration::from_micros(micros));
        });
    });

    let stop = Arc::new(AtomicBool::new(false));
    let rival = {
        let window = Arc::clone(&window);
        let stop = Arc::clone(&stop);
        let handle = runtime.handle().clone();
        std::thread::spawn(move || {
            let _entered = handle.enter();
            let mut micros = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                micros = (micros + 104_729) % 2_000_000;
                window.record(Duration::from_micros(micros));
            }
        })
    };
    group.bench_function("record_with_a_second_thread_recording", |b| {
        let mut micros = 0_u64;
        b.iter(|| {
            micros = (micros + 7_919) % 2_000_000;
            window.record(Duration::from_micros(micros));
        });
    });
    stop.store(true, Ordering::Relaxed);
    let _ = rival.join();

    group.bench_function("snapshot", |b| b.iter(|| window.snapshot()));
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
