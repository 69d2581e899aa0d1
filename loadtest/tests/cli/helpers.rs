//! Starting a backend in-process and running the loadtest binary.

use std::net::SocketAddr;
use std::process::Output;

use guestbook_backend::store::AppendStrategy;
use guestbook_backend::{Application, Settings};
use guestbook_common::service::Service;
pub use guestbook_testkit::RedisServer;
use tokio::sync::oneshot;

/// The admin token of test backends.
pub const ADMIN_TOKEN: &str = "loadtest-admin-token-0123";

/// A backend serving until dropped.
pub struct Backend {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _stop: oneshot::Sender<()>,
}

/// Starts a backend over `redis` with `strategy`.
pub async fn backend(redis: &RedisServer, strategy: AppendStrategy) -> Backend {
    backend_with(redis, strategy, |_| {}).await
}

/// Starts a backend over `redis` with `strategy` and whatever `change` sets.
pub async fn backend_with(
    redis: &RedisServer,
    strategy: AppendStrategy,
    change: impl FnOnce(&mut Settings),
) -> Backend {
    let mut settings = Settings::for_tests(&redis.url());
    settings.redis.append_strategy = strategy;
    settings.redis.allow_unsafe = strategy == AppendStrategy::Naive;
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
    change(&mut settings);
    let app = Application::build(settings).await.expect("backend builds");
    let addr: SocketAddr = app.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Backend {
        base: format!("http://{addr}"),
        _stop: stop,
    }
}

/// A client serving in front of `backend` until dropped, its write limit off: the tool is one
/// address, and the limit is the client's own business, tested in its crate.
pub async fn client(backend: &Backend) -> Backend {
    let mut settings = guestbook_client::Settings::for_tests(&backend.base);
    settings.rate_limit_writes_per_sec = 0.0;
    let app = guestbook_client::Application::build(settings)
        .await
        .expect("client builds");
    let addr: SocketAddr = app.local_addr().expect("bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Backend {
        base: format!("http://{addr}"),
        _stop: stop,
    }
}

/// Runs the loadtest binary with `args` (off the async runtime's threads).
pub async fn loadtest(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_guestbook-loadtest"))
            .args(&args)
            .env_remove("ADMIN_TOKEN")
            .output()
            .expect("the loadtest binary runs")
    })
    .await
    .expect("join")
}

/// Parses the binary's `--json` output.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is JSON ({err}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Runs the binary with `args` (the mode first) and `--target` a fresh backend with
/// `strategy` over its own Redis, both stopped once it has answered.
pub async fn run_against(strategy: AppendStrategy, args: &[&str]) -> Output {
    let redis = RedisServer::start().await;
    let backend = backend(&redis, strategy).await;
    let mut args = args.to_vec();
    args.extend(["--target", backend.base.as_str()]);
    loadtest(&args).await
}
