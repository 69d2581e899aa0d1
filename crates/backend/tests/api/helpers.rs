//! Test harness: a private `redis-server` per test on a free loopback port (killed on drop),
//! backends in-process on port 0, and a client that speaks the API.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use guestbook_backend::store::AppendStrategy;
use guestbook_backend::{Application, Settings};
use guestbook_common::service::Service;
pub use guestbook_testkit::{RedisServer, SentinelServer};
use serde::Deserialize;
use tokio::sync::oneshot;

/// Settings for a test backend against `redis`.
pub fn settings(redis: &RedisServer, strategy: AppendStrategy) -> Settings {
    let mut settings = Settings::for_tests(&redis.url());
    settings.redis.append_strategy = strategy;
    settings.redis.allow_unsafe = strategy == AppendStrategy::Naive;
    settings.fault_injection = true;
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
    settings
}

/// The strategies that keep their promises (every one but `naive`).
pub const SAFE_STRATEGIES: [AppendStrategy; 3] = [
    AppendStrategy::Lua,
    AppendStrategy::Watch,
    AppendStrategy::Lock,
];

/// Settings for a test backend that finds its primary only through `sentinels` (nothing
/// listens at REDIS_URL's port 1) and waits for one replica to confirm each append.
pub fn behind_sentinels(
    primary: &RedisServer,
    strategy: AppendStrategy,
    sentinels: &[SentinelServer],
) -> Settings {
    let mut config = settings(primary, strategy);
    config.redis.redis_url = "redis://127.0.0.1:1".to_owned();
    config.redis.redis_sentinels = Some(
        sentinels
            .iter()
            .map(SentinelServer::address)
            .collect::<Vec<_>>()
            .join(","),
    );
    config.redis.redis_min_replicas_ack = 1;
    config.redis.redis_wait_timeout_ms = 500;
    config
}

/// The admin token of test backends.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A backend serving in this process.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The test's own Redis when the app started it ([`TestApp::with_lua`]); dropped after the app.
    _redis: Option<RedisServer>,
}

impl TestApp {
    /// Builds and starts a backend.
    pub async fn spawn(settings: Settings) -> Self {
        let app = Application::build(settings)
            .await
            .expect("the backend builds");
        let addr: SocketAddr = app.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            stop: Some(stop),
            served: Some(served),
            _redis: None,
        }
    }

    /// The backend's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics is text")
    }

    /// A backend with the default `lua` strategy over a `redis-server` of its own, for tests
    /// that never look at Redis themselves.
    pub async fn with_lua() -> Self {
        let redis = RedisServer::start().await;
        let mut app = Self::spawn(settings(&redis, AppendStrategy::Lua)).await;
        app._redis = Some(redis);
        app
    }

    /// Starts shutdown and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.served.take() {
            Some(served) => served.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// A URL on this backend.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A reqwest client with a generous hang guard (never a latency assertion).
pub fn http() -> reqwest::Client {
    guestbook_testkit::install_ring_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
        .build()
        .expect("client builds")
}

/// A message as the API returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub author: String,
    pub text: String,
    pub created_at: String,
}

#[derive(Deserialize)]
struct Page {
    messages: Vec<Message>,
}

/// Posts one message (it must be answered); returns the status.
pub async fn post_status(
    client: &reqwest::Client,
    base: &str,
    author: &str,
    text: &str,
    key: Option<&str>,
) -> u16 {
    post(client, base, author, text, key).await.expect("post").0
}

/// Posts one message; returns the status, the replay header, and the body.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    author: &str,
    text: &str,
    key: Option<&str>,
) -> reqwest::Result<(u16, bool, serde_json::Value)> {
    let mut request = client
        .post(format!("{base}/api/messages"))
        .json(&serde_json::json!({"author": author, "text": text}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, replayed, body))
}

/// Reads the whole guestbook, page by page.
pub async fn read_all(client: &reqwest::Client, base: &str) -> Vec<Message> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = read_page(
            client,
            &format!("{base}/api/messages?after={after}&limit=1000"),
        )
        .await;
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.id;
        let full = page.messages.len() == 1000;
        all.extend(page.messages);
        if !full {
            break;
        }
    }
    all
}

/// One page of the listing. A 503 (a Redis call past its timeout on a loaded test machine,
/// or a Redis still loading its file after a restart) is retried, as a reader honouring
/// Retry-After would: the verification read is not what these tests put under fault.
async fn read_page(client: &reqwest::Client, url: &str) -> Page {
    const ATTEMPTS: u32 = 50;
    for _ in 1..ATTEMPTS {
        let answer = client.get(url).send().await.expect("list answers");
        if answer.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return answer
                .error_for_status()
                .expect("list succeeds")
                .json()
                .await
                .expect("list is JSON");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .get(url)
        .send()
        .await
        .expect("list answers")
        .error_for_status()
        .expect("list succeeds within 50 attempts")
        .json()
        .await
        .expect("list is JSON")
}

/// One message the load sent, and what the backend acknowledged.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub text: String,
    pub acked_id: Option<u64>,
}

/// How the load treats 503 answers.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub count: usize,
    pub in_flight: usize,
    /// Attempts per message (same key each time); 1 means no retry.
    pub attempts: u32,
    pub retry_pause: Duration,
}

