"""What every scripts/bench_*.py needs: a free loopback port, waiting for a process we started
to answer, stopping it, and rewriting one marked section of BENCHMARKS.md."""

import socket
import subprocess
import sys
import time
import urllib.request


def port_free(port):
    """True when nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


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
