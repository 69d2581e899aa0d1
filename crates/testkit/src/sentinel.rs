//! A Redis Sentinel watching one test primary, quick to declare it down, for the failover
//! tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{stop, wait_until};
use crate::redis_server::RedisServer;

/// A Redis Sentinel (`redis-server --sentinel`) watching one primary as `mymaster`, quick to
/// declare it down (1 s) so that failover tests stay short.
pub struct SentinelServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SentinelServer {
    /// Starts a sentinel for `primary` with the given quorum and waits until it answers.
    pub async fn start(primary: &RedisServer, quorum: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for Sentinel");
        let port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1 ::1\n\
                 sentinel monitor mymaster {host} {primary} {quorum}\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n",
                host = primary.host(),
                primary = primary.port(),
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs in sentinel mode");
        let sentinel = Self {
            child: Some(child),
            port,
            _dir: dir,
        };
        let what = format!("sentinel on {port} never answered");
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            &what,
            || async { sentinel.primary().await.is_some() },
        )
        .await;
        sentinel
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The primary's port as this sentinel names it, if it answers.
    pub async fn primary(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://{}", self.address())).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query_async(&mut conn)
            .await
            .ok()?;
        answer.map(|(_, port)| port)
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
