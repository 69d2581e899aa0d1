#!/usr/bin/env python3
"""Issue 17, goal 1: `guestbook-client`'s GET /fetch against a bare proxy of the same call.

The bare proxy (`guestbook-bare-proxy`, crates/testkit/src/bin) is axum and one reqwest client,
`GET /fetch` -> backend `GET /data`, the same `{"status":"ok","data":...}` answer, and nothing
else: no retry, breaker, deadline, limit, metrics or tracing. The goal is judged against it, the
yardstick issue 17 names. The client calls the backend through hyper-util's pool, not reqwest, so
the same bare proxy also runs with `--transport hyper`: against that one, the ratio is the cost
of the layers alone. Measured in one run, on the same backend: wrk -t2 -c64 against the
backend's /data, both bare proxies' /fetch and the client's /fetch, interleaved (the order
rotates each round), ROUNDS rounds, medians (for the goal, the median of each round's own
client/bare ratio). CPU per request of
each proxy process is its utime+stime delta (/proc/PID/stat) over the requests of that run.
Goal: the client >= 90 % of the bare proxy's req/s and <= 1.15x its CPU per request.

Then, unless PROFILE=0, `perf record -g` (user space, cpu-clock) samples the client and the
bare proxy on its transport under the same load, and the samples are summed by area (HTTP
server, HTTP client, JSON, allocation, breaker, retry, timers, metrics, tracing, ...) so the
table shows what the stack costs beyond the bare proxy.

It starts a private redis-server (the backend will not start without one; /data itself does not
use it), a backend, the bare proxy and a client on 127.0.0.1 (release builds) and stops exactly
those processes. Results: target/bench/proxy.jsonl and the section between <!-- proxy:begin -->
and <!-- proxy:end --> of BENCHMARKS.md (unless BENCHMARKS_MD="").
Environment: DURATION [10] seconds per run, ROUNDS [5], PROFILE [1], REDIS_PORT [6391],
BASE_PORT [18131] (backend; +1 bare proxy; +2 client; +3 baseline client; +4 the callgrind runs;
+5 the bare proxy on hyper-util),
INSTRUCTIONS [0]: 1 adds instructions per request of each proxy under callgrind (valgrind),
BASELINE_CLIENT [unset]:
another client binary (an older build copied aside) run on the same backend and interleaved
with the others, for a paired A/B of a change; its row is added to the table.
"""

import collections
import datetime
import glob
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess

from benchkit import append_jsonl, benchmarks_md, cpu_seconds, env_int, how_to_run, prepare, publish, stop, wait_http

BACKEND = "target/release/guestbook-backend"
CLIENT = "target/release/guestbook-client"
BARE = "target/release/guestbook-bare-proxy"
QUIET = {"LOG_FORMAT": "json", "SHUTDOWN_DELAY_SECS": "0", "DRAIN_TIMEOUT_SECS": "1"}

# Symbol patterns, first match wins: where a sampled function's time goes. Ordered so that the
# stack's own layers are named before the generic runtime they run on.
AREAS = [
    ("breaker", r"circuit_breaker|Breaker"),
    ("retry", r"tower::retry|middleware::retry|RetryPolicy"),
    ("deadline, timeouts (tower timeout, tokio timers)", r"tower::timeout|tokio::time|tokio::runtime::time"),
    ("concurrency limit, semaphores", r"tower::limit|Semaphore|semaphore"),
    ("metrics (prometheus-client)", r"prometheus_client|guestbook_common::metrics|::metrics::"),
    ("tracing, spans", r"tracing|telemetry"),
    ("pressure, shedding, dependency wait", r"guestbook_common::(pressure|dependency|bulkhead|limits|window)"),
    ("JSON (serde_json)", r"serde_json|serde::"),
    ("allocation (mimalloc, malloc, free, memcpy)", r"^_?mi_|mimalloc|malloc|_int_free|^free|cfree|realloc|_int_|unlink_chunk|memcpy|memmove|memset|tcache"),
    ("HTTP client (reqwest, hyper-util pool)", r"reqwest|hyper_util::client|hyper::client|pool"),
    ("HTTP server (hyper, axum, tower glue)", r"hyper|axum|tower|http::"),
    ("tokio scheduler, I/O driver", r"tokio|mio|parking_lot|futures"),
    ("kernel entry (syscalls from user space)", r"__libc|syscall|epoll|send|recv|write|read|\[unknown\]"),
]


