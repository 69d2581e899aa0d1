#!/usr/bin/env python3
"""The fleet fault matrix (issue 14, item 5): eight faults, one after another, on one fleet
under steady mixed load, seen through the client (the UI's path) and straight at the backends.

The fleet, on free loopback ports (never 6379):

  Redis primary + replica, three Sentinels (quorum 2, down-after-milliseconds 1000);
  three guestbook-backends following the primary through Sentinel (REDIS_MIN_REPLICAS_ACK=1),
  each restarted 0.5 s after it dies by a supervisor thread, as a Deployment would;
  guestbook-l4 in front of them: a new connection goes to a random *ready* backend, each
  backend's /readiness polled every 3 s (the manifests' periodSeconds) -- a Kubernetes Service;
  one guestbook-client whose BACKEND_URL is that balancer.

Settings are the defaults users run, except what the harness needs: FAULT_INJECTION and an
ADMIN_TOKEN (to inject faults), MAX_MESSAGES 100000 (so trimming never reads as loss), no
per-address write limit (one load tool stands for many users), REDIS_MIN_REPLICAS_ACK=1 (what
makes a failover lossless, RELIABILITY.md) and the Sentinel addresses.

The load, for each fault (open loop; five guestbook-loadtest processes):

  client path   appends  POST client/api/messages with an Idempotency-Key, retried with it
                reads    GET  client/api/messages?limit=20
                fetch    GET  client/fetch (the client calls the backends' /data)
  direct path   appends  POST balancer/api/messages, a new connection per attempt
                reads    GET  balancer/api/messages?limit=20, a new connection per request

The faults, in turn: redis-slow, redis-down, redis-failover, backend-kill, backend-slow,
errors-50, backend-added, rolling-restart (see FAULTS below and RELIABILITY.md).

For each fault and path: goodput during the fault (requests answered 2xx within 1 s of when
they were due -- an append: its message, retries included -- per second) as % of the baseline
measured just before it, seconds to full recovery after it ended (to the last request that was
not good), readiness flaps (ready -> unready transitions the balancer saw), and lost and
duplicated acknowledged messages (the load tool reads the whole log back from Redis, through
the backends, and checks every acknowledged message is there once, under its acknowledged
id). Exits 1 on any lost or duplicated message; recovery targets are marked, not enforced.

Every process is started here and ended here by its PID. Loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402 (the shared process, Redis and HTTP helpers)

ROOT = h.ROOT
DOC_START = "<!-- chaos-matrix:start -->"
DOC_END = "<!-- chaos-matrix:end -->"
READINESS_PERIOD_MS = 3000  # deploy/kustomize and helm: readinessProbe periodSeconds 3
SENTINEL_DOWN_AFTER_S = 1.0  # harness.Stack's sentinel.conf
RECOVERY_TARGET_S = 2.0  # issue 14: recovery <= 2 s after each fault ends
# A request is *good* when it answered 2xx within this long of when it was due (an attempt of
# an append: the message, retries included, from when it was due). A client that hides a fault behind its own retries turns
# errors into waits; counting only 2xx would call that healthy.
GOOD_WITHIN_S = 1.0
log = h.log


# --------------------------------------------------------------------------------------------
# The balancer process


class Balancer(h.Proc):
    """guestbook-l4, driven over stdin; ended by PID like every other process."""

    def __init__(self, bins: Path, workdir: Path, backends: list[int]):
        argv = [str(bins / "guestbook-l4"), "--readiness-ms", str(READINESS_PERIOD_MS)]
        argv += [f"127.0.0.1:{p}" for p in backends]
        super().__init__("l4", argv, {}, workdir)
        self.port = 0
        self.io = threading.Lock()

    def start(self) -> "Balancer":
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "ab"),  # noqa: SIM115 (kept open by the child)
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self.starts += 1
        line = self.popen.stdout.readline().strip()  # type: ignore[union-attr]
        if not line.startswith("listening 127.0.0.1:"):
            raise RuntimeError(f"guestbook-l4 said {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def command(self, line: str) -> None:
        with self.io:
            self.popen.stdin.write(line + "\n")  # type: ignore[union-attr]
            self.popen.stdin.flush()  # type: ignore[union-attr]

    def stats(self) -> dict:
        with self.io:
            self.popen.stdin.write("stats\n")  # type: ignore[union-attr]
            self.popen.stdin.flush()  # type: ignore[union-attr]
            return json.loads(self.popen.stdout.readline())  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --------------------------------------------------------------------------------------------
# The fleet


@dataclass
class Slot:
    """One backend replica: a port and the process currently serving it."""

    name: str
    port: int
    proc: h.Proc
    retired: bool = False  # SIGTERMed on purpose (rolling restart): not restarted

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Fleet:
    bins: Path
    workdir: Path
    redis: h.Stack = field(init=False)
    slots: list[Slot] = field(default_factory=list)
    balancer: Balancer | None = None
    client: h.Proc | None = None
    client_port: int = 0
    supervising: bool = False
    restarts: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis = h.Stack(self.bins, self.workdir, h.StackOptions(sentinel=True))

    def backend_env(self, port: int) -> dict[str, str]:
        return {
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            # Host and port are replaced by the Sentinels' answer.
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.redis_ports[0]}",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.redis.sentinel_ports),
            "REDIS_MASTER_NAME": h.MASTER_NAME,
            "REDIS_MIN_REPLICAS_ACK": "1",
            "FAULT_INJECTION": "true",
            "ADMIN_TOKEN": h.ADMIN_TOKEN,
            "MAX_MESSAGES": "100000",
            "RATE_LIMIT_WRITES_PER_SEC": "0",
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            **self.extra_env,
        }

    def new_slot(self, name: str) -> Slot:
        port = h.free_port()
        proc = h.Proc(name, [str(self.bins / "guestbook-backend")], self.backend_env(port), self.workdir)
        slot = Slot(name, port, proc.start())
        with self.lock:
            self.slots.append(slot)
        return slot

    def active(self) -> list[Slot]:
        with self.lock:
            return [s for s in self.slots if not s.retired]

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis.start_redis()
        took = h.wait_until("sentinels see each other and the replica", self.redis.sentinels_settled, 30, 0.2)
        log(f"sentinels settled in {took:.1f} s")
        for index in range(3):
            self.new_slot(f"backend-{index + 1}")
        for slot in self.slots:
            wait_ready(slot, 30)
        self.balancer = Balancer(self.bins, self.workdir, [s.port for s in self.slots]).start()
        self.client_port = h.free_port()
        self.client = h.Proc(
            "client",
            [str(self.bins / "guestbook-client")],
            {
                "LISTEN_ADDR": f"127.0.0.1:{self.client_port}",
                "BACKEND_URL": self.balancer.url,
                "FRONTEND_DIR": str(ROOT / "frontend"),
                "RATE_LIMIT_WRITES_PER_SEC": "0",
                "LOG_FORMAT": "json",
                "RUST_LOG": "warn",
            },
            self.workdir,
        ).start()
        h.wait_until("client live", lambda: h.http("GET", f"{self.client_url}/liveness")[0] == 200, 30)
        self.wait_balanced(30)
        status, body = h.http("DELETE", f"{self.balancer.url}/api/messages", timeout=5)
        if status // 100 != 2:
            raise RuntimeError(f"clearing the guestbook: {status} {body[:200]!r}")
        self.supervise()

    def wait_balanced(self, timeout: float) -> None:
        """Every active backend ready in the balancer's eyes."""

        def ready() -> bool:
            backends = self.balancer.stats()["backends"]  # type: ignore[union-attr]
            return all(backends.get(s.addr, {}).get("ready") for s in self.active())

        h.wait_until("every backend ready in the balancer", ready, timeout, 0.2)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def supervise(self) -> None:
        """Restarts a backend that died (0.5 s later, as a kubelet would, only faster)."""
        self.supervising = True

        def loop() -> None:
            deadline = time.monotonic() + 3600  # bounded: no run lasts this long
            while self.supervising and time.monotonic() < deadline:
                for slot in self.active():
                    if slot.proc.popen is not None and slot.proc.popen.poll() is not None:
                        time.sleep(0.5)
                        with self.lock:
                            if not self.supervising or slot.retired:
                                continue
                            slot.proc.start()
                        self.restarts.append((time.time(), slot.name))
                time.sleep(0.05)

        threading.Thread(target=loop, daemon=True).start()

    def primary_and_replica(self) -> tuple[int, int]:
        primary = self.redis.sentinel_master()
        ports = list(self.redis.redis.keys())
        if primary not in ports:
            raise RuntimeError(f"Sentinel names primary {primary}, not one of {ports}")
        return primary, next(p for p in ports if p != primary)

    def settle(self, timeout: float = 60) -> float:
        """Between faults: every backend ready, the replica linked, the client answering."""
        started = time.monotonic()
        self.wait_balanced(timeout)
        primary, _ = self.primary_and_replica()
        h.wait_until(
            "a replica linked to the primary",
            lambda: (h.info_field(h.redis_cli(primary, "INFO", "replication"), "connected_slaves") or "0") != "0",
            timeout,
            0.2,
        )
        streak = [0]

        def client_answers() -> bool:
            ok = h.http("GET", f"{self.client_url}/api/messages?limit=1")[0] == 200
            ok = ok and h.http("GET", f"{self.client_url}/fetch")[0] == 200
            streak[0] = streak[0] + 1 if ok else 0
            return streak[0] >= 3

        h.wait_until("the client answers", client_answers, timeout, 0.3)
        return time.monotonic() - started

    def stop(self) -> None:
        with self.lock:
            self.supervising = False
        # The run is over and nothing is measured any more: a backend's graceful shutdown
        # (SHUTDOWN_DELAY_SECS 5 s, one after the other) would only add to it.
        for slot in self.slots:
            slot.proc.kill9()
        h.stop_all()


