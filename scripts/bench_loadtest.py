#!/usr/bin/env python3
"""The load tool's own overhead, and an exactly-once run at scale, for BENCHMARKS.md.

1. Overhead: the maximum request rate of `guestbook-loadtest http` against the cheapest
   endpoint (GET /liveness, closed loop, 64 connections) beside `wrk -t2 -c64` in the same
   run, alternating, three times each; the medians and their ratio (target >= 70 %).
2. Exactly once: `guestbook-loadtest messages` with 10,000 messages, 200 in flight, over three
   backends sharing one Redis, with idempotent retries.

It starts a private redis-server and release backends on 127.0.0.1 and stops exactly those
processes. Results: target/bench/loadtest.jsonl, and the section between
<!-- loadtest:begin --> and <!-- loadtest:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").

Environment: DURATION [5] seconds per overhead run, REDIS_PORT [6392], BASE_PORT [18091].
"""

import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from benchkit import port_free, wait_http, write_section

TARGET_RATIO = 0.70
BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"
ADMIN_TOKEN = "bench-admin-token-0123456789"


def run(command):
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        sys.exit(f"bench_loadtest: {shlex.join(command)} failed:\n{done.stderr}")
    return done


def wrk_rate(output):
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not match:
        sys.exit(f"bench_loadtest: no rate in wrk output:\n{output}")
    return float(match.group(1))


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    duration = int(os.environ.get("DURATION", "5"))
    redis_port = int(os.environ.get("REDIS_PORT", "6392"))
    base_port = int(os.environ.get("BASE_PORT", "18091"))
    doc = os.environ.get("BENCHMARKS_MD", "BENCHMARKS.md")
    for path in (BACKEND, LOADTEST):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench_loadtest: {path} missing; run make build")
    if redis_port == 6379 or not port_free(redis_port):
        sys.exit(f"bench_loadtest: port {redis_port} is taken or is the shared Redis")

    started = []
    try:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(redis)
        for _ in range(50):
            if subprocess.run(["redis-cli", "-p", str(redis_port), "PING"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        bases = []
        for i in range(3):
            port = base_port + i
            if not port_free(port):
                sys.exit(f"bench_loadtest: port {port} is taken")
            env = dict(os.environ, LISTEN_ADDR=f"127.0.0.1:{port}", REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                       ADMIN_TOKEN=ADMIN_TOKEN, MAX_MESSAGES="20000", RUST_LOG="warn", LOG_FORMAT="json",
                       SHUTDOWN_DELAY_SECS="0")
            backend = subprocess.Popen([BACKEND], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append(backend)
            bases.append(f"http://127.0.0.1:{port}")
            wait_http(f"{bases[-1]}/liveness", backend, "bench_loadtest")

        wrk_command = ["wrk", "-t2", "-c64", f"-d{duration}s", f"{bases[0]}/liveness"]
        tool_command = [LOADTEST, "http", "--preset", "liveness", "--target", bases[0], "--connections", "64",
                        "--duration", f"{duration}s", "--json"]
        wrk_rates, tool_rates = [], []
        for _ in range(3):
            wrk_rates.append(wrk_rate(run(wrk_command).stdout))
            tool_rates.append(json.loads(run(tool_command).stdout)["requests_per_second"])
        messages_command = [LOADTEST, "messages", "--target", bases[0], "--replicas", ",".join(bases),
                            "--count", "10000", "--concurrency", "200", "--idempotent-retries", "--clear",
                            "--admin-token", ADMIN_TOKEN, "--json"]
        messages = json.loads(run(messages_command).stdout)
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    wrk_median, tool_median = statistics.median(wrk_rates), statistics.median(tool_rates)
    ratio = tool_median / wrk_median
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    record = {"when": when, "wrk_rates": wrk_rates, "tool_rates": tool_rates, "ratio": ratio,
              "messages": messages}
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/loadtest.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")

    fmt = lambda rates: " / ".join(f"{rate:,.0f}" for rate in rates)
    verdict = messages["verdict"]
    show = lambda command: shlex.join(command).replace(ADMIN_TOKEN, "$ADMIN_TOKEN")
    section = "\n".join([
        f"_Generated by `scripts/bench_loadtest.py` on {when}; do not edit by hand._",
        "",
        "**The tool's overhead.** `GET /liveness` on one backend, closed loop, 64 connections, "
        f"{duration} s per run, wrk and the tool alternating, three runs each.",
        "",
        "| load generator | req/s (runs) | median |",
        "|---|---:|---:|",
        f"| `wrk -t2 -c64` | {fmt(wrk_rates)} | {wrk_median:,.0f} |",
        f"| `guestbook-loadtest http --connections 64` | {fmt(tool_rates)} | {tool_median:,.0f} |",
        "",
        f"Ratio tool / wrk: **{ratio:.1%}** (target ≥ {TARGET_RATIO:.0%}: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}).",
        "",
        "**Exactly once at scale.** 10,000 messages, 200 in flight, spread over three `lua` backends "
        "sharing one Redis, with idempotent retries: "
        f"{'PASSED' if messages['passed'] else 'FAILED'}; acknowledged {verdict['acknowledged']:,}, "
        f"found {verdict['found']:,}, lost {verdict['lost']}, duplicated {verdict['duplicated']}, "
        f"out of order {verdict['out_of_order']}; {messages['acknowledged_per_second']:,.0f} acknowledged/s, "
        f"POST p50 {messages['latency_ms']['p50']:.1f} ms, p99 {messages['latency_ms']['p99']:.1f} ms.",
        "",
        "```sh",
        "# make bench: the release build, then",
        "python3 scripts/bench_loadtest.py",
        show(wrk_command),
        show(tool_command),
        show(messages_command),
        "```",
    ])
    print(section)
    if doc:
        write_section(doc, "loadtest", "The load tool", section)
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
