#!/usr/bin/env bash
# deploy/compose for real: `make compose-up`, `make compose-down`, `make compose-check`.
#
#   up     the images (scripts/images.sh when missing), then `docker-compose up -d`; returns once
#          every service is healthy. UI http://127.0.0.1:8081, Prometheus http://127.0.0.1:9090.
#   down   `docker-compose down -v`, then checks that no container, volume or network of the
#          project is left.
#   check  up, the checks below, down (always, even when a check fails):
#            1. the UI loads in Debian's chromium through the published client port, and a
#               message posted in one page appears in a second page (tests/ui/compose.test.mjs)
#            2. the client's /fetch answers 200 with the backend's messages
#            3. Prometheus has every target up, and the HPA's per-pod p99.9 query (the
#               prometheus-adapter rule, deploy/compose/prometheus/prometheus.yml) returns a number
#            4. `guestbook-loadtest messages` (the compose `load` service, idempotent retries)
#               through the `backend` alias loses nothing while backend-2 is SIGKILLed under it
#            5. Sentinel: the Redis primary is frozen (pause) under a bounded write load (the
#               backends run with REDIS_MIN_REPLICAS_ACK=1); the sentinels promote a replica,
#               appends succeed again within FAILOVER_BOUND seconds (the measured outage is
#               printed; 30 s more when a sentinel entered TILT mode, which waits 30 s by
#               design), nothing acknowledged is lost; the old primary, thawed, is made a
#               replica of the new one by the sentinels
#            6. `down -v` leaves nothing behind
#
# Engines: docker with its compose plugin when a Docker daemon answers; otherwise podman's
# Docker-compatible API (`podman system service`, started here on a socket under target/compose/)
# with Debian's docker-compose 1.29. Podman runs healthchecks from systemd timers; on a machine
# without systemd (containers, CI runners) they never run and `depends_on: service_healthy`
# waits forever, so a ticker started here runs `podman healthcheck run` on the project's
# containers every HEALTH_TICK seconds, as the timers would. Both are stopped by `down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FILE=deploy/compose/docker-compose.yml
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-guestbook}
STATE=$PWD/target/compose
HEALTH_TICK=${HEALTH_TICK:-5}
REGISTRY=${REGISTRY:-ghcr.io/guestbook}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
CLIENT_URL=http://127.0.0.1:8081
PROMETHEUS_URL=http://127.0.0.1:9090
LABEL=com.docker.compose.project=$COMPOSE_PROJECT_NAME
# Sentinel marks the primary down after 5 s (deploy/compose), elects, promotes; the backends
# ask every 0.5 s. Appends must succeed again within this many seconds of the first failed one.
FAILOVER_BOUND=${FAILOVER_BOUND:-30}

step() { printf '\n--> %s\n' "$*"; }
# The reason is kept on file as well: `check` tears the stack down after a failure, and the
# teardown's own output would otherwise bury the reason at the top of a CI log.
die() { echo "compose: $*" >&2; echo "$*" >>"$STATE/failure"; exit 1; }
mkdir -p "$STATE"

if [[ -z ${ENGINE:-} ]]; then
  if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  else
    ENGINE=podman
  fi
fi
if [[ $ENGINE == docker ]]; then
  COMPOSE=(docker compose -f "$FILE")
else
  command -v podman >/dev/null 2>&1 || die "neither a Docker daemon nor podman is here"
  command -v docker-compose >/dev/null 2>&1 || die "docker-compose is not installed (Debian: apt-get install docker-compose)"
  export DOCKER_HOST=unix://$STATE/podman.sock
  COMPOSE=(docker-compose -f "$FILE")
