//! A per-connection L4 balancer on loopback: what a Kubernetes Service does to the traffic
//! the client sends it (kube-proxy), small enough to start in a test.
//!
//! Each new TCP connection goes to one backend picked at random among the ready ones and stays
//! there for its whole life; nothing is balanced per request. That is why a client that keeps
//! its connections open for ever never sends anything to a replica added after it connected,
//! and why the balancer is needed to test that it does.
//!
//! Backends are added and removed while it runs. With readiness polling on, each backend's
//! `GET /readiness` is asked every period, and one that does not answer 2xx is left out of new
//! picks until it does (existing connections stay, as with kube-proxy, which removes an
//! endpoint from the rules but cuts no established connection). A removed backend's
//! connections stay too: only new connections avoid it.
//!
//! Two things a chaos harness needs on top: each backend's readiness *flaps* (ready → not
//! ready transitions) are counted, and one backend can be made slow (`set_delay`): every chunk
//! a client sends it, on new and already open connections, is held that long first, so each
//! request on it takes that much longer, as with an overloaded or throttled pod.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest wait for a backend's readiness answer before it counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One backend behind the balancer.
struct Endpoint {
    addr: SocketAddr,
    /// Whether new connections may go to it (always true without readiness polling).
    ready: AtomicBool,
    /// Still in the rotation (false once removed).
    listed: AtomicBool,
    /// Connections handed to it so far.
    connections: AtomicU64,
    /// Ready → not ready transitions seen by the readiness polling.
    flaps: AtomicU64,
    /// Milliseconds each chunk sent to it waits first (0: none).
    delay_ms: AtomicU64,
}

#[derive(Default)]
struct Shared {
    endpoints: Mutex<Vec<Arc<Endpoint>>>,
    /// Connections refused because no backend was ready.
    refused: AtomicU64,
}

impl Shared {
    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn find(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.endpoints()
            .into_iter()
            .find(|endpoint| endpoint.addr == addr && endpoint.listed.load(Ordering::Acquire))
    }

    /// A ready, listed backend picked uniformly at random.
    fn pick(&self) -> Option<Arc<Endpoint>> {
        let candidates: Vec<_> = self
            .endpoints()
            .into_iter()
            .filter(|endpoint| {
                endpoint.listed.load(Ordering::Acquire) && endpoint.ready.load(Ordering::Acquire)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.get(fastrand::usize(..candidates.len())).cloned()
    }
}

/// A running balancer; stops when dropped.
pub struct TcpBalancer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    readiness: Option<Duration>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TcpBalancer {
    /// Starts a balancer on a free loopback port in front of `backends`. With
    /// `readiness: Some(period)`, each backend's `/readiness` is polled every `period` and
    /// only ready backends get new connections (each starts as not ready until its first
    /// answer); with `None`, every listed backend is always eligible.
    pub async fn start(backends: &[SocketAddr], readiness: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the balancer binds a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let balancer = Self {
            addr,
            shared: Arc::new(Shared::default()),
            readiness,
            tasks: Mutex::new(Vec::new()),
        };
        for backend in backends {
            balancer.add(*backend);
        }
        let shared = Arc::clone(&balancer.shared);
        balancer.spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Some(endpoint) = shared.pick() else {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    endpoint.connections.fetch_add(1, Ordering::Relaxed);
                    if let Ok(outbound) = TcpStream::connect(endpoint.addr).await {
                        splice(inbound, outbound, &endpoint).await;
                    }
                });
            }
        });
        balancer
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts `backend` in the rotation (again, if it was removed).
    pub fn add(&self, backend: SocketAddr) {
        if self.shared.find(backend).is_some() {
            return;
        }
        let endpoint = Arc::new(Endpoint {
            addr: backend,
            ready: AtomicBool::new(self.readiness.is_none()),
            listed: AtomicBool::new(true),
            connections: AtomicU64::new(0),
            flaps: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
        });
        self.shared
            .endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&endpoint));
        if let Some(period) = self.readiness {
            self.spawn(async move {
                while endpoint.listed.load(Ordering::Acquire) {
                    let ready = probe(endpoint.addr).await;
                    if endpoint.ready.swap(ready, Ordering::AcqRel) && !ready {
                        endpoint.flaps.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(period).await;
                }
            });
        }
    }

    /// Takes `backend` out of the rotation: no new connection goes to it; open ones stay.
    pub fn remove(&self, backend: SocketAddr) {
        if let Some(endpoint) = self.shared.find(backend) {
            endpoint.listed.store(false, Ordering::Release);
        }
    }

    /// Connections handed to `backend` so far (0 for one never added).
    pub fn connections_to(&self, backend: SocketAddr) -> u64 {
        self.total(backend, |endpoint| &endpoint.connections)
    }

    /// Ready → not ready transitions of `backend` seen so far (0 without readiness polling).
    pub fn flaps_of(&self, backend: SocketAddr) -> u64 {
        self.total(backend, |endpoint| &endpoint.flaps)
    }

    /// One counter summed over every endpoint `backend` was added as (a re-added backend is
    /// a new endpoint).
    fn total(&self, backend: SocketAddr, counter: impl Fn(&Endpoint) -> &AtomicU64) -> u64 {
        self.shared
            .endpoints()
            .iter()
            .filter(|endpoint| endpoint.addr == backend)
            .map(|endpoint| counter(endpoint).load(Ordering::Relaxed))
            .sum()
    }

    /// Makes `backend` slow: every chunk sent to it, on new and open connections, waits
    /// `delay` first (zero: none). No effect on a backend that is not listed.
    pub fn set_delay(&self, backend: SocketAddr, delay: Duration) {
        if let Some(endpoint) = self.shared.find(backend) {
            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            endpoint.delay_ms.store(ms, Ordering::Release);
        }
    }

    /// Whether `backend` is listed and (with polling) answered its last readiness probe 2xx.
    pub fn is_ready(&self, backend: SocketAddr) -> bool {
        self.shared
            .find(backend)
            .is_some_and(|endpoint| endpoint.ready.load(Ordering::Acquire))
    }

    /// Connections closed at once because no backend was ready.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tokio::spawn(task));
    }
}

impl Drop for TcpBalancer {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Copies bytes both ways until either side closes; what goes to the backend waits the
/// endpoint's delay first, read afresh for every chunk so that a delay set or cleared while a
/// connection is open applies to it.
async fn splice(inbound: TcpStream, outbound: TcpStream, endpoint: &Endpoint) {
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_backend, mut to_backend) = outbound.into_split();
    let upstream = async {
        let mut buffer = vec![0_u8; 16 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let delay = endpoint.delay_ms.load(Ordering::Acquire);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if to_backend.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = to_backend.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_backend, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    // HTTP/1.1 clients do not half-close, so the first direction to end ends the connection.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// `GET /readiness` over a fresh connection: true on a 2xx status line within the timeout.
async fn probe(backend: SocketAddr) -> bool {
    let asked = async {
        let mut stream = TcpStream::connect(backend).await.ok()?;
        stream
            .write_all(b"GET /readiness HTTP/1.1\r\nHost: balancer\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // "HTTP/1.1 200"
        Some(head.get(9) == Some(&b'2'))
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, asked).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests;
