//! Finding the primary through Redis Sentinel (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`).
//!
//! Every [`POLL`] the backend asks the sentinels, in turn, `SENTINEL get-master-addr-by-name`;
//! when the answer names another primary (after a failover) every connection is rebuilt
//! against it, without a restart. Writes are unavailable from the old primary's death until
//! Sentinel promotes a replica (its `down-after-milliseconds` plus the election) plus at most
//! one poll; in that window appends answer 503 with `Retry-After`, and a retry with the same
//! Idempotency-Key is safe. The credentials, TLS and database of `REDIS_URL` are kept; only
//! its host and port are replaced by the sentinels' answer.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::config::RedisArgs;
use crate::store::error::StoreError;

/// How often the sentinels are asked.
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// The sentinels and the name of the primary they watch.
pub(crate) struct Sentinel {
    addresses: Vec<String>,
    master_name: String,
    /// `REDIS_URL`, whose host and port each answer replaces.
    template: String,
    timeout: Duration,
}

impl Sentinel {
    pub(crate) fn from_settings(settings: &RedisArgs) -> Option<Self> {
        let addresses = settings.sentinel_addresses();
        if addresses.is_empty() {
            return None;
        }
        Some(Self {
            addresses,
            master_name: settings.redis_master_name.clone(),
            template: settings.redis_url.clone(),
            timeout: settings.redis_timeout(),
        })
    }

    /// The primary's URL as the first sentinel that answers names it.
    pub(crate) async fn primary_url(&self) -> Result<String, String> {
        let mut last_error = "no sentinel configured".to_owned();
        for address in &self.addresses {
            match self.ask(address).await {
                Ok((host, port)) => return self.url_for(&host, port),
                Err(err) => last_error = format!("sentinel {address}: {err}"),
            }
        }
        Err(last_error)
    }

    async fn ask(&self, address: &str) -> Result<(String, u16), String> {
        let client =
            redis::Client::open(format!("redis://{address}")).map_err(|err| err.to_string())?;
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master_name)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(Some(primary))) => Ok(primary),
            Ok(Ok(None)) => Err(format!("does not know {:?}", self.master_name)),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn url_for(&self, host: &str, port: u16) -> Result<String, String> {
        url_with_address(&self.template, host, port)
    }
}

/// `template` (`REDIS_URL`) with its host and port replaced, its credentials, TLS and database
/// kept: the URL of a primary Sentinel or the cluster named.
pub(crate) fn url_with_address(template: &str, host: &str, port: u16) -> Result<String, String> {
    let mut url = redis::parse_redis_url(template)
        .ok_or_else(|| "REDIS_URL is not a Redis URL".to_owned())?;
    // Sentinel and the cluster name an IPv6 node bare (`::1`); a URL needs it in brackets.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    url.set_host(Some(&host))
        .map_err(|err| format!("named host {host:?}: {err}"))?;
    url.set_port(Some(port))
        .map_err(|()| format!("named port {port} for a URL without a host"))?;
    Ok(url.to_string())
}

/// Polls the sentinels until `stop`, calling `switch` with each newly named primary's URL.
pub(crate) async fn follow(
    sentinel: &Sentinel,
    switch: impl Fn(&str) -> Result<(), StoreError>,
    stop: CancellationToken,
) {
    let mut current: Option<String> = None;
    loop {
        match sentinel.primary_url().await {
            Ok(url) if current.as_deref() != Some(url.as_str()) => match switch(&url) {
                Ok(()) => current = Some(url),
                Err(err) => {
                    tracing::error!(error = %err, "cannot use the primary Sentinel named")
                }
            },
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "no sentinel named the Redis primary"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(template: &str) -> Sentinel {
        Sentinel {
            addresses: vec!["127.0.0.1:26379".into()],
            master_name: "mymaster".into(),
            template: template.into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn an_ipv6_primary_becomes_a_bracketed_url_keeping_credentials_and_tls() {
        let named = sentinel("rediss://app:secret@127.0.0.1:6379/2").url_for("::1", 6380);
        assert_eq!(named.as_deref(), Ok("rediss://app:secret@[::1]:6380/2"));
        let named = sentinel("redis://127.0.0.1:6379").url_for("fd00::5", 7000);
        assert_eq!(named.as_deref(), Ok("redis://[fd00::5]:7000"));
        redis::Client::open(named.unwrap_or_default()).expect("redis-rs opens it");
    }

    #[test]
    fn an_ipv4_or_named_primary_replaces_the_host() {
        assert_eq!(
            sentinel("redis://127.0.0.1:6379")
                .url_for("redis-1.local", 6380)
                .as_deref(),
            Ok("redis://redis-1.local:6380")
        );
    }
}
