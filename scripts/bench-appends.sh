#!/usr/bin/env bash
# Appends per second and p50/p99 of each safe append strategy, beside redis-benchmark running
# the same Lua script (EVALSHA) and a plain RPUSH against the same Redis, and beside the least
# an axum handler can do per append (guestbook-bare-append: one RPUSH on a multiplexed
# connection), in the same run. The report prints the default strategy's ratio to each at 64
# in flight against the issue's goals.
#
# It starts a private redis-server and guestbook-backend instances on 127.0.0.1, drives
# POST /api/messages with wrk (scripts/wrk/post-message.lua), and stops everything it started
# (and nothing else) when it exits. It builds nothing: `make bench` builds the release binary.
#
# Output: a markdown table on stdout; one JSON object per measurement in
# target/bench/appends.jsonl; logs in target/bench/logs/; and, for a run of the full matrix,
# the generated sections of BENCHMARKS.md.
#
# Settings (environment; defaults in brackets):
#   STRATEGIES   [lua watch lock]    INSTANCES [1 3]    CONNECTIONS [1 16 64 256]
#   DURATION     [5] seconds per row WARMUP    [1] seconds per backend start (not recorded)
#   IDEMPOTENCY  [0] 1 = a unique Idempotency-Key on every request
#   REDIS_PORT   [6391]              BASE_PORT [18081] (instance i listens on BASE_PORT + i)
#   RB_CLIENTS   [64]                RB_REQUESTS [200000]   (redis-benchmark)
#   MAX_MESSAGES [10000]             WRK_TIMEOUT [10s]
#   BIN          [target/release/guestbook-backend]
#   BARE_BIN     [target/release/guestbook-bare-append]   BARE [1] 0 = skip the bare handler
#   BENCHMARKS_MD  file whose generated sections are rewritten; by default BENCHMARKS.md for a
#                  run of the full default matrix and nothing for a partial run; "" = never.
#   PAIRS        [5] rounds of the paired 2b ratio: the bare handler and `lua` (1 instance,
#                64 in flight, DURATION each) in turn; the goal's ratio is the median of the
#                rounds' own ratios. 0 = skip (the ratio then comes from the matrix rows).
#   CALLGRIND    [0] 1 = also count instructions per append (valgrind's callgrind), which a
#                busy machine does not disturb as it does appends per second: the bare handler
#                and each strategy (one instance), each under callgrind, driven by
#                `wrk -t1 -c$CALLGRIND_CONNECTIONS` [16] for CALLGRIND_DURATION [3] s; the
#                backend's count is divided by its guestbook_appends_total, the bare handler's
#                by its list's length. Redis's CPU per append (INFO cpu) is printed beside it.
#
# Quick smoke run:
#   DURATION=1 CONNECTIONS="16" STRATEGIES=lua INSTANCES=1 scripts/bench-appends.sh
#
# How 3 instances are driven: one wrk process with one thread per instance; the Lua script
# points each thread at its own port (wrk's `thread.addr`). wrk gives every thread the same
# number of connections, so the connections are rounded down to a multiple of the thread
# count (16 → 15 with 3 threads); the table shows what was really in flight.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_STRATEGIES="lua watch lock"
DEFAULT_INSTANCES="1 3"
DEFAULT_CONNECTIONS="1 16 64 256"
STRATEGIES=${STRATEGIES:-$DEFAULT_STRATEGIES}
INSTANCES=${INSTANCES:-$DEFAULT_INSTANCES}
CONNECTIONS=${CONNECTIONS:-$DEFAULT_CONNECTIONS}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IDEMPOTENCY=${IDEMPOTENCY:-0}
REDIS_PORT=${REDIS_PORT:-6391}
BASE_PORT=${BASE_PORT:-18081}
RB_CLIENTS=${RB_CLIENTS:-64}
RB_REQUESTS=${RB_REQUESTS:-200000}
MAX_MESSAGES=${MAX_MESSAGES:-10000}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
BIN=${BIN:-target/release/guestbook-backend}
BARE_BIN=${BARE_BIN:-target/release/guestbook-bare-append}
BARE=${BARE:-1}
CALLGRIND=${CALLGRIND:-0}
PAIRS=${PAIRS:-5}
RATIO_IN_FLIGHT=64
CALLGRIND_CONNECTIONS=${CALLGRIND_CONNECTIONS:-16}
CALLGRIND_DURATION=${CALLGRIND_DURATION:-3}

