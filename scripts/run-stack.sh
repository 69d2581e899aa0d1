#!/usr/bin/env bash
# `make run`: the whole stack. The release backend on LISTEN_ADDR (fault injection on) and the
# client (UI, /fetch, /api/*) on CLIENT_LISTEN_ADDR, pointed at it. WITH_CLIENT=0 (make
# run-backend) starts the backend alone.
#
# Unless REDIS_URL is set, it first starts a private redis-server on 127.0.0.1:REDIS_PORT
# (append-only file in target/redis-data, so messages survive a restart), records its PID in
# target/redis.pid, and stops that process, and only that one, when the stack exits.
# It never uses the machine's shared Redis on port 6379 unless REDIS_URL says so.
#
# Settings (environment; defaults in brackets):
#   REDIS_URL   [unset: start a private redis-server]   REDIS_PORT [6390]
#   LISTEN_ADDR [127.0.0.1:8080]    CLIENT_LISTEN_ADDR [127.0.0.1:8081]    FAULT_INJECTION [true]
#   SHUTDOWN_DELAY_SECS [0]: no load balancer to wait for on a workstation, so Ctrl-C is prompt
#   BIN [target/release/guestbook-backend]
# Every other backend setting (APPEND_STRATEGY, ADMIN_TOKEN, ...) passes through unchanged.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REDIS_PORT=${REDIS_PORT:-6390}
BIN=${BIN:-target/release/guestbook-backend}
CLIENT_BIN=${CLIENT_BIN:-target/release/guestbook-client}
# WITH_CLIENT=0 runs the backend alone (make run-backend).
WITH_CLIENT=${WITH_CLIENT:-1}
BACKEND_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
CLIENT_ADDR=${CLIENT_LISTEN_ADDR:-127.0.0.1:8081}
DATA_DIR=target/redis-data
PID_FILE=target/redis.pid

die() { echo "run-stack: $*" >&2; exit 1; }

[[ -x $BIN ]] || die "$BIN not found; build it first: make build"
[[ $WITH_CLIENT == 0 || -x $CLIENT_BIN ]] || die "$CLIENT_BIN not found; build it first: make build"

redis_pid=""
backend_pid=""
client_pid=""

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  if [[ -n $client_pid ]]; then
    kill -TERM "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
  fi
  if [[ -n $backend_pid ]]; then
    kill -TERM "$backend_pid" 2>/dev/null || true
    wait "$backend_pid" 2>/dev/null || true
  fi
  if [[ -n $redis_pid ]]; then
    echo "stopping the private redis-server (pid $redis_pid)" >&2
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -f "$PID_FILE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z ${REDIS_URL:-} ]]; then
  command -v redis-server >/dev/null 2>&1 ||
    die "redis-server is not on PATH (Debian: apt-get install -y redis-server), or set REDIS_URL"
  [[ $REDIS_PORT != 6379 ]] || die "REDIS_PORT=6379 is the machine's shared Redis; pick another port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
    die "port $REDIS_PORT is in use; set REDIS_PORT to a free port, or REDIS_URL to use that server"
  fi
  mkdir -p "$DATA_DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes \
    --dir "$DATA_DIR" >target/redis.log 2>&1 &
  redis_pid=$!
  echo "$redis_pid" >"$PID_FILE"
  for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited; see target/redis.log"
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 ||
    die "redis-server did not answer on port $REDIS_PORT; see target/redis.log"
  echo "private redis-server on 127.0.0.1:$REDIS_PORT (pid $redis_pid, data in $DATA_DIR)" >&2
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
fi

export FAULT_INJECTION=${FAULT_INJECTION:-true}
export SHUTDOWN_DELAY_SECS=${SHUTDOWN_DELAY_SECS:-0}

echo "guestbook-backend on http://$BACKEND_ADDR" >&2
LISTEN_ADDR=$BACKEND_ADDR "$BIN" &
backend_pid=$!
if [[ $WITH_CLIENT != 0 ]]; then
  echo "guestbook-client on http://$CLIENT_ADDR (UI, /fetch, /api/*); Ctrl-C stops everything" >&2
  LISTEN_ADDR=$CLIENT_ADDR BACKEND_URL=${BACKEND_URL:-http://$BACKEND_ADDR} FRONTEND_DIR=${FRONTEND_DIR:-frontend} \
    "$CLIENT_BIN" &
  client_pid=$!
fi
# The first process to exit ends the run and the trap stops the rest; `wait` also returns
# early when a trapped signal arrives, so the traps run at once.
status=0
wait -n || status=$?
exit "$status"
