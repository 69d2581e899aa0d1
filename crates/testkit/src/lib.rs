//! Test support shared by the workspace's test suites: a private `redis-server` per test, on
//! a free loopback port, killed when dropped. Tests never touch the machine's Redis on 6379.
//! Also a throwaway CA with a server certificate for 127.0.0.1 ([`TestCertificates`]) and a
//! TLS-terminating proxy made with it ([`TlsProxy`]), for the TLS tests; and a per-connection
//! L4 balancer that stands in for a Kubernetes Service ([`balancer::TcpBalancer`]).

pub mod balancer;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Makes ring the process's rustls provider, which every `reqwest::Client` built without a TLS
/// config of its own needs (the workspace builds reqwest with `rustls-no-provider`). Call it
/// before building one; a second call changes nothing.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

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

/// A fresh test CA and a server certificate for 127.0.0.1 that it signed, made by `openssl`
/// as PEM files in a directory of their own.
pub struct TestCertificates {
    /// The CA's certificate: what a client must trust.
    pub ca_file: PathBuf,
    /// The same, read.
    pub ca_pem: Vec<u8>,
    /// The server's certificate (subjectAltName IP:127.0.0.1).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestCertificates {
    /// A CA and a server certificate in a new temporary directory.
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for certificates");
        let mut certificates = Self::create_in(dir.path());
        certificates._dir = Some(dir);
        certificates
    }

    /// A CA and a server certificate in `dir`.
    fn create_in(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl must be installed");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=guestbook test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n")
            .expect("write san.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
        let ca_file = dir.join("ca.pem");
        Self {
            ca_pem: std::fs::read(&ca_file).expect("read ca.pem"),
            ca_file,
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            _dir: None,
        }
    }
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

/// A TLS-terminating proxy on a free loopback port in front of a plain TCP server, with a
/// certificate for 127.0.0.1 from its own test CA; stops when dropped.
pub struct TlsProxy {
    port: u16,
    certificates: TestCertificates,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Starts forwarding every connection that completes a TLS handshake to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certificates = TestCertificates::create();
        let chain = CertificateDer::pem_file_iter(&certificates.cert_file)
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("server.pem parses");
        let key = PrivateKeyDer::from_pem_file(&certificates.key_file).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a usable certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("bound").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            port,
            certificates,
            handshakes,
            task,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The PEM file of the CA that signed the proxy's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.certificates.ca_file
    }

    /// Connections whose TLS handshake succeeded so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
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
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("test Redis reachable")
    }
}

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
                host = primary.host,
                primary = primary.port,
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel.primary().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "sentinel on {port} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
