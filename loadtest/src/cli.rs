//! The command line: `guestbook-loadtest messages ...`, `http ...` and `stream ...` (whose
//! flags live in [`crate::stream::args`]).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::books::Books;
use crate::http_load::HttpLoad;
use crate::messages::MessagesRun;
use crate::schedule::Schedule;

/// Load generation and exactly-once verification for the guestbook services.
#[derive(Debug, Parser)]
#[command(name = "guestbook-loadtest", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send N distinct messages in parallel, read the guestbook (or each of --books) back, and
    /// exit non-zero unless every acknowledged message is present exactly once, in its book.
    Messages(MessagesArgs),
    /// HTTP load: closed loop (--connections) or open loop at a constant --rate.
    Http(HttpArgs),
    /// Open N live-update subscribers on one backend, post messages at a steady rate, and
    /// exit non-zero on any miss or duplicate; reports fan-out delay and memory per subscriber.
    Stream(crate::stream::args::StreamArgs),
}

/// `messages` flags.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Base URL the guestbook is read back from (a backend, or the client's /api proxy).
    #[arg(long)]
    pub target: String,
    /// Comma-separated base URLs to post to, round-robin (default: the target).
    #[arg(long, value_delimiter = ',')]
    pub replicas: Vec<String>,
    /// Messages to send. Keep each book's share below the backend's MAX_MESSAGES, or trimming
    /// reads as loss.
    #[arg(long, default_value_t = 1_000)]
    pub count: usize,
    /// Deal the messages round-robin over this many books (1 to 1000), named
    /// `<book-prefix>-0` .. `<book-prefix>-<N-1>` and written through /api/books/{book}/messages,
    /// and verify each. 1 without --book-prefix: the default book, through /api/messages.
    #[arg(long, default_value_t = 1)]
    pub books: usize,
    /// Start of the book names with --books (default: the run id, so reruns use new books).
    #[arg(long)]
    pub book_prefix: Option<String>,
    /// Messages in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Send an Idempotency-Key and retry 429/502/503/504 and transport errors with it (a failed
    /// POST may have been stored: without a key, nothing is ever retried).
    #[arg(long)]
    pub idempotent_retries: bool,
    /// Attempts per message with --idempotent-retries.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// Clear the guestbook first (needs --admin-token).
    #[arg(long)]
    pub clear: bool,
    /// The backend's ADMIN_TOKEN.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Tag for this run's texts (default: random).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Per-request time limit, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Open loop: start messages at this many per second (message i is due at i/rate s, and
    /// its latency in the timeline counts from then); still at most --concurrency in flight.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write every POST attempt to this CSV file (message, attempt, replica, due/sent/done
    /// seconds since the start, latency ms, status or error kind).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Print the report (with the per-second timeline) as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep no idle connection: every attempt opens a new one, so that a per-connection
    /// balancer picks a backend for each attempt, retries included.
    #[arg(long)]
    pub fresh_connections: bool,
}

/// Endpoints with a ready-made request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The client's `GET /fetch` (seed 002).
    Fetch,
    /// The backend's `GET /slow` (seed 001).
    Slow,
    /// The backend's `GET /data` (seed 002).
    Data,
    /// `GET /liveness`: the cheapest endpoint, for measuring the tool itself.
    Liveness,
}

impl Preset {
    fn path(self) -> &'static str {
        match self {
            Self::Fetch => "/fetch",
            Self::Slow => "/slow",
            Self::Data => "/data",
            Self::Liveness => "/liveness",
        }
    }
}

/// `http` flags.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Full http:// URL to load.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub url: Option<String>,
    /// A ready-made endpoint on --target.
    #[arg(long, value_enum, requires = "target")]
    pub preset: Option<Preset>,
    /// Base URL for --preset.
    #[arg(long)]
    pub target: Option<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Extra header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Connections (closed loop: also the requests in flight).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Open loop: requests per second, latency measured from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run length, e.g. 10s, 500ms, 2m (default 10s when --requests is not given).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Per-request time limit, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print the report (with the per-second series) as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw latency, goodput and failures over time to FILE.svg or FILE.png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write every request to this CSV file, in the `messages` mode's trace format (message =
    /// request index; due, sent and done seconds since the start; latency ms; status or error
    /// kind). The JSON report's `started_unix_ms` is the wall clock of second 0.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Open a new connection for every request (and close it after the answer), so that a
    /// per-connection balancer picks a backend for each request, as it does for many
    /// short-lived users.
    #[arg(long)]
    pub fresh_connections: bool,
}