def wait_ready(slot: Slot, timeout: float) -> float:
    return h.wait_until(f"{slot.name} ready", lambda: h.http("GET", f"{slot.url}/readiness")[0] == 200, timeout)


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class Stream:
    """One load-tool process: a kind of request on one path."""

    path: str  # "client" or "direct"
    kind: str  # "appends", "reads", "fetch"
    proc: subprocess.Popen
    report: Path
    trace: Path


@dataclass
class Rates:
    appends: float
    reads: float
    fetch: float
    # Attempts per append. The bounded run only checks correctness, and an append given up
    # on is no error; fewer attempts keep it from waiting out the client's breaker.
    max_attempts: int = 40


def start_streams(fleet: Fleet, out: Path, name: str, rates: Rates, seconds: float) -> list[Stream]:
    loadtest = str(fleet.bins / "guestbook-loadtest")
    client, direct = fleet.client_url, fleet.balancer.url  # type: ignore[union-attr]
    run = f"matrix-{name}-{int(time.time())}"
    streams = []

    def spawn(path: str, kind: str, argv: list[str]) -> None:
        stem = f"matrix-{name}.{path}-{kind}"
        trace, report = out / f"{stem}.trace.csv", out / f"{stem}.json"
        argv = [loadtest, *argv, "--trace", str(trace), "--json"]
        with open(report, "wb") as stdout, open(out / f"{stem}.log", "wb") as stderr:
            proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT)
        streams.append(Stream(path, kind, proc, report, trace))

    def appends(path: str, entry: str, extra: list[str]) -> None:
        spawn(path, "appends", [
            "messages", "--target", direct, "--replicas", entry,
            "--count", str(max(1, int(rates.appends * seconds))), "--rate", str(rates.appends),
            "--concurrency", "256", "--idempotent-retries", "--max-attempts", str(rates.max_attempts),
            "--timeout-ms", "5000", "--run-id", f"{run}-{path}", *extra,
        ])  # fmt: skip

    def reads(path: str, url: str, rate: float, extra: list[str]) -> None:
        kind = "fetch" if url.endswith("/fetch") else "reads"
        spawn(path, kind, [
            "http", "--url", url, "--rate", str(rate), "--duration", f"{seconds}s",
            "--connections", "64", "--timeout-ms", "5000", *extra,
        ])  # fmt: skip

    appends("client", client, [])
    reads("client", f"{client}/api/messages?limit=20", rates.reads, [])
    reads("client", f"{client}/fetch", rates.fetch, [])
    appends("direct", direct, ["--fresh-connections"])
    reads("direct", f"{direct}/api/messages?limit=20", rates.reads, ["--fresh-connections"])
    return streams


