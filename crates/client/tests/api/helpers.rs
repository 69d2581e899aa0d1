//! A backend and a client in-process, and ways to steer and count the backend.

use std::net::SocketAddr;

use guestbook_backend::store::AppendStrategy;
use guestbook_client::Settings as ClientSettings;
pub use guestbook_testkit::RedisServer;
use tokio::sync::oneshot;

/// A server running until dropped.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server now.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A backend with fault injection on and no admin token.
pub async fn backend(redis: &RedisServer) -> Running {
    let mut settings = guestbook_backend::Settings::for_tests(&redis.url());
    settings.append_strategy = AppendStrategy::Lua;
    settings.fault_injection = true;
    settings.shutdown.drain_timeout_secs = 0;
    let app = guestbook_backend::Application::build(settings)
        .await
        .expect("backend builds");
    let addr: SocketAddr = app.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        stop: Some(stop),
    }
}

/// Client settings against `backend`, with short waits so tests stay quick.
pub fn client_settings(backend: &Running) -> ClientSettings {
    let mut settings = ClientSettings::for_tests(&backend.base);
    settings.retry_base_ms = 10;
    settings.retry_max_ms = 50;
    settings.breaker_reset_secs = 1;
    settings
}

/// A client serving in-process.
pub async fn client(settings: ClientSettings) -> Running {
    let app = guestbook_client::Application::build(settings)
        .await
        .expect("client builds");
    let addr: SocketAddr = app.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        stop: Some(stop),
    }
}

/// A plain HTTP client for the tests.
pub fn http() -> reqwest::Client {
    guestbook_testkit::install_ring_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs a fault setting to the backend (seed 002's curl: no content type).
pub async fn inject(http: &reqwest::Client, backend: &Running, path: &str, body: &str) {
    let response = http
        .post(backend.url(path))
        .body(body.to_owned())
        .send()
        .await
        .expect("config answers");
    assert_eq!(response.status().as_u16(), 200, "{path} {body}");
}

/// Requests the backend has answered on `route` with `method`, from its own metrics.
pub async fn backend_calls(
    http: &reqwest::Client,
    backend: &Running,
    method: &str,
    route: &str,
) -> u64 {
    let metrics = http
        .get(backend.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let prefix = "http_request_duration_seconds_count{";
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter(|line| {
            line.contains(&format!("method=\"{method}\""))
                && line.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// GET `/fetch` on the client: (status, body).
pub async fn fetch(http: &reqwest::Client, client: &Running) -> (u16, serde_json::Value) {
    let response = http
        .get(client.url("/fetch"))
        .send()
        .await
        .expect("fetch answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("fetch answers JSON"))
}

/// Every test's arrange: Redis (kept alive for the test), a backend with fault injection on,
/// a client against it, and a plain HTTP client for the test's own requests, in that order.
pub struct Stack(
    pub RedisServer,
    pub Running,
    pub Running,
    pub reqwest::Client,
);

/// Starts a [`Stack`]; `tune` adjusts the client's settings first.
pub async fn stack(tune: impl FnOnce(&mut ClientSettings)) -> Stack {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let mut settings = client_settings(&backend);
    tune(&mut settings);
    let client = client(settings).await;
    Stack(redis, backend, client, http())
}