/// Refuses anything but an absolute `http://` URL with a host. `https://` too: the tool loads
/// the services themselves, which serve plain HTTP (TLS ends in front of them), and its `http`
/// mode drives raw HTTP/1.1 connections, as wrk does; see the README.
pub fn check_plain_http(flag: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{flag} {url}: {err}"))?;
    match parsed.scheme() {
        "http" if parsed.host_str().is_some_and(|host| !host.is_empty()) => Ok(()),
        "http" => Err(format!("{flag} {url}: no host")),
        "https" => Err(format!(
            "{flag} {url}: https:// is not supported; load the service's own http:// address"
        )),
        other => Err(format!("{flag} {url}: {other}:// is not http://")),
    }
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((raw, "s"), |at| (&raw[..at], &raw[at..]));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {raw:?}"))?;
    let seconds = match unit {
        "ms" => value / 1_000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(format!("unknown unit in {raw:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("not a duration: {raw:?}"))
}

impl MessagesArgs {
    /// The run these flags describe.
    pub fn to_run(&self) -> Result<MessagesRun, String> {
        if self.clear && self.admin_token.is_none() {
            return Err("--clear needs --admin-token (or ADMIN_TOKEN)".into());
        }
        if self.count == 0 || self.concurrency == 0 {
            return Err("--count and --concurrency must be at least 1".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number".into());
        }
        check_plain_http("--target", &self.target)?;
        for replica in &self.replicas {
            check_plain_http("--replicas", replica)?;
        }
        let run_id = self.run_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("run-{}", &id[..8])
        });
        let books = Books::from_flags(self.books, self.book_prefix.as_deref(), &run_id)?;
        // An empty book would pass its check without having been tested.
        if self.count < books.len() {
            return Err(
                "--count must be at least --books, so that every book gets a message".into(),
            );
        }
        Ok(MessagesRun {
            target: self.target.clone(),
            replicas: self.replicas.clone(),
            count: self.count,
            concurrency: self.concurrency,
            idempotent_retries: self.idempotent_retries,
            max_attempts: self.max_attempts.max(1),
            run_id,
            clear_with: if self.clear {
                self.admin_token.clone()
            } else {
                None
            },
            timeout: Duration::from_millis(self.timeout_ms),
            rate: self.rate,
            trace: self.trace.clone(),
            fresh_connections: self.fresh_connections,
            books,
        })
    }
}

impl HttpArgs {
    /// The load these flags describe.
    pub fn to_load(&self) -> Result<HttpLoad, String> {
        let url = match (&self.url, self.preset, &self.target) {
            (Some(url), _, _) => url.clone(),
            (None, Some(preset), Some(target)) => {
                format!("{}{}", target.trim_end_matches('/'), preset.path())
            }
            _ => return Err("give --url, or --preset with --target".into()),
        };
        let flag = if self.url.is_some() {
            "--url"
        } else {
            "--target"
        };
        check_plain_http(flag, &url)?;
        let url: Uri = url.parse().map_err(|err| format!("{flag}: {err}"))?;
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("bad --method {}", self.method))?;
        let mut headers = HeaderMap::new();
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("--header needs `Name: value`: {header}"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("bad header name in {header}"))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("bad header value in {header}"))?;
            headers.append(name, value);
        }
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        };
        let load = HttpLoad {
            url,
            method,
            headers,
            body: self.body.clone().map(Bytes::from).unwrap_or_default(),
            connections: self.connections,
            schedule: self
                .rate
                .map_or(Schedule::Closed, |rate| Schedule::Open { rate }),
            duration,
            requests: self.requests,
            timeout: Duration::from_millis(self.timeout_ms),
            fresh_connections: self.fresh_connections,
            trace: self.trace.is_some(),
        };
        load.validate()?;
        Ok(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn a_preset_builds_its_url_on_the_target() {
        let cli = Cli::try_parse_from([
            "t",
            "http",
            "--preset",
            "slow",
            "--target",
            "http://127.0.0.1:8080/",
            "--requests",
            "5",
        ])
        .expect("parses");
        let Command::Http(args) = cli.command else {
            panic!("http")
        };
        assert_eq!(
            args.to_load().expect("valid").url.to_string(),
            "http://127.0.0.1:8080/slow"
        );
    }

    #[test]
    fn a_messages_rate_must_be_positive() {
        for (rate, ok) in [("50", true), ("0", false), ("-3", false), ("NaN", false)] {
            let rate_flag = format!("--rate={rate}");
            let cli = Cli::try_parse_from([
                "t",
                "messages",
                "--target",
                "http://127.0.0.1:8080",
                &rate_flag,
            ])
            .expect("parses");
            let Command::Messages(args) = cli.command else {
                panic!("messages")
            };
            assert_eq!(args.to_run().is_ok(), ok, "{rate}");
        }
    }

    #[test]
    fn an_https_or_relative_url_is_refused_for_http_load() {
        for url in ["https://127.0.0.1/", "/relative"] {
            let cli = Cli::try_parse_from(["t", "http", "--url", url]).expect("parses");
            let Command::Http(args) = cli.command else {
                panic!("http")
            };
            assert!(args.to_load().is_err(), "{url}");
        }
    }

    fn messages_args(extra: &[&str]) -> MessagesArgs {
        let mut args = vec!["t", "messages", "--target", "http://127.0.0.1:8080"];
        args.extend(extra);
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Messages(args) = cli.command else {
            panic!("messages")
        };
        args
    }

    #[test]
    fn one_book_is_the_default_book_and_more_are_named_after_the_run() {
        let one = messages_args(&[]).to_run().expect("valid");
        assert_eq!(one.books, Books::Default);
        let five = messages_args(&["--books", "5", "--run-id", "r1"])
            .to_run()
            .expect("valid");
        assert_eq!(five.books.len(), 5);
        assert_eq!(five.books.name(4).as_deref(), Some("r1-4"));
    }

    #[test]
    fn a_bad_number_of_books_or_prefix_is_a_usage_error() {
        for extra in [
            &["--books", "0"][..],
            &["--books", "1001"],
            &["--books", "5", "--count", "4"],
            &["--books", "2", "--book-prefix", "no spaces"],
        ] {
            assert!(messages_args(extra).to_run().is_err(), "{extra:?}");
        }
        assert!(
            messages_args(&["--books", "2", "--book-prefix", "ok_prefix"])
                .to_run()
                .is_ok()
        );
    }
}