fi
compose() { "${COMPOSE[@]}" "$@"; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_podman_service() {
  [[ $ENGINE == podman ]] || return 0
  if ! alive "$STATE/service.pid"; then
    rm -f "$STATE/podman.sock"
    # --time=0: no idle timeout; `down` stops it by its PID.
    setsid podman system service --time=0 "$DOCKER_HOST" >"$STATE/service.log" 2>&1 </dev/null &
    echo $! >"$STATE/service.pid"
    for _ in $(seq 100); do [[ -S $STATE/podman.sock ]] && break; sleep 0.1; done
    [[ -S $STATE/podman.sock ]] || die "podman system service did not open $STATE/podman.sock; see $STATE/service.log"
  fi
  if [[ ! -d /run/systemd/system ]] && ! alive "$STATE/ticker.pid"; then
    setsid bash -c '
      while kill -0 "$1" 2>/dev/null; do
        podman ps --filter "label=$2" --format "{{.ID}} {{.Status}}" | while read -r id status; do
          [[ $status == *"("* ]] && podman healthcheck run "$id" </dev/null >/dev/null 2>&1 || true
        done
        sleep "$3"
      done' ticker "$(cat "$STATE/service.pid")" "$LABEL" "$HEALTH_TICK" >/dev/null 2>&1 </dev/null &
    echo $! >"$STATE/ticker.pid"
  fi
}

stop_podman_service() {
  local name
  for name in ticker service; do
    if alive "$STATE/$name.pid"; then
      kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$STATE/$name.pid"
  done
  rm -f "$STATE/podman.sock"
}

ensure_images() {
  local engine=$ENGINE missing=0 name
  for name in guestbook-backend guestbook-client guestbook-loadtest; do
    "$engine" image inspect "$REGISTRY/$name:$VERSION" >/dev/null 2>&1 || missing=1
  done
  if ((missing)); then
    step "building the images (scripts/images.sh)"
    ENGINE=$engine scripts/images.sh
  fi
  # The third-party images: pulled by compose where a registry answers, else Debian stand-ins.
  for name in redis:7.0.15-bookworm prom/prometheus:v2.42.0 oliver006/redis_exporter:v1.45.0; do
    if ! "$engine" image inspect "$name" >/dev/null 2>&1 && ! timeout 60 "$engine" pull -q "$name" >/dev/null 2>&1; then
      step "$name cannot be pulled: a stand-in from Debian's packages"
      ENGINE=$engine scripts/local-base-images.sh "$name"
    fi
  done
}

up() {
  ensure_images
  start_podman_service
  step "compose up ($ENGINE)"
  local start=$SECONDS
  # Bounded: a dependency that never turns healthy would otherwise hold `up` forever.
  timeout "${UP_TIMEOUT:-300}" "${COMPOSE[@]}" up -d --no-build ||
    { compose ps; die "compose up failed or did not finish within ${UP_TIMEOUT:-300} s"; }
  # up -d returns once the services that others depend on are healthy; the client is last.
  local id status=""
  id=$(compose ps -q client)
  for _ in $(seq 120); do
    status=$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null || true)
    [[ $status == healthy ]] && break
    sleep 1
  done
  [[ $status == healthy ]] || { compose ps; die "the client is not healthy after 120 s ($status)"; }
  # Every service runs (healthchecks cover only some: Prometheus exiting at start shows here).
  local stopped
  stopped=$("$ENGINE" ps -a --filter "label=$LABEL" --filter status=exited --filter status=created --format '{{.Names}}')
  [[ -z $stopped ]] || { compose ps; compose logs --tail 20; die "not running: $stopped"; }
  compose ps
  echo "the stack is up and healthy in $((SECONDS - start)) s: UI $CLIENT_URL, Prometheus $PROMETHEUS_URL"
}

down() {
  if [[ $ENGINE == podman ]] && ! alive "$STATE/service.pid"; then start_podman_service; fi
  step "compose down -v"
  compose --profile load down -v --remove-orphans --timeout 30
  stop_podman_service
  local left
  left=$("$ENGINE" ps -aq --filter "label=$LABEL"; "$ENGINE" volume ls -q --filter "label=$LABEL";
    "$ENGINE" network ls -q --filter "label=$LABEL")
  [[ -z $left ]] || die "left behind after down: $(echo "$left" | tr '\n' ' ')"
  echo "nothing of project $COMPOSE_PROJECT_NAME is left: no container, volume or network"
}

wait_healthy() { # wait_healthy SERVICE SECONDS
  local id status=""
  id=$(compose ps -q "$1")
  for ((i = 0; i < $2; i++)); do
    status=$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null || true)
    [[ $status == healthy ]] && return 0
    sleep 1
  done
  die "$1 is not healthy after $2 s ($status)"
}

