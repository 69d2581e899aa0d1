//! One cluster node: a `redis-server --cluster-enabled yes` process on a port whose bus twin
//! (port + 10000) is free too, in a directory of its own that keeps its identity.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use super::NODE_TIMEOUT_MS;
use crate::redis_server::answers_ping;

/// One node of a [`RedisCluster`].
pub(super) struct Node {
    pub(super) child: Option<Child>,
    pub(super) port: u16,
    dir: tempfile::TempDir,
}

/// A free loopback port below 55535 whose cluster-bus twin (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1_000 {
        let port = fastrand::u16(20_000..45_000);
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free loopback port pair (port, port + 10000) below 55535");
}

impl Node {
    pub(super) async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for a cluster node");
        let mut node = Self {
            child: None,
            port: free_cluster_port(),
            dir,
        };
        node.launch().await;
        node
    }

    /// Starts the process on the node's port and directory (its `nodes.conf` keeps its
    /// identity), and waits until it answers.
    pub(super) async fn launch(&mut self) {
        let port = self.port;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid URL");
        let what = format!("cluster node did not start on port {port}");
        answers_ping(&client, &what).await;
    }
}