/// Sends `load.count` distinct messages, spread round-robin over `bases`, `load.in_flight`
/// at a time, each with its own idempotency key, retrying transient failures with that key.
pub async fn send_messages(
    client: &reqwest::Client,
    bases: &[String],
    run: &str,
    load: Load,
) -> Vec<Sent> {
    futures_util::stream::iter(0..load.count)
        .map(|i| {
            let client = client.clone();
            let bases = bases.to_vec();
            let key = format!("{run}-{i}");
            let text = format!("message {i} of run {run}");
            async move {
                let mut acked_id = None;
                for attempt in 0..load.attempts {
                    // A retry may land on another replica, as behind a load balancer.
                    let base = &bases[(i + attempt as usize) % bases.len()];
                    match post(&client, base, "loadtest", &text, Some(&key)).await {
                        Ok((201 | 200, _, body)) => {
                            acked_id = body["id"].as_u64();
                            break;
                        }
                        Ok((503, _, _)) | Err(_) => tokio::time::sleep(load.retry_pause).await,
                        Ok((status, _, body)) => panic!("unexpected {status} for {key}: {body}"),
                    }
                }
                Sent {
                    key,
                    text,
                    acked_id,
                }
            }
        })
        .buffer_unordered(load.in_flight)
        .collect()
        .await
}

/// What a read-back found about the acknowledged messages.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub wrong_id: Vec<String>,
    pub ids_not_unique_ascending: bool,
}

impl Verdict {
    /// True when every acknowledged message is present exactly once, under its acked id,
    /// and ids are unique and ascending.
    pub fn exactly_once(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.wrong_id.is_empty()
            && !self.ids_not_unique_ascending
    }
}

/// Compares what was acknowledged with what the guestbook holds.
pub fn verify(sent: &[Sent], stored: &[Message]) -> Verdict {
    let mut by_text: HashMap<&str, Vec<u64>> = HashMap::new();
    for message in stored {
        by_text
            .entry(message.text.as_str())
            .or_default()
            .push(message.id);
    }
    let mut verdict = Verdict::default();
    for item in sent {
        let Some(acked) = item.acked_id else { continue };
        verdict.acknowledged += 1;
        match by_text.get(item.text.as_str()).map(Vec::as_slice) {
            None | Some([]) => verdict.lost.push(item.key.clone()),
            Some([id]) if *id == acked => {}
            Some([_]) => verdict.wrong_id.push(item.key.clone()),
            Some(_) => verdict.duplicated.push(item.key.clone()),
        }
    }
    verdict.ids_not_unique_ascending = stored.windows(2).any(|pair| pair[0].id >= pair[1].id);
    verdict
}

/// Every idempotency record in Redis, by key, with the message id it stored.
pub async fn idempotency_records(redis: &RedisServer) -> BTreeMap<String, u64> {
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{guestbook:default}:idem:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut records = BTreeMap::new();
    for key in keys {
        let record: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("GET");
        // "<id> <created_at> <fingerprint>"
        let id = record
            .split(' ')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("a record starts with its message id: {record:?}"));
        records.insert(key, id);
    }
    records
}

/// Reads Server-Sent Events from `url` until `want` events arrived; returns (id, data) pairs.
pub async fn read_events(
    client: &reqwest::Client,
    url: &str,
    last_event_id: Option<u64>,
    want: usize,
    ready: Option<oneshot::Sender<()>>,
) -> Vec<(u64, String)> {
    let mut request = client.get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("stream connects");
    assert_eq!(response.status().as_u16(), 200, "stream status");
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("stream readable");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        events.extend(drain_events(&mut buffer));
    }
    events
}

/// Takes every complete Server-Sent Event out of `buffer`: `(id, data)` of those with both.
fn drain_events(buffer: &mut String) -> Vec<(u64, String)> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("id:") {
                id = value.trim().parse::<u64>().ok();
            } else if let Some(value) = line.strip_prefix("data:") {
                data = Some(value.trim().to_owned());
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            events.push((id, data));
        }
    }
    events
}

/// A live-update stream read in the background: every `(id, message JSON)` as it arrives.
pub struct EventTap {
    events: std::sync::Arc<std::sync::Mutex<Vec<(u64, serde_json::Value)>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl EventTap {
    /// Connects (asserting 200) and starts reading.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Self {
        let mut request = client.get(url).timeout(Duration::from_secs(3_600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("stream connects");
        assert_eq!(response.status().as_u16(), 200, "stream status");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&events);
        let reader = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for (id, data) in drain_events(&mut buffer) {
                    if let Ok(data) = serde_json::from_str(&data) {
                        sink.lock().expect("not poisoned").push((id, data));
                    }
                }
            }
        });
        Self { events, reader }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<(u64, serde_json::Value)> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// The texts of the events so far, in arrival order.
    pub fn texts(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|(_, data)| data["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until every text in `texts` has arrived or `within` has passed; returns the
    /// events either way (the caller asserts, so a miss is reported with what did arrive).
    pub async fn wait_for_texts(
        &self,
        texts: &[&str],
        within: Duration,
    ) -> Vec<(u64, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.texts();
            if texts
                .iter()
                .all(|text| seen.iter().any(|seen| seen == text))
                || tokio::time::Instant::now() >= deadline
            {
                return self.events();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// GETs `url` and parses the JSON answer, whatever its status.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json")
}

/// GETs `url` and returns the body text (e.g. `/metrics`).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text")
}