sentinel_primary() { # the primary's host as sentinel-1 names it (empty when it cannot answer)
  "$ENGINE" exec "$(compose ps -q sentinel-1)" redis-cli -p 26379 --raw \
    SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1 || true
}

failover() { # check step 5
  step "5. Sentinel: the Redis primary frozen under a bounded write load; a replica promoted"
  wait_healthy backend-2 60
  local before after=""
  before=$(sentinel_primary)
  [[ $before == redis ]] || die "the sentinels name '$before' as the primary, not redis"
  # 1200 messages at 60/s (20 s), round-robin to both backends, each retried with its key up to
  # 100 times (up to a second of backoff each: longer than any failover that passes the bound,
  # so every message is acknowledged in the end); the freeze lands 5 s in.
  # --trace to stderr: every attempt, so the outage is measured on the load's own clock.
  compose --profile load run --rm -T load messages --target http://backend:8080 \
    --replicas http://backend-1:8080,http://backend-2:8080 --count 1200 --concurrency 16 \
    --rate 60 --idempotent-retries --max-attempts 100 --trace /dev/stderr --json \
    >"$STATE/failover.json" 2>"$STATE/failover.log" &
  local load=$! frozen_at promoted
  sleep 5
  # Frozen (the cgroup freezer), as a hung process or a partitioned node: the sentinels' pings
  # go unanswered. Not killed: a killed container's name leaves the engine's DNS at once, and
  # Sentinel, which resolves names synchronously, stalled on lookups of it that went
  # unanswered (40 s for one under podman, measured), into TILT, which says nothing of the
  # guestbook. The freeze loses what a kill loses: the old primary's unreplicated writes are
  # discarded when it resyncs as a replica.
  "$ENGINE" pause "$(compose ps -q redis)" >/dev/null
  frozen=redis
  frozen_at=$EPOCHREALTIME
  echo "redis (the primary) frozen $(date -u +%T)"
  # Bounded by time, not by count: on a loaded machine one `podman exec` takes a second or more.
  local deadline=$((SECONDS + 90))
  while ((SECONDS < deadline)); do
    after=$(sentinel_primary)
    [[ -n $after && $after != redis ]] && break
    sleep 0.1
  done
  promoted=$EPOCHREALTIME
  if [[ -z $after || $after == redis ]]; then
    compose logs --no-color sentinel-1 sentinel-2 sentinel-3 2>/dev/null | grep -E ' [+-][a-z-]+ ' | tail -n 30 || true
    kill "$load" 2>/dev/null || true
    die "no replica was promoted within 90 s"
  fi
  echo "the sentinels name $after the primary $(python3 -c "print(f'{$promoted - $frozen_at:.1f}')") s after the freeze"
  # What Sentinel did, and when: +tilt (a starved event loop; Sentinel then waits 30 s before
  # acting) explains a slow failover on a busy machine.
  compose logs --no-color sentinel-1 2>/dev/null | grep -E '[+-](sdown|odown|tilt|switch-master) ' | sed 's/^/  /' || true
  # The whole load is bounded too: with appends failing for good, 1200 messages of 100 attempts
  # each, 16 at a time, would run for hours. 20 s of sending, the outage, then the retries' tail.
  local limit=$((SECONDS + 120))
  while kill -0 "$load" 2>/dev/null && ((SECONDS < limit)); do sleep 1; done
  if kill -0 "$load" 2>/dev/null; then
    "$ENGINE" ps -q --filter "label=$LABEL" --filter label=com.docker.compose.service=load |
      xargs -r "$ENGINE" kill >/dev/null 2>&1 || true
    wait "$load" 2>/dev/null || true
    die "the load did not finish within 120 s of the promotion: appends did not come back"
  fi
  local rc=0
  wait "$load" || rc=$?
  # TILT: a sentinel whose timer ran over 2 s late (its clock jumped, or the host did not run it)
  # trusts nothing and acts on nothing for 30 s, by Sentinel's design. The outage then includes
  # those 30 s, which say nothing of the guestbook: the bound allows them, and says so.
  local bound=$FAILOVER_BOUND
  compose logs --no-color sentinel-1 sentinel-2 sentinel-3 >"$STATE/sentinels.log" 2>/dev/null || true
  if grep -q '+tilt ' "$STATE/sentinels.log"; then
    bound=$(python3 -c "print($FAILOVER_BOUND + 30)")
    echo "a sentinel entered TILT mode (the host stalled it or its clock jumped): the bound is $bound s, not $FAILOVER_BOUND s"
  fi
  python3 - "$STATE/failover.json" "$STATE/failover.log" "$bound" <<'PY' ||
import csv, json, sys
text = open(sys.argv[1]).read()
report = json.loads(text[text.index("{"):])
v = report["verdict"]
print(f"sent {v['sent']}, acknowledged {v['acknowledged']}, found {v['found']}, lost {v['lost']}, "
      f"duplicated {v['duplicated']}, attempts {report['attempts']}, statuses {report['statuses']}, errors {report['errors']}")
rows = [r for r in csv.reader(open(sys.argv[2])) if len(r) == 8 and r[0].isdigit()]
def ok(r):
    return len(r[7]) == 3 and r[7].startswith("2")
failed = [float(r[4]) for r in rows if not ok(r)]
if not failed:
    sys.exit("no append failed: the freeze did not land under the load")
first_failed = min(failed)
back = min((float(r[5]) for r in rows if ok(r) and float(r[4]) > first_failed), default=None)
if back is None:
    sys.exit("no append succeeded after the primary was frozen")
outage = back - first_failed
later = [r for r in rows if float(r[4]) >= back]
print(f"appends failed from {first_failed:.2f} s into the load and succeeded again at {back:.2f} s: "
      f"{outage:.1f} s without appends; {sum(map(ok, later))} of {len(later)} attempts sent after that succeeded")
if v["lost"] or v["duplicated"] or not report["passed"]:
    sys.exit("an acknowledged message was lost or stored twice")
if v["acknowledged"] != v["sent"]:
    sys.exit("some messages were never acknowledged (100 attempts each)")
if outage > float(sys.argv[3]):
    sys.exit(f"appends came back after {outage:.1f} s, beyond the {sys.argv[3]} s bound")
PY
    { tail -n 20 "$STATE/failover.log"; die "failover: see above (load exit $rc)"; }
  ((rc == 0)) || die "guestbook-loadtest messages exited $rc"

  # Without a hand: thawed, the old primary still believes it is one; the sentinels see it and
  # make it a replica of the new one (+convert-to-slave).
  "$ENGINE" unpause "$(compose ps -q redis)" >/dev/null
  frozen=""
  local role=""
  for _ in $(seq 60); do
    role=$("$ENGINE" exec "$(compose ps -q redis)" redis-cli info replication 2>/dev/null |
      tr -d '\r' | awk -F: '$1 == "role" || $1 == "master_host" {printf "%s ", $2}' || true)
    [[ $role == "slave $after " ]] && break
    sleep 1
  done
  [[ $role == "slave $after " ]] || die "the old primary did not rejoin as a replica of $after: $role"
  echo "redis, thawed, is a replica of $after"
}

