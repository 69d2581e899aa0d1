#!/usr/bin/env python3
"""The local chaos harness: real processes on loopback, one fault per scenario.

Every scenario starts a fresh stack on free loopback ports (never 6379):

  redis primary + one replica (redis-server 7), three Sentinels (redis-server --sentinel,
  quorum 2), three guestbook-backends (REDIS_MIN_REPLICAS_ACK=1, FAULT_INJECTION=true) and one
  guestbook-client in front of backend 1.

The sustained load is `guestbook-loadtest messages --rate R --idempotent-retries` over four
replicas, round-robin: the three backends' /api and the client's /api proxy (which forwards
to backend 1, retrying keyed POSTs itself). A failed attempt is retried with the same
Idempotency-Key on the next replica. At the end the load tool reads the guestbook back from
backend 3 and verifies that every acknowledged message is present exactly once. The harness
records when each fault began and ended (wall clock) and lines that up with the load tool's
per-attempt trace (`--trace`) to compute the error rate and p99 during the fault and the
time to recover, and draws a plot with the fault marked.

Scenarios:
  backend-kill      kill -9 backend 1 and backend 2 in turn; a supervisor restarts each
  primary-kill      kill -9 the Redis primary; Sentinel promotes the replica; the old primary
                    comes back as a replica (needs a backend with REDIS_SENTINELS)
  lock-holder-stop  APPEND_STRATEGY=lock: SIGSTOP backend 2 while it holds the lock, past
                    LOCK_TTL_MS, then SIGCONT; its stale write must be fenced off
  redis-faults      POST /config/redis on every backend: latency and failures on the Redis hop
  chaostoolkit      `chaos run deploy/chaos/local-kill-backend.json` against this stack

Every process is started here and ended here by its PID (on exit, on error, on Ctrl-C).
Loops are bounded in count and in time.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "chaos-harness-admin-token-0001"
MASTER_NAME = "guestbook"
CTK_EXPERIMENT = ROOT / "deploy/chaos/local-kill-backend.json"
DOC_START = "<!-- chaos-table:start -->"
DOC_END = "<!-- chaos-table:end -->"


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free loopback port; never Redis' default 6379 (a shared Redis may run there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port
    raise RuntimeError("no free port")


# --------------------------------------------------------------------------------------------
# Processes


class Proc:
    """One process started by the harness, ended by its PID."""

    registry: list["Proc"] = []

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logdir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self.starts = 0
        Proc.registry.append(self)

    def start(self) -> "Proc":
        logfile = open(self.log_path, "ab")  # noqa: SIM115 (kept open by the child)
        self.popen = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        logfile.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive() and self.pid:
            os.kill(self.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """Ends the process: SIGCONT (in case it is stopped), SIGTERM, SIGKILL after 3 s."""
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=3)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill9()


def stop_all() -> None:
    for proc in reversed(Proc.registry):
        try:
            proc.stop()
        except Exception as err:  # noqa: BLE001 (cleanup goes on)
            log(f"stopping {proc.name}: {err}")
    Proc.registry.clear()


atexit.register(stop_all)


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping every process the harness started")
    stop_all()
    sys.exit(128 + signum)


for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, on_signal)


def http(method: str, url: str, body: dict | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), url  # loopback only
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def wait_until(what: str, check, timeout: float, interval: float = 0.1) -> float:
    """Polls `check` until true; returns the seconds it took. Raises after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout} s")


def redis_cli(port: int, *args: str, timeout: float = 2.0) -> str:
    try:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return out.stdout
    except subprocess.TimeoutExpired:
        return ""


def info_field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


# --------------------------------------------------------------------------------------------
# The stack


@dataclass
class StackOptions:
    strategy: str = "lua"
    lock_ttl_ms: int = 2000
    redis_timeout_ms: int = 1000
    sentinel: bool = False