def start(command, env, url):
    process = subprocess.Popen(command, env=dict(os.environ, **QUIET, **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(url, process, "bench_proxy")
    return process


def wrk(url, duration, threads=2, connections=64):
    """wrk -t2 -c64 (unless told) against `url`: the command, requests, req/s and the non-2xx
    count."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return command, requests, rate, failed


def kernel_seconds(process):
    """System CPU time alone (the `stime` half of `cpu_seconds`), from /proc/PID/stat."""
    with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def measured(url, duration, watch):
    """One wrk run; CPU µs per request of each process in `watch` (name -> process), and the
    kernel's part of it."""
    before = {name: (cpu_seconds(process), kernel_seconds(process)) for name, process in watch.items()}
    command, requests, rate, failed = wrk(url, duration)
    per_request = lambda seconds: seconds * 1e6 / max(requests, 1)
    cpu = {name: per_request(cpu_seconds(process) - before[name][0]) for name, process in watch.items()}
    kernel = {name: per_request(kernel_seconds(process) - before[name][1]) for name, process in watch.items()}
    return command, {"requests": requests, "rate": rate, "failed": failed, "cpu_us": cpu, "kernel_us": kernel}


def profile(process, url, duration):
    """Area -> share of the process's sampled user-space CPU under wrk load; None without perf."""
    if not shutil.which("perf"):
        return None
    data = f"target/bench/perf-{process.pid}.data"
    recorder = subprocess.Popen(["perf", "record", "-e", "cpu-clock:u", "-F", "1999", "-g", "-o", data,
                                 "-p", str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wrk(url, duration)
    finally:
        recorder.send_signal(2)
        recorder.wait(timeout=60)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                             "-g", "none", "--percent-limit", "0"], capture_output=True, text=True)
    os.remove(data)
    shares, symbols = collections.Counter(), collections.Counter()
    for line in report.stdout.splitlines():
        found = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(.*)$", line)
        if not found:
            continue
        # perf pads the symbol column (and adds IPC columns after it).
        share, symbol = float(found.group(1)), re.split(r"\s{2,}", found.group(2).strip())[0]
        symbols[symbol] += share
        shares[next((name for name, pattern in AREAS if re.search(pattern, symbol)), "other")] += share
    return {"areas": dict(shares), "top": symbols.most_common(15)} if shares else None


def instructions(command, env, port, duration):
    """Instructions per `GET /fetch` of the proxy that `command` starts on `port`, counted by
    callgrind: exact, so the machine's noise does not move it, unlike the CPU times above.
    wrk -t1 -c8 (callgrind runs one thread at a time, about 50x slower) after a 2 s warm-up;
    the counters are zeroed after the warm-up, so start-up is left out, while background
    work (timers, pool renewal, the pressure refresh) counts, at callgrind's lower rate.
    None without valgrind."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        return None
    os.makedirs("target/bench", exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file=target/bench/callgrind.{port}.%p",
                                *command], env=dict(os.environ, **QUIET, **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"{url}/liveness", process, "bench_proxy", seconds=60)
        wrk(f"{url}/fetch", 2, threads=1, connections=8)
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        _, requests, _, _ = wrk(f"{url}/fetch", duration, threads=1, connections=8)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
    finally:
        stop(process)
    dumps = sorted(glob.glob(f"target/bench/callgrind.{port}.{process.pid}*"))
    try:
        with open(f"target/bench/callgrind.{port}.{process.pid}.1", encoding="utf-8") as dump:
            total = next(int(line.split()[1]) for line in dump if line.startswith(("summary:", "totals:")))
    finally:
        for dump in dumps:
            os.remove(dump)
    return total / max(requests, 1)


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, `nproc` = {os.cpu_count()}, kernel {platform.release()}"


def main():
    duration = env_int("DURATION", 10)
    rounds = env_int("ROUNDS", 5)
    redis_port = env_int("REDIS_PORT", 6391)
    base_port = env_int("BASE_PORT", 18131)
    doc = benchmarks_md()
    baseline = os.environ.get("BASELINE_CLIENT", "")
    counting = os.environ.get("INSTRUCTIONS", "0") != "0"
    prepare("bench_proxy", binaries=(BACKEND, CLIENT, BARE) + ((baseline,) if baseline else ()),
            ports=(redis_port, base_port, base_port + 1, base_port + 2, base_port + 5)
            + ((base_port + 3,) if baseline else ())
            + ((base_port + 4,) if counting else ()))
    if not shutil.which("wrk"):
        raise SystemExit("bench_proxy: wrk missing (apt-get install wrk)")
    backend_url, bare_url, client_url = (f"http://127.0.0.1:{base_port + i}" for i in range(3))
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [redis]
    runs = collections.defaultdict(list)
    commands, profiles, counts = {}, {}, {}
    try:
        backend = start([BACKEND], {"LISTEN_ADDR": f"127.0.0.1:{base_port}",
                                    "REDIS_URL": f"redis://127.0.0.1:{redis_port}"}, f"{backend_url}/liveness")
        processes.append(backend)
        bare_command = [BARE, "--listen", f"127.0.0.1:{base_port + 1}", "--backend", backend_url]
        bare = start(bare_command, {}, f"{bare_url}/liveness")
        processes.append(bare)
        hyper_url = f"http://127.0.0.1:{base_port + 5}"
        hyper_command = [BARE, "--listen", f"127.0.0.1:{base_port + 5}", "--backend", backend_url,
                         "--transport", "hyper"]
        bare_hyper = start(hyper_command, {}, f"{hyper_url}/liveness")
        processes.append(bare_hyper)
        client = start([CLIENT], {"LISTEN_ADDR": f"127.0.0.1:{base_port + 2}", "BACKEND_URL": backend_url},
                       f"{client_url}/liveness")
        processes.append(client)
        watch = {"backend": backend, "bare": bare, "bare_hyper": bare_hyper, "client": client}
        paths = [("direct", f"{backend_url}/data"), ("bare", f"{bare_url}/fetch"),
                 ("bare_hyper", f"{hyper_url}/fetch"), ("client", f"{client_url}/fetch")]
        if baseline:
            baseline_url = f"http://127.0.0.1:{base_port + 3}"
            watch["baseline"] = start([baseline], {"LISTEN_ADDR": f"127.0.0.1:{base_port + 3}",
                                                   "BACKEND_URL": backend_url}, f"{baseline_url}/liveness")
            processes.append(watch["baseline"])
            paths.append(("baseline", f"{baseline_url}/fetch"))
        for round_ in range(rounds):
            for name, url in paths[round_ % len(paths):] + paths[:round_ % len(paths)]:
                command, run = measured(url, duration, watch)
                commands.setdefault(name, shlex.join(command))
                runs[name].append(run)
        if os.environ.get("PROFILE", "1") != "0":
            os.makedirs("target/bench", exist_ok=True)
            profiles = {"bare_hyper": profile(bare_hyper, f"{hyper_url}/fetch", duration),
                        "client": profile(client, f"{client_url}/fetch", duration)}
        if counting:
            # One at a time on a spare port, against the same backend.
            spare = base_port + 4
            counts = {"bare": instructions([BARE, "--listen", f"127.0.0.1:{spare}", "--backend", backend_url], {},
                                           spare, duration),
                      "bare_hyper": instructions([BARE, "--listen", f"127.0.0.1:{spare}", "--backend", backend_url,
                                                  "--transport", "hyper"], {}, spare, duration),
                      "client": instructions([CLIENT], {"LISTEN_ADDR": f"127.0.0.1:{spare}", "BACKEND_URL": backend_url},
                                             spare, duration)}
    finally:
        for process in reversed(processes):
            stop(process)

    med = lambda name, pick: statistics.median(pick(run) for run in runs[name])
    rate = {name: med(name, lambda run: run["rate"]) for name in runs}
    cpu = {name: med(name, lambda run: run["cpu_us"][name]) for name in ("bare", "bare_hyper", "client", "baseline")
           if name in runs}
    kernel = {name: med(name, lambda run: run["kernel_us"][name]) for name in ("bare", "bare_hyper", "client")}
    backend_cpu = {name: med(name, lambda run: run["cpu_us"]["backend"]) for name in runs}
    failed = sum(run["failed"] for name in runs for run in runs[name])
    # Each round runs the bare proxy and the client minutes apart at most, so the median of the
    # rounds' own ratios cancels the machine's slow drift, which the ratio of the medians does not.
    paired = [c["rate"] / b["rate"] for b, c in zip(runs["bare"], runs["client"]) if b["rate"]]
    of_medians = rate["client"] / rate["bare"]
    throughput = statistics.median(paired) if paired else of_medians
    cost = cpu["client"] / cpu["bare"]
    # The layers alone: against the bare proxy on the client's own transport.
    paired_hyper = [c["rate"] / b["rate"] for b, c in zip(runs["bare_hyper"], runs["client"]) if b["rate"]]
    layers_throughput = statistics.median(paired_hyper) if paired_hyper else rate["client"] / rate["bare_hyper"]
    layers_cost = cpu["client"] / cpu["bare_hyper"]
    verdict = lambda ok: "**met**" if ok else "**NOT met**"
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    append_jsonl("proxy.jsonl", {"when": when, "runs": runs, "profiles": profiles, "instructions": counts})
    rates = lambda name: " / ".join(f"{run['rate']:,.0f}" for run in runs[name])
    lines = [
        f"_Generated by `scripts/bench_proxy.py` on {when}; do not edit by hand._",
        "",
        f"Machine: {machine()}. wrk -t2 -c64, {duration} s per run, the {len(runs)} paths interleaved (order rotated "
        f"each round), {rounds} rounds, medians. wrk, the proxies, the backend and Redis share the cores, and "
        "other work on the machine adds noise: compare within one run, not across runs. The client and the "
        "backend run with their default settings, logging at `info` included (the bare proxy logs nothing). "
        f"Failed (non-2xx or socket errors) in all runs: {failed}.",
        "",
        "| path | req/s (runs) | median req/s | vs bare proxy | proxy CPU µs/request | vs bare proxy | backend CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| backend `GET /data` directly | {rates('direct')} | {rate['direct']:,.0f} | — | — | — | {backend_cpu['direct']:.1f} |",
        f"| `guestbook-bare-proxy` `GET /fetch` | {rates('bare')} | {rate['bare']:,.0f} | 100 % | {cpu['bare']:.1f} | 1.00× | "
        f"{backend_cpu['bare']:.1f} |",
        f"| `guestbook-bare-proxy --transport hyper` `GET /fetch` (the client's transport, hyper-util) | "
        f"{rates('bare_hyper')} | {rate['bare_hyper']:,.0f} | {rate['bare_hyper'] / rate['bare']:.0%} | "
        f"{cpu['bare_hyper']:.1f} | {cpu['bare_hyper'] / cpu['bare']:.2f}× | {backend_cpu['bare_hyper']:.1f} |",
        f"| `guestbook-client` `GET /fetch` (every layer on, defaults) | {rates('client')} | {rate['client']:,.0f} | "
        f"{of_medians:.0%} | {cpu['client']:.1f} | {cost:.2f}× | {backend_cpu['client']:.1f} |",
        *([f"| baseline client (`BASELINE_CLIENT`, the build before the change) | {rates('baseline')} | {rate['baseline']:,.0f} | "
           f"{rate['baseline'] / rate['bare']:.0%} | {cpu['baseline']:.1f} | {cpu['baseline'] / cpu['bare']:.2f}× | "
           f"{backend_cpu['baseline']:.1f} |"] if baseline else []),
        "",
        f"Goal 1: throughput ≥ 90 % of the bare proxy: {throughput:.0%} (the median of the rounds' own ratios, "
        f"{' / '.join(f'{r:.0%}' for r in paired)}; the ratio of the medians in the table is {of_medians:.0%}), "
        f"{verdict(throughput >= 0.9)}; "
        f"CPU per request ≤ 1.15×: {cost:.2f}×, {verdict(cost <= 1.15)}. The bare proxy is the issue's "
        "axum + reqwest proxy; the client calls the backend through hyper-util's pool directly (reqwest re-parses "
        "every request's URL for its redirect policy and wraps each call in layers of its own), so part of "
        "this margin is the transport, not the layers.",
        "",
        f"The layers alone, against the same bare proxy on the client's transport (`--transport hyper`): "
        f"throughput {layers_throughput:.0%} (the median of the rounds' own ratios, "
        f"{' / '.join(f'{r:.0%}' for r in paired_hyper)}), CPU per request {layers_cost:.2f}× "
        f"({cpu['client'] - cpu['bare_hyper']:+.1f} µs): what the breaker, retry, deadline, limits, metrics, "
        "tracing, pressure, request ids and security headers cost together.",
        "",
        f"Of the CPU per request, in the kernel (system time: loopback TCP, epoll, wake-ups): bare proxy "
        f"{kernel['bare']:.1f} µs, client {kernel['client']:.1f} µs; in user space: bare proxy "
        f"{cpu['bare'] - kernel['bare']:.1f} µs, client {cpu['client'] - kernel['client']:.1f} µs. The goal's "
        f"1.15× allows the client {0.15 * cpu['bare']:.1f} µs beyond the bare proxy; it spends "
        f"{cpu['client'] - cpu['bare']:+.1f} µs.",
    ]
    if counts.get("bare") and counts.get("client") and counts.get("bare_hyper"):
        lines += ["", f"Instructions per request (callgrind, exact; `INSTRUCTIONS=1`, wrk -t1 -c8 for {duration} s after a "
                  f"2 s warm-up, background work included): bare proxy {counts['bare']:,.0f}, bare proxy on "
                  f"hyper-util {counts['bare_hyper']:,.0f}, client {counts['client']:,.0f} "
                  f"({counts['client'] / counts['bare']:.2f}× the first, {counts['client'] / counts['bare_hyper']:.2f}× "
                  "the second)."]
    if profiles.get("bare_hyper") and profiles.get("client"):
        areas = sorted(set(profiles["client"]["areas"]) | set(profiles["bare_hyper"]["areas"]),
                       key=lambda area: -profiles["client"]["areas"].get(area, 0))
        # The user-space share of each process's CPU is turned into µs per request with the
        # interleaved runs' medians; kernel time (loopback TCP) is not sampled (perf :u).
        lines += [
            "",
            f"Where the CPU goes, the client against the bare proxy on its transport (`perf record -e cpu-clock:u -g`, "
            f"{duration} s of the same load on each, "
            "user space only; self time summed by area from the symbol names, so inlined code counts where it "
            "was inlined). µs/request scales the share by the proxy's median CPU per request above, kernel "
            "time included, so it is an estimate:",
            "",
            "| area | client: share | client µs/request | bare: share | bare µs/request | beyond bare µs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for area in areas:
            c, b = profiles["client"]["areas"].get(area, 0.0), profiles["bare_hyper"]["areas"].get(area, 0.0)
            cu, bu = c / 100 * cpu["client"], b / 100 * cpu["bare_hyper"]
            lines.append(f"| {area} | {c:.1f} % | {cu:.1f} | {b:.1f} % | {bu:.1f} | {cu - bu:+.1f} |")
        beyond = sorted(((profiles["client"]["areas"].get(area, 0.0) / 100 * cpu["client"]
                          - profiles["bare_hyper"]["areas"].get(area, 0.0) / 100 * cpu["bare_hyper"], area)
                         for area in areas),
                        reverse=True)[:3]
        lines += ["", "Largest costs beyond the bare proxy: " +
                  "; ".join(f"{area} (+{extra:.1f} µs)" for extra, area in beyond) + "."]
        # The resilience layers' own code against everything the bare proxy runs too.
        own = [name for name, _ in AREAS[:7]]
        layers = sum(profiles["client"]["areas"].get(area, 0.0) for area in own) / 100 * cpu["client"]
        if throughput < 0.9 or cost > 1.15:
            lines += ["", f"Why the goal is not met here: the layers' own code (breaker, retry, deadline, "
                      f"limits, metrics, tracing, pressure) is {layers:.1f} µs per request; the rest of the gap is "
                      "the same kind of work the bare proxy does (HTTP server and client, allocation, the "
                      "scheduler, the kernel), done more often or on more connections by the client's "
                      "extra layers, pools and timers, as the rows above show."]
        lines += ["", "The client's top symbols by self time:", "", "| symbol | share |", "|---|---:|",
                  *(f"| `{symbol[:110]}` | {share:.1f} % |" for symbol, share in profiles["client"]["top"])]
    lines += [
        "",
        *how_to_run("bench_proxy.py", shlex.join(bare_command) + "   # and the backend, a client on BASE_PORT+2",
                    shlex.join(hyper_command),
                    *commands.values(),
                    "perf record -e cpu-clock:u -F 1999 -g -p PID   # each proxy, under the same wrk load"),
    ]
    publish(doc, "proxy", "The client against a bare proxy (issue 17, goal 1)", lines)


if __name__ == "__main__":
    main()