OUT_DIR=target/bench
LOG_DIR=$OUT_DIR/logs
JSONL=$OUT_DIR/appends.jsonl
WRK_SCRIPT=scripts/wrk/post-message.lua
APPEND_LUA=crates/backend/src/store/scripts/append.lua
# The backend runs append.lua after sequence.lua (the id sequence and its term), behind `#!lua`.
SEQUENCE_LUA=crates/backend/src/store/scripts/sequence.lua
REPORT=(python3 scripts/bench_report.py)

if [[ -z ${BENCHMARKS_MD+set} ]]; then
  if [[ $STRATEGIES == "$DEFAULT_STRATEGIES" && $INSTANCES == "$DEFAULT_INSTANCES" &&
        $CONNECTIONS == "$DEFAULT_CONNECTIONS" ]]; then
    BENCHMARKS_MD=BENCHMARKS.md
  else
    BENCHMARKS_MD=""
  fi
fi

die() { echo "bench-appends: $*" >&2; exit 1; }

for tool in wrk redis-server redis-cli redis-benchmark curl python3; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is not on PATH (Debian: apt-get install -y wrk redis-server curl python3)"
done
[[ -x $BIN ]] || die "$BIN not found; build it first: make build (or run make bench)"
[[ $BARE == 0 || -x $BARE_BIN ]] || die "$BARE_BIN not found; build it first: make build"
if [[ $CALLGRIND != 0 ]]; then
  for tool in valgrind callgrind_control; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (Debian: apt-get install -y valgrind)"
  done
fi
[[ $REDIS_PORT != 6379 ]] || die "REDIS_PORT=6379 is the machine's shared Redis; pick another port"

# --- processes we started, and only those, are stopped on exit --------------------------
REDIS_PID=""
BACKEND_PIDS=()

# True while the process runs; an exited child not yet reaped (a zombie) counts as gone.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_backends() {
  local pid
  for pid in "${BACKEND_PIDS[@]}"; do
    stop_pid "$pid"
  done
  BACKEND_PIDS=()
}

cleanup() {
  stop_backends
  if [[ -n $REDIS_PID ]]; then
    stop_pid "$REDIS_PID"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Polls until $1 answers a 2xx, or fails when the process $2 exits or 10 s pass.
wait_http() {
  local url=$1 pid=$2
  for _ in $(seq 100); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    alive "$pid" || die "the process behind $url exited; see $LOG_DIR"
    sleep 0.1
  done
  die "$url did not answer within 10 s; see $LOG_DIR"
}

flush() { redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null; }

# --- Redis --------------------------------------------------------------------------------
mkdir -p "$LOG_DIR"
: >"$JSONL"
port_in_use "$REDIS_PORT" && die "port $REDIS_PORT is in use; set REDIS_PORT to a free port"
REDIS_CMD=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no)
REDIS_CMD_TEXT="redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no"
"${REDIS_CMD[@]}" >"$LOG_DIR/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break
  alive "$REDIS_PID" || die "redis-server exited; see $LOG_DIR/redis.log"
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" PING >/dev/null || die "redis-server did not answer on port $REDIS_PORT"

BACKEND_ENV="APPEND_STRATEGY=<strategy> LISTEN_ADDR=127.0.0.1:<port> REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
BACKEND_ENV+=" MAX_MESSAGES=$MAX_MESSAGES RATE_LIMIT_WRITES_PER_SEC=0 LOG_FORMAT=json SHUTDOWN_DELAY_SECS=0 $BIN"
INVOCATION="DURATION=$DURATION STRATEGIES=\"$STRATEGIES\" INSTANCES=\"$INSTANCES\""
INVOCATION+=" CONNECTIONS=\"$CONNECTIONS\" IDEMPOTENCY=$IDEMPOTENCY scripts/bench-appends.sh"
"${REPORT[@]}" run-info --invocation "$INVOCATION" --duration "$DURATION" \
  --strategies "$STRATEGIES" --instances "$INSTANCES" --connections "$CONNECTIONS" \
  --idempotency "$IDEMPOTENCY" --redis-command "$REDIS_CMD_TEXT" \
  --backend-env "$BACKEND_ENV" --backend "$BIN" >>"$JSONL"