@dataclass
class Stack:
    bins: Path
    workdir: Path
    options: StackOptions
    redis_ports: list[int] = field(default_factory=list)  # [primary, replica] at the start
    redis: dict[int, Proc] = field(default_factory=dict)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[Proc] = field(default_factory=list)
    backend_ports: list[int] = field(default_factory=list)
    backends: list[Proc] = field(default_factory=list)
    client_port: int = 0
    client: Proc | None = None
    supervising: bool = False
    restarts: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # Redis ---------------------------------------------------------------------------------
    def redis_proc(self, port: int, replica_of: int | None) -> Proc:
        argv = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--protected-mode", "no", "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        return Proc(f"redis-{port}", argv, {}, self.workdir)

    def start_redis(self) -> None:
        primary, replica = free_port(), free_port()
        self.redis_ports = [primary, replica]
        self.redis[primary] = self.redis_proc(primary, None).start()
        self.redis[replica] = self.redis_proc(replica, primary).start()
        for port in self.redis_ports:
            wait_until(f"redis {port}", lambda p=port: redis_cli(p, "PING").strip() == "PONG", 10)
        wait_until(
            "replica link up",
            lambda: info_field(redis_cli(replica, "INFO", "replication"), "master_link_status")
            == "up",
            15,
        )
        for index in range(3):
            port = free_port()
            conf = self.workdir / f"sentinel-{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinel_ports.append(port)
            self.sentinels.append(
                Proc(f"sentinel-{port}", ["redis-server", str(conf), "--sentinel"], {}, self.workdir).start()
            )

    def sentinels_settled(self) -> bool:
        for port in self.sentinel_ports:
            out = redis_cli(port, "SENTINEL", "master", MASTER_NAME).split()
            fields = dict(zip(out[::2], out[1::2]))
            if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                return False
        return True

    def sentinel_master(self) -> int | None:
        for port in self.sentinel_ports:
            out = redis_cli(port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME).split()
            if len(out) == 2 and out[1].isdigit():
                return int(out[1])
        return None

    # Services ------------------------------------------------------------------------------
    def backend_env(self, port: int) -> dict[str, str]:
        primary, replica = self.redis_ports
        env = {
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "REDIS_URL": f"redis://127.0.0.1:{primary}",
            "REDIS_MIN_REPLICAS_ACK": "1",
            "REDIS_WAIT_TIMEOUT_MS": "500",
            "APPEND_STRATEGY": self.options.strategy,
            "LOCK_TTL_MS": str(self.options.lock_ttl_ms),
            "LOCK_WAIT_MS": "2000",
            "REDIS_TIMEOUT_MS": str(self.options.redis_timeout_ms),
            "FAULT_INJECTION": "true",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "MAX_MESSAGES": "100000",
            "SHUTDOWN_DELAY_SECS": "0",
            "DRAIN_TIMEOUT_SECS": "1",
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
        }
        if self.options.sentinel:
            env["REDIS_SENTINELS"] = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
            env["REDIS_MASTER_NAME"] = MASTER_NAME
        else:
            env["REDIS_REPLICA_URL"] = f"redis://127.0.0.1:{replica}"
        return env

    def start_services(self) -> None:
        self.backend_ports = [free_port() for _ in range(3)]
        for index, port in enumerate(self.backend_ports):
            self.backends.append(
                Proc(
                    f"backend-{index + 1}",
                    [str(self.bins / "guestbook-backend")],
                    self.backend_env(port),
                    self.workdir,
                ).start()
            )
        self.client_port = free_port()
        self.client = Proc(
            "client",
            [str(self.bins / "guestbook-client")],
            {
                "LISTEN_ADDR": f"127.0.0.1:{self.client_port}",
                "BACKEND_URL": self.backend_urls[0],
                "FRONTEND_DIR": str(ROOT / "frontend"),
                "BREAKER_RESET_SECS": "2",
                # One load tool on one address stands for many users: no per-client write limit.
                "RATE_LIMIT_WRITES_PER_SEC": "0",
                "LOG_FORMAT": "json",
                "RUST_LOG": "warn",
            },
            self.workdir,
        ).start()
        for index in range(3):
            self.wait_backend_ready(index, 20)
        wait_until("client live", lambda: http("GET", f"{self.client_url}/liveness")[0] == 200, 20)

    def wait_backend_ready(self, index: int, timeout: float) -> float:
        url = f"{self.backend_urls[index]}/readiness"
        return wait_until(f"backend {index + 1} ready", lambda: http("GET", url)[0] == 200, timeout)

    @property
    def backend_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.backend_ports]

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def replicas(self) -> list[str]:
        return [*self.backend_urls, self.client_url]

    # A Deployment's restart, locally ---------------------------------------------------------
    def supervise(self) -> None:
        """Restarts a backend that died (after 0.5 s, as a kubelet would, only faster)."""
        self.supervising = True

        def loop() -> None:
            deadline = time.monotonic() + 600  # bounded: no scenario runs this long
            while self.supervising and time.monotonic() < deadline:
                for index, proc in enumerate(self.backends):
                    if proc.popen is not None and proc.popen.poll() is not None:
                        time.sleep(0.5)
                        with self.lock:
                            if not self.supervising:
                                return
                            proc.start()
                        self.restarts.append((time.time(), index))
                time.sleep(0.05)

        threading.Thread(target=loop, daemon=True).start()

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        settle = 20 if self.options.sentinel else 10
        try:
            took = wait_until("sentinels see each other and the replica", self.sentinels_settled, settle, 0.2)
            log(f"sentinels settled in {took:.1f} s")
        except TimeoutError:
            if self.options.sentinel:
                raise
            log("sentinels not settled yet (not needed by this scenario)")
        self.start_services()

    def stop(self) -> None:
        with self.lock:
            self.supervising = False
        stop_all()


