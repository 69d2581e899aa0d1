#!/usr/bin/env python3
"""Live readers per backend: N Server-Sent-Events subscribers on one release backend, one message
per 100 ms for 30 s, measured by the load tool's own `stream` mode: deliveries made against
expected, misses, duplicates, fan-out delay, and the backend's memory per subscriber (its RSS,
from /proc, before and after the subscribers open, divided by those open). The goal: 10,000
subscribers, every delivery made, fan-out p99 at most 100 ms, at most 16 KB each.

Each N gets a fresh private redis-server (no persistence) and a fresh release backend with its
default MAX_STREAM_CLIENTS (10,000), raised to N only above it; the subscribers connect from 40 loopback addresses
(127.0.0.1-127.0.0.40), so the per-address cap (MAX_STREAMS_PER_CLIENT, 256) is not what
refuses them. Everything is on 127.0.0.1; the script stops exactly the processes it started.
Results: target/bench/stream.json and the section between <!-- stream:begin --> and
<!-- stream:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").

Environment: SUBSCRIBERS ["1000 10000"], RATE [10], DURATION [30], SOURCES [40],
REDIS_PORT [6398], PORT [18114].
"""

import datetime
import json
import os
import resource
import shlex
import subprocess
import sys

from benchkit import benchmarks_md, env_int, how_to_run, prepare, publish, start_backend, start_redis, stop

BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"
WHO = "bench_stream"
DEFAULT_CAP = 10_000

# Where the fan-out delay comes from, as profiled (perf record on the backend, 10,000 subscribers,
# one message per 100 ms); kept here so that every run of the script writes it again.
FINDING = (
    "Where the delay came from (perf on the backend at 10,000 subscribers): 58 % of the backend's CPU was "
    "the `writev` of each event, the kernel's loopback TCP path, receiver's side included; the rest was "
    "per-subscriber work around it: a pump task per subscriber woken by the broadcast channel, an mpsc hop to "
    "the connection's task (a second wake-up per event), the event serialised again for every subscriber, "
    "and the keep-alive timer reset on every event. Now a subscriber is a stream polled by its connection "
    "(no task, no channel), the tail encodes each event once into shared bytes, and the keep-alive is a "
    "timer that fires every 15 s whatever flows: about 1.5 KB less per subscriber (16,160 B to 14,700 B). "
    "The load tool's reader was two tasks per subscriber (connection, body) and a timer set and cancelled "
    "per event; it is one task and one timer moved only when it fires. Profiled again after: `writev` is 71 % "
    "of the backend's CPU and user space 27 % (was 58 % and 38 %). The writes themselves stay: one "
    "syscall per subscriber per event is the floor of this design. On the shared machine the delays swing "
    "by several times between paired runs of the same binaries (other engineers' builds and tests take the "
    "cores), so the p99 here is not the binary's; the CPU microseconds per delivery are the steadier figure. "
    "Paired on 2026-11-29 at 10,000 subscribers, 15 s, same load tool, old and new backend interleaved three "
    "times at load average 14-18: memory each 16,182 / 16,206 / 16,168 B before, 14,772 / 14,738 / 14,716 B "
    "after; backend CPU per delivery 4.09 / 2.83 / 2.31 us before, 2.08 / 2.01 / 3.28 us after; fan-out p99 "
    "1.4-4.4 s before and 1.4-5.3 s after: starved by the machine, not told apart."
)