def finish_streams(streams: list[Stream], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for stream in streams:
        try:
            stream.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stream.proc.kill()
            stream.proc.wait()


# --------------------------------------------------------------------------------------------
# The faults


@dataclass
class Window:
    start: float  # wall clock
    end: float
    events: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))

    def ended(self) -> None:
        """The fault is over (what follows is observation, not fault)."""
        self.end = time.time()


def configure_backends(fleet: Fleet, path: str, body: dict) -> None:
    for slot in fleet.active():
        status, text = h.http("POST", f"{slot.url}{path}", body, timeout=5)
        if status != 200:
            raise RuntimeError(f"POST {slot.url}{path} {body}: {status} {text[:200]!r}")


def fault_redis_slow(fleet: Fleet, w: Window, seconds: float) -> None:
    # Injected in the backends' Redis hop, inside REDIS_TIMEOUT_MS (1 s): every call waits
    # 1.5 s and times out, as against a Redis that answers too late. A delay in front of Redis
    # itself cannot be used: the backends find the primary through Sentinel, which names its
    # real address; and SIGSTOP bursts long enough to pass the timeout make Sentinel fail over.
    configure_backends(fleet, "/config/redis", {"delay_ms": 1500, "failure_rate": 0.0})
    w.event("Redis hop +1.5 s on every backend")
    time.sleep(seconds)
    configure_backends(fleet, "/config/redis", {"delay_ms": 0, "failure_rate": 0.0})
    w.notes.append(f"every Redis call of every backend waits 1.5 s (REDIS_TIMEOUT_MS 1 s) for {seconds:.0f} s")


def fault_redis_down(fleet: Fleet, w: Window, seconds: float) -> None:
    # Both Redis nodes at once, as a partition between the fleet and Redis would: with only
    # the primary stopped, Sentinel would promote the replica after 1 s (that is redis-failover).
    primary, replica = fleet.primary_and_replica()
    fleet.redis.redis[primary].signal(signal.SIGSTOP)
    fleet.redis.redis[replica].signal(signal.SIGSTOP)
    w.event("SIGSTOP Redis primary and replica")
    time.sleep(seconds)
    fleet.redis.redis[primary].signal(signal.SIGCONT)
    fleet.redis.redis[replica].signal(signal.SIGCONT)
    w.event("SIGCONT both")
    w.ended()
    time.sleep(1.5)  # Sentinel's verdict on what it saw
    after = fleet.redis.sentinel_master()
    w.notes.append(
        f"primary and replica stopped {seconds:.0f} s; "
        + ("Sentinel kept the primary" if after == primary else f"Sentinel moved the primary to {after}")
    )


