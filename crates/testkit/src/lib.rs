//! Test support shared by the workspace's test suites: a private `redis-server` per test, on
//! a free loopback port, killed when dropped. Tests never touch the machine's Redis on 6379.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, as the OS hands it out.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS hands out a free loopback port")
}

/// A real Redis, started for one test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
    /// `Some(port)`: a replica of the primary on that port.
    replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts Redis without persistence.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Starts Redis with an append-only file fsynced on every write, so that every
    /// acknowledged write survives kill -9.
    pub async fn start_durable() -> Self {
        Self::launch(true).await
    }

    /// Starts a replica of `primary` and waits until its replication link is up.
    pub async fn start_replica_of(primary: &RedisServer) -> Self {
        let mut server = Self::new(false, Some(primary.port));
        server.spawn().await;
        server.wait_for_link().await;
        server
    }

    async fn launch(appendonly: bool) -> Self {
        let mut server = Self::new(appendonly, None);
        server.spawn().await;
        server
    }

    fn new(appendonly: bool, replica_of: Option<u16>) -> Self {
        Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory for Redis"),
            appendonly,
            replica_of,
        }
    }

    /// Waits until this replica reports `master_link_status:up`.
    pub async fn wait_for_link(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut conn = self.connection().await;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .expect("INFO answers");
            if info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica on port {} never linked",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .args(
                self.replica_of
                    .map(|port| {
                        vec![
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            port.to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("valid URL");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// SIGSTOP: Redis keeps its sockets open and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// kill -9, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and directory (it reloads its append-only file).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// A connection for assertions made directly against Redis.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("test Redis reachable")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends even a SIGSTOPped process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
