#!/usr/bin/env python3
"""What the append script costs Redis: `redis-benchmark` EVALSHA of the `lua` strategy's
script as it is now (with the term check of store/sequence.rs: an INFO replication, a GET of
the term key, the argument checks) against the script before terms (commit c5fb33a, read
from git history), interleaved, ROUNDS times each, on a private redis-server.

This is Redis's own ceiling for appends; the HTTP path adds its cost on top. Results:
target/bench/append_script.json and the section between <!-- append-script:begin --> and
<!-- append-script:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").

Environment: ROUNDS [5], REQUESTS [200000] per run, CLIENTS [50], REDIS_PORT [6398].
"""

import datetime
import os
import re
import shlex
import statistics
import subprocess
import time

from benchkit import benchmarks_md, env_int, port_free, prepare, publish, save_json, stop

BEFORE = "c5fb33a"
SCRIPTS = "crates/backend/src/store/scripts"
TAIL = '"author":"bench","text":"a message of ordinary length for the benchmark","created_at":"2026-11-29T14:23:06.492567234Z"}'


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout.strip()


def bench(port, requests, clients, sha, keys, args):
    command = ["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(requests), "-q",
               "EVALSHA", sha, str(len(keys)), *keys, *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.findall(r"([0-9.]+) requests per second", out.replace("\r", "\n"))[-1])
    return command, rate


def main():
    rounds = env_int("ROUNDS", 5)
    requests = env_int("REQUESTS", 200000)
    clients = env_int("CLIENTS", 50)
    port = env_int("REDIS_PORT", 6398)
    doc = benchmarks_md()
    prepare("bench_append_script", ports=(port,))
    before = subprocess.run(["git", "show", f"{BEFORE}:{SCRIPTS}/append.lua"], capture_output=True, text=True, check=True).stdout
    with open(f"{SCRIPTS}/sequence.lua", encoding="utf-8") as sequence, open(f"{SCRIPTS}/append.lua", encoding="utf-8") as append:
        now = "#!lua\n" + sequence.read() + append.read()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if not port_free(port):
                break
            time.sleep(0.05)
        old_sha = redis_cli(port, "SCRIPT", "LOAD", before)
        new_sha = redis_cli(port, "SCRIPT", "LOAD", now)
        rates = {"before": [], "now": []}
        commands = {}
        for _ in range(rounds):
            redis_cli(port, "FLUSHALL")
            commands["before"], rate = bench(port, requests, clients, old_sha,
                                             ["{g}:seq", "{g}:log", "{g}:seq"], [TAIL, "10000", "86400", "0"])
            rates["before"].append(rate)
            redis_cli(port, "FLUSHALL")
            commands["now"], rate = bench(port, requests, clients, new_sha,
                                          ["{g}:seq", "{g}:log", "{g}:seq", "{g}:term"], [TAIL, "10000", "86400", "0", "", "0"])
            rates["now"].append(rate)
    finally:
        stop(redis)
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {"rounds": rounds, "rates": rates, "median": median, "ratio": median["now"] / median["before"]}
    save_json("append_script.json", result)
    if not doc:
        return
    us = {name: 1e6 / rate for name, rate in median.items()}
    lines = [
        f"Measured {datetime.date.today().isoformat()} by `python3 scripts/bench_append_script.py` "
        f"on {os.cpu_count()} cores (redis-benchmark and redis-server share them): {rounds} interleaved "
        f"rounds of `{shlex.join(commands['now'][:8])} ...`, medians.",
        "",
        "| append script | EVALSHA/s | µs per call, client included |",
        "|---|---:|---:|",
        f"| before terms ({BEFORE}) | {median['before']:,.0f} | {us['before']:.1f} |",
        f"| now: term check, argument checks, log entry first | {median['now']:,.0f} | {us['now']:.1f} |",
        "",
        f"The script now costs Redis {100 * (1 - result['ratio']):.0f} % of its append ceiling "
        f"({us['now'] - us['before']:.1f} µs a call). About half of that is the `INFO replication` "
        "of the term check (see docs/storage.md, \"Ids across primaries\"), which keeps ids unique across "
        "a failover; the rest is the `GET` of the term, a `GET` and `SET` of the sequence in "
        "place of `INCR` (so nothing is written before the log entry) and the argument checks. "
        "There is no cheaper sign that a server is new: a key written with replication off "
        "still reaches a replica in a full resync's snapshot, and survives a restart in an RDB.",
    ]
    publish(doc, "append-script", "What the append script costs Redis", lines)


if __name__ == "__main__":
    main()
