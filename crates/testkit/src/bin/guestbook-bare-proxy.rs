//! The yardstick for `guestbook-client`'s `GET /fetch` (issue 17): the same proxying with none
//! of the resilience around it, so `scripts/bench_proxy.py` can say what the stack costs.
//!
//! `guestbook-bare-proxy --listen 127.0.0.1:PORT --backend http://127.0.0.1:PORT` serves
//! `GET /fetch` by one `GET /data` on the backend through one shared reqwest client (the
//! yardstick issue 17 names), or with `--transport hyper` through one hyper-util client, the
//! transport the client itself uses for its backend calls (so the layers can be measured
//! apart from the HTTP client library). Either way it answers
//! `{"status":"ok","data":...}` as the client does: the body is parsed and re-encoded the same
//! way, so the comparison measures the layers (breaker, deadline, retry, timeouts, limits,
//! metrics, tracing), not a different amount of JSON work. No retry, no breaker, no deadline,
//! no metrics, no logging. Loopback addresses only: it is a benchmark tool, never a service.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};

/// What a request needs: the shared client and the backend's `/data` URL.
#[derive(Clone)]
struct Bare {
    client: Transport,
    data_url: reqwest::Url,
    /// The same URL, parsed once for hyper-util.
    data_uri: http::Uri,
}

/// The HTTP client the backend call goes through.
#[derive(Clone)]
enum Transport {
    Reqwest(reqwest::Client),
    Hyper(Client<HttpConnector, Full<Bytes>>),
}

/// Which [`Transport`] `--transport` asked for.
#[derive(Clone, Copy)]
enum TransportKind {
    Reqwest,
    Hyper,
}

