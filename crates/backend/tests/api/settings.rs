//! The binary itself: bad settings stop it with one line and exit code 2; SIGTERM drains it
//! with readiness failing first, then exit code 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{RedisServer, http};

const BINARY: &str = env!("CARGO_BIN_EXE_guestbook-backend");

/// Runs the binary with only `env`, and `REDIS_URL` on the test's own Redis unless `env`
/// names one: its default is the machine's shared Redis on 6379, which a setting checked
/// after connecting would otherwise reach.
fn run_with(redis: &RedisServer, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("REDIS_URL", redis.url())
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

#[tokio::test]
async fn bad_settings_exit_2_with_one_line() {
    let redis = RedisServer::start().await;
    let ftp_url = format!("ftp://127.0.0.1:{}", redis.port());
    let schemeless_url = format!("127.0.0.1:{}", redis.port());
    for (case, env) in [
        (
            "naive without ALLOW_UNSAFE",
            vec![("APPEND_STRATEGY", "naive")],
        ),
        ("unknown strategy", vec![("APPEND_STRATEGY", "fastest")]),
        ("bad listen address", vec![("LISTEN_ADDR", "localhost")]),
        ("bad Redis URL", vec![("REDIS_URL", "http://example")]),
        ("ftp Redis URL", vec![("REDIS_URL", ftp_url.as_str())]),
        (
            "Redis URL without a scheme",
            vec![("REDIS_URL", schemeless_url.as_str())],
        ),
        (
            "replica URL of another scheme",
            vec![("REDIS_REPLICA_URL", "https://127.0.0.1:6380")],
        ),
        ("zero retention", vec![("MAX_MESSAGES", "0")]),
        ("short admin token", vec![("ADMIN_TOKEN", "abc")]),
        ("not a boolean", vec![("FAULT_INJECTION", "perhaps")]),
        (
            "no streams per client",
            vec![("MAX_STREAMS_PER_CLIENT", "0")],
        ),
        (
            "more streams per client than in all",
            vec![("MAX_STREAM_CLIENTS", "8"), ("MAX_STREAMS_PER_CLIENT", "9")],
        ),
        (
            "header timeout above hyper's 30 s",
            vec![("HEADER_READ_TIMEOUT_SECS", "31")],
        ),
        ("no connection allowed", vec![("MAX_CONNECTIONS", "0")]),
        ("a refused share of 0", vec![("READINESS_SHED_RATIO", "0")]),
        (
            "a refused share above 1",
            vec![("READINESS_SHED_RATIO", "1.5")],
        ),
        (
            "a refused share that is not a number",
            vec![("READINESS_SHED_RATIO", "NaN")],
        ),
        ("no recent seconds", vec![("READINESS_RECENT_SECS", "0")]),
        (
            "idle timeout at the stream keep-alive",
            vec![("IDLE_TIMEOUT_SECS", "15")],
        ),
    ] {
        let output = run_with(&redis, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{case}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{case}: one line, got {stderr:?}"
        );
        assert!(stderr.starts_with("error: "), "{case}: {stderr:?}");
    }
}

#[tokio::test]
async fn settings_beyond_their_bounds_exit_2_naming_the_bound() {
    let redis = RedisServer::start().await;
    // Each of these used to be accepted; an idempotency TTL beyond what Redis's EX takes made
    // every keyed append fail after its message was written.
    for (name, value) in [
        ("IDEMPOTENCY_TTL_SECS", "9223372036854775807"),
        ("IDEMPOTENCY_TTL_SECS", "2592001"),
        ("MAX_MESSAGES", "18446744073709551615"),
        ("LOCK_TTL_MS", "3600000"),
        ("LOCK_WAIT_MS", "0"),
        ("WATCH_MAX_ATTEMPTS", "4000000000"),
        ("REDIS_POOL_SIZE", "1000000"),
        ("SLOW_WORKERS", "100000000"),
        ("RATE_LIMIT_WRITES_BURST", "4000000000"),
    ] {
        let output = run_with(&redis, &[(name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {name} must be between")),
            "{name}={value}: {stderr:?}"
        );
    }
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let output = Command::new(BINARY).arg("--help").output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "LISTEN_ADDR",
        "REDIS_URL",
        "APPEND_STRATEGY",
        "ALLOW_UNSAFE",
        "FAULT_INJECTION",
        "ADMIN_TOKEN",
        "MAX_MESSAGES",
        "SHUTDOWN_DELAY_SECS",
        "DRAIN_TIMEOUT_SECS",
        "HEADER_READ_TIMEOUT_SECS",
        "IDLE_TIMEOUT_SECS",
        "MAX_CONNECTIONS",
        "STREAM_KEEP_ALIVE_SECS",
        "READINESS_SHED_RATIO",
        "READINESS_RECENT_SECS",
    ] {
        assert!(help.contains(name), "--help mentions {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_first_then_drains_and_exits_0() {
    let redis = RedisServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("REDIS_URL", redis.url())
        .env("SHUTDOWN_DELAY_SECS", "1")
        .env("DRAIN_TIMEOUT_SECS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let base = format!("http://127.0.0.1:{port}");
    let client = http();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/liveness")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the backend came up");

    // Steady load on fresh connections (no keep-alive, so each request's fate is its own),
    // behaving like a load balancer: it stops sending new requests shortly after it sees
    // readiness fail (endpoint propagation takes a moment, which is what the shutdown delay
    // covers). Every request it sends must be answered.
    guestbook_testkit::install_ring_provider();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let load = {
        let base = base.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut unready_since: Option<std::time::Instant> = None;
            while unready_since.is_none_or(|since| since.elapsed() < Duration::from_millis(300)) {
                let answer = fresh.get(format!("{base}/data")).send().await;
                answers.push(
                    answer
                        .map(|response| response.status().as_u16())
                        .map_err(|err| err.to_string()),
                );
                if unready_since.is_none()
                    && let Ok(ready) = fresh.get(format!("{base}/readiness")).send().await
                    && ready.status().as_u16() == 503
                {
                    unready_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = child.id().expect("running").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // During the shutdown delay: unready, but still serving.
    let ready = client
        .get(format!("{base}/readiness"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(ready.status().as_u16(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["reason"], "shutting_down");

    let answers = load.await.expect("load task");
    assert!(
        answers.len() > 10,
        "the load ran until readiness failed: {} answers",
        answers.len()
    );
    assert!(
        answers.iter().all(|answer| answer == &Ok(200)),
        "every request sent was answered: {answers:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let output = Command::new(BINARY)
        .arg("--help")
        .env_clear()
        .env("REDIS_URL", "redis://app:hunter2-primary@127.0.0.1:6390")
        .env(
            "REDIS_REPLICA_URL",
            "rediss://app:hunter2-replica@127.0.0.1:6391",
        )
        .env("ADMIN_TOKEN", "hunter2-admin-token-0123")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("REDIS_REPLICA_URL"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