# --------------------------------------------------------------------------------------------
# Load


def start_load(stack: Stack, out: Path, name: str, rate: float, seconds: float, timeout_ms: int) -> tuple[subprocess.Popen, Path, Path]:
    count = int(rate * seconds)
    trace = out / f"{name}.trace.csv"
    report = out / f"{name}.loadtest.json"
    argv = [
        str(stack.bins / "guestbook-loadtest"), "messages",
        "--target", stack.backend_urls[2],
        "--replicas", ",".join(stack.replicas),
        "--count", str(count), "--rate", str(rate), "--concurrency", "512",
        "--idempotent-retries", "--max-attempts", "40", "--timeout-ms", str(timeout_ms),
        "--clear", "--admin-token", ADMIN_TOKEN,
        "--run-id", f"chaos-{name}-{int(time.time())}",
        "--trace", str(trace), "--json",
    ]  # fmt: skip
    stdout = open(report, "wb")  # noqa: SIM115 (closed by finish_load)
    proc = subprocess.Popen(argv, stdout=stdout, stderr=open(out / f"{name}.loadtest.log", "wb"), cwd=ROOT)
    stdout.close()
    return proc, report, trace


def finish_load(proc: subprocess.Popen, report: Path, timeout: float) -> tuple[int, dict]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    try:
        return code, json.loads(report.read_text())
    except json.JSONDecodeError:
        return code, {}


# --------------------------------------------------------------------------------------------
# Analysis


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Fault:
    start: float  # seconds since the load tool's start
    end: float
    events: list[tuple[float, str]]


def analyse(name: str, report: dict, trace: Path, fault: Fault, code: int, notes: list[str]) -> dict:
    attempts = list(csv.DictReader(trace.open()))
    for row in attempts:
        row["done"] = float(row["done_s"])
        row["due"] = float(row["due_s"])
        row["ok"] = row["outcome"] in ("200", "201")
    # Each message's end: its last attempt.
    last: dict[str, dict] = {}
    for row in attempts:
        last[row["message"]] = row
    messages = [{"due": r["due"], "done": r["done"], "ok": r["ok"]} for r in last.values()]

    in_fault = [a for a in attempts if fault.start <= a["done"] <= fault.end]
    failed_in_fault = [a for a in in_fault if not a["ok"]]
    before = [m["done"] - m["due"] for m in messages if 1.0 <= m["due"] < fault.start]
    during = [m["done"] - m["due"] for m in messages if fault.start <= m["due"] <= fault.end]
    gave_up_during = [m for m in messages if fault.start <= m["due"] <= fault.end and not m["ok"]]
    failures = [a["done"] for a in attempts if not a["ok"]]
    after_end = [t for t in failures if t > fault.end]
    first_failure = min((t for t in failures if t >= fault.start), default=None)
    last_failure = max(failures, default=None)
    run_end = max((a["done"] for a in attempts), default=0.0)
    if after_end and run_end - max(after_end) < 1.0:
        recovery = None  # still failing at the end of the run
    else:
        recovery = max(0.0, max(after_end) - fault.end) if after_end else 0.0
    verdict = report.get("verdict", {})
    statuses = report.get("statuses", {})
    errors = report.get("errors", {})
    return {
        "scenario": name,
        "ran": True,
        "passed": bool(report.get("passed")) and code == 0,
        "exit_code": code,
        "sent": verdict.get("sent"),
        "acknowledged": verdict.get("acknowledged"),
        "lost": verdict.get("lost"),
        "duplicated": verdict.get("duplicated"),
        "wrong_id": verdict.get("wrong_id"),
        "unacknowledged": (verdict.get("sent") or 0) - (verdict.get("acknowledged") or 0),
        "unacknowledged_present": verdict.get("unacknowledged_present"),
        "attempts": report.get("attempts"),
        "statuses": statuses,
        "errors": errors,
        "fault_start_s": round(fault.start, 2),
        "fault_end_s": round(fault.end, 2),
        "fault_events": [(round(t, 2), what) for t, what in fault.events],
        "attempts_in_fault": len(in_fault),
        "failed_in_fault": len(failed_in_fault),
        "error_rate_in_fault": len(failed_in_fault) / len(in_fault) if in_fault else 0.0,
        "messages_given_up_in_fault": len(gave_up_during),
        "p99_before_ms": round(percentile(before, 0.99) * 1000, 1),
        "p99_in_fault_ms": round(percentile(during, 0.99) * 1000, 1),
        "max_in_fault_ms": round(max(during, default=0.0) * 1000, 1),
        "first_failure_s": None if first_failure is None else round(first_failure, 2),
        "last_failure_s": None if last_failure is None else round(last_failure, 2),
        "recovery_s": None if recovery is None else round(recovery, 2),
        "notes": notes,
        "series": report.get("series", []),
    }


