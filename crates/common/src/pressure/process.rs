//! The process's own figures: resident memory and CPU time read from `/proc` (Linux; `None`
//! elsewhere) and the tokio runtime's worker, task and queue counts, published as gauges.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// The process and runtime gauges; registered by [`super::metrics`].
#[derive(Default)]
pub(super) struct ProcessGauges {
    pub(super) workers: Gauge,
    pub(super) alive_tasks: Gauge,
    pub(super) global_queue: Gauge,
    pub(super) rss: Gauge,
    pub(super) cpu: Counter<f64, AtomicU64>,
    /// CPU seconds already added to `cpu` (a counter only grows by the difference).
    last_cpu_seconds: Mutex<f64>,
}

impl ProcessGauges {
    /// Publishes the runtime's counts, `rss` (read once per tick by the caller, which also
    /// sheds on it) and the CPU time used since the last call.
    pub(super) fn refresh(&self, rss: Option<u64>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let metrics = handle.metrics();
            self.workers
                .set(i64::try_from(metrics.num_workers()).unwrap_or(i64::MAX));
            self.alive_tasks
                .set(i64::try_from(metrics.num_alive_tasks()).unwrap_or(i64::MAX));
            self.global_queue
                .set(i64::try_from(metrics.global_queue_depth()).unwrap_or(i64::MAX));
        }
        if let Some(rss) = rss {
            self.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        if let Some(cpu) = cpu_seconds() {
            let mut last = self
                .last_cpu_seconds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cpu > *last {
                self.cpu.inc_by(cpu - *last);
                *last = cpu;
            }
        }
    }
}

/// Resident set size from /proc (Linux); `None` elsewhere.
pub(super) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds from /proc (Linux, 100 ticks per second as on every common
/// kernel configuration); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_linux_the_readers_find_memory_and_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|rss| rss > 0));
            assert!(cpu_seconds().is_some_and(|cpu| cpu >= 0.0));
        }
    }
}
