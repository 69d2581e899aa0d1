//! The yardstick for `guestbook-client`'s `GET /fetch` (issue 17): the same proxying with none
//! of the resilience around it, so `scripts/bench_proxy.py` can say what the stack costs.
//!
//! `guestbook-bare-proxy --listen 127.0.0.1:PORT --backend http://127.0.0.1:PORT` serves
//! `GET /fetch` by one `GET /data` on the backend through one shared reqwest client, and answers
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
use serde_json::{Value, json};

/// What a request needs: the shared client and the backend's `/data` URL.
#[derive(Clone)]
struct Bare {
    client: reqwest::Client,
    data_url: reqwest::Url,
}

// mimalloc rather than glibc's malloc, whose arena lock the tokio workers contended for under
// load; why, and what it measured: docs/design.md, "the allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, backend) = match parse(std::env::args().skip(1)) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("guestbook-bare-proxy: {why}");
            eprintln!(
                "usage: guestbook-bare-proxy --listen 127.0.0.1:PORT --backend http://127.0.0.1:PORT"
            );
            return ExitCode::from(2);
        }
    };
    // reqwest is built without a TLS provider of its own; plain http:// still builds its TLS
    // machinery, which needs one installed.
    guestbook_testkit::install_ring_provider();
    let client = match reqwest::Client::builder()
        .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("guestbook-bare-proxy: HTTP client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let bare = Bare {
        client,
        data_url: backend,
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

/// `--listen` and `--backend` (its `/data` URL), both required to be on loopback.
fn parse(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, reqwest::Url), String> {
    let (mut listen, mut backend) = (None, None);
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
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        backend.ok_or("--backend is required")?,
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
    let answer = match bare.client.get(bare.data_url.clone()).send().await {
        Ok(answer) if answer.status().is_success() => answer,
        Ok(answer) => return failed(&format!("backend answered {}", answer.status().as_u16())),
        Err(err) => return failed(&format!("backend unreachable: {err}")),
    };
    match answer.bytes().await {
        Ok(body) => match serde_json::from_slice::<Value>(&body) {
            Ok(data) => Json(json!({"status": "ok", "data": data})).into_response(),
            Err(err) => failed(&format!("backend sent no JSON: {err}")),
        },
        Err(err) => failed(&format!("backend body: {err}")),
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
        let (listen, backend) = parse(args(&[
            "--listen",
            "127.0.0.1:18000",
            "--backend",
            "http://127.0.0.1:18001",
        ]))
        .expect("loopback flags parse");
        assert_eq!(listen.port(), 18000);
        assert_eq!(backend.as_str(), "http://127.0.0.1:18001/data");
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