def fault_redis_failover(fleet: Fleet, w: Window, _seconds: float) -> None:
    primary, replica = fleet.primary_and_replica()
    fleet.redis.redis[primary].kill9()
    w.event("kill -9 Redis primary")
    took = h.wait_until("sentinel failover", lambda: fleet.redis.sentinel_master() == replica, 30, 0.1)
    w.event("Sentinel promoted the replica")
    # Back, empty (no persistence), as a replica of the new primary: appends need one to
    # confirm them (REDIS_MIN_REPLICAS_ACK=1). A StatefulSet restarts the pod the same way.
    fleet.redis.redis[primary] = fleet.redis.redis_proc(primary, replica).start()
    h.wait_until(
        "old primary back as a replica",
        lambda: h.info_field(h.redis_cli(primary, "INFO", "replication"), "master_link_status") == "up",
        30,
    )
    w.event("old primary resynced as a replica")
    w.notes.append(f"Sentinel promoted the replica {took:.1f} s after the kill (down-after-milliseconds 1000)")


def fault_backend_kill(fleet: Fleet, w: Window, _seconds: float) -> None:
    victim = fleet.active()[0]
    victim.proc.kill9()
    w.event(f"kill -9 {victim.name}")
    h.wait_until(f"{victim.name} restarted", lambda: victim.proc.alive() and victim.proc.starts > 1, 20, 0.05)
    took = wait_ready(victim, 30)
    w.event(f"{victim.name} ready again")
    w.notes.append(f"{victim.name} killed, restarted by the supervisor after 0.5 s, ready {took:.1f} s after its restart")


def fault_backend_slow(fleet: Fleet, w: Window, seconds: float) -> None:
    victim = fleet.active()[0]
    fleet.balancer.command(f"delay 1000 {victim.addr}")  # type: ignore[union-attr]
    w.event(f"{victim.name} +1 s per request (balancer)")
    time.sleep(seconds)
    fleet.balancer.command(f"delay 0 {victim.addr}")  # type: ignore[union-attr]
    w.notes.append(
        f"every request to {victim.name} held 1 s by the balancer for {seconds:.0f} s, on open connections "
        "too (its /readiness probe is not: the process itself is not slow)"
    )


def fault_errors_50(fleet: Fleet, w: Window, seconds: float) -> None:
    configure_backends(fleet, "/config/failure", {"failure_rate": 0.5, "status_code": 500})
    w.event("50 % of /data answer 500 on every backend")
    time.sleep(seconds)
    configure_backends(fleet, "/config/failure", {"failure_rate": 0.0})
    w.notes.append(f"POST /config/failure 0.5 on every backend for {seconds:.0f} s: only /data (the client's /fetch) fails")


def enlist(fleet: Fleet, slot: Slot, poll_s: float) -> None:
    """Lists a ready backend in the balancer and waits until the balancer finds it ready.

    Ready is what makes a pod an endpoint, so a backend is listed only once ready; the
    balancer's first probe at `add` then finds it ready, rather than one poll (3 s) later."""
    fleet.balancer.command(f"add {slot.addr}")  # type: ignore[union-attr]
    h.wait_until(
        f"{slot.name} ready in the balancer",
        lambda: fleet.balancer.stats()["backends"].get(slot.addr, {}).get("ready"),  # type: ignore[union-attr]
        30,
        poll_s,
    )


def fault_backend_added(fleet: Fleet, w: Window, _seconds: float) -> None:
    slot = fleet.new_slot(f"backend-{len(fleet.slots) + 1}")
    w.event(f"{slot.name} started")
    wait_ready(slot, 30)
    enlist(fleet, slot, 0.1)
    w.event(f"{slot.name} ready in the balancer")
    w.notes.append(f"{slot.name} started, listed in the balancer once ready")


def fault_rolling_restart(fleet: Fleet, w: Window, _seconds: float) -> None:
    # A Deployment's rolling update with its defaults for a few replicas (maxSurge 1,
    # maxUnavailable 0): start a replacement, wait until it is ready, SIGTERM one old pod, and
    # so on. Each old backend fails its readiness at once and serves on for SHUTDOWN_DELAY_SECS
    # (5 s by default) while the balancer's next poll takes it out.
    olds = fleet.active()
    for old in olds:
        new = fleet.new_slot(f"{old.name}r")
        wait_ready(new, 30)
        enlist(fleet, new, 0.05)
        with fleet.lock:
            old.retired = True
        old.proc.signal(signal.SIGTERM)
        w.event(f"SIGTERM {old.name}")
    for old in olds:
        try:
            old.proc.popen.wait(timeout=40)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            old.proc.kill9()
            w.notes.append(f"{old.name} did not exit within 40 s of SIGTERM: killed")
        fleet.balancer.command(f"remove {old.addr}")  # type: ignore[union-attr]
    w.event("every old backend exited")
    codes = ", ".join(f"{o.name}: {o.proc.popen.returncode}" for o in olds)  # type: ignore[union-attr]
    w.notes.append(f"{len(olds)} backends replaced one by one (surge 1); exit codes after SIGTERM: {codes}")


