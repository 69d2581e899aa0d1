#!/usr/bin/env bash
# `make fuzz-api`: schemathesis against both services over loopback, driven by the checked-in
# OpenAPI documents (openapi/*.json), bounded in examples and time.
#
# Starts its own redis-server, backend and client, each on a free 127.0.0.1 port (never
# 6379), with the secure defaults (no FAULT_INJECTION, no ADMIN_TOKEN), runs
# `schemathesis run` against each service, then against the /config/* operations of a second
# backend with FAULT_INJECTION=true and an ADMIN_TOKEN (sent by schemathesis), and on exit
# stops exactly the processes it started, by PID. Exits non-zero on any failed check: a 5xx, an undocumented status code,
# content type or header, or a body that violates its schema.
#
# Settings (environment; defaults in brackets):
#   SCHEMATHESIS [target/schemathesis-venv/bin/schemathesis; installed there from PyPI if absent]
#   SCHEMATHESIS_VERSION [4.32.5]   the version installed into that venv
#   MAX_EXAMPLES [40]   test cases per operation and phase
#   MAX_TIME [60]       seconds per service, a hard budget for the whole run against it
#                       (the /config/* pass gets a third of it)
#   SEED [20261128]     fixed so CI is repeatable; any integer explores other cases
#   BACKEND_BIN [target/debug/guestbook-backend]   CLIENT_BIN [target/debug/guestbook-client]
#
# The live-update streams (/api/messages/stream, /api/books/{book}/messages/stream) are
# excluded: their answer never ends, so every case would only time out (or, when a message is
# there to replay, be judged event by event against the body's `string` schema). Their
# refusals are covered by the Rust tests.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
VENV=target/schemathesis-venv
SCHEMATHESIS=${SCHEMATHESIS:-$VENV/bin/schemathesis}
MAX_EXAMPLES=${MAX_EXAMPLES:-40}
MAX_TIME=${MAX_TIME:-60}
SEED=${SEED:-20261128}
BACKEND_BIN=${BACKEND_BIN:-target/debug/guestbook-backend}
CLIENT_BIN=${CLIENT_BIN:-target/debug/guestbook-client}
LOGS=target/schemathesis
# Not `all`: positive_data_acceptance and missing_required_header would flag what the contract
# asks for (a reused Idempotency-Key with another body is 422; DELETE /api/messages is 404,
# not 401, while ADMIN_TOKEN is unset).
CHECKS=${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method}

die() { echo "schemathesis.sh: $*" >&2; exit 1; }

command -v redis-server >/dev/null 2>&1 || die "redis-server is not on PATH"
[[ -x $BACKEND_BIN && -x $CLIENT_BIN ]] ||
  die "$BACKEND_BIN or $CLIENT_BIN missing: cargo build --locked -p guestbook-backend -p guestbook-client"
if [[ ! -x $SCHEMATHESIS ]]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
mkdir -p "$LOGS"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh  # the working directory is the repository root (above)
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_until_live() {
  local name=$1 url=$2 pid=$3 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $LOGS/$name.log"
    if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
      "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "$name did not answer $url within 10 s"
}

redis_port=$(free_port)
backend_port=$(free_port)
faults_port=$(free_port)
client_port=$(free_port)
# A throwaway token for the /config/* pass, never logged by the services.
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
[[ $redis_port != 6379 ]] || redis_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$LOGS/redis.log" 2>&1 &
pids+=($!)

LISTEN_ADDR=127.0.0.1:$backend_port REDIS_URL=redis://127.0.0.1:$redis_port \
  FAULT_INJECTION=false SHUTDOWN_DELAY_SECS=0 DRAIN_TIMEOUT_SECS=2 LOG_FORMAT=json \
  "$BACKEND_BIN" >"$LOGS/backend.log" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")

LISTEN_ADDR=127.0.0.1:$faults_port REDIS_URL=redis://127.0.0.1:$redis_port \
  GUESTBOOK_NAME=faults FAULT_INJECTION=true ADMIN_TOKEN=$admin_token \
  SHUTDOWN_DELAY_SECS=0 DRAIN_TIMEOUT_SECS=2 LOG_FORMAT=json \
  "$BACKEND_BIN" >"$LOGS/backend-faults.log" 2>&1 &
faults_pid=$!
pids+=("$faults_pid")

# LOAD_MAX_SECS: schemathesis will start the load generator; keep each run short.
# RATE_LIMIT_WRITES_PER_SEC=0: at the default, most generated POSTs would only meet the
# limiter's 429 (documented, and tested on its own) instead of the validation behind it.
LISTEN_ADDR=127.0.0.1:$client_port BACKEND_URL=http://127.0.0.1:$backend_port \
  FRONTEND_DIR=frontend LOAD_MAX_SECS=2 RATE_LIMIT_WRITES_PER_SEC=0 \
  SHUTDOWN_DELAY_SECS=0 DRAIN_TIMEOUT_SECS=2 \
  LOG_FORMAT=json "$CLIENT_BIN" >"$LOGS/client.log" 2>&1 &
client_pid=$!
pids+=("$client_pid")

wait_until_live backend "http://127.0.0.1:$backend_port/liveness" "$backend_pid"
wait_until_live backend-faults "http://127.0.0.1:$faults_port/liveness" "$faults_pid"
wait_until_live client "http://127.0.0.1:$client_port/liveness" "$client_pid"

"$SCHEMATHESIS" --version
status=0
# run NAME PORT DOCUMENT MAX_TIME [schemathesis options...]
run() {
  local name=$1 port=$2 document=$3 budget=$4
  shift 4
  echo
  echo "==> schemathesis: $name on 127.0.0.1:$port ($document)"
  "$SCHEMATHESIS" run "$document" \
    --url "http://127.0.0.1:$port" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$budget" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 10 \
    --exclude-path-regex '/messages/stream$' \
    --report junit --report-junit-path "$LOGS/$name-junit.xml" \
    --no-color "$@" || status=1
}
run backend "$backend_port" openapi/backend.json "$MAX_TIME"
run backend-faults "$faults_port" openapi/backend.json $((MAX_TIME / 3 + 1)) \
  --include-path-regex '^/config/' -H "Authorization: Bearer $admin_token"
run client "$client_port" openapi/client.json "$MAX_TIME"

for pid in "$backend_pid" "$faults_pid" "$client_pid"; do
  kill -0 "$pid" 2>/dev/null || { echo "a service died during the run; see $LOGS/" >&2; status=1; }
done
exit "$status"