json_get() { # json_get URL PYTHON_EXPR: evaluates EXPR on the JSON answer `j`
  python3 -c '
import json, sys, urllib.request
j = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))
print(eval(sys.argv[2]))' "$1" "$2"
}

frozen="" # the service paused by the failover step, until it is thawed
# After a failed check: down, then the reason again, last, where a CI log's tail shows it.
down_after_failure() {
  local rc=$?
  # A paused container cannot be stopped.
  [[ -z $frozen ]] || "$ENGINE" unpause "$(compose ps -q "$frozen")" >/dev/null 2>&1 || true
  down || true
  if [[ -s $STATE/failure ]]; then
    echo "compose-check FAILED: $(tr '\n' ' ' <"$STATE/failure")" >&2
  else
    echo "compose-check FAILED (exit $rc): a command failed; see above" >&2
  fi
  exit "$rc"
}

check() {
  rm -f "$STATE/failure"
  trap down_after_failure EXIT
  local start=$SECONDS
  up

  step "1. the UI in chromium through $CLIENT_URL: load, post in one page, see it in another"
  command -v chromium >/dev/null 2>&1 || die "chromium is not installed (Debian: apt-get install chromium)"
  [[ -d tests/ui/node_modules/playwright-core ]] || npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
  GUESTBOOK_URL=$CLIENT_URL node --test --test-concurrency=1 tests/ui/compose.test.mjs

  step "2. /fetch"
  local fetched
  fetched=$(json_get "$CLIENT_URL/fetch" 'j')
  echo "/fetch answered 200: $fetched"

  step "3. Prometheus: every target up, the HPA query returns a number"
  local targets=""
  for _ in $(seq 60); do
    targets=$(json_get "$PROMETHEUS_URL/api/v1/targets" \
      '" ".join(sorted(t["labels"]["job"] + "/" + t["labels"]["instance"] + "=" + t["health"] for t in j["data"]["activeTargets"]))')
    [[ -n $targets && $targets != *"=down"* && $targets != *"=unknown"* ]] && break
    sleep 1
  done
  echo "targets: $targets"
  [[ -n $targets && $targets != *"=down"* && $targets != *"=unknown"* ]] || die "not every Prometheus target is up"
  local query='max(http_request_own_duration_window_p999_seconds{namespace="compose",pod=~"backend-1|backend-2"}) by (pod)'
  local value=""
  for _ in $(seq 30); do
    value=$(python3 -c '
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
r = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
print(" ".join("%s=%s" % (s["metric"]["pod"], float(s["value"][1])) for s in r))' "$PROMETHEUS_URL" "$query")
    [[ $value == *backend-1=* && $value == *backend-2=* ]] && break
    sleep 1
  done
  echo "HPA query: $query"
  [[ $value == *backend-1=* && $value == *backend-2=* ]] || die "the HPA query returned no number for both backends: '$value'"
  echo "HPA query answers: $value (seconds)"

  step "4. guestbook-loadtest messages to both backends; backend-2 SIGKILLed under it"
  # 1200 messages at 60/s, posted round-robin to both backends (through the `backend` alias alone
  # every connection may land on one of them, and the kill would prove nothing): about 20 s; the
  # kill lands 6 s in. Read back through the alias.
  compose --profile load run --rm -T load messages --target http://backend:8080 \
    --replicas http://backend-1:8080,http://backend-2:8080 --count 1200 \
    --concurrency 16 --rate 60 --idempotent-retries --json >"$STATE/messages.json" 2>"$STATE/messages.log" &
  local load=$!
  sleep 6
  compose kill -s SIGKILL backend-2
  echo "backend-2 killed (SIGKILL) $(date -u +%T)"
  local rc=0
  wait "$load" || rc=$?
  python3 - "$STATE/messages.json" <<'PY' || { cat "$STATE/messages.log"; die "messages: something was lost (exit $rc)"; }
import json, sys
text = open(sys.argv[1]).read()
report = json.loads(text[text.index("{"):])
v = report["verdict"]
print(f"sent {v['sent']}, acknowledged {v['acknowledged']}, found {v['found']}, lost {v['lost']}, "
      f"duplicated {v['duplicated']}, attempts {report['attempts']}, statuses {report['statuses']}, errors {report['errors']}")
ok = report["passed"] and v["lost"] == 0 and v["duplicated"] == 0 and v["acknowledged"] == v["sent"]
if not ok:
    sys.exit("not every message was acknowledged and stored exactly once")
# The kill must have cost some posts an attempt; otherwise it happened beside the run, not under it.
if report["attempts"] <= v["sent"]:
    sys.exit(f"no post was retried ({report['attempts']} attempts): the kill did not land under the load")
PY
  ((rc == 0)) || die "guestbook-loadtest messages exited $rc"
  compose up -d --no-build backend-2 >/dev/null 2>&1 || true

  failover

  trap - EXIT
  down
  step "compose-check passed in $((SECONDS - start)) s"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  check) check ;;
  *) die "usage: scripts/compose.sh up|down|check" ;;
esac