# --------------------------------------------------------------------------------------------
# Plot (a small SVG, no plotting library)


def plot(result: dict, path: Path) -> None:
    series = result["series"]
    width, height, left, right = 900, 460, 70, 20
    panels = [(40, 190, "attempts per second: ok (green), failed (red)"), (270, 150, "message latency p99 per second, ms (due to acknowledged)")]
    seconds = max(len(series), 1)
    x = lambda s: left + (width - left - right) * s / seconds  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="15">{result["scenario"]}: acknowledged {result["acknowledged"]}, '
        f'lost {result["lost"]}, duplicated {result["duplicated"]}; fault shaded</text>',
    ]
    for top, h, caption in panels:
        parts.append(
            f'<rect x="{x(result["fault_start_s"]):.1f}" y="{top}" '
            f'width="{max(2.0, x(result["fault_end_s"]) - x(result["fault_start_s"])):.1f}" height="{h}" fill="#f6c4c4" opacity="0.6"/>'
        )
        for t, _ in result["fault_events"]:
            parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + h}" stroke="#b00" stroke-dasharray="3,3"/>')
        parts.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{h}" fill="none" stroke="#444"/>')
        parts.append(f'<text x="{left}" y="{top - 6}">{caption}</text>')
    # Panel 1: counts.
    top, h = panels[0][0], panels[0][1]
    peak = max([1] + [max(p["attempts_ok"], p["attempts_failed"]) for p in series]) * 1.1
    for key, colour in (("attempts_ok", "#080"), ("attempts_failed", "#c00")):
        points = " ".join(f"{x(p['second'] + 0.5):.1f},{top + h - h * p[key] / peak:.1f}" for p in series)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{peak / 1.1:.0f}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + h}" text-anchor="end">0</text>')
    # Panel 2: p99, log scale from 1 ms.
    top, h = panels[1][0], panels[1][1]
    top_ms = max([10.0] + [p["message_latency_ms"]["p99"] for p in series])
    scale = math.log10(top_ms * 1.2)
    y = lambda ms: top + h - h * math.log10(max(ms, 1.0)) / scale  # noqa: E731
    points = " ".join(f"{x(p['second'] + 0.5):.1f},{y(p['message_latency_ms']['p99']):.1f}" for p in series if p["acknowledged"] + p["gave_up"] > 0)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#d60" stroke-width="2"/>')
    for ms in (1, 10, 100, 1000, 10000):
        if ms <= top_ms * 1.2:
            parts.append(f'<text x="{left - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms}</text>')
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#ddd"/>')
    for s in range(0, seconds + 1, 5):
        parts.append(f'<text x="{x(s):.1f}" y="{top + h + 16}" text-anchor="middle">{s}s</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Plan:
    rate: float
    warm: float
    fault: float
    tail: float
    timeout_ms: int = 2000  # the load tool's per-attempt limit


def run_load_with(stack: Stack, out: Path, name: str, plan: Plan, fault_fn) -> tuple[int, dict, Path, Fault]:
    total = plan.warm + plan.fault + plan.tail
    proc, report_path, trace = start_load(stack, out, name, plan.rate, total, plan.timeout_ms)
    t0 = time.time()
    time.sleep(plan.warm)
    events: list[tuple[float, str]] = []
    start = time.time()
    try:
        fault_fn(events, start + plan.fault)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    end = time.time()
    code, report = finish_load(proc, report_path, total + 120)
    origin = report.get("started_unix_ms", t0 * 1000) / 1000
    fault = Fault(start - origin, end - origin, [(t - origin, what) for t, what in events])
    return code, report, trace, fault


def scenario_backend_kill(stack: Stack, plan: Plan, out: Path) -> tuple[int, dict, Path, Fault, list[str]]:
    stack.supervise()

    def fault(events, until):
        victims = [0, 1]  # backend 1 (behind the client) and backend 2; backend 3 reads back
        for n in range(50):  # bounded
            if time.time() >= until:
                break
            index = victims[n % 2]
            stack.backends[index].kill9()
            events.append((time.time(), f"kill -9 backend {index + 1}"))
            stack.wait_backend_ready(index, 20)
            time.sleep(max(0.0, min(1.5, until - time.time())))

    code, report, trace, f = run_load_with(stack, out, "backend-kill", plan, fault)
    kills = len(f.events)
    notes = [f"{kills} kill -9 of backends 1 and 2 in turn; each restarted 0.5 s after it died (supervisor), next kill 1.5 s after it was ready"]
    return code, report, trace, f, notes


def scenario_primary_kill(stack: Stack, plan: Plan, out: Path) -> tuple[int, dict, Path, Fault, list[str]]:
    primary, replica = stack.redis_ports
    notes: list[str] = []

    def fault(events, _until):
        stack.redis[primary].kill9()
        events.append((time.time(), "kill -9 redis primary"))
        took = wait_until("sentinel failover", lambda: stack.sentinel_master() == replica, 30, 0.1)
        events.append((time.time(), "sentinel promoted the replica"))
        notes.append(f"Sentinel promoted the replica {took:.1f} s after the kill (down-after-milliseconds 1000)")
        # The old primary comes back (empty: no persistence) as a replica of the new primary, so
        # that REDIS_MIN_REPLICAS_ACK=1 can be met again.
        stack.redis[primary] = stack.redis_proc(primary, replica).start()
        wait_until(
            "old primary back as a replica",
            lambda: info_field(redis_cli(primary, "INFO", "replication"), "master_link_status") == "up",
            30,
        )
        events.append((time.time(), "old primary resynced as replica"))

    code, report, trace, f = run_load_with(stack, out, "primary-kill", plan, fault)
    return code, report, trace, f, notes


def backend_metric(url: str, name: str) -> float:
    status, body = http("GET", f"{url}/metrics")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name) and not line.startswith("#"):
            try:
                total += float(line.split()[-1])
            except ValueError:
                pass
    return total


