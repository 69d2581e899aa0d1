#!/usr/bin/env python3
"""Retries under partial and total failure (issue 14, item 2), for BENCHMARKS.md.

`/fetch` through the client at an open-loop 100 req/s, with the client's DEFAULT settings,
while the backend's `/data` fails 50 % and then 100 % of calls (POST /config/failure with
status 503, fault injection on). For each: the share of `/fetch` answered 200, backend
`/data` calls per `/fetch` (the backend's own request counter, from its /metrics), and the
slowest answer. Targets: at 50 %, ≥ 95 % succeed with ≤ 2.2 calls per request; at 100 %,
≤ 0.1 calls per request and every answer within 1 s.

Each client binary is measured on its own fresh process (a fresh breaker and budget):
target/release/guestbook-client ("after"), and, when present, the binary named by
BEFORE_CLIENT (default target/bench-main/guestbook-client, a release build of main copied
there by hand) as "before".

It starts a private redis-server, a release backend and the clients on 127.0.0.1 and stops
exactly those processes. Results: target/bench/resilience.jsonl and the section between
<!-- resilience:begin --> and <!-- resilience:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").
Environment: DURATION [20] seconds per run (above BREAKER_RESET_SECS, 15 s, so a
half-open trial is included), REDIS_PORT [6395], BASE_PORT [18111].
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import urllib.request

from benchkit import port_free, stop, wait_http, write_section

BACKEND = "target/release/guestbook-backend"
CLIENT = "target/release/guestbook-client"
LOADTEST = "target/release/guestbook-loadtest"
RATE = 100


def start(command, env, url):
    process = subprocess.Popen(command, env=dict(os.environ, RUST_LOG="warn", LOG_FORMAT="json",
                                                 SHUTDOWN_DELAY_SECS="0", DRAIN_TIMEOUT_SECS="1", **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(url, process, "bench_resilience")
    return process


def post(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def data_calls(backend):
    """GET /data requests the backend has answered, from its own metrics."""
    with urllib.request.urlopen(f"{backend}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("http_request_duration_seconds_count{") and 'route="/data"' in line)


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    duration = int(os.environ.get("DURATION", "20"))
    redis_port = int(os.environ.get("REDIS_PORT", "6395"))
    base_port = int(os.environ.get("BASE_PORT", "18111"))
    doc = os.environ.get("BENCHMARKS_MD", "BENCHMARKS.md")
    before = os.environ.get("BEFORE_CLIENT", "target/bench-main/guestbook-client")
    for path in (BACKEND, CLIENT, LOADTEST):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench_resilience: {path} missing; run make build")
    for port in (redis_port, base_port, base_port + 1):
        if port == 6379 or not port_free(port):
            sys.exit(f"bench_resilience: port {port} is taken or is the shared Redis")
    clients = [("after", CLIENT)]
    if os.access(before, os.X_OK):
        clients.insert(0, ("before", before))
    backend_url, client_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{base_port + 1}"
    command = [LOADTEST, "http", "--url", f"{client_url}/fetch", "--rate", str(RATE), "--connections", "64",
               "--duration", f"{duration}s", "--json"]
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [redis]
    runs = []
    try:
        backend = start([BACKEND], {"LISTEN_ADDR": f"127.0.0.1:{base_port}",
                                    "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "FAULT_INJECTION": "true"},
                        f"{backend_url}/liveness")
        processes.append(backend)
        for label, binary in clients:
            for failure in (0.5, 1.0):
                post(f"{backend_url}/config/failure", json.dumps({"failure_rate": failure, "status_code": 503}))
                # Defaults only: nothing but the addresses is set.
                client = start([binary], {"LISTEN_ADDR": f"127.0.0.1:{base_port + 1}", "BACKEND_URL": backend_url},
                               f"{client_url}/liveness")
                calls_before = data_calls(backend_url)
                report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
                calls = data_calls(backend_url) - calls_before
                stop(client)
                requests = max(report["requests"], 1)
                runs.append({"client": label, "binary": binary, "failure_rate": failure,
                             "requests": report["requests"], "ok": report["ok"], "backend_calls": calls,
                             "ok_share": report["ok"] / requests, "calls_per_request": calls / requests,
                             "latency_ms": report["latency_ms"], "statuses": report["statuses"],
                             "errors": report["errors"]})
                print(json.dumps(runs[-1]), file=sys.stderr)
    finally:
        for process in reversed(processes):
            stop(process)

    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/resilience.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"when": when, "runs": runs}) + "\n")

    def verdict(run):
        if run["failure_rate"] < 1.0:
            ok = run["ok_share"] >= 0.95 and run["calls_per_request"] <= 2.2
        else:
            ok = run["calls_per_request"] <= 0.1 and run["latency_ms"]["max"] <= 1_000
        return "met" if ok else "NOT met"

    lines = [
        f"_Generated by `scripts/bench_resilience.py` on {when}; do not edit by hand._",
        "",
        f"`/fetch` through the client with its default settings, open loop at {RATE} req/s for {duration} s, "
        "while the backend's `/data` fails a share of calls with 503 (`POST /config/failure`). A fresh client "
        "process per row. Backend calls are the backend's own count of `GET /data` (its `/metrics`). "
        "Latency is from the intended send time. \"before\" is a release build of main before issue 14's "
        "items 2–4 (RETRY_MAX_ATTEMPTS=4, RETRY_BASE_MS=50, a flat budget of 20 % + 10/s), \"after\" this "
        "branch (7 attempts, 5 ms, the earned budget, retries stopped by an open circuit). 2 cores, shared by "
        "the load tool, client, backend and Redis.",
        "",
        "| client | `/data` failing | requests | 200 | backend calls per request | p50 ms | p99 ms | max ms | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(f"| {run['client']} | {run['failure_rate']:.0%} | {run['requests']:,} | {run['ok_share']:.1%} | "
          f"{run['calls_per_request']:.2f} | {run['latency_ms']['p50']:.1f} | {run['latency_ms']['p99']:.1f} | "
          f"{run['latency_ms']['max']:.1f} | {verdict(run)} |" for run in runs),
        "",
        "Targets: at 50 %, ≥ 95 % of `/fetch` succeed with ≤ 2.2 backend calls per request; at 100 %, "
        "≤ 0.1 backend calls per request and every answer within 1 s.",
        "",
        "```sh",
        "# make bench: the release build, then",
        "python3 scripts/bench_resilience.py",
        "curl -X POST http://127.0.0.1:18111/config/failure -d '{\"failure_rate\": 0.5, \"status_code\": 503}'   # then 1.0",
        shlex.join(command) + "   # against a fresh client, for each failure rate",
        "```",
    ]
    section = "\n".join(lines)
    print(section)
    if doc:
        write_section(doc, "resilience", "The client under partial and total failure", section)
        print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