# --- raw Redis: the same script through EVALSHA, and a plain RPUSH ---------------------------
redis_benchmark() { # name, command words...
  local name=$1 csv
  shift
  csv="$LOG_DIR/redis-benchmark-${name%% *}.csv"
  flush
  local cmd=(redis-benchmark -p "$REDIS_PORT" -c "$RB_CLIENTS" -n "$RB_REQUESTS" --csv "$@")
  echo "redis-benchmark $name ..." >&2
  "${cmd[@]}" >"$csv"
  "${REPORT[@]}" record-redis-benchmark --name "$name" --csv "$csv" -- "${cmd[@]}" >>"$JSONL"
}

SHA=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(printf '#!lua\n'; cat "$SEQUENCE_LUA" "$APPEND_LUA")")
TAIL='"author":"a","text":"b","created_at":"2026-01-01T00:00:00Z"}'
# As the backend calls it for a post without an Idempotency-Key: KEYS sequence, log, record,
# term; ARGV the message after its id, the retention cap, the TTL, no key, no record, known id 0.
redis_benchmark "EVALSHA append.lua" evalsha "$SHA" 4 \
  '{guestbook:bench}:seq' '{guestbook:bench}:log' '{guestbook:bench}:idem' '{guestbook:bench}:term' \
  "$TAIL" "$MAX_MESSAGES" 86400 0 '' 0
redis_benchmark "RPUSH" rpush mylist x

# --- the backends ----------------------------------------------------------------------------
start_backends() { # strategy, count
  local strategy=$1 count=$2 i port
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    port_in_use "$port" && die "port $port is in use; set BASE_PORT to a free range"
    APPEND_STRATEGY=$strategy LISTEN_ADDR=127.0.0.1:$port REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
      MAX_MESSAGES=$MAX_MESSAGES RATE_LIMIT_WRITES_PER_SEC=0 LOG_FORMAT=json \
      SHUTDOWN_DELAY_SECS=0 "$BIN" >>"$LOG_DIR/backend-$strategy-$count-$port.log" 2>&1 &
    BACKEND_PIDS+=("$!")
  done
  for ((i = 0; i < count; i++)); do
    wait_http "http://127.0.0.1:$((BASE_PORT + i))/liveness" "${BACKEND_PIDS[$i]}"
  done
}

ports_csv() { # count → "18081,18082,..."
  local i ports=()
  for ((i = 0; i < $1; i++)); do ports+=("$((BASE_PORT + i))"); done
  local IFS=,
  echo "${ports[*]}"
}

# CPU ticks (1/CLK_TCK s) so far: of the processes given (utime + stime), of the whole
# machine (busy, idle) and of wrk, so each row can say where the cores went.
process_ticks() { # [--system] pid... (--system: stime only, the kernel's part)
  local pid total=0 stat fields system=0
  if [[ ${1:-} == --system ]]; then system=1; shift; fi
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a fields <<<"${stat##*) }"
    total=$((total + fields[12] + (system ? 0 : fields[11])))
  done
  echo "$total"
}
machine_ticks() { # → "busy idle"
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}
# This shell's reaped children (cutime + cstime): across a wrk run, wrk's own CPU.
children_ticks() {
  local stat fields
  stat=$(cat "/proc/$$/stat")
  read -r -a fields <<<"${stat##*) }"
  echo $((fields[13] + fields[14]))
}
cpu_snapshot() { # → "backend redis busy idle wrk backend_system"
  echo "$(process_ticks "${BACKEND_PIDS[@]}") $(process_ticks "$REDIS_PID") $(machine_ticks)" \
    "$(children_ticks) $(process_ticks --system "${BACKEND_PIDS[@]}")"
}