// mimalloc rather than glibc's malloc, whose arena lock the tokio workers contended for under
// load; why, and what it measured: docs/design.md, "the allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, backend, kind) = match parse(std::env::args().skip(1)) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("guestbook-bare-proxy: {why}");
            eprintln!(
                "usage: guestbook-bare-proxy --listen 127.0.0.1:PORT --backend http://127.0.0.1:PORT [--transport reqwest|hyper]"
            );
            return ExitCode::from(2);
        }
    };
    let client = match kind {
        TransportKind::Reqwest => {
            // reqwest is built without a TLS provider of its own; plain http:// still builds
            // its TLS machinery, which needs one installed.
            guestbook_testkit::install_ring_provider();
            match reqwest::Client::builder()
                .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
                .build()
            {
                Ok(client) => Transport::Reqwest(client),
                Err(err) => {
                    eprintln!("guestbook-bare-proxy: HTTP client: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        TransportKind::Hyper => {
            let mut tcp = HttpConnector::new();
            // As reqwest and the client set it.
            tcp.set_nodelay(true);
            Transport::Hyper(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .build(tcp),
            )
        }
    };
    let data_uri = match backend.as_str().parse() {
        Ok(uri) => uri,
        Err(err) => {
            eprintln!("guestbook-bare-proxy: --backend: {err}");
            return ExitCode::FAILURE;
        }
    };
    let bare = Bare {
        client,
        data_url: backend,
        data_uri,
    };
    let app = Router::new()
        .route("/fetch", get(fetch))
        .route("/liveness", get(|| async { "ok" }))
        .with_state(bare);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("guestbook-bare-proxy: bind {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // On stderr: stdout is for nothing, and the house lints keep print! out of binaries.
    eprintln!("guestbook-bare-proxy: listening {listen}");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("guestbook-bare-proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen` and `--backend` (its `/data` URL), both required to be on loopback, and
/// `--transport` (`reqwest`, the default, or `hyper`).
fn parse(
    mut args: impl Iterator<Item = String>,
) -> Result<(SocketAddr, reqwest::Url, TransportKind), String> {
    let (mut listen, mut backend, mut kind) = (None, None, TransportKind::Reqwest);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} takes a value"))?;
        match flag.as_str() {
            "--listen" => {
                let addr: SocketAddr = value
                    .parse()
                    .map_err(|err| format!("--listen {value:?}: {err}"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!("--listen {addr} is not a loopback address"));
                }
                listen = Some(addr);
            }
            "--backend" => {
                let url = reqwest::Url::parse(&value)
                    .and_then(|url| url.join("/data"))
                    .map_err(|err| format!("--backend {value:?}: {err}"))?;
                if !is_loopback(&url) {
                    return Err(format!("--backend {value} is not a loopback http:// URL"));
                }
                backend = Some(url);
            }
            "--transport" => {
                kind = match value.as_str() {
                    "reqwest" => TransportKind::Reqwest,
                    "hyper" => TransportKind::Hyper,
                    other => return Err(format!("--transport {other:?}: reqwest or hyper")),
                };
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        backend.ok_or("--backend is required")?,
        kind,
    ))
}

/// True for `http://` to 127.0.0.0/8, `[::1]` or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    url.scheme() == "http"
        && (host == "localhost"
            || bare_host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// One backend call, its JSON wrapped as the client's `ok` answer; anything else is a 502.
async fn fetch(State(bare): State<Bare>) -> Response {
    let body = match &bare.client {
        Transport::Reqwest(client) => match client.get(bare.data_url.clone()).send().await {
            Ok(answer) if answer.status().is_success() => match answer.bytes().await {
                Ok(body) => body,
                Err(err) => return failed(&format!("backend body: {err}")),
            },
            Ok(answer) => return failed(&format!("backend answered {}", answer.status().as_u16())),
            Err(err) => return failed(&format!("backend unreachable: {err}")),
        },
        Transport::Hyper(client) => {
            let mut request = http::Request::new(Full::new(Bytes::new()));
            *request.uri_mut() = bare.data_uri.clone();
            match client.request(request).await {
                Ok(answer) if answer.status().is_success() => {
                    match answer.into_body().collect().await {
                        Ok(body) => body.to_bytes(),
                        Err(err) => return failed(&format!("backend body: {err}")),
                    }
                }
                Ok(answer) => {
                    return failed(&format!("backend answered {}", answer.status().as_u16()));
                }
                Err(err) => return failed(&format!("backend unreachable: {err}")),
            }
        }
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(data) => Json(json!({"status": "ok", "data": data})).into_response(),
        Err(err) => failed(&format!("backend sent no JSON: {err}")),
    }
}

/// A 502 with the reason, in the house's error shape.
fn failed(why: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        Json(json!({"error": why, "code": "backend-unreachable"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|arg| (*arg).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn loopback_flags_are_accepted_and_data_is_the_path() {
        let (listen, backend, kind) = parse(args(&[
            "--listen",
            "127.0.0.1:18000",
            "--backend",
            "http://127.0.0.1:18001",
        ]))
        .expect("loopback flags parse");
        assert_eq!(listen.port(), 18000);
        assert_eq!(backend.as_str(), "http://127.0.0.1:18001/data");
        assert!(matches!(kind, TransportKind::Reqwest));
    }

    #[test]
    fn the_transport_is_reqwest_or_hyper_and_nothing_else() {
        let with = |transport: &str| {
            parse(args(&[
                "--listen",
                "127.0.0.1:18000",
                "--backend",
                "http://127.0.0.1:18001",
                "--transport",
                transport,
            ]))
        };
        assert!(matches!(with("hyper"), Ok((_, _, TransportKind::Hyper))));
        assert!(matches!(
            with("reqwest"),
            Ok((_, _, TransportKind::Reqwest))
        ));
        assert!(with("curl").is_err());
    }

    #[test]
    fn an_address_off_loopback_is_refused() {
        assert!(
            parse(args(&[
                "--listen",
                "0.0.0.0:18000",
                "--backend",
                "http://127.0.0.1:1"
            ]))
            .is_err()
        );
        assert!(
            parse(args(&[
                "--listen",
                "127.0.0.1:18000",
                "--backend",
                "http://10.0.0.1:1"
            ]))
            .is_err()
        );
    }
}
