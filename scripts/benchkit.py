"""What every scripts/bench_*.py needs: its settings from the environment, the checks before it
starts (the binaries built, its loopback ports free, never the shared Redis on 6379), waiting for
a process it started to answer, stopping it, and rewriting its marked section of BENCHMARKS.md
with the commands that reproduce it."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def env_int(name, default):
    """The integer setting `name` from the environment, else `default`."""
    return int(os.environ.get(name, str(default)))


def benchmarks_md():
    """The document a run rewrites: BENCHMARKS_MD, else BENCHMARKS.md (empty: print only)."""
    return os.environ.get("BENCHMARKS_MD", "BENCHMARKS.md")


def prepare(who, binaries=(), ports=()):
    """Moves to the repository's root, then exits `who` with one line when a binary is not built
    or a port is taken; 6379 is refused outright, since a shared Redis may listen there."""
    os.chdir(ROOT)
    for path in binaries:
        if not os.access(path, os.X_OK):
            sys.exit(f"{who}: {path} missing; run make build")
    for port in ports:
        if port == 6379 or not port_free(port):
            sys.exit(f"{who}: port {port} is taken or is the shared Redis")


def port_free(port):
    """True when nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_redis(port, who):
    """A private redis-server on 127.0.0.1:`port` without persistence, once it listens; the caller
    stops it with `stop`."""
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if not port_free(port):
            return redis
        if redis.poll() is not None:
            break
        time.sleep(0.05)
    stop(redis)
    sys.exit(f"{who}: redis-server on port {port} did not start")


def start_backend(binary, port, redis_port, who, extra_env=None, preexec_fn=None):
    """A backend on 127.0.0.1:`port` over the Redis on `redis_port`, once it is live; `extra_env`
    adds or overrides settings. The caller stops it with `stop`."""
    env = dict(
        os.environ,
        LISTEN_ADDR=f"127.0.0.1:{port}",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}",
        **(extra_env or {}),
    )
    backend = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, preexec_fn=preexec_fn)
    wait_http(f"http://127.0.0.1:{port}/liveness", backend, who)
    return backend


def wait_http(url, process, who, seconds=10):
    """Waits until `url` answers 2xx; exits `who` with one line if `process` dies or times out."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{who}: the process behind {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{who}: {url} did not answer")


def stop(process, timeout=15):
    """SIGTERM, then SIGKILL after `timeout` seconds; only ever a process this script started."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(process):
    """User plus system CPU time of a process this script started, from /proc/PID/stat."""
    with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
        # The command name may hold spaces: the fields are counted after its closing ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(url, body):
    """POSTs `body` (text, sent without a content type, as curl -d does) and reads the answer."""
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def data_calls(backend):
    """GET /data requests the backend has answered, from its own metrics."""
    with urllib.request.urlopen(f"{backend}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("http_request_duration_seconds_count{") and 'route="/data"' in line)


def save_json(name, result):
    """Writes `result` to target/bench/`name` (pretty JSON) and prints it."""
    os.makedirs("target/bench", exist_ok=True)
    with open(f"target/bench/{name}", "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)
    print(json.dumps(result, indent=2))


def append_jsonl(name, record):
    """Appends `record` as one line to target/bench/`name`, the history of every run."""
    os.makedirs("target/bench", exist_ok=True)
    with open(f"target/bench/{name}", "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def replace_section(text, name, title, section):
    """`text` with the part between <!-- NAME:begin --> and <!-- NAME:end --> replaced by
    `section`; the markers are appended under a `## title` heading when missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}\n{end}{tail}"


def write_section(doc, name, title, section):
    """Rewrites one section of the file `doc`."""
    with open(doc, encoding="utf-8") as current:
        text = current.read()
    with open(doc, "w", encoding="utf-8") as out:
        out.write(replace_section(text, name, title, section))


def how_to_run(script, *commands, after_build=True):
    """The closing shell block of a section: the script itself, then the commands it ran."""
    build = ["# make bench: the release build, then"] if after_build else []
    return ["```sh", *build, f"python3 scripts/{script}", *commands, "```"]


def publish(doc, name, title, lines):
    """Prints the section made of `lines` and, unless `doc` is empty, writes it into `doc`."""
    section = "\n".join(lines)
    print(section)
    if doc:
        write_section(doc, name, title, section)
        print(f"wrote {doc}", file=sys.stderr)


def redis_cli(port, *args):
    """`redis-cli -p PORT ARGS...` on 127.0.0.1; its output (empty when it fails)."""
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10).stdout


def start_cluster_node(port, directory, who, node_timeout_ms):
    """A private `redis-server --cluster-enabled yes` on 127.0.0.1:`port` without persistence, its
    cluster file in `directory`, once it answers PING; the caller stops it with `stop`."""
    node = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms), "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        if redis_cli(port, "PING").strip() == "PONG":
            return node
        time.sleep(0.05)
    sys.exit(f"{who}: cluster node on {port} did not start")


def wait_until(what, ready, who, seconds=30):
    """Polls `ready()` every 50 ms; exits `who` with `what` when it is not true within `seconds`."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"{who}: {what}")
        time.sleep(0.05)