# One row: wrk against `count` instances with `conns` connections in flight.
measure() { # strategy, count, conns [, port, round]: a round of the paired 2b ratio
  local strategy=$1 count=$2 conns=$3 port=${4:-$BASE_PORT} round=${5:-} threads in_flight ports summary
  threads=$(( count == 1 ? 2 : count ))
  threads=$(( conns < threads ? conns : threads ))
  in_flight=$(( conns / threads * threads ))
  if [[ -n $round ]]; then ports=$port; else ports=$(ports_csv "$count"); fi
  summary="$OUT_DIR/wrk-summary.json"
  rm -f "$summary"
  local cmd=(wrk -t"$threads" -c"$in_flight" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency
             -s "$WRK_SCRIPT" "http://127.0.0.1:$port/api/messages")
  local env="BENCH_PORTS=$ports BENCH_IDEMPOTENCY=$IDEMPOTENCY"
  flush
  echo "wrk: $strategy, $count instance(s), $in_flight in flight ..." >&2
  local before after
  before=$(cpu_snapshot)
  BENCH_PORTS=$ports BENCH_IDEMPOTENCY=$IDEMPOTENCY BENCH_SUMMARY=$summary "${cmd[@]}" \
    >"$LOG_DIR/wrk-$strategy-$count-$conns.txt"
  after=$(cpu_snapshot)
  [[ -s $summary ]] || die "wrk wrote no summary; see $LOG_DIR/wrk-$strategy-$count-$conns.txt"
  "${REPORT[@]}" record-wrk --summary "$summary" --strategy "$strategy" --instances "$count" \
    --requested "$conns" --in-flight "$in_flight" --threads "$threads" --env "$env" \
    --cpu-before "$before" --cpu-after "$after" --clk-tck "$(getconf CLK_TCK)" \
    ${round:+--round "$round"} -- "${cmd[@]}" >>"$JSONL"
}

# --- the bare handler: one RPUSH per POST, one instance ---------------------------------------
start_bare() { # on BASE_PORT; its PID is the last of BACKEND_PIDS
  port_in_use "$BASE_PORT" && die "port $BASE_PORT is in use; set BASE_PORT to a free range"
  "$BARE_BIN" --listen "127.0.0.1:$BASE_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
    >>"$LOG_DIR/bare-append.log" 2>&1 &
  BACKEND_PIDS+=("$!")
  wait_http "http://127.0.0.1:$BASE_PORT/liveness" "$!"
}

if [[ $BARE != 0 ]]; then
  start_bare
  if [[ $WARMUP != 0 ]]; then
    BENCH_PORTS=$BASE_PORT wrk -t1 -c4 -d"${WARMUP}s" -s "$WRK_SCRIPT" \
      "http://127.0.0.1:$BASE_PORT/api/messages" >/dev/null
  fi
  for conns in $CONNECTIONS; do
    measure bare 1 "$conns"
  done
  stop_backends
fi

for strategy in $STRATEGIES; do
  for count in $INSTANCES; do
    start_backends "$strategy" "$count"
    if [[ $WARMUP != 0 ]]; then
      BENCH_PORTS=$(ports_csv "$count") wrk -t"$count" -c"$((4 * count))" -d"${WARMUP}s" \
        -s "$WRK_SCRIPT" "http://127.0.0.1:$BASE_PORT/api/messages" >/dev/null
    fi
    for conns in $CONNECTIONS; do
      measure "$strategy" "$count" "$conns"
    done
    stop_backends
  done
done

# --- the 2b ratio, paired: bare and lua at 64 in flight in turn, PAIRS rounds -----------------
# This machine's speed drifts by tens of percent over minutes (other guests on the host), and
# the matrix measures bare and lua minutes apart; rounds seconds apart, and the median of their
# own ratios, cancel most of that drift.
if [[ $BARE != 0 && $PAIRS != 0 && " $STRATEGIES " == *" lua "* ]]; then
  # lua one port up (start_backends reads BASE_PORT), then bare on BASE_PORT.
  BASE_PORT=$((BASE_PORT + 1)) start_backends lua 1
  start_bare
  for ((round = 1; round <= PAIRS; round++)); do
    measure bare 1 "$RATIO_IN_FLIGHT" "$BASE_PORT" "$round"
    measure lua 1 "$RATIO_IN_FLIGHT" "$((BASE_PORT + 1))" "$round"
  done
  stop_backends
fi

# --- instructions per append (CALLGRIND=1) ----------------------------------------------------
redis_cpu_seconds() {
  redis-cli -p "$REDIS_PORT" INFO cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.6f", s}'
}

backend_appends() { # port → created appends so far
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^guestbook_appends_total/ && /outcome="created"/ {s += $2} END {printf "%d", s}'
}

