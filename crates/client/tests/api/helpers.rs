//! A backend and a client in-process, and ways to steer and count the backend.

use std::net::SocketAddr;

use guestbook_backend::store::AppendStrategy;
use guestbook_client::Settings as ClientSettings;
use guestbook_common::service::Service;
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

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("a loopback address")
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
    settings.redis.append_strategy = AppendStrategy::Lua;
    settings.fault_injection = true;
    settings.service.shutdown.drain_timeout_secs = 0;
    let app = guestbook_backend::Application::build(settings)
        .await
        .expect("backend builds");
    let addr = app.local_addr().expect("bound");
    serve(addr, |stopped| app.run_until_stopped(stopped))
}

/// What [`serve`] hands a server: resolves when its [`Running`] is stopped or dropped.
type Stopped = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Spawns `run` (a server's serving loop, given when to stop) and the handle that stops it.
fn serve<F>(addr: SocketAddr, run: impl FnOnce(Stopped) -> F) -> Running
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(Box::pin(async move {
        let _ = stopped.await;
    })));
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
    let addr = app.local_addr().expect("bound");
    serve(addr, |stopped| app.run_until_stopped(stopped))
}

/// A [`Stack`] whose client runs with every default users run (only its address and the
/// backend's are set), as [`stack`] does not: it shortens the waits.
pub async fn default_stack() -> Stack {
    let redis = RedisServer::start().await;
    let backend = backend(&redis).await;
    let client = client(ClientSettings::for_tests(&backend.base)).await;
    Stack(redis, backend, client, http())
}

/// One `/fetch`'s status and how long it took from its send.
pub struct Timed {
    pub status: u16,
    pub took: std::time::Duration,
}

/// `/fetch` on `client` at an open-loop `rate` per second for `seconds`: each request is
/// sent on schedule whether or not the earlier ones have answered (as a load balancer's
/// traffic arrives), so slow answers cannot slow the load down. Bounded: `rate × seconds`
/// requests, each under the test client's 30 s timeout.
pub async fn open_loop(
    http: &reqwest::Client,
    client: &Running,
    rate: u32,
    seconds: u32,
) -> Vec<Timed> {
    let period = std::time::Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let url = client.url("/fetch");
    let mut sent = Vec::new();
    for n in 0..rate * seconds {
        tokio::time::sleep_until(start + period * n).await;
        let (http, url) = (http.clone(), url.clone());
        sent.push(tokio::spawn(async move {
            let began = std::time::Instant::now();
            let status = match http.get(url).send().await {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let _ = answer.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            Timed {
                status,
                took: began.elapsed(),
            }
        }));
    }
    let mut answers = Vec::with_capacity(sent.len());
    for request in sent {
        answers.push(request.await.expect("the request task ends"));
    }
    answers
}

/// `server`'s `/metrics` page.
pub async fn metrics_text(http: &reqwest::Client, server: &Running) -> String {
    http.get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of an unlabelled gauge or counter `name` on `server`'s `/metrics`.
pub async fn metric(http: &reqwest::Client, server: &Running, name: &str) -> f64 {
    let metrics = metrics_text(http, server).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// GET `/status` on the client.
pub async fn status(http: &reqwest::Client, client: &Running) -> serde_json::Value {
    get_json(http, client.url("/status")).await
}

/// GET `url` and its JSON body.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    json_of(http.get(url)).await
}

/// Sends `request` and returns its JSON body, whatever the status.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("a JSON body")
}

/// Reads the event stream `events` into `seen` until `done(seen)`, each chunk within 10 s
/// (a hang guard, not a latency assertion).
pub async fn read_events_until(
    events: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    seen: &mut String,
    done: impl Fn(&str) -> bool,
) {
    use futures_util::StreamExt;
    while !done(seen) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("the next event arrives within 10 s")
            .expect("the stream is open")
            .expect("the chunk is readable");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A plain HTTP client for the tests.
pub fn http() -> reqwest::Client {
    guestbook_testkit::install_ring_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
        .build()
        .expect("client")
}

/// The client's circuit state as `/status` reports it: `closed`, `open` or `half-open`.
pub async fn circuit_state(http: &reqwest::Client, client: &Running) -> serde_json::Value {
    status(http, client).await["circuit_state"].clone()
}

/// Makes `rate` of the backend's `/data` calls fail with `status` (seed 002's
/// `/config/failure`; `None` leaves the backend's default, 500).
pub async fn fail(http: &reqwest::Client, backend: &Running, rate: f64, status: Option<u16>) {
    let mut failure = serde_json::json!({ "failure_rate": rate });
    if let Some(status) = status {
        failure["status_code"] = status.into();
    }
    inject(http, backend, "/config/failure", &failure.to_string()).await;
}

/// Delays every backend answer by `ms` (seed 002's `/config/latency`).
pub async fn delay(http: &reqwest::Client, backend: &Running, ms: u64) {
    let latency = serde_json::json!({ "delay_ms": ms, "delay_rate": 1.0 });
    inject(http, backend, "/config/latency", &latency.to_string()).await;
}

/// GET `url`'s status code.
pub async fn get_status(http: &reqwest::Client, url: String) -> u16 {
    http.get(url)
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
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
    let metrics = metrics_text(http, backend).await;
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

/// Sends `method target` exactly as written (no normalisation of `..`, `%2e` or `//`, which
/// reqwest and browsers would apply) on a fresh connection, and returns (status, body).
pub async fn raw_request(
    server: &Running,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let authority = server.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(authority)
        .await
        .expect("the server accepts");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    // A hang guard, not a latency assertion: today's proxy may hold a stream open until its
    // deadline.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        socket.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes within 30 s")
    .expect("the answer is readable");
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Every request the backend has answered, `/metrics` itself left out.
pub async fn backend_requests(http: &reqwest::Client, backend: &Running) -> u64 {
    let metrics = metrics_text(http, backend).await;
    metrics
        .lines()
        .filter(|line| line.starts_with("http_request_duration_seconds_count{"))
        .filter(|line| !line.contains("route=\"/metrics\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
