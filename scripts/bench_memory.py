#!/usr/bin/env python3
"""Memory at 5k req/s (issue 17, goal 4): each service under 30 MiB resident while serving
5,000 requests per second. One private redis-server (no persistence), one release backend and one
release client in front of it; the load tool's open loop (`http --rate`) drives, in turn, the
client's `GET /fetch` (client -> backend `/data`), the backend's `GET /api/messages` and its
`POST /api/messages`, RATE req/s for DURATION s each. Every 100 ms the script reads each service's
VmRSS from /proc/PID/status; at the end its VmHWM (the kernel's own peak resident size, which a
sample can miss). Everything is on 127.0.0.1; the script stops exactly the processes it started.
Results: target/bench/memory.json and the section between <!-- memory:begin --> and
<!-- memory:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").

Environment: RATE [5000], DURATION [20], CONNECTIONS [64], REDIS_PORT [6399], BASE_PORT [18121].
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import threading
import time

from benchkit import benchmarks_md, env_int, how_to_run, prepare, publish, save_json, start_redis, stop, wait_http

BACKEND = "target/release/guestbook-backend"
CLIENT = "target/release/guestbook-client"
LOADTEST = "target/release/guestbook-loadtest"
WHO = "bench_memory"
MIB = 1024 * 1024
GOAL_MIB = 30
SAMPLE_EVERY = 0.1


def status_kib(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler:
    """Reads the VmRSS of some processes every SAMPLE_EVERY seconds, in a thread, and keeps the
    peak of each."""

    def __init__(self, processes):
        self.processes = processes
        self.peak = {name: 0 for name in processes}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done.is_set():
            for name, process in self.processes.items():
                rss = status_kib(process.pid, "VmRSS")
                if rss is not None:
                    self.peak[name] = max(self.peak[name], rss * 1024)
            self.done.wait(SAMPLE_EVERY)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join()


def start(binary, env, url):
    process = subprocess.Popen([binary], env=dict(os.environ, SHUTDOWN_DELAY_SECS="0",
                                                  DRAIN_TIMEOUT_SECS="1", **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(url, process, WHO)
    return process


def load(args):
    """The load tool's JSON report of one open-loop run."""
    command = [LOADTEST, "http", *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{WHO}: the load tool failed ({done.returncode}): {done.stderr.strip()}")
    return shlex.join(command), json.loads(done.stdout)


def verdict(peak):
    return "met" if peak < GOAL_MIB * MIB else "NOT met"


def main():
    rate = env_int("RATE", 5000)
    duration = env_int("DURATION", 20)
    connections = env_int("CONNECTIONS", 64)
    redis_port = env_int("REDIS_PORT", 6399)
    base_port = env_int("BASE_PORT", 18121)
    doc = benchmarks_md()
    prepare(WHO, binaries=(BACKEND, CLIENT, LOADTEST), ports=(redis_port, base_port, base_port + 1))
    backend_url, client_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{base_port + 1}"
    pacing = ["--rate", str(rate), "--connections", str(connections), "--duration", f"{duration}s"]
    phases = [
        ("client GET /fetch (backend /data)", [f"--url={client_url}/fetch", *pacing]),
        ("backend GET /api/messages", [f"--url={backend_url}/api/messages", *pacing]),
        ("backend POST /api/messages", [f"--url={backend_url}/api/messages", "--method", "POST",
                                        "-H", "Content-Type: application/json",
                                        "--body", '{"author":"bench","text":"memory at 5k req/s"}', *pacing]),
    ]
    redis = start_redis(redis_port, WHO)
    started = [redis]
    results = {"rate": rate, "duration_s": duration, "phases": []}
    try:
        backend = start(BACKEND, {"LISTEN_ADDR": f"127.0.0.1:{base_port}",
                                  "REDIS_URL": f"redis://127.0.0.1:{redis_port}"}, f"{backend_url}/liveness")
        started.append(backend)
        client = start(CLIENT, {"LISTEN_ADDR": f"127.0.0.1:{base_port + 1}", "BACKEND_URL": backend_url,
                                "RATE_LIMIT_WRITES_PER_SEC": "0"}, f"{client_url}/liveness")
        started.append(client)
        services = {"backend": backend, "client": client}
        results["at_rest_bytes"] = {name: (status_kib(p.pid, "VmRSS") or 0) * 1024 for name, p in services.items()}
        for name, args in phases:
            with Sampler(services) as sampler:
                command, report = load(args)
            results["phases"].append({
                "phase": name, "command": command.replace(f"127.0.0.1:{base_port + 1}", "$CLIENT")
                .replace(f"127.0.0.1:{base_port}", "$BACKEND"),
                "requests_per_second": report["requests_per_second"], "ok_per_second": report["ok_per_second"],
                "p99_ms": report["latency_ms"]["p99"], "statuses": report["statuses"], "errors": report["errors"],
                "peak_rss_bytes": sampler.peak,
            })
        results["hwm_bytes"] = {name: (status_kib(p.pid, "VmHWM") or 0) * 1024 for name, p in services.items()}
    finally:
        for process in reversed(started):
            stop(process)
    save_json("memory.json", results)

    def mib(value):
        return f"{value / MIB:.1f} MiB"

    rows = [
        f"| {p['phase']} | {p['requests_per_second']:,.0f} | {p['ok_per_second']:,.0f} | {p['p99_ms']:.1f} "
        f"| {mib(p['peak_rss_bytes']['backend'])} | {mib(p['peak_rss_bytes']['client'])} |"
        for p in results["phases"]
    ]
    hwm = results["hwm_bytes"]
    lines = [
        f"Measured {datetime.date.today().isoformat()} by `python3 scripts/bench_memory.py` on {os.cpu_count()} cores "
        "shared by both services, their Redis and the load tool. "
        f"One release backend and one release client over a private `redis-server`, default settings; the load "
        f"tool's open loop at {rate:,} req/s for {duration} s per row, {connections} connections. Peak RSS: the "
        f"highest VmRSS sampled every {int(SAMPLE_EVERY * 1000)} ms during the row; VmHWM: the kernel's peak over "
        "the whole run.",
        "",
        "| load | sent req/s | 2xx/s | p99 ms | backend peak RSS | client peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"At rest: backend {mib(results['at_rest_bytes']['backend'])}, client {mib(results['at_rest_bytes']['client'])}. "
        f"VmHWM over the run: backend {mib(hwm['backend'])}, client {mib(hwm['client'])}.",
        "",
        f"Goal (each service under {GOAL_MIB} MiB at {rate:,} req/s, by VmHWM): backend {verdict(hwm['backend'])}, "
        f"client {verdict(hwm['client'])}.",
        "",
        *how_to_run("bench_memory.py", *(p["command"] for p in results["phases"])),
    ]
    publish(doc, "memory", "Memory at 5k req/s", lines)


if __name__ == "__main__":
    main()
