# Sourced by the scripts that start processes on loopback (deploy-check.sh, schemathesis.sh):
# a free port, and stopping exactly the processes the script started, by PID.
#
#   cd "$(dirname "${BASH_SOURCE[0]}")/.." && source scripts/lib.sh
#   some-server & pids+=($!)
#   trap stop_started EXIT      # or call stop_started from the script's own EXIT handler

# The PIDs of the processes this script started; only these are ever signalled.
pids=()

# A port nothing listens on now, on 127.0.0.1 (the kernel's pick; never 6379 in practice, and
# the callers skip it all the same, since a shared Redis may listen there).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# SIGTERM to every process in pids, then waits for each: a server that drains is left to.
# shellcheck disable=SC2317  # reached through an EXIT trap
stop_started() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
