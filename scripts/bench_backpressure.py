#!/usr/bin/env python3
"""Backpressure figures for BENCHMARKS.md: /slow under overload, with and without shedding,
and the cost of recording a latency in the sliding window (criterion).

Overload: /slow holds one of SLOW_WORKERS=4 permits for SLOW_MS=200 ms, so its capacity is
20 calls/s. The load tool sends an open loop at 1x, 2x, 5x and 10x that rate (latency from the
intended send time, so queueing counts) for DURATION seconds, once with shedding (the default:
the predictive bulkhead plus latency shedding) and once with SHEDDING=false. A fresh backend
serves each run, so no run inherits another's latency window. /readiness is polled every 100 ms
meanwhile (when it first fails, and why), then after the load until it answers 200 again
(at most RECOVERY_LIMIT seconds): seed 001's "an overloaded pod leaves the load balancer", and
issue 14's "and comes back once the pressure passes".

It starts a private redis-server and the backends on 127.0.0.1 and stops exactly those
processes. Results: target/bench/backpressure.jsonl and the sections between
<!-- overload:begin/end --> and <!-- criterion:begin/end --> of BENCHMARKS.md
(unless BENCHMARKS_MD="").

Environment: DURATION [20] seconds per run, REDIS_PORT [6393], PORT [18095], SKIP_CRITERION.
"""

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from benchkit import append_jsonl, benchmarks_md, env_int, how_to_run, prepare, publish, stop, wait_http

BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"
SLOW_MS, SLOW_WORKERS = 200, 4
CAPACITY = SLOW_WORKERS * 1000 / SLOW_MS
SHED_P999_MS = 800
MULTIPLES = (1, 2, 5, 10)
# LATENCY_WINDOW_SECS' default: readiness must be back within one window of the load stopping.
LATENCY_WINDOW_SECS = 60
# A bound on the wait for readiness after a run: past one window plus slack it is a finding.
RECOVERY_LIMIT = LATENCY_WINDOW_SECS + 10


def readiness(url):
    """(status, JSON body) of one /readiness poll; (0, {}) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:
        try:
            return refused.code, json.loads(refused.read() or b"{}")
        except ValueError:
            return refused.code, {}
    except (OSError, ValueError):
        return 0, {}


class Watch(threading.Thread):
    """Polls /readiness every 100 ms until stopped; keeps when it first failed, and why."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.started = time.monotonic()
        self.unready = None
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            code, body = readiness(self.url)
            if code == 503 and self.unready is None:
                self.unready = {"after_s": time.monotonic() - self.started, "reason": body.get("reason")}
            self.done.wait(0.1)


