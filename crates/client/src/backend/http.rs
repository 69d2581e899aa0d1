//! The HTTP clients that reach the backend, with TLS for an `https://` `BACKEND_URL`.
//!
//! TLS is rustls on the ring provider, the same as the backend's `rediss://` (no aws-lc in the
//! tree). The server's certificate is checked against the system's roots, or against the PEM
//! file named by `SSL_CERT_FILE` (or the directories in `SSL_CERT_DIR`) when set, which is how
//! the backend finds them for Redis. There is no way to turn verification off: an untrusted
//! certificate fails the call, and `/fetch` answers 503.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

/// One pool of connections to the backend: hyper-util's client, which reqwest is built on,
/// without reqwest's layers. reqwest parses every request's URL again for its redirect policy
/// and adds its own boxing and timeouts around each call: about a quarter of the instructions
/// of a `/fetch` (issue 17). The stack already has the timeouts; a backend's redirect is
/// passed on to the caller, not followed.
pub type BackendClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What the clients need to know about the backend's URL.
#[derive(Debug, Clone)]
pub struct Transport {
    tls: rustls::ClientConfig,
    https: bool,
}

impl Transport {
    /// The transport for `backend_url`: with the trusted roots loaded when it is `https://`.
    pub fn for_url(backend_url: &str) -> Result<Self, String> {
        let https = reqwest::Url::parse(backend_url).is_ok_and(|url| url.scheme() == "https");
        // An http:// backend never needs a root; an empty store still lets reqwest build its
        // TLS machinery, which it does whatever the URL.
        let roots = if https {
            trusted_roots()?
        } else {
            RootCertStore::empty()
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS setup: {err}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls, https })
    }

    /// A pool for the backend calls: `connect_timeout` on each new connection, at most
    /// `max_idle` idle connections kept, and each dropped after [`guestbook_api::POOL_IDLE_TIMEOUT`]
    /// unused. TCP_NODELAY is set, as reqwest sets it: a small request is sent at once.
    pub fn client(&self, connect_timeout: Duration, max_idle: usize) -> BackendClient {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        // The TLS wrapper decides which schemes go through; the TCP connector takes both.
        tcp.enforce_http(false);
        let tls = HttpsConnectorBuilder::new().with_tls_config(self.tls.clone());
        let tls = if self.https {
            tls.https_only()
        } else {
            tls.https_or_http()
        };
        let connector = tls.enable_http1().wrap_connector(tcp);
        Client::builder(TokioExecutor::new())
            // Below the backend's default HEADER_READ_TIMEOUT_SECS, as for `builder`.
            .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(max_idle)
            .build(connector)
    }

    /// A reqwest client builder (for the live-update stream) that behaves as [`Self::client`]
    /// does: this transport's TLS (never unverified), no redirect followed, no proxy from the
    /// environment.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .https_only(self.https)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            // Below the backend's default HEADER_READ_TIMEOUT_SECS: the client drops an idle
            // connection first and never sends on one the backend is closing.
            .pool_idle_timeout(guestbook_api::POOL_IDLE_TIMEOUT)
    }
}

/// The system's roots, or those of `SSL_CERT_FILE` / `SSL_CERT_DIR`; an error when none load.
fn trusted_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(format!(
            "BACKEND_URL is https:// but no trusted root certificate could be loaded from the \
             system or SSL_CERT_FILE: {why}"
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_backend_needs_no_root() {
        let transport = Transport::for_url("http://127.0.0.1:8080").expect("plain");
        assert!(!transport.https);
        assert!(transport.builder().build().is_ok());
        drop(transport.client(Duration::from_secs(1), 4));
    }
}