def more_descriptors():
    """In the backend's child process: the soft descriptor limit up to the hard one (one
    socket per subscriber)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def one_run(subscribers, rate, duration, sources, redis_port, port):
    """One fresh Redis and backend, `subscribers` streams; the tool's JSON report and command."""
    redis = start_redis(redis_port, "bench_stream")
    backend = None
    try:
        caps = {"MAX_STREAM_CLIENTS": str(subscribers)} if subscribers > DEFAULT_CAP else {}
        backend = start_backend(BACKEND, port, redis_port, WHO, caps, preexec_fn=more_descriptors)
        command = [
            LOADTEST, "stream", "--url", f"http://127.0.0.1:{port}",
            "--subscribers", str(subscribers), "--rate", f"{rate}/s", "--duration", f"{duration}s",
            "--source-addrs", f"127.0.0.1-127.0.0.{sources}", "--ramp", f"{max(1, subscribers // 1000)}s",
            "--backend-pid", str(backend.pid), "--json",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            sys.exit(f"{WHO}: the load tool could not run ({done.returncode}): {done.stderr.strip()}")
        display = [part if part != str(backend.pid) else "$BACKEND_PID" for part in command]
        return {"command": shlex.join(display), "exit_code": done.returncode, "report": json.loads(done.stdout)}
    finally:
        if backend is not None:
            stop(backend)
        stop(redis)


def row(subscribers, run):
    """One table row of a run."""
    r = run["report"]
    ack, sent = r["fan_out_from_acknowledged_ms"], r["fan_out_from_sent_ms"]
    refused = sum(r["refused"].values()) + sum(r["failed_to_open"].values())
    per = r["memory"]["per_subscriber_bytes"]
    per = "?" if per is None else f"{per / 1024:.1f} KiB"
    cpu = r["cpu"]

    def busy(seconds):
        return "?" if seconds is None else f"{100 * seconds / max(cpu['wall_seconds'], 1e-9):.0f} %"

    return (
        f"| {subscribers:,} | {r['opened']:,} | {refused:,} | {r['messages_acknowledged']} of {r['messages_posted']} "
        f"| {r['deliveries_made']:,} of {r['deliveries_expected']:,} | {r['misses']:,} | {r['duplicates']:,} "
        f"| {ack['p50']:.1f} / {ack['p99']:.1f} / {ack['max']:.1f} | {sent['p50']:.1f} / {sent['p99']:.1f} / {sent['max']:.1f} "
        f"| {per} | {busy(cpu['backend_seconds'])} | {busy(cpu['tool_seconds'])} "
        f"| {per_delivery(cpu['backend_seconds'], r['deliveries_made'])} |"
    )


def per_delivery(seconds, deliveries):
    """CPU microseconds per delivery made."""
    return "?" if seconds is None or not deliveries else f"{seconds * 1e6 / deliveries:.1f}"


def verdict(runs):
    """The goal's verdict on the largest run."""
    subscribers, run = max(runs.items())
    r = run["report"]
    per = r["memory"]["per_subscriber_bytes"]
    checks = [
        ("every delivery made", r["misses"] == 0 and r["opened"] == subscribers and r["deliveries_expected"] > 0),
        ("fan-out p99 ≤ 100 ms (from the POST's answer)", r["fan_out_from_acknowledged_ms"]["p99"] <= 100.0),
        ("≤ 16 KB per subscriber", per is not None and per <= 16_000),
    ]
    said = "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks)
    exact = "" if per is None else f" Memory per subscriber: {per:,} bytes (we hold to 16 KB = 16,000 B, not 16 KiB)."
    return f"Goal at {subscribers:,} subscribers: {said}.{exact}"


def main():
    counts = [int(n) for n in os.environ.get("SUBSCRIBERS", "1000 10000").split()]
    rate = env_int("RATE", 10)
    duration = env_int("DURATION", 30)
    sources = env_int("SOURCES", 40)
    redis_port = env_int("REDIS_PORT", 6398)
    port = env_int("PORT", 18114)
    doc = benchmarks_md()
    prepare(WHO, binaries=(BACKEND, LOADTEST), ports=(redis_port, port))

    runs = {n: one_run(n, rate, duration, sources, redis_port, port) for n in counts}
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/stream.json", "w", encoding="utf-8") as out:
        json.dump(runs, out, indent=2)
    lines = [
        f"Measured {datetime.date.today().isoformat()} by `python3 scripts/bench_stream.py` on "
        f"{os.cpu_count()} cores shared by the backend, its Redis and the load tool. "
        "One release backend over a private `redis-server`, "
        f"MAX_STREAM_CLIENTS at its default (10,000) or the subscriber count if higher; the subscribers connect from {sources} loopback "
        f"addresses; once all are open, {rate} messages/s for {duration} s, each with an Idempotency-Key. "
        "A miss is an acknowledged message an open subscriber never read. Fan-out delays in ms (p50 / p99 / max), "
        "from the POST's answer (0 when the event came first) and from the POST leaving. Memory per subscriber: "
        "the backend's RSS growth while the subscribers opened, divided by those open. CPU: the backend's and "
        "the load tool's CPU time while messages flowed, as a share of one core (200 % is both cores).",
        "",
        "| subscribers | opened | refused or failed | messages acked | deliveries made | misses | duplicates "
        "| fan-out from ack | fan-out from send | memory each | backend CPU | load tool CPU | backend CPU µs per delivery |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(row(n, run) for n, run in runs.items()),
        "",
        verdict(runs),
        "",
        FINDING,
        "",
        *how_to_run("bench_stream.py", *(run["command"] for run in runs.values())),
    ]
    publish(doc, "stream", "Live readers per backend", lines)


if __name__ == "__main__":
    main()