def ready_again(url):
    """Seconds until /readiness answers 200, polled every 100 ms; None past RECOVERY_LIMIT."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_LIMIT:
        if readiness(url)[0] == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def criterion():
    command = ["cargo", "bench", "--locked", "-p", "guestbook-common", "--bench", "latency_window", "--", "--noplot"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_backpressure: {shlex.join(command)} failed:\n{done.stderr[-2000:]}")
    results = {}
    for name, low, unit_low, mid, unit_mid in re.findall(
            r"latency_window/(\S+)\s+time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+)", done.stdout):
        results[name] = f"{mid} {unit_mid}"
    return command, results


def main():
    duration = env_int("DURATION", 20)
    redis_port = env_int("REDIS_PORT", 6393)
    port = env_int("PORT", 18095)
    doc = benchmarks_md()
    prepare("bench_backpressure", binaries=(BACKEND, LOADTEST), ports=(redis_port, port))

    rows = []
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    load_commands = []
    try:
        for shedding in (True, False):
            for multiple in MULTIPLES:
                env = dict(os.environ, LISTEN_ADDR=f"127.0.0.1:{port}", REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                           SLOW_MS=str(SLOW_MS), SLOW_WORKERS=str(SLOW_WORKERS), SHEDDING=str(shedding).lower(),
                           RUST_LOG="warn", LOG_FORMAT="json", SHUTDOWN_DELAY_SECS="0", DRAIN_TIMEOUT_SECS="1")
                backend = subprocess.Popen([BACKEND], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_http(f"{base}/liveness", backend, "bench_backpressure")
                    rate = CAPACITY * multiple
                    command = [LOADTEST, "http", "--preset", "slow", "--target", base, "--rate", f"{rate:g}",
                               "--connections", "256", "--duration", f"{duration}s", "--timeout-ms", "10000", "--json"]
                    if multiple == MULTIPLES[-1]:
                        load_commands.append(f"SHEDDING={str(shedding).lower()}: " + shlex.join(command))
                    watch = Watch(f"{base}/readiness")
                    watch.start()
                    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
                    watch.done.set()
                    watch.join()
                    recovered = ready_again(f"{base}/readiness") if watch.unready else None
                finally:
                    stop(backend)
                rows.append({"shedding": shedding, "multiple": multiple, "rate": rate, "report": report,
                             "unready": watch.unready, "ready_again_s": recovered})
                print(f"shedding={shedding} {multiple}x: goodput {report['ok_per_second']:.1f}/s, "
                      f"accepted p99 {report['ok_latency_ms']['p99']:.0f} ms, "
                      f"shed p99 {report['failed_latency_ms']['p99']:.2f} ms, "
                      f"unready {watch.unready}, ready again after {recovered}", file=sys.stderr)
    finally:
        stop(redis)

    criterion_command, costs = ([], {}) if os.environ.get("SKIP_CRITERION") else criterion()
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    append_jsonl("backpressure.jsonl", {"when": when, "rows": rows, "criterion": costs})

    lines = [
        f"_Generated by `scripts/bench_backpressure.py` on {when}; do not edit by hand._",
        "",
        f"`GET /slow` with SLOW_WORKERS={SLOW_WORKERS} and SLOW_MS={SLOW_MS}: capacity {CAPACITY:g} calls/s. "
        f"Open loop at a multiple of that for {duration} s (latency from the intended send time), 256 "
        "connections, a fresh backend per run. \"Accepted\" are the 2xx answers, \"shed\" every other answer "
        "(503 with Retry-After, or a 10 s client timeout when nothing sheds). \"Unready\" is when `/readiness` "
        "(polled every 100 ms) first answered 503 after the load began, and why; \"ready again\" how long after "
        f"the load ended it answered 200 (polled for at most {RECOVERY_LIMIT} s, with no other traffic).",
        "",
        "| shedding | load | offered/s | goodput/s (% of capacity) | accepted p50 / p99 ms | shed | shed p99 ms "
        "| unready | ready again |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]

    def unready_text(row):
        unready = row["unready"]
        return "never" if unready is None else f"after {unready['after_s']:.1f} s ({unready['reason']})"

    def again_text(row):
        if row["unready"] is None:
            return "–"
        again = row["ready_again_s"]
        return f"> {RECOVERY_LIMIT} s" if again is None else f"{again:.1f} s"
    for row in rows:
        r = row["report"]
        shed = r["requests"] - r["ok"]
        lines.append(
            f"| {'on' if row['shedding'] else 'off'} | {row['multiple']}x | {row['rate']:g} | "
            f"{r['ok_per_second']:.1f} ({r['ok_per_second'] / CAPACITY:.0%}) | "
            f"{r['ok_latency_ms']['p50']:.0f} / {r['ok_latency_ms']['p99']:.0f} | "
            f"{shed:,} ({shed / max(r['requests'], 1):.0%}) | "
            f"{r['failed_latency_ms']['p99']:.2f} | {unready_text(row)} | {again_text(row)} |")
    ten_row = next(row for row in rows if row["shedding"] and row["multiple"] == 10)
    ten = ten_row["report"]
    checks = [
        (f"goodput at 10x ≥ 90 % of capacity: {ten['ok_per_second'] / CAPACITY:.0%}",
         ten["ok_per_second"] >= 0.9 * CAPACITY),
        (f"accepted p99 at 10x ≤ SHED_P999_MS ({SHED_P999_MS} ms): {ten['ok_latency_ms']['p99']:.0f} ms",
         ten["ok_latency_ms"]["p99"] <= SHED_P999_MS),
        (f"shed p99 at 10x < 5 ms: {ten['failed_latency_ms']['p99']:.2f} ms", ten["failed_latency_ms"]["p99"] < 5),
        (f"unready within 5 s at 10x: {unready_text(ten_row)}",
         ten_row["unready"] is not None and ten_row["unready"]["after_s"] <= 5),
        (f"ready again within LATENCY_WINDOW_SECS ({LATENCY_WINDOW_SECS} s) of the load at 10x: {again_text(ten_row)}",
         ten_row["ready_again_s"] is not None and ten_row["ready_again_s"] <= LATENCY_WINDOW_SECS),
    ]
    lines += ["", "Targets (shedding on): " + "; ".join(f"{text} ({'met' if ok else 'NOT met'})" for text, ok in checks) + "."]
    lines += ["", *how_to_run("bench_backpressure.py",
                              "# each backend: LISTEN_ADDR=... REDIS_URL=... SLOW_MS=200 SLOW_WORKERS=4 "
                              f"SHEDDING=true|false {BACKEND}", *load_commands)]
    overload = "\n".join(lines)

    criterion_text = "\n".join([
        f"_Generated by `scripts/bench_backpressure.py` on {when}; do not edit by hand._",
        "",
        "Recording one latency in the sliding window (`crates/common/benches/latency_window.rs`; "
        "criterion's median estimate):",
        "",
        "| case | time |",
        "|---|---:|",
        *(f"| `{name}` | {value} |" for name, value in costs.items()),
        "",
        "```sh",
        shlex.join(criterion_command),
        "```",
    ]) if costs else None
    publish(doc, "overload", "Overload: /slow", [overload])
    if criterion_text:
        publish(doc, "criterion", "Recording cost", [criterion_text])


if __name__ == "__main__":
    main()
