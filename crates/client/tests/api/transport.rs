//! What the client's HTTP transport to the backend does beyond the stack: credentials from
//! `BACKEND_URL`, and redirects passed on rather than followed. The backend here is a small
//! axum server on loopback that shows what reached it (the real backend neither asks for
//! credentials nor redirects).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use guestbook_client::Settings as ClientSettings;
use serde_json::json;

use crate::helpers::{client, fetch, http};

/// How many calls reached the redirect's target.
#[derive(Clone, Default)]
struct Seen(Arc<AtomicUsize>);

/// `/data` answers with the `Authorization` header it got; `/api/messages` redirects to
/// `/elsewhere`, which counts its calls.
async fn stand_in() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/data",
            get(|headers: HeaderMap| async move {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                Json(json!({ "authorization": authorization }))
            }),
        )
        .route(
            "/api/messages",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/elsewhere")],
                    "moved",
                )
                    .into_response()
            }),
        )
        .route(
            "/elsewhere",
            get(|State(seen): State<Seen>| async move {
                seen.0.fetch_add(1, Ordering::SeqCst);
                Json(json!({ "followed": true })).into_response()
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr.to_string(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_backend_url_reach_the_backend_as_basic_authorization() {
    let (addr, _) = stand_in().await;
    let with_password = client(ClientSettings::for_tests(&format!(
        "http://guest:p%40ss@{addr}"
    )))
    .await;
    let without = client(ClientSettings::for_tests(&format!("http://{addr}"))).await;
    let http = http();

    let (status, body) = fetch(&http, &with_password).await;
    assert_eq!(status, 200, "{body}");
    // base64("guest:p@ss"): the password percent-decoded, as a browser or curl sends it.
    assert_eq!(
        body["data"]["authorization"],
        json!("Basic Z3Vlc3Q6cEBzcw=="),
        "{body}"
    );
    let (status, body) = fetch(&http, &without).await;
    assert_eq!(
        (status, &body["data"]["authorization"]),
        (200, &json!(null))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_the_backend_is_passed_on_never_followed() {
    let (addr, seen) = stand_in().await;
    let client = client(ClientSettings::for_tests(&format!("http://{addr}"))).await;
    // The test's own client must not follow it either.
    guestbook_testkit::install_ring_provider();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("a test client");

    let answer = no_redirects
        .get(client.url("/api/messages"))
        .send()
        .await
        .expect("the client answers");

    assert_eq!(answer.status().as_u16(), 302);
    assert_eq!(answer.headers()[header::LOCATION], "/elsewhere");
    assert_eq!(seen.0.load(Ordering::SeqCst), 0, "the client followed it");
}
