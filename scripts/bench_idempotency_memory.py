#!/usr/bin/env python3
"""What an Idempotency-Key costs in Redis memory: the same COUNT messages posted once without
keys and once with a key each, each run against a fresh private redis-server, and the
difference in `used_memory` divided by COUNT. That is the idempotency record's cost per keyed
post beyond the message itself (the goal is at most 300 bytes). Also `MEMORY USAGE` of one
record, and the record as stored.

It starts a private redis-server (no persistence) and a release backend with MAX_MESSAGES at
COUNT (so every message stays), posts with the load tool's `messages` mode (its
--idempotent-retries sends a key per message), all on 127.0.0.1, and stops exactly those
processes. Results: target/bench/idempotency_memory.json and the section between
<!-- idempotency-memory:begin --> and <!-- idempotency-memory:end --> of BENCHMARKS.md (unless
BENCHMARKS_MD="").

Environment: COUNT [20000], REDIS_PORT [6397], PORT [18113].
"""

import datetime
import json
import os
import shlex
import subprocess
import sys

from benchkit import benchmarks_md, env_int, prepare, publish, save_json, start_backend, start_redis, stop

BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


def used_memory(port):
    info = redis_cli(port, "INFO", "memory")
    return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory:")))


def one_run(count, redis_port, port, keyed):
    """Posts `count` messages (keyed or not) to a fresh Redis; returns its memory growth."""
    redis = start_redis(redis_port, "bench_idempotency_memory")
    backend = None
    try:
        backend = start_backend(BACKEND, port, redis_port, "bench_idempotency_memory", {"MAX_MESSAGES": str(count)})
        before = used_memory(redis_port)
        command = [
            LOADTEST, "messages", "--target", f"http://127.0.0.1:{port}",
            "--count", str(count), "--concurrency", "64", "--json",
        ]
        if keyed:
            command.append("--idempotent-retries")
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        if not report["passed"]:
            sys.exit(f"bench_idempotency_memory: the {'keyed' if keyed else 'unkeyed'} run lost messages")
        after = used_memory(redis_port)
        sample = None
        if keyed:
            key = redis_cli(redis_port, "--scan", "--pattern", "{guestbook:default}:idem:*").split()[0]
            sample = {
                "key": key,
                "value": redis_cli(redis_port, "GET", key).strip(),
                "memory_usage": int(redis_cli(redis_port, "MEMORY", "USAGE", key)),
            }
        return {"command": shlex.join(command), "growth": after - before, "sample": sample}
    finally:
        if backend is not None:
            stop(backend)
        stop(redis)


def main():
    count = env_int("COUNT", 20000)
    redis_port = env_int("REDIS_PORT", 6397)
    port = env_int("PORT", 18113)
    doc = benchmarks_md()
    prepare("bench_idempotency_memory", binaries=(BACKEND, LOADTEST), ports=(redis_port, port))

    plain = one_run(count, redis_port, port, keyed=False)
    keyed = one_run(count, redis_port, port, keyed=True)
    per_message = plain["growth"] / count
    per_record = (keyed["growth"] - plain["growth"]) / count
    result = {
        "count": count,
        "bytes_per_message": round(per_message, 1),
        "bytes_per_keyed_post_beyond_the_message": round(per_record, 1),
        "plain": plain,
        "keyed": keyed,
    }
    save_json("idempotency_memory.json", result)
    if not doc:
        return
    sample = keyed["sample"]
    goal = "met" if per_record <= 300 else "NOT met"
    lines = [
        f"Measured {datetime.date.today().isoformat()} by `python3 scripts/bench_idempotency_memory.py` "
        f"(COUNT={count}) on {os.cpu_count()} cores: {count} messages posted to a fresh private "
        "`redis-server` without keys, then again with a key each (`"
        + keyed["command"] + "`), `used_memory` compared.",
        "",
        "| what | bytes |",
        "|---|---:|",
        f"| one message in the log (`used_memory` growth / {count}) | {per_message:.0f} |",
        f"| **one keyed post beyond its message** (the idempotency record, with its key and TTL) | **{per_record:.0f}** |",
        f"| `MEMORY USAGE` of one record | {sample['memory_usage']} |",
        "",
        f"Goal ≤ 300 bytes: {goal}. A record is `{sample['value']}` under "
        f"`{sample['key']}`: the id, the creation time and a 128-bit fingerprint of the author "
        "and text, never the message. Before, a record held the whole message JSON (up to "
        "about 5 KB with a 1,000-character text) for `IDEMPOTENCY_TTL_SECS`.",
    ]
    publish(doc, "idempotency-memory", "Idempotency records: memory per keyed post", lines)


if __name__ == "__main__":
    main()
