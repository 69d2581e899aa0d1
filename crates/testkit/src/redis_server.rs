//! A real `redis-server` per test, on a free loopback port and in a directory of its own,
//! killed when dropped: plain, durable (append-only, fsync always), TLS-only with an ACL user,
//! a replica, or on IPv6. Tests never touch the machine's Redis on 6379.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::certificates::{TestCertificates, install_ring_provider};
use crate::ports::free_port;
use crate::process::{stop, wait_until};

/// A real Redis, started for one test.
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback address it listens on: `127.0.0.1`, or `::1`.
    host: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
    /// `Some(port)`: a replica of the primary on that port.
    replica_of: Option<u16>,
    /// TLS only, with an ACL user instead of the default user.
    secured: Option<Secured>,
}

/// What a TLS server with an ACL user needs: a test CA, the server's key pair, the user.
struct Secured {
    certificates: TestCertificates,
    user: String,
    password: String,
}

impl Secured {
    fn create(dir: &Path, user: &str, password: &str) -> Self {
        Self {
            certificates: TestCertificates::create_in(dir),
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }
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

    /// Starts Redis that speaks only TLS (its certificate signed by a test CA, see
    /// [`RedisServer::ca_file`]) and only to the ACL user `user` with `password`; the default
    /// user is off.
    pub async fn start_tls_with_user(user: &str, password: &str) -> Self {
        let mut server = Self::new(false, None);
        server.secured = Some(Secured::create(server.dir.path(), user, password));
        server.spawn().await;
        server
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.secured
            .as_ref()
            .map(|secured| secured.certificates.ca_file.as_path())
    }

    /// Starts a replica of `primary` and waits until its replication link is up.
    pub async fn start_replica_of(primary: &RedisServer) -> Self {
        let mut server = Self::new(false, Some(primary.port));
        server.spawn().await;
        server.wait_for_link().await;
        server
    }

    /// Starts Redis without persistence, listening on the IPv6 loopback `::1` only.
    pub async fn start_on_ipv6() -> Self {
        let mut server = Self::new(false, None);
        server.host = "::1";
        server.spawn().await;
        server
    }

    /// The address it listens on (`127.0.0.1` or `::1`).
    pub fn host(&self) -> &'static str {
        self.host
    }

    async fn launch(appendonly: bool) -> Self {
        let mut server = Self::new(appendonly, None);
        server.spawn().await;
        server
    }

    fn new(appendonly: bool, replica_of: Option<u16>) -> Self {
        // Nearly every test starts a Redis before it builds a reqwest client: this makes such
        // a client safe to build even where the test forgot to install the provider itself.
        install_ring_provider();
        Self {
            child: None,
            host: "127.0.0.1",
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory for Redis"),
            appendonly,
            replica_of,
            secured: None,
        }
    }

    /// Arguments that make the server TLS-only with one ACL user.
    fn security_args(&self) -> Vec<String> {
        let Some(secured) = &self.secured else {
            return vec!["--port".to_owned(), self.port.to_string()];
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        [
            "--port",
            "0",
            "--tls-port",
            &self.port.to_string(),
            "--tls-cert-file",
            &path(&secured.certificates.cert_file),
            "--tls-key-file",
            &path(&secured.certificates.key_file),
            "--tls-ca-cert-file",
            &path(&secured.certificates.ca_file),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            &secured.user,
            "on",
            &format!(">{}", secured.password),
            "~*",
            "&*",
            "+@all",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect()
    }

    /// A client for this server, trusting the test CA when it speaks TLS.
    fn client(&self) -> redis::Client {
        match &self.secured {
            None => redis::Client::open(self.url()).expect("valid URL"),
            Some(secured) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                redis::Client::build_with_tls(
                    self.url(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(secured.certificates.ca_pem.clone()),
                    },
                )
                .expect("valid TLS settings")
            }
        }
    }

    /// Waits until this replica reports `master_link_status:up`.
    pub async fn wait_for_link(&self) {
        let what = format!("replica on port {} never linked", self.port);
        wait_until(
            Duration::from_secs(20),
            Duration::from_millis(50),
            &what,
            || async {
                self.info("replication")
                    .await
                    .contains("master_link_status:up")
            },
        )
        .await;
    }

    /// `INFO section`'s answer (`replication`, `commandstats`, ...), for assertions on what the
    /// server did.
    pub async fn info(&self, section: &str) -> String {
        let mut conn = self.connection().await;
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .expect("INFO answers")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(self.security_args())
            .args(["--bind", self.host, "--save", ""])
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
        let client = self.client();
        let what = format!("redis-server did not start on port {}", self.port);
        answers_ping(&client, &what).await;
    }

    /// `redis://127.0.0.1:PORT` (`redis://[::1]:PORT` on IPv6), or
    /// `rediss://USER:PASSWORD@127.0.0.1:PORT` for a TLS server.
    pub fn url(&self) -> String {
        match &self.secured {
            None if self.host.contains(':') => format!("redis://[{}]:{}", self.host, self.port),
            None => format!("redis://{}:{}", self.host, self.port),
            Some(secured) => format!(
                "rediss://{}:{}@127.0.0.1:{}",
                secured.user, secured.password, self.port
            ),
        }
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
        stop(&mut self.child);
    }

    /// Starts Redis again on the same port and directory (it reloads its append-only file).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// A connection for assertions made directly against Redis.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("test Redis reachable")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Waits (up to 10 s) until the server behind `client` answers PING; panics with `what`.
pub(crate) async fn answers_ping(client: &redis::Client, what: &str) {
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        what,
        || async {
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        },
    )
    .await;
}