LOCK_KEY = "{guestbook:default}:lock"


def wait_for_a_held_lock(port: int, ttl_ms: int, held_ms: tuple[int, int], timeout: float) -> int | None:
    """Polls the lock's PTTL on one connection until the lock has been held between
    `held_ms` (only the slowed backend holds it that long); returns the PTTL seen."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        reader = conn.makefile("rb")
        for _ in range(100_000):  # bounded, as well as by time
            if time.monotonic() >= deadline:
                return None
            conn.sendall(f"PTTL {LOCK_KEY}\r\n".encode())
            line = reader.readline().strip()
            if line.startswith(b":"):
                pttl = int(line[1:])
                if ttl_ms - held_ms[1] <= pttl <= ttl_ms - held_ms[0]:
                    return pttl
    return None


def scenario_lock_holder_stop(stack: Stack, plan: Plan, out: Path) -> tuple[int, dict, Path, Fault, list[str]]:
    victim = 1  # backend 2
    url = stack.backend_urls[victim]
    ttl = stack.options.lock_ttl_ms
    notes: list[str] = []
    stop_for = 2.0

    def fault(events, until):
        # Slow the victim's Redis hop: each of its appends now holds the lock across four Redis
        # calls of 60 ms each (acquire, fenced read, fenced commit, release), while the others
        # hold it for a millisecond or so. A lock held 75-110 ms is the victim's, between its
        # fenced read and its commit: SIGSTOP then catches it holding the lock. Up to three
        # tries, until its fenced-writes counter shows the stale append was refused.
        fenced_before = backend_metric(url, "guestbook_fenced_writes")
        fenced = 0.0
        for attempt in range(3):
            http("POST", f"{url}/config/redis", {"delay_ms": 60, "failure_rate": 0.0})
            events.append((time.time(), "backend 2 Redis hop +60 ms"))
            pttl = wait_for_a_held_lock(stack.redis_ports[0], ttl, (75, 110), 3.0)
            stack.backends[victim].signal(signal.SIGSTOP)
            events.append((time.time(), "SIGSTOP backend 2"))
            time.sleep(stop_for)
            stack.backends[victim].signal(signal.SIGCONT)
            events.append((time.time(), "SIGCONT backend 2"))
            http("POST", f"{url}/config/redis", {"delay_ms": 0, "failure_rate": 0.0}, timeout=5)
            time.sleep(0.5)
            fenced = backend_metric(url, "guestbook_fenced_writes") - fenced_before
            seen = f"lock held {ttl - pttl} ms" if pttl else "no long-held lock seen within 3 s"
            notes.append(f"stop {attempt + 1}: {seen} at SIGSTOP, fenced writes of backend 2 since: {fenced:.0f}")
            if fenced or time.time() > until + 5:
                break
        notes.insert(
            0,
            f"LOCK_TTL_MS={ttl}, each stop {stop_for:.1f} s (~{stop_for * 1000 / ttl:.1f} lock lifetimes); "
            + ("the stopped holder's stale append was refused by the fencing token" if fenced else
               "the stopped backend was never caught holding the lock"),
        )

    code, report, trace, f = run_load_with(stack, out, "lock-holder-stop", plan, fault)
    return code, report, trace, f, notes


def scenario_redis_faults(stack: Stack, plan: Plan, out: Path) -> tuple[int, dict, Path, Fault, list[str]]:
    half = plan.fault / 2

    def configure(body):
        for url in stack.backend_urls:
            status, text = http("POST", f"{url}/config/redis", body, timeout=5)
            if status != 200:
                raise RuntimeError(f"POST {url}/config/redis {body}: {status} {text[:200]!r}")

    def fault(events, _until):
        configure({"delay_ms": 150, "failure_rate": 0.0})
        events.append((time.time(), "Redis hop +150 ms"))
        time.sleep(half)
        configure({"delay_ms": 20, "failure_rate": 0.3})
        events.append((time.time(), "Redis hop +20 ms, 30 % of calls fail"))
        time.sleep(half)
        configure({"delay_ms": 0, "failure_rate": 0.0})

    code, report, trace, f = run_load_with(stack, out, "redis-faults", plan, fault)
    notes = [f"every backend: {half:.0f} s of +150 ms on every Redis call, then {half:.0f} s of +20 ms with 30 % of Redis calls failing"]
    return code, report, trace, f, notes


def chaos_binary() -> str | None:
    tools = Path(os.environ.get("DEPLOY_TOOLS_DIR", Path.home() / ".cache/guestbook-deploy-tools"))
    for candidate in (tools / "bin/chaos", tools / "venv/bin/chaos"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("chaos")


def scenario_chaostoolkit(stack: Stack, out: Path, quick: bool) -> dict:
    chaos = chaos_binary()
    if not chaos:
        return not_run("chaostoolkit", "chaos (chaostoolkit) not installed: run make deploy-tools")
    stack.supervise()
    journal = out / "chaostoolkit.journal.json"
    env = {
        **os.environ,
        "GUESTBOOK_BACKEND_1_URL": stack.backend_urls[0],
        "GUESTBOOK_BACKEND_2_URL": stack.backend_urls[1],
        "GUESTBOOK_BACKEND_3_URL": stack.backend_urls[2],
        "GUESTBOOK_CLIENT_URL": stack.client_url,
        "GUESTBOOK_REPLICAS": ",".join(stack.replicas),
        "GUESTBOOK_VICTIM_PID": str(stack.backends[1].pid),
        "GUESTBOOK_LOADTEST": str(stack.bins / "guestbook-loadtest"),
        "GUESTBOOK_MESSAGES": "200" if quick else "600",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with open(out / "chaostoolkit.log", "wb") as logfile:
        proc = subprocess.run(
            [chaos, "--no-log-file", "run", "--journal-path", str(journal), str(CTK_EXPERIMENT)],
            env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT, timeout=180,
        )  # fmt: skip
    data = json.loads(journal.read_text())
    verifier = next((r for r in data.get("run", []) if r["activity"]["name"] == "sustained-appends-verified-exactly-once"), None)
    report: dict = {}
    if verifier and verifier.get("output"):
        try:
            report = json.loads(verifier["output"].get("stdout", ""))
        except json.JSONDecodeError:
            report = {}
    verdict = report.get("verdict", {})
    restarted = stack.backends[1].starts > 1
    passed = (
        data.get("status") == "completed"
        and not data.get("deviated")
        and verifier is not None
        and verifier.get("output", {}).get("status") == 0
        and restarted
    )
    return {
        "scenario": "chaostoolkit",
        "ran": True,
        "passed": passed,
        "exit_code": proc.returncode,
        "acknowledged": verdict.get("acknowledged"),
        "lost": verdict.get("lost"),
        "duplicated": verdict.get("duplicated"),
        "unacknowledged": (verdict.get("sent") or 0) - (verdict.get("acknowledged") or 0),
        "statuses": report.get("statuses", {}),
        "errors": report.get("errors", {}),
        "notes": [
            f"chaos run: status {data.get('status')}, deviated {data.get('deviated')}; "
            f"backend 2 restarted: {restarted}; verifier exit {verifier and verifier.get('output', {}).get('status')}"
        ],
    }


def not_run(name: str, why: str) -> dict:
    return {"scenario": name, "ran": False, "passed": None, "notes": [why]}


def backend_has_sentinel_support(bins: Path) -> bool:
    out = subprocess.run([str(bins / "guestbook-backend"), "--help"], capture_output=True, text=True, timeout=10)
    return "REDIS_SENTINELS" in out.stdout + out.stderr


SCENARIOS = ["backend-kill", "primary-kill", "lock-holder-stop", "redis-faults", "chaostoolkit"]


def run_scenario(name: str, args, out: Path) -> dict:
    quick = args.quick
    plans = {
        # rate, warm-up, fault, tail (seconds)
        "backend-kill": Plan(100, 5, 14, 8) if not quick else Plan(50, 2, 5, 3),
        "primary-kill": Plan(100, 5, 0, 15) if not quick else Plan(50, 2, 0, 8),
        # The load tool waits 5 s per attempt here: a request it gives up on is cancelled in
        # the backend (hyper drops the handler), and then the stale append never reaches the
        # fence. The stop (2 s) must end before the attempt's limit.
        "lock-holder-stop": Plan(60, 5, 4, 8, 5000) if not quick else Plan(40, 2, 3.5, 4, 5000),
        "redis-faults": Plan(100, 5, 10, 8) if not quick else Plan(50, 2, 4, 3),
    }
    bins = Path(args.bin_dir).resolve()
    sentinel = backend_has_sentinel_support(bins)
    if name == "primary-kill" and not sentinel:
        return not_run(name, "not run: this backend build has no Sentinel support (no REDIS_SENTINELS in guestbook-backend --help)")
    options = StackOptions(
        strategy="lock" if name == "lock-holder-stop" else "lua",
        lock_ttl_ms=500 if name == "lock-holder-stop" else 2000,
        # Longer than the stop: otherwise the stopped backend's own Redis timeout discards its
        # pending calls when it continues, and the stale append never reaches the fence.
        redis_timeout_ms=5000 if name == "lock-holder-stop" else 1000,
        sentinel=sentinel,
    )
    stack = Stack(bins, out / name, options)
    log(f"{name}: starting the stack (sentinel mode: {sentinel})")
    try:
        stack.start()
        if name == "chaostoolkit":
            result = scenario_chaostoolkit(stack, out, quick)
        else:
            fn = {
                "backend-kill": scenario_backend_kill,
                "primary-kill": scenario_primary_kill,
                "lock-holder-stop": scenario_lock_holder_stop,
                "redis-faults": scenario_redis_faults,
            }[name]
            code, report, trace, fault, notes = fn(stack, plans[name], out)
            result = analyse(name, report, trace, fault, code, notes)
            result["plan"] = plans[name].__dict__
            plot(result, out / f"{name}.svg")
        result["redis_mode"] = "sentinel" if sentinel else "REDIS_URL primary + REDIS_REPLICA_URL"
        return result
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------
# Reporting


def fmt_ms(value) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def table(results: list[dict]) -> str:
    lines = [
        "| scenario | acknowledged | lost | duplicated | never acknowledged | error rate during the fault (attempts) | p99 during the fault (before) | recovery after the fault ended | verifier |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r["ran"]:
            lines.append(f"| {r['scenario']} | – | – | – | – | – | – | – | {r['notes'][0]} |")
            continue
        if "error_rate_in_fault" in r:
            rate = f"{100 * r['error_rate_in_fault']:.1f} % ({r['failed_in_fault']}/{r['attempts_in_fault']})"
            p99 = f"{fmt_ms(r['p99_in_fault_ms'])} ({fmt_ms(r['p99_before_ms'])})"
            recovery = "not recovered" if r["recovery_s"] is None else f"{r['recovery_s']:.1f} s"
        else:
            rate = p99 = recovery = "see notes"
        verdict = "passed" if r["passed"] else "FAILED"
        lines.append(
            f"| {r['scenario']} | {r['acknowledged']} | {r['lost']} | {r['duplicated']} | "
            f"{r['unacknowledged']} | {rate} | {p99} | {recovery} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def timeline(events: list) -> str:
    """`(seconds, what)` pairs as the documents write them: "what at 1.2 s, ..."."""
    return ", ".join(f"{what} at {t:.1f} s" for t, what in events)


def details(results: list[dict]) -> str:
    out = []
    for r in results:
        out.append(f"- **{r['scenario']}**: " + "; ".join(r["notes"]))
        if r.get("ran") and "fault_start_s" in r:
            out.append(
                f"  Fault from {r['fault_start_s']:.1f} s to {r['fault_end_s']:.1f} s ({timeline(r['fault_events'])}). "
                f"Answers: {json.dumps(r['statuses'])}, transport errors: {json.dumps(r['errors'])}. "
                f"Worst message latency in the fault: {fmt_ms(r['max_in_fault_ms'])}."
            )
    return "\n".join(out) + "\n"


def save_results(json_path: Path, md_path: Path, results: list[dict], table_md: str, details_md: str) -> None:
    """The results as JSON and as Markdown (the table, then the details), and the Markdown on
    stdout: what a run leaves in its --out directory for the matrix and the scenarios alike."""
    json_path.write_text(json.dumps(results, indent=2))
    md_path.write_text(table_md + "\n" + details_md)
    print(table_md)
    print(details_md)


def copy_plots(svgs: list[Path], dest: str | None) -> None:
    """Copies the plots that were drawn to `dest` (--copy-plots: docs/chaos/ in `make chaos`)."""
    if not dest:
        return
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    for svg in svgs:
        if svg.exists():
            shutil.copy(svg, folder / svg.name)


def replace_block(doc: Path, start: str, end: str, block: str) -> None:
    """Puts `block` (which begins with `start` and ends with `end`) in place of the one between
    those markers in `doc`, or at its end when the markers are missing."""
    text = doc.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    doc.write_text(text)


def write_doc(doc: Path, results: list[dict], command: str) -> None:
    block = (
        f"{DOC_START}\n"
        f"Measured by `{command}` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, shared).\n\n"
        + table(results)
        + "\n"
        + details(results)
        + f"{DOC_END}"
    )
    replace_block(doc, DOC_START, DOC_END, block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    parser.add_argument("--out", default=str(ROOT / "target/chaos"))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="the bounded form for the test suite")
    parser.add_argument("--write-doc", help="rewrite the table in this Markdown file (RELIABILITY.md)")
    parser.add_argument("--copy-plots", help="copy the SVG plots into this directory (docs/chaos)")
    args = parser.parse_args()

    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            log(f"{tool} is not on PATH (Debian: apt-get install -y redis-server)")
            return 2
    for binary in ("guestbook-backend", "guestbook-client", "guestbook-loadtest"):
        if not (Path(args.bin_dir) / binary).exists():
            log(f"{args.bin_dir}/{binary} is missing: build first (cargo build --release)")
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.monotonic()
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            log(f"unknown scenario {name}; known: {', '.join(SCENARIOS)}")
            return 2
        t = time.monotonic()
        try:
            result = run_scenario(name, args, out)
        except Exception as err:  # noqa: BLE001 (reported as a failed scenario)
            log(f"{name}: {type(err).__name__}: {err}")
            result = {"scenario": name, "ran": True, "passed": False, "acknowledged": None, "lost": None,
                      "duplicated": None, "unacknowledged": None, "statuses": {}, "errors": {},
                      "notes": [f"harness error: {type(err).__name__}: {err}"]}  # fmt: skip
        result["wall_seconds"] = round(time.monotonic() - t, 1)
        results.append(result)
        log(f"{name}: {'not run' if not result['ran'] else 'passed' if result['passed'] else 'FAILED'} in {result['wall_seconds']} s; " + "; ".join(result["notes"]))
    save_results(out / "results.json", out / "table.md", results, table(results), details(results))
    log(f"all scenarios in {time.monotonic() - started:.0f} s; results in {out}/results.json, plots in {out}/*.svg")
    if args.write_doc:
        command = "make chaos" if not args.quick else "make test-chaos"
        write_doc(Path(args.write_doc), results, command)
    copy_plots([out / f"{r['scenario']}.svg" for r in results if r.get("ran")], args.copy_plots)
    failed = [r["scenario"] for r in results if r["ran"] and not r["passed"]]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
