//! The per-connection L4 balancer ([`guestbook_testkit::balancer::TcpBalancer`]) as a process,
//! for harnesses that are not Rust (the chaos harness stands it in for a Kubernetes Service).
//!
//! `guestbook-l4 [--readiness-ms N] BACKEND...` binds a free loopback port and prints
//! `listening 127.0.0.1:PORT`. Then, one command per line on stdin:
//! `add HOST:PORT`, `remove HOST:PORT`, `delay MS HOST:PORT` (every chunk sent to that
//! backend waits MS first; 0 clears it), `stats` (prints one JSON line: per backend its
//! connections, whether it is ready, its readiness flaps (ready → not ready) and its delay;
//! and the connections refused because no backend was ready). It exits when stdin closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use guestbook_testkit::balancer::TcpBalancer;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut readiness = None;
    let mut backends: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--readiness-ms" {
            let Some(ms) = args.next().and_then(|ms| ms.parse().ok()) else {
                fail("--readiness-ms takes a number of milliseconds");
            };
            readiness = Some(Duration::from_millis(ms));
        } else if let Ok(addr) = arg.parse() {
            backends.push(addr);
        } else {
            fail(&format!("not a backend address: {arg:?}"));
        }
    }
    let balancer = TcpBalancer::start(&backends, readiness).await;
    say(&format!("listening {}", balancer.addr()));
    let mut delays: HashMap<SocketAddr, u64> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        if line.starts_with("delay ") {
            let ms = words.nth(1).and_then(|ms| ms.parse::<u64>().ok());
            let addr = words
                .next()
                .and_then(|addr| addr.parse::<SocketAddr>().ok());
            match (ms, addr) {
                (Some(ms), Some(addr)) => {
                    balancer.set_delay(addr, Duration::from_millis(ms));
                    delays.insert(addr, ms);
                }
                _ => eprintln!("guestbook-l4: ignored {line:?}"),
            }
            continue;
        }
        match (words.next(), words.next().map(str::parse::<SocketAddr>)) {
            (Some("add"), Some(Ok(addr))) => {
                balancer.add(addr);
                if !backends.contains(&addr) {
                    backends.push(addr);
                }
            }
            (Some("remove"), Some(Ok(addr))) => balancer.remove(addr),
            (Some("stats"), None) => say(&stats(&balancer, &backends, &delays)),
            _ => eprintln!("guestbook-l4: ignored {line:?}"),
        }
    }
}

fn stats(
    balancer: &TcpBalancer,
    backends: &[SocketAddr],
    delays: &HashMap<SocketAddr, u64>,
) -> String {
    let entries: Vec<String> = backends
        .iter()
        .map(|addr| {
            format!(
                "\"{addr}\": {{\"connections\": {}, \"ready\": {}, \"flaps\": {}, \"delay_ms\": {}}}",
                balancer.connections_to(*addr),
                balancer.is_ready(*addr),
                balancer.flaps_of(*addr),
                delays.get(addr).copied().unwrap_or(0)
            )
        })
        .collect();
    format!(
        "{{\"backends\": {{{}}}, \"refused\": {}}}",
        entries.join(", "),
        balancer.refused()
    )
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(problem: &str) -> ! {
    eprintln!("guestbook-l4: {problem}");
    std::process::exit(2);
}
