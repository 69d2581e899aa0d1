#!/usr/bin/env python3
"""Exactly-once across a Redis Cluster failover: the release backend in cluster mode
(REDIS_CLUSTER_NODES) under keyed load, while the primary serving the guestbook's slot is
killed with SIGKILL and the cluster promotes its replica by itself.

Per row it starts a private cluster of 3 primaries with one replica each (redis-server
--cluster-enabled yes, cluster-node-timeout 1000 ms so that the promotion takes seconds, no
persistence), one backend given only the first node, and the load tool in `messages` mode
(keyed POSTs retried with their key, then every message read back and checked). Once the run is
under way it pauses the slot's replica and drops its link for 0.5 s (so the primary surely
holds appends it never replicated), kills the primary, resumes the replica, waits for its
promotion, and restarts the old primary empty on its port (it rejoins as a replica, as a
restarted pod would). Rows: REDIS_MIN_REPLICAS_ACK=1, then 0. Everything on 127.0.0.1; it stops
exactly the processes it started.

Results: target/bench/cluster_failover.jsonl and the section between
<!-- cluster-failover:begin --> and <!-- cluster-failover:end --> of RELIABILITY.md (unless
RELIABILITY_MD="").

Environment: COUNT [3000] messages per row, RATE [400] messages started per second (open
loop, so the fault lands mid-run), BASE_PORT [21110] (nodes on BASE_PORT..+5, their
cluster bus 10000 above, below the ephemeral ports from 32768 that
outgoing connections take), PORT [18121].
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from benchkit import (append_jsonl, env_int, how_to_run, prepare, publish, redis_cli, start_cluster_node, stop,
                      wait_http, wait_until)

BACKEND = "target/release/guestbook-backend"
LOADTEST = "target/release/guestbook-loadtest"
WHO = "bench_cluster_failover"
TOKEN = "bench-admin-token-0123456789"


def cli(port, *args):
    return redis_cli(port, *args)


def start_node(port, directory):
    return start_cluster_node(port, directory, WHO, 1000)


def wait_for(what, ready, seconds=30):
    wait_until(what, ready, WHO, seconds)


def slot_owner_and_replica(ports, slot):
    """The ports of the primary serving `slot` and of its replica, from CLUSTER NODES."""
    lines = [line.split() for line in cli(ports[0], "CLUSTER", "NODES").splitlines()]
    port_of = {f[0]: int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in lines}
    for f in lines:
        if "master" in f[2] and any(holds(r, slot) for r in f[8:]):
            replicas = [port_of[g[0]] for g in lines if g[3] == f[0]]
            return port_of[f[0]], replicas[0]
    sys.exit(f"{WHO}: no primary serves slot {slot}")


def holds(field, slot):
    low, _, high = field.partition("-")
    try:
        return int(low) <= slot <= int(high or low)
    except ValueError:
        return False


def run_row(min_acks, ports, count, rate, port):
    dirs = [tempfile.mkdtemp(prefix="cluster-node-") for _ in ports]
    nodes = {p: start_node(p, d) for p, d in zip(ports, dirs)}
    backend = None
    try:
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            sys.exit(f"{WHO}: redis-cli --cluster create failed: {created.stdout[-300:]}")
        wait_for("the cluster never reached cluster_state:ok",
                 lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
        slot = int(cli(ports[0], "CLUSTER", "KEYSLOT", "{guestbook:default}").strip())
        owner, replica = slot_owner_and_replica(ports, slot)
        wait_for("the replica never linked", lambda: "master_link_status:up" in cli(replica, "INFO", "replication"))
        env = dict(os.environ, LISTEN_ADDR=f"127.0.0.1:{port}", REDIS_URL="redis://127.0.0.1:1",
                   REDIS_CLUSTER_NODES=f"127.0.0.1:{ports[0]}", REDIS_MIN_REPLICAS_ACK=str(min_acks),
                   ADMIN_TOKEN=TOKEN, RUST_LOG="warn", LOG_FORMAT="json", SHUTDOWN_DELAY_SECS="0",
                   DRAIN_TIMEOUT_SECS="1", MAX_MESSAGES=str(count * 2))
        backend = subprocess.Popen([BACKEND], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{port}/liveness", backend, WHO)
        command = [LOADTEST, "messages", "--target", f"http://127.0.0.1:{port}", "--count", str(count),
                   "--concurrency", "32", "--rate", str(rate), "--idempotent-retries", "--max-attempts", "1000",
                   "--json"]
        load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.5)
        if load.poll() is not None:
            sys.exit(f"{WHO}: the load ended before the fault; raise COUNT or lower RATE")
        os.kill(nodes[replica].pid, 19)  # SIGSTOP
        cli(owner, "CLIENT", "KILL", "TYPE", "replica")
        time.sleep(0.5)
        killed_at = time.monotonic()
        nodes[owner].kill()
        nodes[owner].wait()
        os.kill(nodes[replica].pid, 18)  # SIGCONT
        wait_for("the replica was never promoted", lambda: "role:master" in cli(replica, "INFO", "replication"))
        promoted_after = time.monotonic() - killed_at
        nodes[owner] = start_node(owner, dirs[ports.index(owner)])
        wait_for("the old primary never rejoined as a replica",
                 lambda: "master_link_status:up" in cli(owner, "INFO", "replication"))
        out, _ = load.communicate(timeout=600)
        report = json.loads(out)
        return {"min_replicas_ack": min_acks, "promoted_after_s": round(promoted_after, 2),
                "command": command, "report": report}
    finally:
        if backend is not None:
            stop(backend)
        for node in nodes.values():
            stop(node)


def main():
    count = env_int("COUNT", 3000)
    rate = env_int("RATE", 400)
    base = env_int("BASE_PORT", 21110)
    port = env_int("PORT", 18121)
    doc = os.environ.get("RELIABILITY_MD", "RELIABILITY.md")
    ports = [base + i for i in range(6)]
    prepare(WHO, binaries=(BACKEND, LOADTEST), ports=(*ports, *(p + 10000 for p in ports), port))
    rows = [run_row(acks, ports, count, rate, port) for acks in (1, 0)]
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    append_jsonl("cluster_failover.jsonl", {"when": when, "rows": rows})

    def line(row):
        verdict, report = row["report"]["verdict"], row["report"]
        statuses = report.get("statuses", {})
        unavailable = sum(v for k, v in statuses.items() if str(k) == "503")
        return (f"| {row['min_replicas_ack']} | {verdict.get('acknowledged', 0):,} | {verdict.get('lost', 0):,} | "
                f"{verdict.get('duplicated', 0):,} | {verdict.get('out_of_order', 0):,} | {row['promoted_after_s']:.1f} | {unavailable:,} | "
                f"{'yes' if report.get('passed') else '**no**'} |")

    lines = [
        f"_Generated by `scripts/bench_cluster_failover.py` on {when}; do not edit by hand._",
        "",
        f"A Redis Cluster of 3 primaries with one replica each (`cluster-node-timeout` 1000 ms, no persistence), one "
        f"release backend given only the first node (`REDIS_CLUSTER_NODES`), {count:,} keyed messages started at {rate}/s (open loop), at most 32 in flight. "
        "During the run the slot's replica is paused and cut off for 0.5 s, the primary killed with SIGKILL, the "
        "replica resumed and promoted by the cluster, and the old primary restarted empty (it rejoins as a replica).",
        "",
        "| REDIS_MIN_REPLICAS_ACK | acknowledged | lost | duplicated | ids not ascending | promoted after s | 503 answers "
        "| exactly once |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        *(line(row) for row in rows),
        "",
        "With 1, an append is acknowledged only once `WAIT` on the slot's primary (the node that took it) says its "
        "replica has it, so the promoted replica holds every acknowledged append; the appends it lacks were answered "
        "503 and their keyed retries land on it. With 0, what the primary acknowledged while its replica was cut off "
        "dies with it. Ids in the read-back stay unique and ascending either way: the promoted node starts a new "
        "term past every id handed out before.",
        "",
        *how_to_run("bench_cluster_failover.py", *(shlex.join(row["command"]) for row in rows[:1])),
    ]
    publish(doc, "cluster-failover", "Redis Cluster failover", lines)


if __name__ == "__main__":
    main()