@dataclass
class FaultSpec:
    name: str
    what: str
    run: object
    seconds: tuple[float, float]  # nominal length (full, quick); 0 = as long as it takes
    budget: tuple[float, float]  # time the load plans for it (full, quick)
    # Recovery is measured from the fault's end, except a failover's: from the kill, against
    # the target of Sentinel's down-after + 2 s (this is the down-after).
    from_start: float | None = None


FAULTS = [
    FaultSpec("redis-slow", "Redis slow past the timeout (1.5 s per call)", fault_redis_slow, (8, 3), (8, 3)),
    FaultSpec("redis-down", "Redis down (primary and replica SIGSTOP; 5 s)", fault_redis_down, (5, 3), (7, 3.5)),
    FaultSpec("redis-failover", "Redis primary kill -9, Sentinel failover", fault_redis_failover, (0, 0), (8, 4),
              from_start=SENTINEL_DOWN_AFTER_S),
    FaultSpec("backend-kill", "one backend kill -9, restarted", fault_backend_kill, (0, 0), (4, 1.5)),
    FaultSpec("backend-slow", "one backend +1 s per request", fault_backend_slow, (8, 3), (8, 3)),
    FaultSpec("errors-50", "50 % of /data fail on every backend", fault_errors_50, (8, 3), (8, 3)),
    FaultSpec("backend-added", "a fourth backend added", fault_backend_added, (0, 0), (4, 3.5)),
    FaultSpec("rolling-restart", "rolling SIGTERM restart of every backend", fault_rolling_restart, (0, 0), (12, 7)),
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Analysis


@dataclass
class Request:
    due: float  # wall clock
    done: float
    ok: bool  # 2xx
    good: bool  # 2xx within GOOD_WITHIN_S of being due


def read_trace(stream: Stream) -> list[Request]:
    """One entry per read, and per *message* for appends (its last attempt: acknowledged, or
    given up), timed from when it was due, so that retries and queueing count as the wait a
    user sees rather than as extra traffic."""
    report = json.loads(stream.report.read_text() or "{}")
    origin = report.get("started_unix_ms", 0) / 1000
    last: dict[str, dict] = {}
    if stream.trace.exists():
        with stream.trace.open() as f:
            for row in csv.DictReader(f):
                key = row["message"]
                if key not in last or float(row["done_s"]) >= float(last[key]["done_s"]):
                    last[key] = row
    rows = []
    for row in last.values():
        due, done = float(row["due_s"]), float(row["done_s"])
        ok = row["outcome"] in ("200", "201")
        rows.append(Request(origin + due, origin + done, ok, ok and done - due <= GOOD_WITHIN_S))
    return rows


def analyse_path(streams: list[Stream], w: Window, spec: FaultSpec, t0: float) -> dict:
    """Goodput: good requests *due* during the fault, per second, against the same before it
    (from 1 s after the load started: the first second includes start-up). Recovery: from the
    fault's end (a failover: from its kill, the target then being down-after + 2 s) to when
    the last request that was not good was due; everything due after it was good."""
    reference = w.start if spec.from_start is not None else w.end
    base_from = t0 + 1.0
    span_b, span_d = max(w.start - base_from, 1e-9), max(w.end - w.start, 0.5)
    baseline_good = during_good = 0
    bad_after: list[float] = []
    kinds = {}
    last_due = 0.0
    for stream in streams:
        rows = read_trace(stream)
        b = sum(1 for r in rows if r.good and base_from <= r.due < w.start)
        d = sum(1 for r in rows if r.good and w.start <= r.due < w.start + span_d)
        kinds[stream.kind] = {
            "baseline_good_per_s": round(b / span_b, 1),
            "during_good_per_s": round(d / span_d, 1),
            "goodput_pct": round(100 * (d / span_d) / (b / span_b), 1) if b else None,
            "failed": sum(1 for r in rows if not r.ok and r.due >= w.start),
            "slow": sum(1 for r in rows if r.ok and not r.good and r.due >= w.start),
        }
        baseline_good += b
        during_good += d
        bad_after += [r.due - reference for r in rows if not r.good and r.due > reference]
        last_due = max(last_due, max((r.due for r in rows), default=0.0))
    goodput = round(100 * during_good / baseline_good * span_b / span_d, 1) if baseline_good else None
    if bad_after and last_due - (reference + max(bad_after)) < 1.0:
        recovery = None  # still bad when the load ended
    else:
        recovery = round(max(bad_after), 2) if bad_after else 0.0
    appends = next((s for s in streams if s.kind == "appends"), None)
    verdict, passed, code = {}, False, None
    if appends:
        report = json.loads(appends.report.read_text() or "{}")
        verdict = report.get("verdict", {})
        passed = bool(report.get("passed"))
        code = appends.proc.returncode
    return {
        "goodput_pct": goodput,
        "by_kind": kinds,
        "recovery_s": recovery,
        "recovery_target_s": RECOVERY_TARGET_S + (spec.from_start or 0.0),
        "acknowledged": verdict.get("acknowledged"),
        "lost": verdict.get("lost"),
        "duplicated": verdict.get("duplicated"),
        "wrong_id": verdict.get("wrong_id"),
        "never_acknowledged": (verdict.get("sent") or 0) - (verdict.get("acknowledged") or 0),
        "verified": passed and code == 0,
        "loadtest_exit": code,
    }


def per_second(streams: list[Stream], t0: float, seconds: int) -> dict[str, list[tuple[int, int]]]:
    """Per path: [(good, not good)] per second since t0, by due time."""
    out: dict[str, list[list[int]]] = {}
    for stream in streams:
        buckets = out.setdefault(stream.path, [[0, 0] for _ in range(seconds)])
        for r in read_trace(stream):
            s = int(r.due - t0)
            if 0 <= s < seconds:
                buckets[s][0 if r.good else 1] += 1
    return {path: [(a, b) for a, b in v] for path, v in out.items()}


def plot(name: str, what: str, result: dict, streams: list[Stream], w: Window, t0: float, path: Path) -> None:
    # Whole seconds only: the last, partial second of the load would read as a drop.
    last_due = max((r.due for stream in streams for r in read_trace(stream)), default=w.end)
    seconds = max(1, int(max(last_due - t0, w.end - t0)))
    series = per_second(streams, t0, seconds)
    width, height, left, right, top, ph = 900, 320, 60, 20, 40, 230
    x = lambda s: left + (width - left - right) * s / seconds  # noqa: E731
    peak = max([1] + [max(a, b) for v in series.values() for a, b in v]) * 1.1
    y = lambda n: top + ph - ph * n / peak  # noqa: E731
    rows = result["paths"]
    title = f"{name}: {what}. " + "; ".join(
        f"{p} goodput {fmt_pct(r['goodput_pct'])}, lost {r['lost']}, duplicated {r['duplicated']}" for p, r in rows.items()
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13">{escape(title)}</text>',
        f'<text x="{left}" y="{top + ph + 34}">requests per second by when they were due (an append: a message, retries included), every kind summed: good (solid: 2xx within '
        f"{GOOD_WITHIN_S:.0f} s), not good (dashed); client path green/red, direct blue/orange; fault shaded</text>",
        f'<rect x="{x(w.start - t0):.1f}" y="{top}" width="{max(2.0, x(w.end - t0) - x(w.start - t0)):.1f}" '
        f'height="{ph}" fill="#f6c4c4" opacity="0.6"/>',
    ]
    for t, _ in w.events:
        parts.append(f'<line x1="{x(t - t0):.1f}" x2="{x(t - t0):.1f}" y1="{top}" y2="{top + ph}" stroke="#b00" stroke-dasharray="3,3"/>')
    parts.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{ph}" fill="none" stroke="#444"/>')
    colours = {"client": ("#080", "#c00"), "direct": ("#05b", "#e80")}
    for p, v in series.items():
        ok_colour, bad_colour = colours.get(p, ("#444", "#888"))
        for index, colour, dash in ((0, ok_colour, ""), (1, bad_colour, ' stroke-dasharray="5,3"')):
            points = " ".join(f"{x(s + 0.5):.1f},{y(c[index]):.1f}" for s, c in enumerate(v))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{peak / 1.1:.0f}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>')
    for s in range(0, seconds + 1, 5):
        parts.append(f'<text x="{x(s):.1f}" y="{top + ph + 16}" text-anchor="middle">{s}s</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt_pct(value) -> str:
    return "–" if value is None else f"{value:.0f} %"


# --------------------------------------------------------------------------------------------
# One fault


def flaps(fleet: Fleet) -> dict[str, int]:
    return {addr: b["flaps"] for addr, b in fleet.balancer.stats()["backends"].items()}  # type: ignore[union-attr]


def refused(fleet: Fleet) -> int:
    return int(fleet.balancer.stats()["refused"])  # type: ignore[union-attr]


def connections(fleet: Fleet) -> dict[str, int]:
    return {addr: b["connections"] for addr, b in fleet.balancer.stats()["backends"].items()}  # type: ignore[union-attr]


def served(slot: Slot) -> int:
    """Requests a backend answered, its probes, /metrics and /config/* left out."""
    status, body = h.http("GET", f"{slot.url}/metrics")
    total = 0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("http_request_duration_seconds_count") and not any(
            word in line for word in ("readiness", "liveness", "metrics", "config", "health")
        ):
            try:
                total += int(float(line.split()[-1]))
            except ValueError:
                pass
    return total


def run_fault(fleet: Fleet, spec: FaultSpec, out: Path, quick: bool, rates: Rates) -> dict:
    # The full tail outlasts the client's BREAKER_RESET_SECS (15 s), so a breaker that opened in the
    # fault shows up as a recovery time, not as "not recovered".
    warm, tail = (2.0, 3.0) if quick else (5.0, 20.0)
    nominal = spec.seconds[1 if quick else 0]
    budget = spec.budget[1 if quick else 0]
    flaps_before, conns_before, refused_before = flaps(fleet), connections(fleet), refused(fleet)
    t0 = time.time()
    streams = start_streams(fleet, out, spec.name, rates, warm + budget + tail)
    try:
        time.sleep(warm)
        w = Window(time.time(), 0.0)
        spec.run(fleet, w, nominal)  # type: ignore[operator]
        if not w.end:
            w.ended()
        conns_at_end = connections(fleet)
        served_at_end = {slot.name: served(slot) for slot in fleet.active()}
    except BaseException:
        for stream in streams:
            stream.proc.kill()
            stream.proc.wait()
        raise
    finish_streams(streams, warm + budget + tail + 180)
    load_end = time.time()
    flaps_after, conns_after = flaps(fleet), connections(fleet)
    names = {slot.addr: slot.name for slot in fleet.slots}
    flapped = {
        names.get(a, a): n - flaps_before.get(a, 0) for a, n in flaps_after.items() if n - flaps_before.get(a, 0)
    }
    new_conns = {a: n - conns_before.get(a, 0) for a, n in conns_after.items()}
    result = {
        "fault": spec.name,
        "what": spec.what,
        "fault_seconds": round(w.end - w.start, 2),
        "events": [(round(t - w.start, 2), what) for t, what in w.events],
        "notes": list(w.notes),
        "flaps": sum(flapped.values()),
        "flaps_by_backend": flapped,
        "connections_by_backend": new_conns,
        "refused": refused(fleet) - refused_before,
        "load_end": load_end,
        "tail_s": round(load_end - w.end, 1),
        "paths": {},
    }
    for path in ("client", "direct"):
        result["paths"][path] = analyse_path([s for s in streams if s.path == path], w, spec, t0)
    if spec.name == "backend-added":
        since = {a: n - conns_at_end.get(a, 0) for a, n in conns_after.items()}
        total, newest = sum(since.values()), fleet.active()[-1].addr
        result["notes"].append(
            f"new connections from its readiness to the end of the load ({result['tail_s']:.0f} s): "
            f"{since.get(newest, 0)} of {total} ({100 * since.get(newest, 0) / max(total, 1):.0f} %) to the added backend "
            "(the direct path opens one per request; the client keeps its own open)"
        )
        served_since = {slot.name: served(slot) - served_at_end.get(slot.name, 0) for slot in fleet.active()}
        newest_name = fleet.active()[-1].name
        result["notes"].append(
            f"requests served in that time: {json.dumps(served_since)}; the added backend "
            f"{100 * served_since.get(newest_name, 0) / max(sum(served_since.values()), 1):.0f} % "
            "(issue 14 item 3 asks >= 20 % of the client's calls within 30 s)"
        )
    if w.end - w.start > budget + 1.0:
        result["notes"].append(f"the fault took {w.end - w.start:.1f} s, {budget:.1f} s planned: the tail was shorter")
    plot(spec.name, spec.what, result, streams, w, t0, out / f"matrix-{spec.name}.svg")
    del result["load_end"]
    return result


# --------------------------------------------------------------------------------------------
# Reporting


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def table(results: list[dict]) -> str:
    lines = [
        "| fault | path | goodput during the fault (% of baseline) | recovery after it ended | readiness flaps | acknowledged (of sent) | lost | duplicated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['fault']} | – | harness error: {escape(r['error'])} | – | – | – | – | – |")
            continue
        for path, p in r["paths"].items():
            kinds = ", ".join(f"{k} {fmt_pct(v['goodput_pct'])}" for k, v in p["by_kind"].items())
            target = p["recovery_target_s"]
            if p["recovery_s"] is None:
                recovery = f"not recovered {mark(False)}"
            else:
                ref = " after the kill" if r["fault"] == "redis-failover" else ""
                recovery = f"{p['recovery_s']:.1f} s{ref} {mark(p['recovery_s'] <= target)} (≤ {target:.0f} s)"
            verified = "" if p["verified"] else f" (verifier exit {p['loadtest_exit']})"
            lines.append(
                f"| {r['fault']} | {path} | {fmt_pct(p['goodput_pct'])} ({kinds}) | {recovery} | {r['flaps']} | "
                f"{p['acknowledged']} ({(p['acknowledged'] or 0) + p['never_acknowledged']}){verified} | "
                f"{p['lost']} {mark(p['lost'] == 0)} | "
                f"{p['duplicated']} {mark(p['duplicated'] == 0)} |"
            )
    return "\n".join(lines) + "\n"


def details(results: list[dict]) -> str:
    out = []
    for r in results:
        if "error" in r:
            out.append(f"- **{r['fault']}**: harness error: {r['error']}")
            continue
        out.append(
            f"- **{r['fault']}** ({r['fault_seconds']:.1f} s; {h.timeline(r['events'])}): {'; '.join(r['notes'])}. "
            f"Flaps by backend: {json.dumps(r['flaps_by_backend'])}; connections the balancer refused "
            f"for want of a ready backend: {r['refused']}."
        )
    return "\n".join(out) + "\n"


def write_doc(doc: Path, results: list[dict], command: str, binaries: str) -> None:
    plots = ", ".join(f"[{r['fault']}](docs/chaos/matrix-{r['fault']}.svg)" for r in results if "error" not in r)
    block = (
        f"{DOC_START}\n"
        f"Measured by `{command}` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, shared; {binaries} binaries).\n\n"
        + table(results)
        + "\n"
        + details(results)
        + f"\nPlots: {plots}.\n"
        + f"{DOC_END}"
    )
    h.replace_block(doc, DOC_START, DOC_END, block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    parser.add_argument("--out", default=str(ROOT / "target/chaos-matrix"))
    parser.add_argument("--faults", default=",".join(f.name for f in FAULTS))
    parser.add_argument("--quick", action="store_true", help="the bounded form for the test suite")
    parser.add_argument("--write-doc", help="rewrite the matrix section of this Markdown file (RELIABILITY.md)")
    parser.add_argument("--copy-plots", help="copy the SVG plots into this directory (docs/chaos)")
    parser.add_argument(
        "--backend-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra backend setting (repeatable); e.g. APPEND_STRATEGY=naive ALLOW_UNSAFE=true "
        "shows that the matrix fails when messages are lost",
    )
    args = parser.parse_args()

    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            log(f"{tool} is not on PATH (Debian: apt-get install -y redis-server)")
            return 2
    bins = Path(args.bin_dir).resolve()
    for binary in ("guestbook-backend", "guestbook-client", "guestbook-loadtest", "guestbook-l4"):
        if not (bins / binary).exists():
            log(f"{bins}/{binary} is missing: build first")
            return 2
    specs = {f.name: f for f in FAULTS}
    chosen = [n for n in args.faults.split(",") if n]
    unknown = [n for n in chosen if n not in specs]
    if unknown:
        log(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(specs)}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rates = Rates(10, 10, 10, max_attempts=8) if args.quick else Rates(20, 20, 20)
    fleet = Fleet(bins, out / "fleet")
    for setting in args.backend_env:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            log(f"--backend-env needs NAME=VALUE, got {setting!r}")
            return 2
        fleet.extra_env[name] = value
    results: list[dict] = []
    started = time.monotonic()
    try:
        log("starting the fleet")
        fleet.start()
        for name in chosen:
            took = fleet.settle()
            log(f"{name}: fleet settled in {took:.1f} s; running")
            try:
                result = run_fault(fleet, specs[name], out, args.quick, rates)
            except Exception as err:  # noqa: BLE001 (reported as a failed row)
                log(f"{name}: {type(err).__name__}: {err}")
                result = {"fault": name, "error": f"{type(err).__name__}: {err}"}
            results.append(result)
            if "error" not in result:
                summary = "; ".join(
                    f"{p}: goodput {fmt_pct(r['goodput_pct'])}, recovery {r['recovery_s']}, lost {r['lost']}, dup {r['duplicated']}"
                    for p, r in result["paths"].items()
                )
                log(f"{name}: flaps {result['flaps']}; {summary}")
    finally:
        fleet.stop()
    h.save_results(out / "matrix.json", out / "matrix.md", results, table(results), details(results))
    log(f"matrix in {time.monotonic() - started:.0f} s; results in {out}/matrix.json, plots in {out}/matrix-*.svg")
    if args.write_doc:
        command = "make chaos" if not args.quick else "make test-chaos"
        write_doc(Path(args.write_doc), results, command, bins.name)
    h.copy_plots([out / f"matrix-{r['fault']}.svg" for r in results], args.copy_plots)
    bad = []
    for r in results:
        if "error" in r:
            bad.append(f"{r['fault']}: harness error")
            continue
        for path, p in r["paths"].items():
            if p["lost"] != 0 or p["duplicated"] != 0 or p["wrong_id"] != 0 or not p["verified"]:
                bad.append(f"{r['fault']}/{path}: lost {p['lost']}, duplicated {p['duplicated']}, "
                           f"wrong id {p['wrong_id']}, verifier exit {p['loadtest_exit']}")  # fmt: skip
    if bad:
        log("FAILED (correctness): " + "; ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