# The bare handler or a strategy's backend under callgrind, instrumented only while wrk runs
# (start-up and warm-up are not counted). Prints "name: N instructions per append (A appends),
# Redis X µs per append". The counts since the last zeroing are dumped before the stop, so a
# slow exit cannot lose them; the files of one run are summed.
count_instructions() { # bare | a strategy
  local name=$1 kind=backend out pid before after cpu_before cpu_after appends
  local valgrind=(valgrind --tool=callgrind --instr-atstart=no)
  out="$OUT_DIR/callgrind/$name.out"
  mkdir -p "$OUT_DIR/callgrind"
  rm -f "$out"*
  flush
  valgrind+=(--callgrind-out-file="$out")
  if [[ $name == bare ]]; then
    kind=bare
    "${valgrind[@]}" "$BARE_BIN" --listen "127.0.0.1:$BASE_PORT" \
      --redis "redis://127.0.0.1:$REDIS_PORT" >>"$LOG_DIR/callgrind-$name.log" 2>&1 &
  else
    # SHEDDING=false: under valgrind every request is slow, and latency shedding would answer
    # 503s whose cost counts against the appends made (the layer still runs and records).
    APPEND_STRATEGY=$name LISTEN_ADDR=127.0.0.1:$BASE_PORT REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
      MAX_MESSAGES=$MAX_MESSAGES RATE_LIMIT_WRITES_PER_SEC=0 LOG_FORMAT=json \
      SHUTDOWN_DELAY_SECS=0 SHEDDING=false "${valgrind[@]}" "$BIN" \
      >>"$LOG_DIR/callgrind-$name.log" 2>&1 &
  fi
  pid=$!
  BACKEND_PIDS+=("$pid")
  for _ in $(seq 300); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$BASE_PORT/liveness" 2>/dev/null && break
    alive "$pid" || die "$name exited under valgrind; see $LOG_DIR/callgrind-$name.log"
    sleep 0.2
  done
  BENCH_PORTS=$BASE_PORT wrk -t1 -c4 -d1s -s "$WRK_SCRIPT" \
    "http://127.0.0.1:$BASE_PORT/api/messages" >/dev/null
  if [[ $kind == bare ]]; then before=$(redis-cli -p "$REDIS_PORT" LLEN bare:log); else
    before=$(backend_appends "$BASE_PORT"); fi
  cpu_before=$(redis_cpu_seconds)
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  BENCH_PORTS=$BASE_PORT wrk -t1 -c"$CALLGRIND_CONNECTIONS" -d"${CALLGRIND_DURATION}s" \
    -s "$WRK_SCRIPT" "http://127.0.0.1:$BASE_PORT/api/messages" >"$LOG_DIR/callgrind-wrk-$name.txt"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  cpu_after=$(redis_cpu_seconds)
  if [[ $kind == bare ]]; then after=$(redis-cli -p "$REDIS_PORT" LLEN bare:log); else
    after=$(backend_appends "$BASE_PORT"); fi
  stop_backends
  appends=$((after - before))
  local failed
  failed=$(awk '/Non-2xx/ {print $NF}' "$LOG_DIR/callgrind-wrk-$name.txt")
  "${REPORT[@]}" record-instructions --name "$name" --appends "$appends" --failed "${failed:-0}" \
    --redis-cpu-before "$cpu_before" --redis-cpu-after "$cpu_after" -- "$out"* >>"$JSONL"
}

if [[ $CALLGRIND != 0 ]]; then
  echo "callgrind: instructions per append, wrk -t1 -c$CALLGRIND_CONNECTIONS for ${CALLGRIND_DURATION}s ..." >&2
  if [[ $BARE != 0 ]]; then
    count_instructions bare
  fi
  for strategy in $STRATEGIES; do
    count_instructions "$strategy"
  done
fi

# --- report ----------------------------------------------------------------------------------
echo >&2
"${REPORT[@]}" report --jsonl "$JSONL" ${BENCHMARKS_MD:+--doc "$BENCHMARKS_MD"}
if [[ -z $BENCHMARKS_MD ]]; then
  echo "(partial run: BENCHMARKS.md left alone; set BENCHMARKS_MD=BENCHMARKS.md to write it)" >&2
fi
