//! What the `stream` mode needs from the operating system: enough file descriptors for its
//! sockets, the backend's resident memory (from `/proc`, or from the backend's `/metrics`), and
//! CPU time (the backend's and the tool's own, from `/proc`), to tell which of them was busy.

use std::time::Duration;

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors kept beyond one per subscriber: the posting client, stdio, the runtime.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when `subscribers` need more than it
/// allows; the warning to show when even the hard limit is too low (or raising failed).
pub fn raise_descriptor_limit(subscribers: usize) -> Option<String> {
    let needed = (subscribers as u64).saturating_add(SPARE_DESCRIPTORS);
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return None;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    limit.current = limit.maximum;
    if let Err(err) = setrlimit(Resource::Nofile, limit) {
        return Some(format!(
            "RLIMIT_NOFILE soft limit {soft} is below the {needed} descriptors needed and could not be raised: {err}"
        ));
    }
    (hard < needed).then(|| {
        format!("RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed: expect connect failures")
    })
}

/// The resident memory of process `pid`, bytes, from `/proc/PID/status`.
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// User and system CPU seconds of process `pid` (`None`: this process), from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: Option<u32>) -> Option<f64> {
    let who = pid.map_or_else(|| "self".to_owned(), |pid| pid.to_string());
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |at: usize| fields.get(at)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15, so 11 and 12 after the command name.
    let total = ticks(11)? + ticks(12)?;
    Some(total as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// `process_resident_memory_bytes` from the backend's `/metrics`.
pub async fn resident_bytes_from_metrics(client: &reqwest::Client, base: &str) -> Option<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric(&text, "process_resident_memory_bytes")
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|value| value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_memory_sample_is_read_from_the_exposition() {
        let text = "# HELP process_resident_memory_bytes RSS\n\
                    process_resident_memory_bytes_total 1\n\
                    process_resident_memory_bytes 2.5e7\n";
        assert_eq!(
            metric(text, "process_resident_memory_bytes"),
            Some(25_000_000)
        );
        assert_eq!(metric(text, "absent"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(resident_bytes_of(std::process::id()).is_some_and(|rss| rss > 0));
    }

    #[test]
    fn this_process_has_spent_some_cpu_time() {
        let spent = cpu_seconds_of(None);
        assert!(spent.is_some_and(|seconds| seconds >= 0.0), "{spent:?}");
        assert_eq!(
            spent.is_some(),
            cpu_seconds_of(Some(std::process::id())).is_some()
        );
    }

    #[test]
    fn a_handful_of_subscribers_needs_no_new_limit() {
        assert_eq!(raise_descriptor_limit(1), None);
    }
}
