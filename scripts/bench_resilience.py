#!/usr/bin/env python3
"""Retries under partial and total failure, and a backend added under load (issue 14, items 2
and 3), for BENCHMARKS.md.

`/fetch` through the client at an open-loop 100 req/s, with the client's DEFAULT settings,
while the backend's `/data` fails 50 % and then 100 % of calls (POST /config/failure with
seed 002's bare body, so the backend's default status 500; fault injection on). For each: the share of `/fetch` answered 200, backend
`/data` calls per `/fetch` (the backend's own request counter, from its /metrics), and the
slowest answer. Targets: at 50 %, ≥ 95 % succeed with ≤ 2.2 calls per request; at 100 %,
≤ 0.1 calls per request and every answer within 1 s.

Scale-out: three backends on one Redis, the first two behind guestbook-l4 (the testkit's
per-connection balancer: a random backend per new connection, as kube-proxy), the client's
BACKEND_URL on the balancer; `/fetch` at 100 req/s for 40 s, the third backend added after 5 s;
the share of the client's calls each backend answered over the 30 s after the add, and
per 5 s. Target: the added backend serves ≥ 20 % within 30 s.

Each client binary is measured on its own fresh process (a fresh breaker and budget):
target/release/guestbook-client ("after"), and, when present, the binary named by
BEFORE_CLIENT (default target/bench-main/guestbook-client, a release build of main copied
there by hand) as "before".

It starts a private redis-server, a release backend and the clients on 127.0.0.1 and stops
exactly those processes. Results: target/bench/resilience.jsonl and the section between
<!-- resilience:begin --> and <!-- resilience:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").
Environment: DURATION [20] seconds per run (above BREAKER_RESET_SECS, 15 s, so a
half-open trial is included), REDIS_PORT [6395], BASE_PORT [18111] (and the four ports above it).
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import time

from benchkit import benchmarks_md, data_calls, env_int, how_to_run, post, prepare, publish, stop, wait_http

BACKEND = "target/release/guestbook-backend"
CLIENT = "target/release/guestbook-client"
LOADTEST = "target/release/guestbook-loadtest"
BALANCER = "target/release/guestbook-l4"
RATE = 100


def start(command, env, url):
    process = subprocess.Popen(command, env=dict(os.environ, RUST_LOG="warn", LOG_FORMAT="json",
                                                 SHUTDOWN_DELAY_SECS="0", DRAIN_TIMEOUT_SECS="1", **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(url, process, "bench_resilience")
    return process


def scale_out(label, binary, backend_urls, addrs, client_port):
    """The third backend's share of the client's calls after it is added under load."""
    balancer = subprocess.Popen([BALANCER, addrs[0], addrs[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        balancer_addr = balancer.stdout.readline().split()[-1]
        client_url = f"http://127.0.0.1:{client_port}"
        client = start([binary], {"LISTEN_ADDR": f"127.0.0.1:{client_port}",
                                  "BACKEND_URL": f"http://{balancer_addr}"}, f"{client_url}/liveness")
        command = [LOADTEST, "http", "--url", f"{client_url}/fetch", "--rate", str(RATE), "--connections", "64",
                   "--duration", "40s", "--json"]
        baseline = [data_calls(url) for url in backend_urls]
        load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(5)
            counts = [[data_calls(url) for url in backend_urls]]
            balancer.stdin.write(f"add {addrs[2]}\n")
            balancer.stdin.flush()
            for _ in range(6):
                time.sleep(5)
                counts.append([data_calls(url) for url in backend_urls])
            report = json.loads(load.communicate(timeout=60)[0])
        finally:
            if load.poll() is None:
                stop(load)
            stop(client)
    finally:
        balancer.stdin.close()
        stop(balancer)
    slices = [[after - before for before, after in zip(counts[n], counts[n + 1])] for n in range(6)]
    total = [after - before for before, after in zip(counts[0], counts[-1])]
    return {"client": label, "binary": binary, "requests": report["requests"], "ok": report["ok"],
            "calls_before_add": [now - start for start, now in zip(baseline, counts[0])], "calls_since_add": total,
            "added_share": total[2] / max(sum(total), 1),
            "added_share_per_5s": [piece[2] / max(sum(piece), 1) for piece in slices],
            "command": shlex.join(command)}


def main():
    duration = env_int("DURATION", 20)
    redis_port = env_int("REDIS_PORT", 6395)
    base_port = env_int("BASE_PORT", 18111)
    doc = benchmarks_md()
    before = os.environ.get("BEFORE_CLIENT", "target/bench-main/guestbook-client")
    prepare("bench_resilience", binaries=(BACKEND, CLIENT, LOADTEST, BALANCER), ports=(redis_port, *range(base_port, base_port + 4)))
    clients = [("after", CLIENT)]
    if os.access(before, os.X_OK):
        clients.insert(0, ("before", before))
    backend_url, client_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{base_port + 1}"
    command = [LOADTEST, "http", "--url", f"{client_url}/fetch", "--rate", str(RATE), "--connections", "64",
               "--duration", f"{duration}s", "--json"]
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [redis]
    runs, scale_outs = [], []
    try:
        backend = start([BACKEND], {"LISTEN_ADDR": f"127.0.0.1:{base_port}",
                                    "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "FAULT_INJECTION": "true"},
                        f"{backend_url}/liveness")
        processes.append(backend)
        for label, binary in clients:
            for failure in (0.5, 1.0):
                post(f"{backend_url}/config/failure", json.dumps({"failure_rate": failure}))
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

        # Scale-out: two more backends on the same Redis, all healthy.
        post(f"{backend_url}/config/failure", json.dumps({"failure_rate": 0.0}))
        backend_urls = [backend_url]
        for port in (base_port + 2, base_port + 3):
            processes.append(start([BACKEND], {"LISTEN_ADDR": f"127.0.0.1:{port}",
                                               "REDIS_URL": f"redis://127.0.0.1:{redis_port}"},
                                   f"http://127.0.0.1:{port}/liveness"))
            backend_urls.append(f"http://127.0.0.1:{port}")
        addrs = [url.removeprefix("http://") for url in backend_urls]
        for label, binary in clients:
            scale_outs.append(scale_out(label, binary, backend_urls, addrs, base_port + 1))
            print(json.dumps(scale_outs[-1]), file=sys.stderr)
    finally:
        for process in reversed(processes):
            stop(process)

    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/resilience.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"when": when, "runs": runs, "scale_out": scale_outs}) + "\n")

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
        "while the backend's `/data` fails a share of calls with its default 500 (`POST /config/failure` "
        "with seed 002's bare `{\"failure_rate\": 0.5}`). A fresh client "
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
        "A backend added under load: three backends on one Redis, the first two behind `guestbook-l4` (the "
        "testkit's per-connection balancer, which picks a backend at random for each new connection, as "
        f"kube-proxy does), `/fetch` through the client at {RATE} req/s for 40 s, the third backend added after "
        "5 s. Calls each backend answered (its `/metrics`) before the add, and over the 30 s after it; the added "
        "backend's share of those, and per 5 s. Target: ≥ 20 % within 30 s.",
        "",
        "| client | 200 | calls before the add (1, 2) | after the add (1, 2, added) | added backend's share | per 5 s |",
        "|---|---:|---|---|---:|---|",
        *(f"| {run['client']} | {run['ok'] / max(run['requests'], 1):.1%} | "
          f"{run['calls_before_add'][0]:,}, {run['calls_before_add'][1]:,} | "
          f"{', '.join(f'{calls:,}' for calls in run['calls_since_add'])} | **{run['added_share']:.1%}** | "
          f"{' '.join(f'{share:.0%}' for share in run['added_share_per_5s'])} |" for run in scale_outs),
        "",
        *how_to_run(
            "bench_resilience.py",
            "curl -X POST http://127.0.0.1:18111/config/failure -d '{\"failure_rate\": 0.5}'   # then 1.0",
        shlex.join(command) + "   # against a fresh client, for each failure rate",
        "target/release/guestbook-l4 127.0.0.1:18111 127.0.0.1:18113   # then 'add 127.0.0.1:18114' on its stdin",
            *(scale_outs[-1:] and [scale_outs[-1]["command"] + "   # through the balancer"]),
        ),
    ]
    publish(doc, "resilience", "The client under partial and total failure", lines)


if __name__ == "__main__":
    main()
