#!/usr/bin/env python3
"""What durability costs: appends per second with REDIS_MIN_REPLICAS_ACK=0 (acknowledged once
the primary has it) and =1 (acknowledged once WAIT confirms a replica has it), same machine,
same run, and with reads from the replica (REDIS_REPLICA_URL) for GET /api/messages.

It starts a private primary and replica (no persistence, so disk speed does not blur the
WAIT round trip), one backend per configuration, and the load tool (closed loop, POST
without a key, 64 connections), all on 127.0.0.1, and stops exactly those processes.
Results: target/bench/replication.jsonl and the section between <!-- replication:begin -->
and <!-- replication:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").

Environment: DURATION [10] seconds per run, REDIS_PORT [6395] (the replica on +1), PORT [18111].
"""

import datetime
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"
BODY = '{"author":"bench","text":"a message of ordinary length for the benchmark"}'


def port_free(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url, process):
    for _ in range(100):
        if process.poll() is not None:
            sys.exit(f"bench_replication: the process behind {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench_replication: {url} did not answer")


def wait_replica(port):
    for _ in range(200):
        out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "replication"], capture_output=True, text=True).stdout
        if "master_link_status:up" in out:
            return
        time.sleep(0.05)
    sys.exit("bench_replication: the replica never linked")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(url, method, duration):
    command = [LOADTEST, "http", "--url", url, "--connections", "64", "--duration", f"{duration}s", "--json"]
    if method == "POST":
        command += ["--method", "POST", "-H", "content-type: application/json", "--body", BODY]
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return command, report


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    duration = int(os.environ.get("DURATION", "10"))
    redis_port = int(os.environ.get("REDIS_PORT", "6395"))
    port = int(os.environ.get("PORT", "18111"))
    doc = os.environ.get("BENCHMARKS_MD", "BENCHMARKS.md")
    for path in (BACKEND, LOADTEST):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench_replication: {path} missing; run make build")
    for p in (redis_port, redis_port + 1, port):
        if p == 6379 or not port_free(p):
            sys.exit(f"bench_replication: port {p} is taken or is the shared Redis")
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    primary = subprocess.Popen(["redis-server", "--port", str(redis_port), *common], stdout=subprocess.DEVNULL)
    replica = subprocess.Popen(["redis-server", "--port", str(redis_port + 1), "--replicaof", "127.0.0.1",
                                str(redis_port), *common], stdout=subprocess.DEVNULL)
    rows, commands = [], []
    try:
        wait_replica(redis_port + 1)
        configs = [
            ("primary only (REDIS_MIN_REPLICAS_ACK=0)", {}),
            ("wait for 1 replica (REDIS_MIN_REPLICAS_ACK=1)", {"REDIS_MIN_REPLICAS_ACK": "1"}),
            ("reads from the replica (REDIS_REPLICA_URL)", {"REDIS_REPLICA_URL": f"redis://127.0.0.1:{redis_port + 1}"}),
        ]
        for name, extra in configs:
            env = dict(os.environ, LISTEN_ADDR=f"127.0.0.1:{port}", REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                       RUST_LOG="warn", LOG_FORMAT="json", SHUTDOWN_DELAY_SECS="0", DRAIN_TIMEOUT_SECS="1",
                       MAX_MESSAGES="10000", **extra)
            backend = subprocess.Popen([BACKEND], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_http(f"http://127.0.0.1:{port}/liveness", backend)
                if "REDIS_REPLICA_URL" in extra:
                    command, report = load(f"http://127.0.0.1:{port}/api/messages?order=desc&limit=20", "GET", duration)
                    what = "`GET /api/messages?order=desc&limit=20`"
                else:
                    command, report = load(f"http://127.0.0.1:{port}/api/messages", "POST", duration)
                    what = "`POST /api/messages`"
                commands.append(shlex.join(command) + f"   # {', '.join(f'{k}={v}' for k, v in extra.items()) or 'defaults'}")
                rows.append({"config": name, "what": what, "env": extra, "report": report})
            finally:
                stop(backend)
    finally:
        stop(replica)
        stop(primary)

    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/replication.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"when": when, "rows": rows}) + "\n")
    base, waited = rows[0]["report"], rows[1]["report"]
    lines = [
        f"_Generated by `scripts/bench_replication.py` on {when}; do not edit by hand._",
        "",
        f"One backend (`lua`), a primary and one replica without persistence, the load tool with 64 connections "
        f"in a closed loop for {duration} s per row; everything on the same 2 cores.",
        "",
        "| configuration | request | 2xx/s | p50 ms | p99 ms | failed |",
        "|---|---|---:|---:|---:|---:|",
        *(f"| {r['config']} | {r['what']} | {r['report']['ok_per_second']:,.0f} | {r['report']['latency_ms']['p50']:.2f} | "
          f"{r['report']['latency_ms']['p99']:.2f} | {r['report']['requests'] - r['report']['ok']:,} |"
          for r in rows),
        "",
        f"Waiting for a replica keeps {waited['ok_per_second'] / base['ok_per_second']:.0%} of the appends per second. One fence "
        "write and `WAIT` round covers every append that finished before it (group commit), so appends share rounds "
        "instead of each paying a replica round trip; the price is latency, about one round.",
        "",
        "```sh",
        "python3 scripts/bench_replication.py",
        *commands,
        "```",
    ]
    section = "\n".join(lines)
    print(section)
    if doc:
        with open(doc, encoding="utf-8") as current:
            text = current.read()
        begin, end = "<!-- replication:begin -->", "<!-- replication:end -->"
        if begin not in text:
            text = text.rstrip("\n") + f"\n\n## Durability: waiting for replicas\n\n{begin}\n{end}\n"
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(doc, "w", encoding="utf-8") as out:
            out.write(f"{head}{begin}\n{section}\n{end}{tail}")


if __name__ == "__main__":
    main()
