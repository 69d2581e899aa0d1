//! The `stream` mode's flags, and the checks that keep it on loopback: the target and every
//! source address must be loopback addresses of one family.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

use crate::cli::{check_plain_http, parse_duration};
use crate::stream::StreamRun;

/// Source addresses one `--source-addrs` range may name, at most.
const MAX_SOURCES: u32 = 65_536;

/// `stream` flags.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The backend's base URL, on loopback (http://127.0.0.1:8080).
    #[arg(long)]
    pub url: String,
    /// Subscribers to open.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages posted per second once every subscriber is open, e.g. `10/s` or `10`.
    #[arg(long, default_value = "10/s", value_parser = parse_rate)]
    pub rate: f64,
    /// How long messages are posted, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Loopback addresses the subscribers connect from, round-robin: a range
    /// `127.0.0.1-127.0.0.40` or a comma-separated list. The backend caps streams per
    /// address (MAX_STREAMS_PER_CLIENT).
    #[arg(long, default_value = "127.0.0.1")]
    pub source_addrs: String,
    /// Spread the subscribers' connects over this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Subscribers connecting at once, at most.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Time allowed to connect and get the stream's answer, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time allowed between two reads of an open stream (the backend sends a keep-alive
    /// comment every 15 s by default).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub read_timeout: Duration,
    /// After the last message, time left to the subscribers to read it.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Per-POST time limit, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub post_timeout: Duration,
    /// The backend's process id: its RSS is read from /proc (else from its /metrics).
    #[arg(long)]
    pub backend_pid: Option<u32>,
    /// Tag for this run's texts and idempotency keys (default: random).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `10/s` or `10` (messages per second).
pub fn parse_rate(raw: &str) -> Result<f64, String> {
    let number = raw.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("not a positive rate: {raw:?} (e.g. 10/s)")),
    }
}

/// Parses `127.0.0.1-127.0.0.40`, `127.0.0.1,127.0.0.2` or one address; every one loopback.
pub fn parse_sources(raw: &str) -> Result<Vec<IpAddr>, String> {
    let mut sources = Vec::new();
    for part in raw
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        if let Some((first, last)) = part.split_once('-') {
            let bad = || format!("--source-addrs: bad IPv4 range {part}");
            let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
            let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
            let (first, last) = (u32::from(first), u32::from(last));
            if last < first || last - first >= MAX_SOURCES {
                return Err(bad());
            }
            sources.extend((first..=last).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            let address: IpAddr = part
                .parse()
                .map_err(|_| format!("--source-addrs: not an address: {part}"))?;
            sources.push(address);
        }
    }
    if sources.is_empty() {
        return Err("--source-addrs names no address".into());
    }
    if let Some(outside) = sources.iter().find(|source| !source.is_loopback()) {
        return Err(format!(
            "--source-addrs: {outside} is not a loopback address"
        ));
    }
    Ok(sources)
}

/// The loopback socket address behind `url` (refused when it resolves anywhere else).
fn loopback_target(url: &reqwest::Url) -> Result<SocketAddr, String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("--url: {host}: {err}"))?
        .collect();
    match addresses.first() {
        Some(first) if addresses.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        _ => Err(format!(
            "--url {url}: the stream mode only loads a loopback address"
        )),
    }
}

impl StreamArgs {
    /// The run these flags describe.
    pub fn to_run(&self) -> Result<StreamRun, String> {
        check_plain_http("--url", &self.url)?;
        let url = reqwest::Url::parse(&self.url).map_err(|err| format!("--url: {err}"))?;
        let target = loopback_target(&url)?;
        let sources = parse_sources(&self.source_addrs)?;
        if let Some(other) = sources.iter().find(|s| s.is_ipv4() != target.is_ipv4()) {
            return Err(format!(
                "--source-addrs: {other} is not of the target's address family"
            ));
        }
        if self.subscribers == 0 || self.connect_concurrency == 0 {
            return Err("--subscribers and --connect-concurrency must be at least 1".into());
        }
        let messages = (self.duration.as_secs_f64() * self.rate).floor();
        if !(1.0..=10_000_000.0).contains(&messages) {
            return Err(
                "--duration × --rate must come to between 1 and 10 million messages".into(),
            );
        }
        Ok(StreamRun {
            base: self.url.trim_end_matches('/').to_owned(),
            target,
            host: match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            },
            sources,
            subscribers: self.subscribers,
            rate: self.rate,
            messages: messages as usize,
            ramp: self.ramp,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            grace: self.grace,
            post_timeout: self.post_timeout,
            backend_pid: self.backend_pid,
            run_id: self.run_id.clone().unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                format!("stream-{}", &id[..8])
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_source_addresses_names_each_one() {
        let sources = parse_sources("127.0.0.1-127.0.0.3,127.0.1.9").expect("valid");
        let expected: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.9"]
            .iter()
            .map(|a| a.parse().expect("an address"))
            .collect();
        assert_eq!(sources, expected);
    }

    #[test]
    fn a_source_address_off_loopback_or_a_backwards_range_is_refused() {
        assert!(parse_sources("10.0.0.1").is_err());
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_sources("127.0.0.1-128.0.0.1").is_err());
        assert!(parse_sources("").is_err());
    }

    #[test]
    fn rates_read_with_or_without_per_second() {
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
